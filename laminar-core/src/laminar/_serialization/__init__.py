"""Serialization: protocols keyed by exact type, codecs, and the streams that hash as they go."""
