"""Machinery shared by the directory-backed stores (node-local and filesystem).

Each value is one file holding an encoded entry. A writer fills a private temporary file and
renames it over the key's name, so a reader opens either the old file or the new one, never a
half-written one. A stream is a directory of entries named by their index; an append claims
the next free index with link(2), which fails if the name exists, so concurrent producers
never overwrite each other and nothing acknowledged is lost.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import itertools
import mmap
import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

from simai.store.base import Store, StreamEnded

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_MAX_NAME = 200
_HASHED = "~"
_KEYFILE = ".key"
_INDEX_WIDTH = 12
_CLOSED = "closed"


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@functools.lru_cache(maxsize=65536)
def encode_name(key: str) -> str:
    """A file name for `key`: percent-encoded, or a hash when that would be too long."""
    raw = key.encode("utf-8")
    name = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > _MAX_NAME:
        return _HASHED + hashlib.blake2b(raw, digest_size=20).hexdigest()
    return name


def decode_name(name: str) -> str:
    out = bytearray()
    i = 0
    while i < len(name):
        if name[i] == "%":
            out.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(name[i]))
            i += 1
    return out.decode("utf-8")


class DirectoryStore(Store):
    """A Store over a directory; subclasses choose the directory and how waiting is done."""

    def __init__(self, url: str, root: str, allow_pickle: bool = False) -> None:
        super().__init__(allow_pickle)
        self.url = url
        self.root = root
        self._values = os.path.join(root, "values")
        self._streams = os.path.join(root, "streams")
        self._tmp = os.path.join(root, "tmp")
        try:
            for d in (self._values, self._streams, self._tmp):
                os.makedirs(d, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConnectionError(f"cannot open store {url}: {e.strerror} ({root})") from None
        self._counter = itertools.count()
        self._next_index: dict[str, int] = {}

    # --- hooks --------------------------------------------------------------------------

    def _wait_for(self, directory: str, check: Callable[[], Any], deadline: float | None) -> Any:
        """Call `check` until it returns something other than None, re-checking whenever
        `directory` may have changed; return None once `deadline` passes."""
        raise NotImplementedError

    def _finish_write(self, fd: int) -> None:
        """Called on a temporary file's descriptor before it is published."""

    # --- helpers ------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self._values}/{encode_name(key)}"

    def _stage(self, header: bytes, payload: memoryview) -> tuple[str, int]:
        """Write an entry to a private temporary file; return its path and an open descriptor
        that the caller closes once the file is published."""
        tmp = f"{self._tmp}/{os.getpid()}-{next(self._counter)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            total = len(header) + payload.nbytes
            done = os.writev(fd, [header, payload])
            while done < total:  # short writes happen for very large buffers
                if done < len(header):
                    done += os.writev(fd, [header[done:], payload])
                else:
                    done += os.write(fd, payload[done - len(header) :])
            self._finish_write(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return tmp, fd

    def _replace(self, tmp: str, path: str) -> None:
        """Publish `tmp` under `path`, replacing what was there."""
        os.rename(tmp, path)

    def _read_file(self, path: str, view: bool) -> Any:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if view and size:
                return memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ))
            buf = np.empty(size, dtype=np.uint8)
            got = os.readv(fd, [buf])
            while got < size:
                n = os.readv(fd, [buf[got:]])
                if n == 0:
                    break
                got += n
            return buf[:got]
        finally:
            os.close(fd)

    # --- values -------------------------------------------------------------------------

    def _write(self, key: str, header: bytes, payload: memoryview) -> None:
        path = self._path(key)
        tmp, fd = self._stage(header, payload)
        try:
            if path[len(self._values) + 1] == _HASHED:
                with open(path + _KEYFILE, "w", encoding="utf-8") as f:
                    f.write(key)
            self._replace(tmp, path)
        except BaseException:
            unlink_quietly(tmp)
            raise
        finally:
            os.close(fd)

    def _read(self, key: str, view: bool) -> Any:
        try:
            return self._read_file(self._path(key), view)
        except FileNotFoundError:
            raise KeyError(key) from None

    def _exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def _delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        if path[len(self._values) + 1] == _HASHED:
            unlink_quietly(path + _KEYFILE)
        return True

    def _keys(self, prefix: str) -> list[str]:
        out = []
        for name in os.listdir(self._values):
            if name.endswith(_KEYFILE):
                continue
            if name.startswith(_HASHED):
                try:
                    with open(os.path.join(self._values, name + _KEYFILE), encoding="utf-8") as f:
                        key = f.read()
                except FileNotFoundError:
                    continue
            else:
                key = decode_name(name)
            if key.startswith(prefix):
                out.append(key)
        return out

    def _wait(self, key: str, deadline: float | None) -> bool:
        path = self._path(key)
        found = self._wait_for(self._values, lambda: os.path.exists(path) or None, deadline)
        return bool(found)

    # --- streams ------------------------------------------------------------------------

    def _stream_dir(self, stream: str, create: bool) -> str:
        d = os.path.join(self._streams, encode_name(stream))
        if create:
            os.makedirs(d, mode=0o700, exist_ok=True)
        return d

    def _append(self, stream: str, header: bytes, payload: memoryview) -> int:
        d = self._stream_dir(stream, create=True)
        if os.path.exists(os.path.join(d, _CLOSED)):
            raise ValueError(f"stream {stream!r} was closed; no more values can be appended")
        tmp, fd = self._stage(header, payload)
        index = self._next_index.get(stream)
        if index is None:
            index = self._scan_len(d)
        try:
            while True:
                try:
                    os.link(tmp, f"{d}/{index:0{_INDEX_WIDTH}d}")
                    break
                except FileExistsError:
                    index += 1
        finally:
            os.unlink(tmp)
            os.close(fd)
        self._next_index[stream] = index + 1
        return index

    def _scan_len(self, d: str) -> int:
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return 0
        return 1 + max((int(n) for n in names if n.isdigit()), default=-1)

    def _stream_read(self, stream: str, index: int, deadline: float | None) -> Any | None:
        d = self._stream_dir(stream, create=False)
        entry = os.path.join(d, f"{index:0{_INDEX_WIDTH}d}")
        closed = os.path.join(d, _CLOSED)

        def check() -> Any:
            for _ in range(2):
                try:
                    return self._read_file(entry, view=False)
                except FileNotFoundError:
                    pass
                if not os.path.exists(closed):
                    return None
            raise StreamEnded(stream)

        found = check()
        if found is None:
            self._stream_dir(stream, create=True)
            found = self._wait_for(d, check, deadline)
        return found

    def _stream_len(self, stream: str) -> int:
        return self._scan_len(self._stream_dir(stream, create=False))

    def _close_stream(self, stream: str) -> None:
        d = self._stream_dir(stream, create=True)
        fd = os.open(os.path.join(d, _CLOSED), os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)

    def _delete_stream(self, stream: str) -> bool:
        d = self._stream_dir(stream, create=False)
        self._next_index.pop(stream, None)
        try:
            shutil.rmtree(d)
        except FileNotFoundError:
            return False
        return True

    def destroy(self) -> None:
        """Delete the whole store directory and everything in it."""
        try:
            shutil.rmtree(self.root)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
