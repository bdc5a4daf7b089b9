"""The application: the wiring on top. Running flows, reading results, resolving plugins."""

from laminar._app import results

results.install()  # the seed's results API on every datastore object
