"""The filesystem store: a directory on a shared or parallel filesystem (NFS, Lustre, GPFS).

`file:///path/to/dir`. Each value is one file holding an encoded entry. A writer fills a private
temporary file and renames it over the key's name, so a reader on any node opens either the old
file or the new one, never a half-written one. A stream is a directory of entries named by their
index; an append claims the next free index with link(2), which fails if the name exists, so
concurrent producers never overwrite each other and nothing acknowledged is lost.

A bounded stream (`create_stream`) also holds its bounds (`bounds`), its head, first retained
index and drop count (`state`, replaced by rename), and one file per consumer group under
`groups/` holding the group's position. Its appends take an flock(2) on `lock`, so the check for
space, the claim of an index and the trim happen as one step; on a shared filesystem that needs
working flock (NFSv4, Lustre mounted with `flock`, GPFS). Unbounded appends take no lock.

The directory must be the user's own and private (see simai.store.private); every file in it is
opened relative to the store's directory descriptors with O_NOFOLLOW, so no symlink is followed.
Change notification does not cross nodes on these filesystems, so waiting polls with a short
backoff. `fsync=True` makes each write durable before it is published, at a cost.
"""

from __future__ import annotations

import contextlib
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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import numpy as np

from simai.store import codec
from simai.store.base import Store, StoreClosedError, StreamEnded, StreamTrimmed
from simai.store.private import private_dir

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
_STATE_FMT = struct.Struct("<qqq")
_UNKNOWN: Any = object()
_MIN_POLL = 0.001
_MAX_POLL = 0.05
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _index_name(index: int) -> str:
    return f"{index:0{_INDEX_WIDTH}d}"


