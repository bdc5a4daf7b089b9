pytest_plugins = ["emulators.fixtures", "dask_cluster"]
