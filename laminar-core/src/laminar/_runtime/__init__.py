"""Running flows: the scheduler, the executors, and the code that runs one layer split."""
