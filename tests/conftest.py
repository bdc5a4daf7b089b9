pytest_plugins = ["emulators.fixtures", "dask_cluster", "emulators.sftp"]
