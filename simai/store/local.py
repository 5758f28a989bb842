"""The node-local embedded store: an LMDB environment in shared memory, no server.

Every process on the node that opens the same URL sees the same data. `local://NAME` lives in
/dev/shm/simai-UID/NAME ($SIMAI_SHM_DIR instead of /dev/shm), in a directory private to the
user; `local:///some/dir` names the directory itself, for example a path that must survive
the job.

LMDB gives what a store shared by many processes must never get wrong: a put is one ACID
transaction (a reader sees the old value or the new one, a writer killed mid-put leaves the old
one), readers never block and never take a lock, and a read transaction is a snapshot whose
pages are never reused while it lives, so a zero-copy view stays valid across overwrites and
deletes. Writers take turns on LMDB's write lock (a robust mutex: one that a killed writer
held is recovered). The environment is mapped once per process with `writemap`, so a put of a
large value is one copy into pages LMDB recycles and a get is one copy out of the mapping; the
design note docs/design/node-local-store.md has the measurements behind the choice.

Layout: database `values` maps b"v" + KEY to an entry (the codec's header and payload, or the
header alone when the payload is over INLINE_MAX bytes, which then lives under the same key in
`payloads`), and b"e" + STREAM + b"\\0" + INDEX (8 bytes, big-endian) to a stream's entries the
same way. Database `meta` holds each stream's state (b"s" + STREAM), its consumer groups'
positions (b"g" + STREAM + b"\\0" + GROUP) and the full names of keys longer than 240 bytes,
which are stored under a hash (b"n" + HASHED). The file `notify` holds shared words:
a sequence number writers bump after a commit that someone waits for (waiters sleep on it with
futex(2)), the destroyed flag, the waiters, and the bookkeeping that keeps the data file's
pages allocated ahead of LMDB (fallocate(2)), so a full /dev/shm is an error, never a SIGBUS.
A stream's state record ends with its full name, which `save` matches prefixes against.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import functools
import hashlib
import mmap
import os
import platform
import shutil
import stat
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import lmdb
import numpy as np
from xxhash import xxh3_64_intdigest

from simai.store import codec
from simai.store.base import Store, StoreClosedError, StreamEnded, StreamTrimmed
from simai.store.private import check_private, owner_name, private_dir, private_file

INLINE_MAX = 16 * 1024
"""Payloads up to this size are stored in one record with their header; larger ones apart, so
a put copies them once, straight from the caller's array into the mapping."""

_NAME_MAX = 240
_HASHED = 0xFF  # never a byte of UTF-8
_VALUE, _ENTRY, _STATE, _GROUP, _LONG = b"v", b"e", b"s", b"g", b"n"
_STATE_FMT = struct.Struct("<qqqqBB")  # length, start, dropped, maxlen (0: none), policy, closed
_POS = struct.Struct("<q")
_NBYTES = struct.Struct("<Q")
_MAX_HEADER = codec.header_size(codec.MAX_NDIM)
_POLICY_CODES = {"block": 1, "drop_oldest": 2}
_POLICY_NAMES = {code: name for name, code in _POLICY_CODES.items()}
_NO_STATE = (0, 0, 0, 0, 0, 0)
_MAX_READERS = 4096
_SLACK = 64 << 20
_GRAIN = 2 << 20
_KEEP = 1 << 20
_TXN_PAGES = 32
_WAIT_SLICE = 1.0
_NOTIFY_BYTES = 8192
# notify page, 32-bit words
_SEQ, _DESTROYED, _WAITERS, _SLOTS = 0, 1, 2, 3
_NSLOTS = 4096 // 4 - _SLOTS
# notify page, 64-bit words from byte 4096
_RESERVED, _END, _PENDING = 0, 1, 2

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "ppc64le": 221, "riscv64": 98}.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_INT_MAX = 0x7FFFFFFF

T = TypeVar("T")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _futex_wait(addr: int, expected: int, seconds: float) -> None:
    """Sleep while the 32-bit word at `addr` holds `expected`, at most `seconds`."""
    if _SYS_FUTEX is None:
        time.sleep(min(seconds, 0.005))
        return
    ts = _Timespec(int(seconds), int(seconds % 1 * 1e9))
    _libc.syscall(
        ctypes.c_long(_SYS_FUTEX), ctypes.c_long(addr), ctypes.c_long(0),
        ctypes.c_long(expected), ctypes.byref(ts), None, ctypes.c_long(0),
    )  # fmt: skip


