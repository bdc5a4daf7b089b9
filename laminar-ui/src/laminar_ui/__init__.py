"""laminar-ui: ``laminar ui``, every run of a Laminar datastore in the browser, live.

It reads the datastore directly, through the run records, and needs nothing else: no database, no
service, no network. :func:`laminar_ui.app.create_app` is the ASGI app; the command is in
:mod:`laminar_ui.command`, added to ``laminar`` by :mod:`laminar_ui.plugin`.
"""
