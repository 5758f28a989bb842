"""The filesystem store: a directory on a shared or parallel filesystem (NFS, Lustre, GPFS).

`file:///path/to/dir`. Values are published by atomic rename, so a reader on any node sees
a whole value or none. Change notification does not cross nodes on these filesystems, so
waiting polls with a short backoff. `fsync=True` makes each write durable before it is
published, at a cost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from simai.store.directory import DirectoryStore

_MIN_POLL = 0.001
_MAX_POLL = 0.05


class FileStore(DirectoryStore):
    """Store in a directory that every process of the run can reach, on any node."""

    def __init__(self, url: str, allow_pickle: bool = False, fsync: bool = False) -> None:
        path = url.split("://", 1)[1]
        if not path:
            raise ValueError(f"file store URL {url!r} names no directory: use file:///path")
        self.fsync = fsync
        super().__init__(url, os.path.abspath(path), allow_pickle)

    def _finish_write(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)

    def _wait_for(self, directory: str, check: Callable[[], Any], deadline: float | None) -> Any:
        pause = _MIN_POLL
        while True:
            found = check()
            if found is not None:
                return found
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if deadline is not None:
                pause = min(pause, deadline - now)
            time.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)