def _futex_wake(addr: int) -> None:
    if _SYS_FUTEX is not None:
        _libc.syscall(
            ctypes.c_long(_SYS_FUTEX), ctypes.c_long(addr), ctypes.c_long(1),
            ctypes.c_long(_INT_MAX), None, None, ctypes.c_long(0),
        )  # fmt: skip


def local_root(url: str) -> str:
    """The directory a local:// URL names (a name's per-user parent is made private here)."""
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        return rest
    if not rest or "/" in rest or rest in (".", ".."):
        raise ValueError(f"local store URL {url!r}: use local://NAME or local:///absolute/dir")
    base = os.path.join(os.environ.get("SIMAI_SHM_DIR", "/dev/shm"), f"simai-{os.geteuid()}")
    return os.path.join(private_dir(base), rest)


@functools.lru_cache(maxsize=65536)
def _name(name: str) -> bytes:
    """A key or stream name as LMDB holds it: its UTF-8, or a hash when that is too long."""
    raw = name.encode()
    if len(raw) <= _NAME_MAX:
        return raw
    return bytes([_HASHED]) + hashlib.blake2b(raw, digest_size=20).digest()


@functools.lru_cache(maxsize=65536)
def _value_key(key: str) -> bytes:
    return _VALUE + _name(key)


def _entry_key(stream: bytes, index: int) -> bytes:
    return b"%s%s\0%s" % (_ENTRY, stream, index.to_bytes(8, "big"))


def _split(record: Any) -> bool:
    """Whether an entry's payload lives apart from its header record (in `payloads`): such a
    record is a header alone, at most 320 bytes, announcing over INLINE_MAX bytes."""
    return 24 <= len(record) <= _MAX_HEADER and _NBYTES.unpack_from(record, 16)[0] > INLINE_MAX


# --- one process's handle on a store's files ---------------------------------------------------

_generation = 0
_opened: weakref.WeakValueDictionary[tuple[int, int], _Env] = weakref.WeakValueDictionary()
_opening = threading.Lock()
_KEEP_OPEN = 4
_recent: collections.deque[_Env] = collections.deque(maxlen=_KEEP_OPEN)
"""The environments this process used last stay open (mapped, with their page tables) when no
client holds them, so a process that opens the run's store for every task does not map it
anew each time."""


def _after_fork_in_child() -> None:
    """LMDB handles must not cross a fork: the child opens its own, and never closes (nor lets
    the garbage collector close) the parent's, whose reader slots are the parent's."""
    global _generation, _opening
    _generation += 1
    for e in list(_opened.values()):
        _keep_forever(e)
    _opened.clear()
    _recent.clear()
    _opening = threading.Lock()


def _keep_forever(obj: Any) -> None:
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Env:
    """The LMDB environment, its databases and the notify page, once per process and store."""

    def __init__(self, root: str) -> None:
        for name in ("data.mdb", "lock.mdb", "notify"):
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise PermissionError(
                    f"{root}/{name} is not a regular file of yours (owner "
                    f"{owner_name(st.st_uid)}); simai will not open this store"
                )
        vfs = os.statvfs(root)
        map_size = max(1 << 30, -(-vfs.f_blocks * vfs.f_frsize // (1 << 30)) << 30)
        self.gen = _generation
        self.root = root
        self.env = lmdb.open(  # lib_version 0: the LMDB 0.9 format, whatever the environment
            root, map_size=map_size, subdir=True, writemap=True, sync=False, metasync=False,
            readahead=False, meminit=False, max_readers=_MAX_READERS, max_dbs=3, mode=0o600,
            lib_version=0,
        )  # fmt: skip
        self.values = self.env.open_db(b"values")
        self.payloads = self.env.open_db(b"payloads")
        self.meta = self.env.open_db(b"meta")
        self.psize = self.env.stat()["psize"]
        self.txn_bytes = _TXN_PAGES * self.psize  # pages a transaction touches beyond its data
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(os.path.join(root, "notify"), flags | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, _NOTIFY_BYTES)  # its pages exist: a full /dev/shm fails here
            self.page = mmap.mmap(fd, _NOTIFY_BYTES)
        finally:
            os.close(fd)
        self.words = memoryview(self.page).cast("I")
        self.big = memoryview(self.page)[4096:].cast("Q")
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.page))
        self.data_fd = os.open(os.path.join(root, "data.mdb"), flags)
        self.env.reader_check()

    def __del__(self) -> None:
        fd = getattr(self, "data_fd", -1)
        if fd >= 0 and self.gen == _generation:
            os.close(fd)


