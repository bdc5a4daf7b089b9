"""Storage: the byte-level Datastore contract, the key layout, and the metadata records."""
