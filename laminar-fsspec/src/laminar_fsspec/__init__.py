"""Any fsspec filesystem as a Laminar datastore: ``Flow(datastore="sftp://user@host/srv/laminar")``.

``fsspec+<protocol>://...`` reaches every protocol fsspec knows (``fsspec+memory://scratch``,
``fsspec+file:///mnt/share``); a bare ``<protocol>://`` those no other Laminar distribution serves
(``sftp://``, ``ftp://``, ``webdav://``, ...). See :class:`FSSpec` for options and atomicity.
"""

from __future__ import annotations

from laminar_fsspec.datastore import CLAIMED, PREFIX, FSSpec, FSSpecInProcess

__all__ = ["CLAIMED", "PREFIX", "FSSpec", "FSSpecInProcess"]
