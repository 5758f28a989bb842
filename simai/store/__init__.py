"""Data staging: one Store API over interchangeable backends chosen by URL.

    local://NAME or local:///dev/shm/dir   node-local shared memory, no server (the default)
    file:///path/to/dir                     a shared or parallel filesystem directory
    redis://host:port[,host:port...]        one or several redis-server shards
    adios2:///path/dir?engine=SST|BP5       streams only, over ADIOS2 (docs/guide/adios2.md)
    dragon://DESCRIPTOR                     a Dragon DDict, in programs run under Dragon

`open_store(url)` opens one; `open_store()` opens the one named by $SIMAI_STORE, which is how
a process launched by a workflow finds its run's store.
"""

from __future__ import annotations

import os
from typing import Any

from simai.store.base import MAX_KEY_BYTES, Store, StoreClosedError, check_key
from simai.store.codec import CorruptValueError
from simai.store.resp import AuthenticationError

ENV_URL = "SIMAI_STORE"
ENV_PASSWORD = "SIMAI_STORE_PASSWORD"
DEFAULT_URL = "local://default"

__all__ = [
    "MAX_KEY_BYTES",
    "AuthenticationError",
    "CorruptValueError",
    "Store",
    "StoreClosedError",
    "check_key",
    "open_store",
]


def open_store(url: str | None = None, **options: Any) -> Store:
    """Open the store at `url`, else $SIMAI_STORE (the run's store), else the node-local default.

    Options go to the backend (e.g. allow_pickle=True).
    """
    if url is None:
        url = os.environ.get(ENV_URL) or DEFAULT_URL
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(
            f"store URL {url!r} is not of the form scheme://...; "
            "use local://NAME, file:///path or redis://host:port"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "local":
        from simai.store.local import LocalStore

        return LocalStore(url, **options)
    if scheme == "file":
        from simai.store.file import FileStore

        return FileStore(url, **options)
    if scheme in ("redis", "rediss"):
        from simai.store.redis import RedisStore

        return RedisStore(url, **options)
    if scheme == "dragon":
        from simai.store.dragon import DragonStore

        return DragonStore(url, **options)
    if scheme == "adios2":
        from simai.store.adios2 import Adios2Store

        return Adios2Store(url, **options)
    raise ValueError(
        f"unknown store scheme {scheme!r} in {url!r}: use local, file, redis, adios2 or dragon"
    )
