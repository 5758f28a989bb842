"""The `dragon://` store: a Dragon distributed dictionary (DDict), for programs run under Dragon.

    dragon://DESCRIPTOR     the serialized descriptor of a DDict (`DDict.serialize()`)

Only a process of a Dragon run can reach a DDict: start the program with `dragon script.py`
(`dragon -s script.py` on a single node). `DragonStore.create()` makes a DDict and returns its
store; `Workflow(store="dragon")` does that for a run and hands the URL to every process it
starts through $SIMAI_STORE. Any process of the run attaches with the URL alone, including a
plain `subprocess` child, since it inherits the runtime's environment.

Values are stored as the codec's header and payload, written raw by a value "pickler" of our
own (DDict pickles by default): the store never unpickles, and every read is verified. Keys are
written as their UTF-8 bytes. Layout (NUL separates parts, user keys cannot contain it):

    v KEY                  an entry: header and payload in one chunk (up to 64 KiB), in two,
                           or, from 4 MiB, in three: the header without its checksum, the
                           payload, then the checksum (8 bytes), hashed while DDict copies
                           the payload
    m STREAM               the stream's state, JSON: length, start, maxlen, policy, dropped,
                           closed (the length when closed), groups, and the lock's generation
                           and holder
    e STREAM I             entry I of an unbounded stream
    e STREAM #S            slot S of a stream bounded to maxlen: entry I lives in slot
                           I % (maxlen + 1), its index first (8 bytes), then header, payload
    g STREAM GROUP         a consumer group's position (ASCII integer), put by the reader
    l STREAM               the stream's lock token: its state, as `m` holds it
    i STREAM / r STREAM..  counters (`fetch_add`) that elect one creator of the token and one
                           restorer of a lost token per generation

A DDict put replaces a value atomically and nothing else is transactional, so every change
to a stream happens under its lock: whoever pops the token holds it (a pop is atomic) and
records itself in the state; it puts the entry, then the new state, then the token (carrying
the state) back. An append is committed by its state put: an entry past `length` (left by a
holder killed mid-append) is never read and is overwritten by the next append, so indexes
have no holes; a bounded stream's append reuses the slot of an entry already trimmed, so
trimming deletes nothing. A
token lost with a killed holder is put back by one waiter once the holder is seen dead (same
node) or after a lease. Readers take no lock: they read the state and the entries below its
`length`. `wait` and stream reads poll with a growing back-off (up to 50 ms).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import numpy as np

from simai.checks import check_int, check_seconds
from simai.store import codec
from simai.store.base import Store, StreamEnded, StreamTrimmed
from simai.store.private import private_dir

__all__ = ["DragonStore", "in_dragon", "need_dragon"]

SCHEME = "dragon://"
DEFAULT_MEM = 1 << 30
_POLL_MIN, _POLL_MAX = 0.001, 0.05
_LOCK_POLL = (0.004, 0.04)
"""First and longest pause between tries at a taken stream lock: a DDict operation takes
milliseconds, and every try is one more for the DDict's manager to serve."""
_ATTACH_TRIES = 6
_INDEX = struct.Struct("<Q")
_CHECKSUM = struct.Struct("<Q")
_JOIN_MAX = 64 * 1024
"""Payloads up to this size travel in one chunk with their header (a copy is cheaper than a
second message); larger ones as a chunk of their own, not copied."""
_CHECK_EVERY = 0.5
"""Seconds between looks at who holds a stream lock that stays taken."""
_LEASE = 10.0
"""Seconds a lock token may stay missing with no holder recorded (the window between a pop
and the record) before a waiter puts it back."""
_REMOTE_LEASE = 60.0
"""Seconds a holder on another node may keep a stream lock before it is presumed dead."""
_HOW = (
    "start the program under Dragon: `dragon script.py`, or `dragon -s script.py` on a single "
    "node (pip install dragonhpc)"
)


def in_dragon() -> bool:
    """Whether this process belongs to a Dragon run (it inherits the runtime's pools)."""
    return bool(os.environ.get("DRAGON_INF_PD")) and bool(os.environ.get("DRAGON_DEFAULT_PD"))


def need_dragon(what: str) -> None:
    """RuntimeError saying how to start the program, unless it runs under Dragon."""
    if not in_dragon():
        raise RuntimeError(
            f"{what} needs the Dragon runtime, and this process is not in one: {_HOW}"
        )


