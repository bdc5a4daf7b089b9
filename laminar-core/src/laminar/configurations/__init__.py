"""Public configuration modules: datastores, executors, hooks, layers, serde, schedulers."""