class FileStore(Store):
    """Store in a directory that every process of the run can reach, on any node."""

    def __init__(self, url: str, allow_pickle: bool = False, fsync: bool = False) -> None:
        super().__init__(allow_pickle)
        path = url.split("://", 1)[1]
        if not path:
            raise ValueError(f"file store URL {url!r} names no directory: use file:///path")
        self.root = os.path.abspath(path)
        self.url = f"file://{self.root}"  # absolute: a process elsewhere opens the same store
        self.fsync = fsync
        self._fds: list[int] = []
        try:
            private_dir(self.root)
            self._fd = self._open_dir(self.root)
            for sub in ("values", "streams", "tmp"):
                try:
                    os.mkdir(sub, 0o700, dir_fd=self._fd)
                except FileExistsError:
                    pass
            self._values, self._streams, self._tmp = (
                self._open_dir(sub, self._fd) for sub in ("values", "streams", "tmp")
            )
        except PermissionError:
            self._close_fds()
            raise
        except OSError as e:
            self._close_fds()
            raise ConnectionError(f"cannot open store {url}: {e.strerror} ({self.root})") from None
        self._counter = itertools.count()
        self._next_index: dict[str, int] = {}
        self._bounded: dict[str, tuple[int, str] | None] = {}

    def _open_dir(self, name: str, dir_fd: int | None = None) -> int:
        fd = os.open(name, _DIR, dir_fd=dir_fd)
        self._fds.append(fd)
        return fd

    def _close_fds(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def close(self) -> None:
        if not self._closed:
            self._close_fds()
        super().close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit, modules may be gone
            if self._fds:
                self._close_fds()

    def _gone(self) -> bool:
        """Whether the store's directory was removed (destroyed) under this client."""
        try:
            return os.fstat(self._fd).st_nlink == 0
        except OSError:
            return True

    @contextmanager
    def _alive(self) -> Iterator[None]:
        """Turn the errors of a store whose directory was removed into StoreClosedError."""
        try:
            yield
        except (FileNotFoundError, KeyError):
            if self._gone():
                self._destroyed()
            raise

    def _destroyed(self) -> NoReturn:
        self._closed = "was destroyed"
        raise StoreClosedError(f"store {self.url} was destroyed")

    # --- files --------------------------------------------------------------------------

    def _stage(self, header: bytes, payload: memoryview) -> str:
        """Write an entry to a private temporary file; return its name in tmp/."""
        tmp = f"{os.getpid()}-{next(self._counter)}"
        fd = os.open(tmp, _NEW, 0o600, dir_fd=self._tmp)
        try:
            total = len(header) + payload.nbytes
            done = os.writev(fd, [header, payload])
            while done < total:  # short writes happen for very large buffers
                if done < len(header):
                    done += os.writev(fd, [header[done:], payload])
                else:
                    done += os.write(fd, payload[done - len(header) :])
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink(tmp, self._tmp)
            raise
        os.close(fd)
        return tmp

    def _publish(self, tmp: str, name: str, dir_fd: int) -> None:
        """Rename tmp/`tmp` over `name` in `dir_fd`, replacing what was there."""
        try:
            os.rename(tmp, name, src_dir_fd=self._tmp, dst_dir_fd=dir_fd)
        except BaseException:
            _unlink(tmp, self._tmp)
            raise

    def _read_file(self, name: str, dir_fd: int, view: bool) -> Any:
        try:
            fd = os.open(name, _READ, dir_fd=dir_fd)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise PermissionError(
                f"store {self.url}: {name} is a symlink, and simai follows none in a store"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if view and size:
                return memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ))
            buf = np.empty(size, dtype=np.uint8)
            got = os.readv(fd, [buf]) if size else 0
            while got < size:
                n = os.readv(fd, [buf[got:]])
                if n == 0:
                    break
                got += n
            return buf[:got]
        finally:
            os.close(fd)

    def _read_small(self, name: str, dir_fd: int) -> bytes | None:
        try:
            fd = os.open(name, _READ, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        try:
            return os.read(fd, 1 << 16)
        finally:
            os.close(fd)

    def _exists_in(self, name: str, dir_fd: int) -> bool:
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    # --- values -------------------------------------------------------------------------

    def _write(self, key: str, header: bytes, payload: memoryview) -> None:
        name = encode_name(key)
        with self._alive():
            tmp = self._stage(header, payload)
            if name[0] == _HASHED:
                keyfile = self._stage(key.encode(), memoryview(b""))
                self._publish(keyfile, name + _KEYFILE, self._values)
            self._publish(tmp, name, self._values)

    def _read(self, key: str, view: bool) -> tuple[Any, int]:
        with self._alive():
            try:
                buf = self._read_file(encode_name(key), self._values, view)
            except FileNotFoundError:
                raise KeyError(key) from None
        return self._decode(buf, view)

    def _read_into(self, key: str, out: np.ndarray) -> None:
        with self._alive():
            try:
                buf = self._read_file(encode_name(key), self._values, True)
            except FileNotFoundError:
                raise KeyError(key) from None
        codec.decode_into(buf, out)

    def _exists(self, key: str) -> bool:
        if self._exists_in(encode_name(key), self._values):
            return True
        if self._gone():
            self._destroyed()
        return False

    def _delete(self, key: str) -> bool:
        name = encode_name(key)
        with self._alive():
            try:
                os.unlink(name, dir_fd=self._values)
            except FileNotFoundError:
                if self._gone():
                    raise
                return False
        if name[0] == _HASHED:
            _unlink(name + _KEYFILE, self._values)
        return True

    def _keys(self, prefix: str) -> list[str]:
        out = []
        with self._alive():
            names = os.listdir(self._values)
        for name in names:
            if name.endswith(_KEYFILE):
                continue
            if name.startswith(_HASHED):
                raw = self._read_small(name + _KEYFILE, self._values)
                if raw is None:
                    continue
                key = raw.decode("utf-8")
            else:
                key = decode_name(name)
            if key.startswith(prefix):
                out.append(key)
        return out

    def _wait(self, key: str, deadline: float | None) -> bool:
        name = encode_name(key)
        found = self._poll(lambda: self._exists_in(name, self._values) or None, deadline)
        return bool(found)

    def _poll(self, check: Callable[[], Any], deadline: float | None) -> Any:
        """Call `check` until it returns something other than None; None once the monotonic
        `deadline` passes."""
        pause = _MIN_POLL
        while True:
            found = check()
            if found is not None:
                return found
            if self._gone():
                self._destroyed()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if deadline is not None:
                pause = min(pause, deadline - now)
            time.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)

    # --- streams ------------------------------------------------------------------------

    @contextmanager
    def _stream_dir(self, stream: str, create: bool) -> Iterator[int | None]:
        """A descriptor of the stream's directory (made if `create`), or None if it has none."""
        name = encode_name(stream)
        with self._alive():
            try:
                fd = os.open(name, _DIR, dir_fd=self._streams)
            except FileNotFoundError:
                if not create:
                    fd = -1
                else:
                    try:
                        os.mkdir(name, 0o700, dir_fd=self._streams)
                    except FileExistsError:
                        pass
                    fd = os.open(name, _DIR, dir_fd=self._streams)
        try:
            yield None if fd < 0 else fd
        finally:
            if fd >= 0:
                os.close(fd)

    def _append(
        self, stream: str, header: bytes, payload: memoryview, deadline: float | None
    ) -> int | None:
        with self._stream_dir(stream, create=True) as d:
            assert d is not None
            bounds = self._bounded.get(stream, _UNKNOWN)
            if bounds is _UNKNOWN:
                bounds = self._bounded[stream] = self._bounds_of(d)
            if bounds is not None:
                return self._append_bounded(stream, d, bounds, header, payload, deadline)
            if self._exists_in(_CLOSED, d):
                raise ValueError(f"stream {stream!r} was closed; no more values can be appended")
            tmp = self._stage(header, payload)
            index = self._next_index.get(stream)
            if index is None:
                index = self._scan_len(d)
            try:
                while True:
                    try:
                        os.link(tmp, _index_name(index), src_dir_fd=self._tmp, dst_dir_fd=d)
                        break
                    except FileExistsError:
                        index += 1
            finally:
                _unlink(tmp, self._tmp)
            self._next_index[stream] = index + 1
            return index

    def _append_bounded(
        self,
        stream: str,
        d: int,
        bounds: tuple[int, str],
        header: bytes,
        payload: memoryview,
        deadline: float | None,
    ) -> int | None:
        tmp = self._stage(header, payload)
        lock = -1
        try:
            lock = os.open(_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                           dir_fd=d)  # fmt: skip

            def attempt() -> int | None:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    return self._append_locked(stream, d, bounds, tmp)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

            return self._poll(attempt, deadline)
        finally:
            if lock >= 0:
                os.close(lock)
            _unlink(tmp, self._tmp)

    def _append_locked(self, stream: str, d: int, bounds: tuple[int, str], tmp: str) -> int | None:
        """Claim the next index for `tmp` and trim, holding the stream's lock; None if full."""
        maxlen, policy = bounds
        if self._exists_in(_CLOSED, d):
            raise ValueError(f"stream {stream!r} was closed; no more values can be appended")
        head, start, dropped = self._read_state(d) or (0, 0, 0)
        low = self._slowest(d, start)
        floor = start if low is None else low
        if policy == "block" and head - floor >= maxlen:
            return None
        while True:
            try:
                os.link(tmp, _index_name(head), src_dir_fd=self._tmp, dst_dir_fd=d)
                break
            except FileExistsError:  # left by a producer that died before saving the state
                head += 1
        head += 1
        new_start = head - maxlen
        if policy == "block":
            new_start = min(new_start, floor)
        if new_start > start:
            for i in range(start, new_start):
                _unlink(_index_name(i), d)
            if policy == "drop_oldest":
                dropped += max(0, new_start - max(start, floor))
            start = new_start
        state = _STATE_FMT.pack(head, start, dropped)
        self._publish(self._stage(state, memoryview(b"")), _STATE, d)
        return head - 1

    def _bounds_of(self, d: int) -> tuple[int, str] | None:
        raw = self._read_small(_BOUNDS, d)
        if raw is None:
            return None
        cfg = json.loads(raw)
        return cfg["maxlen"], cfg["policy"]

    def _read_state(self, d: int) -> tuple[int, int, int] | None:
        """(head, first retained index, dropped) of a bounded stream that was appended to."""
        raw = self._read_small(_STATE, d)
        return None if raw is None else _STATE_FMT.unpack(raw)

    @contextmanager
    def _groups_dir(self, d: int, create: bool) -> Iterator[int | None]:
        try:
            g = os.open(_GROUPS, _DIR, dir_fd=d)
        except FileNotFoundError:
            if not create:
                yield None
                return
            try:
                os.mkdir(_GROUPS, 0o700, dir_fd=d)
            except FileExistsError:
                pass
            g = os.open(_GROUPS, _DIR, dir_fd=d)
        try:
            yield g
        finally:
            os.close(g)

    def _groups(self, d: int) -> dict[str, int]:
        out = {}
        with self._groups_dir(d, create=False) as g:
            if g is None:
                return {}
            for n in os.listdir(g):
                raw = self._read_small(n, g)
                if raw is None:
                    continue
                pos, _, group = raw.decode("utf-8").partition("\n")
                out[group] = int(pos)
        return out

    def _slowest(self, d: int, start: int) -> int | None:
        """The lowest group position (at least `start`), or None with no group."""
        positions = self._groups(d).values()
        return max(min(positions), start) if positions else None

    def _create_stream(self, stream: str, maxlen: int, policy: str) -> None:
        with self._stream_dir(stream, create=True) as d:
            assert d is not None
            have = self._bounds_of(d)
            if have is None:
                n = self._scan_len(d)
                if n:
                    raise ValueError(
                        f"stream {stream!r} already holds {n} values appended without bounds; "
                        "declare it with create_stream before the first append"
                    )
                data = json.dumps({"maxlen": maxlen, "policy": policy}).encode()
                tmp = self._stage(data, memoryview(b""))
                try:
                    os.link(tmp, _BOUNDS, src_dir_fd=self._tmp, dst_dir_fd=d)
                except FileExistsError:  # declared by another process meanwhile
                    pass
                finally:
                    _unlink(tmp, self._tmp)
                have = self._bounds_of(d)
            if have != (maxlen, policy):
                assert have is not None
                raise ValueError(
                    f"stream {stream!r} is already declared with maxlen={have[0]}, "
                    f"policy={have[1]!r}, not maxlen={maxlen}, policy={policy!r}"
                )
            self._bounded[stream] = have

    def _scan_len(self, d: int) -> int:
        return 1 + max((int(n) for n in os.listdir(d) if n.isdigit()), default=-1)

    def _stream_read(
        self, stream: str, index: int, deadline: float | None, view: bool
    ) -> tuple[Any, int] | None:
        entry = _index_name(index)

        def check() -> Any:
            with self._stream_dir(stream, create=False) as d:
                if d is None:
                    return None
                for _ in range(2):
                    try:
                        return self._decode(self._read_file(entry, d, view), view)
                    except FileNotFoundError:
                        pass
                    state = self._read_state(d)
                    if state is not None and index < state[1]:
                        raise StreamTrimmed(state[1])
                    if not self._exists_in(_CLOSED, d):
                        return None
                raise StreamEnded(stream)

        return self._poll(check, deadline)

    def _stream_len(self, stream: str) -> int:
        with self._stream_dir(stream, create=False) as d:
            if d is None:
                return 0
            state = self._read_state(d)
            return state[0] if state is not None else self._scan_len(d)

    def _stream_info(self, stream: str) -> dict[str, Any]:
        with self._stream_dir(stream, create=False) as d:
            if d is None:
                bounds, state, groups, closed = None, None, {}, False
            else:
                bounds, state = self._bounds_of(d), self._read_state(d)
                groups, closed = self._groups(d), self._exists_in(_CLOSED, d)
            if state is None:
                state = (0 if d is None else self._scan_len(d), 0, 0)
        length, start, dropped = state
        return {
            "length": length,
            "start": start,
            "maxlen": bounds[0] if bounds else None,
            "policy": bounds[1] if bounds else None,
            "dropped": dropped,
            "closed": closed,
            "groups": groups,
        }

    def _set_position(self, stream: str, group: str, index: int) -> None:
        with self._stream_dir(stream, create=True) as d, self._groups_dir(d, create=True) as g:
            tmp = self._stage(f"{index}\n{group}".encode(), memoryview(b""))
            self._publish(tmp, encode_name(group), g)

    def _position(self, stream: str, group: str) -> int | None:
        with self._stream_dir(stream, create=False) as d:
            if d is None:
                return None
            with self._groups_dir(d, create=False) as g:
                raw = None if g is None else self._read_small(encode_name(group), g)
        return None if raw is None else int(raw.decode("utf-8").partition("\n")[0])

    def _close_stream(self, stream: str) -> None:
        with self._stream_dir(stream, create=True) as d:
            try:
                os.close(os.open(_CLOSED, _NEW, 0o600, dir_fd=d))
            except FileExistsError:
                pass

    def _delete_stream(self, stream: str) -> bool:
        self._next_index.pop(stream, None)
        self._bounded.pop(stream, None)
        with self._alive():
            try:
                shutil.rmtree(encode_name(stream), dir_fd=self._streams)
            except FileNotFoundError:
                return False
        return True

    def destroy(self) -> None:
        """Delete the whole store directory and everything in it."""
        self.close()
        self._closed = "was destroyed"
        shutil.rmtree(self.root, ignore_errors=True)