def _open(root: str) -> _Env:
    st = os.lstat(root)
    ident = (st.st_dev, st.st_ino)
    with _opening:
        for old in [x for x in _recent if x.words[_DESTROYED]]:  # let go of destroyed stores
            _recent.remove(old)
        e = _opened.get(ident)
        if e is None or e.gen != _generation or e.words[_DESTROYED]:
            e = _opened[ident] = _Env(root)
        if not _recent or _recent[-1] is not e:
            if e in _recent:
                _recent.remove(e)
            _recent.append(e)
        return e


class _Pinned:
    """The base of a zero-copy view: it keeps the view's read transaction (a snapshot whose
    pages LMDB does not reuse) open for as long as any array made from it lives."""

    __slots__ = ("__array_interface__", "_txn", "_pid")

    def __init__(self, txn: Any, head: codec.Header, payload: Any) -> None:
        address = np.frombuffer(payload, np.uint8).__array_interface__["data"][0]
        self.__array_interface__ = {
            "shape": head.shape,
            "typestr": head.dtype,
            "data": (address, True),
            "version": 3,
        }
        self._txn, self._pid = txn, os.getpid()

    def __del__(self) -> None:
        if os.getpid() != self._pid:  # inherited through fork: the slot is the parent's
            _keep_forever(self._txn)


