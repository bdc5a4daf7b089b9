"""Any fsspec filesystem as a Laminar datastore: ``Flow(datastore="sftp://user@host/srv/laminar")``.

``fsspec+<protocol>://...`` reaches every protocol fsspec knows (``fsspec+memory://scratch``,
``fsspec+file:///mnt/share``); a bare ``<protocol>://`` those no other Laminar distribution serves
(``sftp://``, ``ftp://``, ``webdav://``, ...). See :class:`FSSpec` for options and atomicity.

The ``laminar`` entry point imports this package; :mod:`laminar_fsspec.datastore` (and what it imports)
loads when one of its names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar_fsspec.datastore import CLAIMED, PREFIX, FSSpec, FSSpecInProcess

__all__ = ["CLAIMED", "PREFIX", "FSSpec", "FSSpecInProcess"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("laminar_fsspec.datastore"), name)
