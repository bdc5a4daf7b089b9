"""The ``laminar`` command (``laminar._cli.main:main``) and the HTML run report. Internal."""