class _RawValue:
    """DDict value "pickler" that writes an entry's chunks as they are and reads them back as
    a list of bytes: nothing is pickled, nothing unpickled."""

    def dump(self, value: Any, file: Any) -> None:
        for part in value:
            if callable(part):  # the checksum, hashed while the parts before were written
                part = part()
            if len(part):
                file.write(part)

    def load(self, file: Any) -> list[bytes]:
        parts = []
        while True:
            try:
                parts.append(file.read())
            except EOFError:
                return parts


class _RawKey:
    """DDict key "pickler": a key is its UTF-8 bytes."""

    def dumps(self, key: str) -> bytes:
        return key.encode()

    def loads(self, data: Any) -> str:
        return bytes(data).decode()


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat), or None if it is gone or
    a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


_EMPTY: dict[str, Any] = {
    "gen": 0,
    "holder": None,
    "length": 0,
    "start": 0,
    "maxlen": None,
    "policy": None,
    "dropped": 0,
    "closed": None,
    "groups": [],
}


class DragonStore(Store):
    """Store in a Dragon DDict; see the module docstring for the layout and the locking.

    Parameters
    ----------
    url : str
        ``dragon://DESCRIPTOR``, as `DragonStore.create` or a workflow gives it.
    timeout : float or None
        Seconds each DDict operation may take before it is a ConnectionError (`wait` and
        `stream` use their own timeouts).
    allow_pickle : bool
        Store and return arbitrary Python objects by pickling them (unpickling runs code).
    """

    _seals = True  # see _parts

    def __init__(
        self, url: str, *, timeout: float | None = 60.0, allow_pickle: bool = False
    ) -> None:
        super().__init__(allow_pickle=allow_pickle)
        if not isinstance(url, str) or not url.lower().startswith(SCHEME):
            raise ValueError(f"not a dragon:// URL: {url!r}")
        descriptor = url[len(SCHEME) :]
        if not descriptor:
            raise ValueError(
                "dragon:// needs the descriptor of a DDict (dragon://DESCRIPTOR): create one "
                "with DragonStore.create() or Workflow(store='dragon')"
            )
        self.url = SCHEME + descriptor
        self._descriptor = descriptor
        self.timeout = check_seconds("timeout", timeout, positive=True, optional=True)
        need_dragon("a dragon:// store")
        self._owner: Any = None  # the DDict this process created, if any
        self._d: Any = None
        self._pid = -1
        self._me = [socket.gethostname(), os.getpid(), _start_time(os.getpid())]
        self._groups: set[tuple[str, str]] = set()
        self._made: set[str] = set()  # streams whose lock token was made
        self._lengths: dict[str, tuple[int, int | None]] = {}  # stream -> length, maxlen seen
        self._attach()

    @classmethod
    def create(
        cls,
        total_mem: int = DEFAULT_MEM,
        *,
        managers_per_node: int = 1,
        nodes: int = 1,
        timeout: float | None = 60.0,
        allow_pickle: bool = False,
    ) -> DragonStore:
        """Create a DDict of `total_mem` bytes (split among `managers_per_node` managers on each
        of `nodes` nodes) and return its store; `destroy()` frees it."""
        need_dragon("creating a dragon:// store")
        check_int("total_mem", total_mem, 1)
        check_int("managers_per_node", managers_per_node, 1)
        check_int("nodes", nodes, 1)
        from dragon.data.ddict import DDict

        # its orchestrator writes a metadata file to persist_path, the working directory unless
        # told: a private directory of the user's instead
        meta = private_dir(os.path.join(tempfile.gettempdir(), f"simai-dragon-{os.getuid()}"))
        try:
            ddict = DDict(
                managers_per_node, nodes, total_mem, timeout=timeout, persist_path=str(meta)
            )
        except Exception as e:
            what = (
                f"Dragon could not create a DDict of total_mem={total_mem} bytes for "
                f"{managers_per_node * nodes} manager(s) ({_why(e)})"
            )
            said = str(e)
            if "DYNHEAP" in said or "pool" in said.lower():  # a manager's pool did not fit
                what += (
                    f"; each manager needs a pool of its own: give more memory (the default is "
                    f"{DEFAULT_MEM >> 20} MiB)"
                )
            elif "timeout" in said.lower():
                what += f"; it did not answer within timeout={timeout} s: give it longer"
            raise RuntimeError(what) from None
        try:
            store = cls(SCHEME + ddict.serialize(), timeout=timeout, allow_pickle=allow_pickle)
        except BaseException:
            ddict.destroy()
            raise
        store._owner = ddict
        return store

    # --- the DDict client ------------------------------------------------------------------

    def _attach(self) -> None:
        from dragon.data.ddict import DDict

        for attempt in range(_ATTACH_TRIES):
            try:
                with _node_lock():
                    ddict = DDict.attach(self._descriptor, timeout=self.timeout)
                break
            except Exception as e:  # clients registering at the same moment sometimes fail
                if attempt == _ATTACH_TRIES - 1:
                    raise ConnectionError(
                        f"cannot attach to the DDict of {self._short()}: {_why(e)} (was it "
                        "destroyed, or made by another Dragon run?)"
                    ) from None
                time.sleep(0.05 * 2**attempt * (0.5 + random.random()))
        # The picklers are set on this client itself: DDict.pickler() would register a second
        # client (an attach) per store. fetch_add still (un)pickles its integers with XPickler.
        ddict._key_pickler, ddict._value_pickler = _RawKey(), _RawValue()
        self._pid = os.getpid()
        self._d = ddict

    def _short(self) -> str:
        return f"dragon store {self.url[:40]}..." if len(self.url) > 44 else self.url

    def _dd(self) -> Any:
        if self._closed:
            self._raise_closed()
        if os.getpid() != self._pid:  # inherited through fork: attach a client of our own
            self._attach()
            self._me = [socket.gethostname(), os.getpid(), _start_time(os.getpid())]
        return self._d

    def _call(self, op: Callable[[Any], Any]) -> Any:
        """Run one DDict operation; its failures become errors that name the store."""
        d = self._dd()
        try:
            return op(d)
        except KeyError:
            raise
        except Exception as e:
            self._fail(e)

    def _fail(self, e: Exception) -> NoReturn:
        from dragon.data.ddict import DDictFullError, DDictTimeoutError

        if isinstance(e, DDictFullError):
            raise MemoryError(
                f"{self._short()} is full: the value was not stored (create the DDict with a "
                "larger total_mem)"
            ) from None
        if isinstance(e, DDictTimeoutError | TimeoutError):
            raise ConnectionError(f"{self._short()} did not answer in time: {_why(e)}") from None
        raise ConnectionError(f"{self._short()}: {_why(e)}") from None

    def _get(self, key: str) -> list[bytes] | None:
        try:
            return self._call(lambda d: d[key])
        except KeyError:
            return None

    def _put(self, key: str, *parts: Any) -> None:
        self._call(lambda d: d.__setitem__(key, parts))

    def _pop(self, key: str) -> bool:
        try:
            self._call(lambda d: d.pop(key))
        except KeyError:
            return False
        return True

    def _fetch_add(self, key: str, n: int) -> int:
        self._dd()
        try:
            return int(self._d.fetch_add(key, n))
        except Exception as e:
            self._fail(e)

    def close(self) -> None:
        if not self._closed and self._d is not None and os.getpid() == self._pid:
            if self._owner is None:
                with contextlib.suppress(Exception), _node_lock():
                    self._d.detach()
        super().close()

    def destroy(self) -> None:
        """Free the DDict and everything in it; every client of it fails afterwards."""
        if self._closed == "was destroyed":
            return
        ddict = self._owner if self._owner is not None else self._d
        with contextlib.suppress(Exception):
            ddict.destroy()
        self._closed = "was destroyed"

    def clear(self) -> None:
        """Delete every key and stream (the DDict itself stays)."""
        self._call(lambda d: d.clear())
        self._groups.clear()
        self._lengths.clear()
        self._made.clear()

    # --- values -----------------------------------------------------------------------------

    def _write(self, key: str, header: bytes, payload: memoryview) -> None:
        self._put("v\0" + key, *_parts(header, payload))

    def _read(self, key: str, view: bool) -> tuple[Any, int]:
        chunks = self._get("v\0" + key)
        if chunks is None:
            raise KeyError(key)
        return self._decode_chunks(chunks, view)

    def _decode_chunks(self, chunks: list[bytes], view: bool) -> tuple[Any, int]:
        size = sum(len(c) for c in chunks)
        chunks = _sealed(chunks)
        if len(chunks) == 2:
            head, checksum = codec.parse_header(chunks[0])
            if head.offset == len(chunks[0]) and head.nbytes == len(chunks[1]):
                payload: Any = chunks[1]
                if not view and head.kind == codec.ARRAY:
                    payload = np.frombuffer(payload, np.uint8).copy()
                value = codec.decode_payload(head, checksum, payload, not view, self.allow_pickle)
                return value, size
        return self._decode(_joined(chunks), view)

    def _read_into(self, key: str, out: np.ndarray) -> None:
        chunks = self._get("v\0" + key)
        if chunks is None:
            raise KeyError(key)
        chunks = _sealed(chunks)
        if len(chunks) == 2:
            head, checksum = codec.parse_header(chunks[0])
            if head.offset == len(chunks[0]):
                codec.check_into(head, len(chunks[0]) + len(chunks[1]), out)
                flat = out.reshape(-1).view(np.uint8)
                if out.nbytes:
                    np.copyto(flat, np.frombuffer(chunks[1], np.uint8))
                codec.verify(head, checksum, flat)
                return
        codec.decode_into(_joined(chunks), out)

    def _exists(self, key: str) -> bool:
        return bool(self._call(lambda d: ("v\0" + key) in d))

    def _delete(self, key: str) -> bool:
        return self._pop("v\0" + key)

    def _keys(self, prefix: str) -> list[str]:
        head = "v\0" + prefix
        with _node_lock():  # keys() makes a process-local channel
            names = self._call(lambda d: list(d.keys()))
        return [k[2:] for k in names if k.startswith(head)]

    def _wait(self, key: str, deadline: float | None) -> bool:
        return bool(self._poll(lambda: True if self._exists(key) else None, deadline))

    def _poll(self, check: Callable[[], Any], deadline: float | None) -> Any:
        """check()'s first result that is not None, polling with a growing back-off; None
        once `deadline` passed."""
        pause = _POLL_MIN
        while True:
            result = check()
            if result is not None:
                return result
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            nap = pause if deadline is None else min(pause, deadline - now)
            time.sleep(max(nap, 0.0))
            pause = min(pause * 2, _POLL_MAX)

    # --- streams: state and lock ------------------------------------------------------------

    def _state(self, stream: str) -> dict[str, Any]:
        chunks = self._get("m\0" + stream)
        if chunks is None:
            return dict(_EMPTY)
        return json.loads(b"".join(chunks))

    def _put_state(self, stream: str, state: dict[str, Any]) -> None:
        self._put("m\0" + stream, json.dumps(state).encode())

    @contextlib.contextmanager
    def _locked(self, stream: str) -> Iterator[dict[str, Any]]:
        """Hold the stream's lock and yield its state to change; the state is committed (put
        where readers find it) and travels back with the token when the block ends, and is
        left as it was if the block raises."""
        state = self._acquire(stream)
        before = json.dumps(state)
        state["holder"] = self._me
        self._put_state(stream, state)  # who holds the lock, for waiters that check
        try:
            yield state
        except BaseException:
            state = json.loads(before)
            raise
        finally:
            state["gen"] += 1
            state["holder"] = None
            data = json.dumps(state).encode()
            self._put("m\0" + stream, data)
            self._put("l\0" + stream, data)

    def _acquire(self, stream: str) -> dict[str, Any]:
        """Pop the stream's lock token (its state), creating it on first use and putting it
        back when its holder died."""
        token = "l\0" + stream
        pause = _LOCK_POLL[0]
        seen: tuple[Any, float] | None = None
        next_check = time.monotonic() + _CHECK_EVERY
        first = True
        while True:
            try:
                state = json.loads(b"".join(self._call(lambda d: d.pop(token))))
                self._made.add(stream)
                return state
            except KeyError:
                pass
            if first and stream not in self._made:
                first = False
                made = "i\0" + stream
                if self._fetch_add(made, 0) == 0 and self._fetch_add(made, 1) == 0:
                    self._put(token, json.dumps(_EMPTY).encode())  # elected to make the token
                    continue
                self._made.add(stream)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + _CHECK_EVERY
                seen = self._check_holder(stream, seen, now)
                if seen is None:
                    continue
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, _LOCK_POLL[1])

    def _check_holder(
        self, stream: str, seen: tuple[Any, float] | None, now: float
    ) -> tuple[Any, float] | None:
        """Put the stream's lock token back if its holder died; return what was seen of the
        lock (the state's generation and holder) and since when, or None if it was put back.

        A holder records itself in the state after the pop, so the state names it; a state
        without a holder means the token is in flight, or was lost in the instant between a
        pop and that record: a waiter puts it back after a lease."""
        state = self._state(stream)
        gen, holder = state["gen"], state["holder"]
        what = (gen, holder)
        since = seen[1] if seen is not None and seen[0] == what else now
        if holder is None:
            dead, how = now - since > _LEASE, "n"
        elif holder[0] == self._me[0]:
            dead, how = _start_time(int(holder[1])) != holder[2], "h"
        else:
            dead, how = now - since > _REMOTE_LEASE, "h"
        if dead and self._fetch_add(f"r\0{stream}\0{gen}\0{how}", 1) == 0:
            state["gen"] += 1 if how == "h" else 0
            state["holder"] = None
            self._put("l\0" + stream, json.dumps(state).encode())
            return None
        return (what, since)

    # --- streams ----------------------------------------------------------------------------

    def _create_stream(self, stream: str, maxlen: int, policy: str) -> None:
        state = self._state(stream)
        if state["maxlen"] is None:
            with self._locked(stream) as state:
                if state["maxlen"] is None:
                    if state["length"] > 0:
                        raise ValueError(
                            f"stream {stream!r} already holds {state['length']} values appended "
                            "without bounds; declare it with create_stream before the first "
                            "append"
                        )
                    state["maxlen"], state["policy"] = maxlen, policy
                    return
        if (state["maxlen"], state["policy"]) != (maxlen, policy):
            raise ValueError(
                f"stream {stream!r} is already declared with maxlen={state['maxlen']}, "
                f"policy={state['policy']!r}, not maxlen={maxlen}, policy={policy!r}"
            )

    def _append(
        self, stream: str, header: bytes, payload: memoryview, deadline: float | None
    ) -> int | None:
        def attempt() -> int | None:
            with self._locked(stream) as state:
                if state["closed"] is not None:
                    raise ValueError(f"stream {stream!r} is closed: it takes no more appends")
                head, start, maxlen = state["length"], state["start"], state["maxlen"]
                floor = start
                if maxlen is not None:
                    floor = max(start, self._floor(stream, state, start))
                    if state["policy"] == "block" and head - floor >= maxlen:
                        return None
                parts = _parts(header, payload)
                if maxlen is None:
                    self._put(f"e\0{stream}\0{head}", *parts)
                else:  # in the slot of an entry trimmed already: nothing to delete
                    self._put(_slot(stream, head, maxlen), _INDEX.pack(head), *parts)
                state["length"] = head + 1
                if maxlen is not None:
                    new_start = head + 1 - maxlen
                    if state["policy"] == "block":
                        new_start = min(new_start, floor)
                    if new_start > start:
                        if state["policy"] == "drop_oldest":
                            state["dropped"] += max(0, new_start - max(start, floor))
                        state["start"] = new_start
            return head

        def full_or_closed() -> bool | None:
            state = self._state(stream)
            if state["closed"] is not None:
                return True
            floor = max(state["start"], self._floor(stream, state, state["start"]))
            return True if state["length"] - floor < state["maxlen"] else None

        while True:
            index = attempt()
            if index is not None:
                return index
            if self._poll(full_or_closed, deadline) is None:
                return None

    def _floor(self, stream: str, state: dict[str, Any], default: int) -> int:
        """The slowest consumer group's position, or `default` if no group is registered."""
        positions = [self._position(stream, g) for g in state["groups"]]
        known = [p for p in positions if p is not None]
        return min(known) if known else default

    def _stream_read(
        self, stream: str, index: int, deadline: float | None, view: bool
    ) -> tuple[Any, int] | None:
        def entry(maxlen: int | None) -> tuple[Any, int] | None:
            if maxlen is None:
                chunks = self._get(f"e\0{stream}\0{index}")
            else:  # a slot holds its entry's index first: another index means it was trimmed
                chunks = self._get(_slot(stream, index, maxlen))
                if chunks is None or chunks[0] != _INDEX.pack(index):
                    return None
                chunks = chunks[1:]
            return None if chunks is None else self._decode_chunks(chunks, view)

        def check() -> tuple[Any, int] | None:
            length, maxlen = self._lengths.get(stream, (0, None))
            if index < length:
                got = entry(maxlen)
                if got is not None:
                    return got
            state = self._state(stream)
            self._lengths[stream] = (state["length"], state["maxlen"])
            if index < state["start"]:
                raise StreamTrimmed(state["start"])
            if index < state["length"]:
                got = entry(state["maxlen"])
                if got is not None:
                    return got
                state = self._state(stream)  # trimmed or deleted meanwhile
                if index < state["start"]:
                    raise StreamTrimmed(state["start"])
                return None
            if state["closed"] is not None:
                raise StreamEnded(stream)
            return None

        return self._poll(check, deadline)

    def _stream_info(self, stream: str) -> dict[str, Any]:
        state = self._state(stream)
        groups = {g: self._position(stream, g) for g in state["groups"]}
        return {
            "length": state["length"],
            "start": state["start"],
            "maxlen": state["maxlen"],
            "policy": state["policy"],
            "dropped": state["dropped"],
            "closed": state["closed"] is not None,
            "groups": {g: p for g, p in groups.items() if p is not None},
        }

    def _set_position(self, stream: str, group: str, index: int) -> None:
        if (stream, group) not in self._groups:
            if group not in self._state(stream)["groups"]:
                with self._locked(stream) as state:
                    if group not in state["groups"]:
                        state["groups"].append(group)
                    self._put(f"g\0{stream}\0{group}", b"%d" % index)
            self._groups.add((stream, group))
        self._put(f"g\0{stream}\0{group}", b"%d" % index)

    def _position(self, stream: str, group: str) -> int | None:
        chunks = self._get(f"g\0{stream}\0{group}")
        return None if chunks is None else int(b"".join(chunks))

    def _stream_len(self, stream: str) -> int:
        return int(self._state(stream)["length"])

    def _close_stream(self, stream: str) -> None:
        with self._locked(stream) as state:
            if state["closed"] is None:
                state["closed"] = state["length"]

    def _delete_stream(self, stream: str) -> bool:
        self._lengths.pop(stream, None)
        self._groups = {sg for sg in self._groups if sg[0] != stream}
        with self._locked(stream) as state:
            old = dict(state)
            existed = old["length"] > 0 or old["maxlen"] is not None or bool(old["groups"])
            existed = existed or old["closed"] is not None
            state.update({k: v for k, v in _EMPTY.items() if k not in ("gen", "holder")})
            state["groups"] = []
            for g in old["groups"]:
                self._pop(f"g\0{stream}\0{g}")
        if old["maxlen"] is None:
            for i in range(old["start"], old["length"] + 1):  # + 1: an uncommitted entry
                self._pop(f"e\0{stream}\0{i}")
        else:
            for i in range(min(old["length"] + 1, old["maxlen"] + 1)):
                self._pop(_slot(stream, i, old["maxlen"]))
        return existed