class LocalStore(Store):
    """Node-local store in shared memory; `get(key, view=True)` maps the value without copying."""

    _seals = True

    def __init__(self, url: str = "local://default", allow_pickle: bool = False) -> None:
        super().__init__(allow_pickle)
        self.url = url
        root = local_root(url)
        try:
            self.root = private_dir(root)
            self._e = _open(self.root)
        except (lmdb.Error, OSError) as e:
            if isinstance(e, PermissionError):
                raise
            raise ConnectionError(f"cannot open store {url}: {e} ({root})") from None

    # --- the environment ----------------------------------------------------------------

    def _env(self) -> _Env:
        e = self._e
        if e.gen != _generation or e.words[_DESTROYED]:
            if e.words[_DESTROYED]:
                self._closed = "was destroyed"
                self._e = None  # type: ignore[assignment]
                raise StoreClosedError(f"store {self.url} was destroyed")
            e = self._e = _open(self.root)  # after a fork
        return e

    def _read_txn(self, e: _Env, buffers: bool = True) -> Any:
        try:
            return e.env.begin(buffers=buffers)
        except lmdb.ReadersFullError:
            e.env.reader_check()
            try:
                return e.env.begin(buffers=buffers)
            except lmdb.ReadersFullError:
                raise RuntimeError(
                    f"store {self.url}: {_MAX_READERS} reads are open at once; zero-copy views "
                    "hold one each while they live: drop views you no longer need"
                ) from None
        except lmdb.MapResizedError:
            e.env.set_mapsize(0)
            return e.env.begin(buffers=buffers)

    def _write_txn(self, e: _Env) -> Any:
        try:
            return e.env.begin(write=True, buffers=True)
        except lmdb.MapResizedError:
            e.env.set_mapsize(0)
            return e.env.begin(write=True, buffers=True)

    def _commit(self, e: _Env, txn: Any) -> None:
        """Commit, then wake whoever waits for a change (the count is read under the lock)."""
        if e.words[_WAITERS]:
            seq = txn.id() & 0xFFFFFFFF
            txn.commit()
            e.words[_SEQ] = seq
            _futex_wake(e.addr)
        else:
            txn.commit()

    def _transact(self, work: Callable[[Any, _Env], T], nbytes: int = 0, entries: int = 1) -> T:
        """Run `work(txn, env)`, which writes `entries` entries of `nbytes` bytes in all, in one
        write transaction and commit it; abort on any error."""
        e = self._env()
        txn = self._write_txn(e)
        try:
            self._reserve(e, nbytes, entries)
            result = work(txn, e)
            self._commit(e, txn)
        except BaseException as exc:
            txn.abort()
            if isinstance(exc, lmdb.MapFullError):
                raise self._full(e) from None
            raise
        return result

    def _reserve(self, e: _Env, nbytes: int, entries: int = 1) -> None:
        """Keep the data file's pages allocated ahead of what LMDB may write in this
        transaction of `entries` entries and `nbytes` bytes (called holding the write lock), so
        a full /dev/shm is ENOSPC here instead of SIGBUS when LMDB writes through its mapping.
        Allocation runs _SLACK ahead of LMDB's last page; near a full filesystem, just enough,
        and writes leave _KEEP of it to transactions that only delete."""
        big = e.big
        need = nbytes + e.txn_bytes + 2 * entries * e.psize
        pending = big[_PENDING] + need
        if big[_END] + pending <= big[_RESERVED]:
            big[_PENDING] = pending
            return
        end = (e.env.info()["last_pgno"] + 1) * e.psize
        if end > big[_END]:
            e.env.reader_check()  # the store grows: let go of dead processes' snapshots
        have = big[_RESERVED]
        least = end + need + (_KEEP if nbytes else 0)  # a full store can still delete
        ahead = -(-(least + _SLACK) // _GRAIN) * _GRAIN
        for target in (ahead, -(-least // e.psize) * e.psize):
            if target <= have:
                break
            try:
                os.posix_fallocate(e.data_fd, have, target - have)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                continue
            big[_RESERVED] = target
            break
        else:
            raise self._full(e)
        big[_END] = end
        big[_PENDING] = need  # what this transaction may take of the pages reserved

    def _full(self, e: _Env) -> OSError:
        vfs = os.statvfs(e.root)
        return OSError(
            errno.ENOSPC,
            f"store {self.url} is full: {vfs.f_bavail * vfs.f_frsize / 2**20:.0f} MiB left "
            f"on the filesystem of {e.root}; delete values or streams, or destroy old stores",
        )

    # --- entries --------------------------------------------------------------------------

    def _put_entry(self, txn: Any, e: _Env, k: bytes, header: bytes, payload: memoryview) -> None:
        """Write an entry; the checksum of a large payload is computed here while LMDB copies
        it (see Store._seals), then sealed into its header."""
        n = payload.nbytes
        if n <= INLINE_MAX:
            old = txn.replace(k, header + payload, e.values)
            if old is not None and _split(old):
                txn.delete(k, db=e.payloads)
            return
        if n >= codec.PARALLEL_MIN:
            seed = codec.header_seed(header)
            digest, _ = codec.hash_while(payload, seed, lambda: txn.put(k, payload, db=e.payloads))
            header = codec.seal(header, digest)
        else:
            txn.put(k, payload, db=e.payloads)
        txn.put(k, header, db=e.values)

    def _pop_entry(self, txn: Any, e: _Env, k: bytes) -> bool:
        old = txn.pop(k, db=e.values)
        if old is None:
            return False
        if _split(old):
            txn.delete(k, db=e.payloads)
        return True

    def _payload(self, txn: Any, e: _Env, k: bytes, record: Any) -> tuple[codec.Header, int, Any]:
        """The header of the entry `record` at `k`, its checksum, and its payload."""
        head, checksum = codec.parse_header(record)
        if len(record) == head.offset + head.nbytes:
            return head, checksum, record[head.offset :]
        payload = txn.get(k, db=e.payloads) if len(record) == head.offset else None
        if payload is None or len(payload) != head.nbytes:
            raise _truncated(head, payload)
        return head, checksum, payload

    def _value(self, txn: Any, e: _Env, k: bytes, record: Any, view: bool) -> tuple[Any, int, bool]:
        """(value, entry size, whether the value pins `txn`) of the record at `k`."""
        head, checksum, payload = self._payload(txn, e, k, record)
        n = head.nbytes
        if head.kind != codec.ARRAY:
            value = codec.decode_payload(head, checksum, payload, True, self.allow_pickle)
            return value, head.offset + n, False
        if not n:
            out = codec.new_array(head)
            out.flags.writeable = not view
            return out, head.offset, False
        if view:
            codec.verify(head, checksum, payload)
            return np.asarray(_Pinned(txn, head, payload)), head.offset + n, True
        if n <= INLINE_MAX:  # one copy, into memory the array then owns
            copy = bytearray(payload)
            codec.check(checksum, xxh3_64_intdigest(copy, head.seed))
            out = np.frombuffer(copy, head.dt)
            return (
                (out if len(head.shape) == 1 else out.reshape(head.shape)),
                head.offset + n,
                False,
            )
        out = codec.new_array(head)  # numpy's allocator: huge pages for large arrays
        self._copy_out(head, checksum, payload, out)
        return out, head.offset + n, False

    def _copy_out(self, head: codec.Header, checksum: int, payload: Any, out: np.ndarray) -> None:
        """Copy a payload out of the mapping into `out`, verifying it as it goes."""
        flat = out.reshape(-1).view(np.uint8)
        src = np.frombuffer(payload, np.uint8)
        digest, _ = codec.hash_while(payload, head.seed, lambda: np.copyto(flat, src))
        codec.check(checksum, digest)

    # --- values -----------------------------------------------------------------------------

    def _write(self, key: str, header: bytes, payload: memoryview) -> None:
        k = _value_key(key)

        def work(txn: Any, e: _Env) -> None:
            self._put_entry(txn, e, k, header, payload)
            if k[1] == _HASHED:
                txn.put(_LONG + k[1:], key.encode(), db=e.meta)

        self._transact(work, len(header) + payload.nbytes)

    def _write_many(self, entries: list[tuple[str, bytes, memoryview]]) -> None:
        def work(txn: Any, e: _Env) -> None:
            for key, header, payload in entries:
                k = _value_key(key)
                self._put_entry(txn, e, k, header, payload)
                if k[1] == _HASHED:
                    txn.put(_LONG + k[1:], key.encode(), db=e.meta)

        nbytes = sum(len(h) + p.nbytes for _, h, p in entries)
        self._transact(work, nbytes, len(entries))

    def _read(self, key: str, view: bool) -> tuple[Any, int]:
        e = self._e
        if e.gen != _generation or e.words[_DESTROYED]:
            e = self._env()
        k = _value_key(key)
        txn = self._read_txn(e)
        pinned = False
        try:
            record = txn.get(k, None, e.values)
            if record is None:
                raise KeyError(key)
            value, size, pinned = self._value(txn, e, k, record, view)
            return value, size
        finally:
            if not pinned:
                txn.abort()

    def _read_many(self, keys: list[str], view: bool) -> list[tuple[Any, int]]:
        e = self._env()
        txn = self._read_txn(e)
        pinned = False
        try:
            out = []
            for key in keys:
                k = _value_key(key)
                record = txn.get(k, db=e.values)
                if record is None:
                    raise KeyError(key)
                value, size, pins = self._value(txn, e, k, record, view)
                pinned = pinned or pins
                out.append((value, size))
            return out
        finally:
            if not pinned:
                txn.abort()

    def _read_into(self, key: str, out: np.ndarray) -> None:
        e = self._env()
        k = _value_key(key)
        txn = self._read_txn(e)
        try:
            record = txn.get(k, db=e.values)
            if record is None:
                raise KeyError(key)
            head, checksum, payload = self._payload(txn, e, k, record)
            codec.check_into(head, head.offset + head.nbytes, out)
            self._copy_out(head, checksum, payload, out)
        finally:
            txn.abort()

    def _exists(self, key: str) -> bool:
        e = self._env()
        txn = self._read_txn(e)
        try:
            return txn.get(_value_key(key), db=e.values) is not None
        finally:
            txn.abort()

    def _delete(self, key: str) -> bool:
        k = _value_key(key)

        def work(txn: Any, e: _Env) -> bool:
            if k[1] == _HASHED:
                txn.delete(_LONG + k[1:], db=e.meta)
            return self._pop_entry(txn, e, k)

        return self._transact(work)

    def _keys(self, prefix: str) -> list[str]:
        e = self._env()
        raw = prefix.encode()
        txn = self._read_txn(e, buffers=False)
        try:
            out = []
            if len(raw) <= _NAME_MAX:
                start = _VALUE + raw
                cursor = txn.cursor(db=e.values)
                if cursor.set_range(start):
                    for k in cursor.iternext(values=False):
                        if not k.startswith(start):
                            break
                        if k[1] != _HASHED:
                            out.append(k[1:].decode())
            cursor = txn.cursor(db=e.meta)
            if cursor.set_range(_LONG):
                for k, full in cursor:
                    if not k.startswith(_LONG):
                        break
                    if full.startswith(raw):
                        out.append(full.decode())
            return out
        finally:
            txn.abort()

    def _wait(self, key: str, deadline: float | None) -> bool:
        return bool(self._wait_until(lambda: self._exists(key) or None, deadline))

    # --- waiting ------------------------------------------------------------------------------

    def _wait_until(self, check: Callable[[], T | None], deadline: float | None) -> T | None:
        """Call `check` until it returns something other than None, sleeping between calls
        until a writer commits; None once the monotonic `deadline` passes."""
        found = check()
        if found is not None:
            return found
        e = self._env()
        slot = self._register(e)
        try:
            while True:
                seq = e.words[_SEQ]
                found = check()
                if found is not None:
                    return found
                if e.words[_DESTROYED]:
                    self._env()
                pause = _WAIT_SLICE
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        return None
                _futex_wait(e.addr, seq, pause)
        finally:
            self._unregister(e, slot)

    def _register(self, e: _Env) -> int:
        """Count this process among the waiters (under the write lock, so writers see it);
        clears slots of waiters that died. Returns the slot, or -1 if all are taken."""
        txn = self._write_txn(e)
        try:
            words = e.words
            for slot in range(_SLOTS, _SLOTS + _NSLOTS):
                pid = words[slot]
                if pid and not _alive(pid):
                    words[_WAITERS] -= 1
                    pid = 0
                if not pid:
                    words[slot] = os.getpid()
                    break
            else:
                slot = -1
            words[_WAITERS] += 1
            return slot
        finally:
            txn.abort()

    def _unregister(self, e: _Env, slot: int) -> None:
        txn = self._write_txn(e)
        try:
            if slot >= 0:
                e.words[slot] = 0
            e.words[_WAITERS] -= 1
        finally:
            txn.abort()

    # --- streams ------------------------------------------------------------------------------

    def _state(self, txn: Any, e: _Env, s: bytes) -> tuple[int, int, int, int, int, int] | None:
        record = txn.get(_STATE + s, db=e.meta)
        return None if record is None else _STATE_FMT.unpack_from(record)

    def _put_state(self, txn: Any, e: _Env, stream: str, *state: int) -> None:
        """Write a stream's state; its full name follows, for `save` to match prefixes."""
        txn.put(_STATE + _name(stream), _STATE_FMT.pack(*state) + stream.encode(), db=e.meta)

    def _groups(self, txn: Any, e: _Env, s: bytes) -> dict[str, int]:
        prefix = _GROUP + s + b"\0"
        cursor = txn.cursor(db=e.meta)
        out = {}
        if cursor.set_range(prefix):
            for k, v in cursor:
                if not bytes(k).startswith(prefix):
                    break
                (pos,) = _POS.unpack_from(v)
                out[bytes(v[_POS.size :]).decode()] = pos
        return out

    def _create_stream(self, stream: str, maxlen: int, policy: str) -> None:
        s = _name(stream)

        def work(txn: Any, e: _Env) -> None:
            state = self._state(txn, e, s)
            if state is None or (not state[3] and not state[0]):
                length, start, dropped, _, _, closed = state or _NO_STATE
                policy_code = _POLICY_CODES[policy]
                self._put_state(txn, e, stream, length, start, dropped, maxlen, policy_code, closed)
                return
            if not state[3]:
                raise ValueError(
                    f"stream {stream!r} already holds {state[0]} values appended without "
                    "bounds; declare it with create_stream before the first append"
                )
            have = (state[3], _POLICY_NAMES[state[4]])
            if have != (maxlen, policy):
                raise ValueError(
                    f"stream {stream!r} is already declared with maxlen={have[0]}, "
                    f"policy={have[1]!r}, not maxlen={maxlen}, policy={policy!r}"
                )

        self._transact(work)

    def _append(
        self, stream: str, header: bytes, payload: memoryview, deadline: float | None
    ) -> int | None:
        s = _name(stream)

        def work(txn: Any, e: _Env) -> int | None:
            length, start, dropped, maxlen, policy, closed = self._state(txn, e, s) or _NO_STATE
            if closed:
                raise ValueError(f"stream {stream!r} was closed; no more values can be appended")
            floor = start
            if maxlen:
                positions = self._groups(txn, e, s).values()
                if positions:
                    floor = max(min(positions), start)
                if policy == 1 and length - floor >= maxlen:
                    return None
            self._put_entry(txn, e, _entry_key(s, length), header, payload)
            length += 1
            if maxlen:
                new_start = length - maxlen
                if policy == 1:
                    new_start = min(new_start, floor)
                if new_start > start:
                    for i in range(start, new_start):
                        self._pop_entry(txn, e, _entry_key(s, i))
                    if policy == 2:
                        dropped += max(0, new_start - max(start, floor))
                    start = new_start
            self._put_state(txn, e, stream, length, start, dropped, maxlen, policy, 0)
            return length - 1

        nbytes = len(header) + payload.nbytes

        def attempt() -> int | None:
            return self._transact(work, nbytes)

        return self._wait_until(attempt, deadline)

    def _stream_read(
        self, stream: str, index: int, deadline: float | None, view: bool
    ) -> tuple[Any, int] | None:
        s = _name(stream)
        k = _entry_key(s, index)

        def check() -> tuple[Any, int] | None:
            e = self._env()
            txn = self._read_txn(e)
            pinned = False
            try:
                record = txn.get(k, db=e.values)
                if record is not None:
                    value, size, pinned = self._value(txn, e, k, record, view)
                    return value, size
                length, start, _, _, _, closed = self._state(txn, e, s) or _NO_STATE
                if index < start:
                    raise StreamTrimmed(start)
                if closed and index >= length:
                    raise StreamEnded(stream)
                return None
            finally:
                if not pinned:
                    txn.abort()

        return self._wait_until(check, deadline)

    def _read_meta(self, work: Callable[[Any, _Env], T]) -> T:
        e = self._env()
        txn = self._read_txn(e)
        try:
            return work(txn, e)
        finally:
            txn.abort()

    def _stream_len(self, stream: str) -> int:
        state = self._read_meta(lambda txn, e: self._state(txn, e, _name(stream)))
        return 0 if state is None else state[0]

    def _stream_info(self, stream: str) -> dict[str, Any]:
        s = _name(stream)

        def work(txn: Any, e: _Env) -> dict[str, Any]:
            length, start, dropped, maxlen, policy, closed = self._state(txn, e, s) or _NO_STATE
            return {
                "length": length,
                "start": start,
                "maxlen": maxlen or None,
                "policy": _POLICY_NAMES.get(policy),
                "dropped": dropped,
                "closed": bool(closed),
                "groups": self._groups(txn, e, s),
            }

        return self._read_meta(work)

    def _group_key(self, stream: str, group: str) -> bytes:
        return _GROUP + _name(stream) + b"\0" + _name(group)

    def _set_position(self, stream: str, group: str, index: int) -> None:
        record = _POS.pack(index) + group.encode()
        k = self._group_key(stream, group)
        self._transact(lambda txn, e: txn.put(k, record, db=e.meta))

    def _position(self, stream: str, group: str) -> int | None:
        k = self._group_key(stream, group)
        record = self._read_meta(lambda txn, e: txn.get(k, db=e.meta))
        return None if record is None else _POS.unpack_from(record)[0]

    def _close_stream(self, stream: str) -> None:
        s = _name(stream)

        def work(txn: Any, e: _Env) -> None:
            length, start, dropped, maxlen, policy, _ = self._state(txn, e, s) or _NO_STATE
            self._put_state(txn, e, stream, length, start, dropped, maxlen, policy, 1)

        self._transact(work)

    def _delete_stream(self, stream: str) -> bool:
        s = _name(stream)

        def work(txn: Any, e: _Env) -> bool:
            existed = txn.delete(_STATE + s, db=e.meta)
            for db, prefix in (
                (e.values, _ENTRY + s + b"\0"),
                (e.payloads, _ENTRY + s + b"\0"),
                (e.meta, _GROUP + s + b"\0"),
            ):
                cursor = txn.cursor(db=db)
                if not cursor.set_range(prefix):
                    continue
                while bytes(cursor.key()).startswith(prefix):
                    existed = True
                    if not cursor.delete():
                        break
            return existed

        return self._transact(work)

    # --- saving -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], prefixes: Sequence[str] | None = None) -> int:
        """Copy the store into the private directory `path`: one file, `data.mdb`, that holds
        only live data (a store in /dev/shm kept on disk past the node's or the job's end).
        With `prefixes`, only the values and streams whose names start with one of them.
        Returns the bytes written; `LocalStore.restore(path, url)` brings the copy back."""
        if self._closed:
            self._raise_closed()
        if prefixes is not None:
            if isinstance(prefixes, str) or not all(isinstance(p, str) for p in prefixes):
                raise TypeError(f"prefixes must be a list of str, not {prefixes!r}")
        e = self._env()
        path = private_dir(path)
        for name in ("data.mdb", "lock.mdb"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        if prefixes is None:
            e.env.copy(path, compact=True)
        else:
            part = LocalStore(f"local://{self.root}.save-{os.getpid()}")
            try:
                self._copy_into(part, list(prefixes))
                part._env().env.copy(path, compact=True)
            finally:
                part.destroy()
        target = os.path.join(path, "data.mdb")
        private_file(target)
        return os.path.getsize(target)

    @classmethod
    def restore(cls, path: str | os.PathLike[str], url: str = "local://default") -> LocalStore:
        """A new store at `url` (a local:// URL where no store exists), holding what `save`
        wrote to `path`."""
        if not isinstance(url, str) or not url.startswith("local://"):
            raise ValueError(f"restore makes a node-local store: use a local:// URL, not {url!r}")
        source = os.path.join(os.fspath(path), "data.mdb")
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{path} holds no saved store (no data.mdb)")
        root = local_root(url)
        if os.path.lexists(root):
            raise FileExistsError(
                f"store {url} exists ({root}): destroy it first if its contents may go"
            )
        private_dir(root)
        shutil.copyfile(source, os.path.join(root, "data.mdb"))
        private_file(os.path.join(root, "data.mdb"))
        return cls(url)

    def _copy_into(self, dst: LocalStore, prefixes: list[str]) -> None:
        """Copy the records of values and streams under `prefixes` into `dst`, from one
        snapshot, committing every few thousand records."""
        e, d = self._env(), dst._env()
        txn = self._read_txn(e)
        out = [dst._write_txn(d), 0]

        def put(db: str, k: Any, v: Any) -> None:
            dst._reserve(d, len(v))
            out[0].put(k, v, db=getattr(d, db))
            out[1] += 1
            if out[1] % 5000 == 0:
                dst._commit(d, out[0])
                out[0] = dst._write_txn(d)

        def copy_range(db: str, start: bytes) -> None:
            cursor = txn.cursor(db=getattr(e, db))
            if cursor.set_range(start):
                for k, v in cursor:
                    if not bytes(k).startswith(start):
                        break
                    put(db, k, v)

        def copy_value(k: bytes) -> None:
            record = txn.get(k, db=e.values)
            if record is not None:
                put("values", k, record)
                if _split(record):
                    put("payloads", k, txn.get(k, db=e.payloads))

        try:
            meta = txn.cursor(db=e.meta)
            for raw in {p.encode() for p in prefixes}:
                if len(raw) <= _NAME_MAX:
                    cursor = txn.cursor(db=e.values)
                    if cursor.set_range(_VALUE + raw):
                        for k in cursor.iternext(values=False):
                            k = bytes(k)
                            if not k.startswith(_VALUE + raw):
                                break
                            if k[1] != _HASHED:
                                copy_value(k)
            for k, v in meta.iternext() if meta.first() else ():
                k, v = bytes(k), bytes(v)
                if k[:1] == _LONG and any(v.startswith(p.encode()) for p in prefixes):
                    put("meta", k, v)
                    copy_value(_VALUE + k[1:])
                elif k[:1] == _STATE:
                    name = v[_STATE_FMT.size :].decode()
                    if any(name.startswith(p) for p in prefixes):
                        put("meta", k, v)
                        copy_range("values", _ENTRY + k[1:] + b"\0")
                        copy_range("payloads", _ENTRY + k[1:] + b"\0")
                        copy_range("meta", _GROUP + k[1:] + b"\0")
            dst._commit(d, out[0])
        except BaseException:
            out[0].abort()
            raise
        finally:
            txn.abort()

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of this client's handle; the mapping goes once no client or view needs it."""
        super().close()
        self._e = None  # type: ignore[assignment]

    def destroy(self) -> None:
        """Delete the store and everything in it, and give its memory back once no view and no
        client in any process holds it. Every process that has it open gets StoreClosedError
        from then on; views already made stay valid while they live."""
        e = self._e
        if e is None and os.path.isdir(self.root):
            e = _open(self.root)
        if e is not None and e.gen == _generation and not e.words[_DESTROYED]:
            e.words[_DESTROYED] = 1
            e.words[_SEQ] = (e.words[_SEQ] + 1) & 0xFFFFFFFF
            _futex_wake(e.addr)
        with _opening:
            for ident, opened in list(_opened.items()):
                if opened is e:
                    del _opened[ident]
            if e in _recent:
                _recent.remove(e)
        self._closed = "was destroyed"
        self._e = None  # type: ignore[assignment]
        try:
            check_private(self.root)
        except FileNotFoundError:
            return
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _truncated(head: codec.Header, payload: Any) -> codec.CorruptValueError:
    found = "no payload" if payload is None else f"{len(payload)} payload bytes"
    return codec.CorruptValueError(
        f"entry is truncated: its header announces {head.nbytes} payload bytes, found {found}"
    )
