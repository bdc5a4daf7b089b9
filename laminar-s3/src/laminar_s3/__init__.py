"""Laminar's S3 datastore: ``Flow(datastore="s3://bucket/prefix")`` once this is installed."""

from __future__ import annotations

from laminar_s3.datastore import S3, BucketNotFound, CredentialsRejected

__all__ = ["S3", "BucketNotFound", "CredentialsRejected"]