@contextlib.contextmanager
def _node_lock() -> Iterator[None]:
    """Hold this user's node-wide lock on making and freeing Dragon process-local channels.

    A process that Dragon did not start (a `subprocess` child) shares its parent's Dragon
    process id, and such processes making process-local channels at the same moment crash
    Dragon (a segfault in `Channel.make_process_local`, seen with dragonhpc 0.15), so they take
    turns: on attach, detach and `keys`."""
    path = os.path.join(tempfile.gettempdir(), f"simai-dragon-{os.getuid()}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:  # not ours to use (another user's file, say): go without
        yield
        return
    try:
        if os.fstat(fd).st_uid == os.getuid():
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _slot(stream: str, index: int, maxlen: int) -> str:
    """The key of entry `index` of a stream bounded to `maxlen`: maxlen + 1 slots in turn, so
    an append reuses the slot of an entry trimmed before it (length - start <= maxlen)."""
    return f"e\0{stream}\0#{index % (maxlen + 1)}"


def _parts(header: bytes, payload: memoryview) -> tuple[Any, ...]:
    """The chunks an entry is written as (see the layout above). From codec.PARALLEL_MIN the
    header comes without its checksum (DragonStore._seals) and the checksum goes last: a
    helper thread hashes the payload while DDict copies it."""
    n = payload.nbytes
    if n <= _JOIN_MAX:  # one message to the manager, not two
        return (header + payload,)
    if n < codec.PARALLEL_MIN:
        return header, payload
    digest = codec.hash_beside(payload, codec.header_seed(header))
    return header, payload, lambda: _CHECKSUM.pack(digest())


def _sealed(chunks: list[bytes]) -> list[bytes]:
    """An entry's chunks as header and payload: a trailing checksum sealed into its header."""
    if len(chunks) == 3 and len(chunks[2]) == _CHECKSUM.size:
        return [codec.seal(bytes(chunks[0]), _CHECKSUM.unpack(chunks[2])[0]), chunks[1]]
    return chunks


def _joined(chunks: list[bytes]) -> memoryview:
    """The chunks of an entry in one writable buffer."""
    out = np.empty(sum(len(c) for c in chunks), np.uint8)
    at = 0
    for c in chunks:
        out[at : at + len(c)] = np.frombuffer(c, np.uint8)
        at += len(c)
    return memoryview(out)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
