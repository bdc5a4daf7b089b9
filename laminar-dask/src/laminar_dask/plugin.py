"""Registers the Dask executor with Laminar."""
