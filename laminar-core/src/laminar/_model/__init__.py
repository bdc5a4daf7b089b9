"""The model: Flow, Layer, Parameters, Execution, Accessor and the DAG. No I/O of its own."""
