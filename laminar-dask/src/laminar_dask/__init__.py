"""Run Laminar layer splits as Dask tasks."""
