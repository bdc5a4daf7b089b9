"""Laminar's Google Cloud Storage datastore: ``Flow(datastore="gs://bucket/prefix")`` once installed."""

from __future__ import annotations

from laminar_gcs.datastore import GCS, BucketNotFound

__all__ = ["GCS", "BucketNotFound"]
