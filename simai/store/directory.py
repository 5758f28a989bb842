"""Machinery shared by the directory-backed stores (node-local and filesystem).

Each value is one file holding an encoded entry. A writer fills a private temporary file and
renames it over the key's name, so a reader opens either the old file or the new one, never a
half-written one. A stream is a directory of entries named by their index; an append claims
the next free index with link(2), which fails if the name exists, so concurrent producers
never overwrite each other and nothing acknowledged is lost.

A bounded stream (`create_stream`) also holds its bounds (`bounds`), its head, first retained
index and drop count (`state`, replaced by rename), and one file per consumer group under
`groups/` holding the group's position. Its appends take an flock(2) on `lock`, so the check
for space, the claim of an index and the trim happen as one step; on a shared filesystem that
needs working flock (NFSv4, Lustre mounted with `flock`, GPFS). Unbounded appends take no lock.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import itertools
import json
import mmap
import os
import shutil
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from simai.store.base import Store, StreamEnded, StreamTrimmed

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_MAX_NAME = 200
_HASHED = "~"
_KEYFILE = ".key"
_INDEX_WIDTH = 12
_CLOSED = "closed"
_BOUNDS = "bounds"
_STATE = "state"
_LOCK = "lock"
_GROUPS = "groups"
_WAKE = ".closed"
_STATE_FMT = struct.Struct("<qqq")
_UNKNOWN: Any = object()


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
        self._bounded: dict[str, tuple[int, str] | None] = {}

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

    def _append(
        self, stream: str, header: bytes, payload: memoryview, deadline: float | None
    ) -> int | None:
        d = self._stream_dir(stream, create=True)
        bounds = self._bounded.get(stream, _UNKNOWN)
        if bounds is _UNKNOWN:
            bounds = self._bounded[stream] = self._bounds_of(d)
        if bounds is not None:
            return self._append_bounded(stream, d, bounds, header, payload, deadline)
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

    def _append_bounded(
        self,
        stream: str,
        d: str,
        bounds: tuple[int, str],
        header: bytes,
        payload: memoryview,
        deadline: float | None,
    ) -> int | None:
        tmp, fd = self._stage(header, payload)
        lock = -1
        try:
            lock = os.open(f"{d}/{_LOCK}", os.O_RDWR | os.O_CREAT, 0o600)

            def attempt() -> int | None:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    return self._append_locked(stream, d, bounds, tmp)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

            index = attempt()
            if index is None:
                os.makedirs(f"{d}/{_GROUPS}", mode=0o700, exist_ok=True)
                index = self._wait_for(f"{d}/{_GROUPS}", attempt, deadline)
            return index
        finally:
            if lock >= 0:
                os.close(lock)
            os.unlink(tmp)
            os.close(fd)

    def _append_locked(self, stream: str, d: str, bounds: tuple[int, str], tmp: str) -> int | None:
        """Claim the next index for `tmp` and trim, holding the stream's lock; None if full."""
        maxlen, policy = bounds
        if os.path.exists(f"{d}/{_CLOSED}"):
            raise ValueError(f"stream {stream!r} was closed; no more values can be appended")
        head, start, dropped = self._read_state(d) or (0, 0, 0)
        low = self._slowest(d, start)
        floor = start if low is None else low
        if policy == "block" and head - floor >= maxlen:
            return None
        while True:
            try:
                os.link(tmp, f"{d}/{head:0{_INDEX_WIDTH}d}")
                break
            except FileExistsError:  # left by a producer that died before saving the state
                head += 1
        head += 1
        new_start = head - maxlen
        if policy == "block":
            new_start = min(new_start, floor)
        if new_start > start:
            for i in range(start, new_start):
                unlink_quietly(f"{d}/{i:0{_INDEX_WIDTH}d}")
            if policy == "drop_oldest":
                dropped += max(0, new_start - max(start, floor))
            start = new_start
        self._publish_small(_STATE_FMT.pack(head, start, dropped), f"{d}/{_STATE}")
        return head - 1

    def _publish_small(self, data: bytes, path: str) -> None:
        tmp, fd = self._stage(data, memoryview(b""))
        try:
            try:
                os.rename(tmp, path)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                os.rename(tmp, path)
        except BaseException:
            unlink_quietly(tmp)
            raise
        finally:
            os.close(fd)

    def _bounds_of(self, d: str) -> tuple[int, str] | None:
        try:
            with open(f"{d}/{_BOUNDS}", "rb") as f:
                cfg = json.loads(f.read())
        except FileNotFoundError:
            return None
        return cfg["maxlen"], cfg["policy"]

    def _read_state(self, d: str) -> tuple[int, int, int] | None:
        """(head, first retained index, dropped) of a bounded stream that was appended to."""
        try:
            with open(f"{d}/{_STATE}", "rb") as f:
                return _STATE_FMT.unpack(f.read())
        except FileNotFoundError:
            return None

    def _groups(self, d: str) -> dict[str, int]:
        g = f"{d}/{_GROUPS}"
        try:
            names = os.listdir(g)
        except FileNotFoundError:
            return {}
        out = {}
        for n in names:
            if n.startswith("."):
                continue
            try:
                with open(f"{g}/{n}", encoding="utf-8") as f:
                    pos, _, group = f.read().partition("\n")
            except FileNotFoundError:
                continue
            out[group] = int(pos)
        return out

    def _slowest(self, d: str, start: int) -> int | None:
        """The lowest group position (at least `start`), or None with no group."""
        positions = self._groups(d).values()
        return max(min(positions), start) if positions else None

    def _create_stream(self, stream: str, maxlen: int, policy: str) -> None:
        d = self._stream_dir(stream, create=True)
        os.makedirs(f"{d}/{_GROUPS}", mode=0o700, exist_ok=True)
        have = self._bounds_of(d)
        if have is None:
            n = self._scan_len(d)
            if n:
                raise ValueError(
                    f"stream {stream!r} already holds {n} values appended without bounds; "
                    "declare it with create_stream before the first append"
                )
            data = json.dumps({"maxlen": maxlen, "policy": policy}).encode()
            tmp, fd = self._stage(data, memoryview(b""))
            try:
                os.link(tmp, f"{d}/{_BOUNDS}")
            except FileExistsError:  # declared by another process meanwhile
                pass
            finally:
                os.unlink(tmp)
                os.close(fd)
            have = self._bounds_of(d)
        if have != (maxlen, policy):
            raise ValueError(
                f"stream {stream!r} is already declared with maxlen={have[0]}, "
                f"policy={have[1]!r}, not maxlen={maxlen}, policy={policy!r}"
            )
        self._bounded[stream] = have

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
                state = self._read_state(d)
                if state is not None and index < state[1]:
                    raise StreamTrimmed(state[1])
                if not os.path.exists(closed):
                    return None
            raise StreamEnded(stream)

        found = check()
        if found is None:
            self._stream_dir(stream, create=True)
            found = self._wait_for(d, check, deadline)
        return found

    def _stream_len(self, stream: str) -> int:
        d = self._stream_dir(stream, create=False)
        state = self._read_state(d)
        return state[0] if state is not None else self._scan_len(d)

    def _stream_info(self, stream: str) -> dict[str, Any]:
        d = self._stream_dir(stream, create=False)
        bounds = self._bounds_of(d)
        state = self._read_state(d)
        length, start, dropped = state if state is not None else (self._scan_len(d), 0, 0)
        return {
            "length": length,
            "start": start,
            "maxlen": bounds[0] if bounds else None,
            "policy": bounds[1] if bounds else None,
            "dropped": dropped,
            "closed": os.path.exists(f"{d}/{_CLOSED}"),
            "groups": self._groups(d),
        }

    def _set_position(self, stream: str, group: str, index: int) -> None:
        d = self._stream_dir(stream, create=False)
        self._publish_small(f"{index}\n{group}".encode(), f"{d}/{_GROUPS}/{encode_name(group)}")

    def _position(self, stream: str, group: str) -> int | None:
        d = self._stream_dir(stream, create=False)
        try:
            with open(f"{d}/{_GROUPS}/{encode_name(group)}", encoding="utf-8") as f:
                return int(f.read().partition("\n")[0])
        except FileNotFoundError:
            return None

    def _close_stream(self, stream: str) -> None:
        d = self._stream_dir(stream, create=True)
        fd = os.open(os.path.join(d, _CLOSED), os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        try:  # wakes producers waiting for space, which then see the stream closed
            os.close(os.open(f"{d}/{_GROUPS}/{_WAKE}", os.O_WRONLY | os.O_CREAT, 0o600))
        except FileNotFoundError:
            pass

    def _delete_stream(self, stream: str) -> bool:
        d = self._stream_dir(stream, create=False)
        self._next_index.pop(stream, None)
        self._bounded.pop(stream, None)
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
