"""The application: the wiring on top. Running flows, reading results, resolving plugins."""
