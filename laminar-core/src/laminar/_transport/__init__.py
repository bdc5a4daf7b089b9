"""Transport: the Datastore contract of byte-level primitives and the built-in backends."""
