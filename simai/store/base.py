"""The Store ABC: one API for every backend.

A backend implements a handful of raw primitives on encoded entries (header + payload);
validation, encoding, decoding and the convenience methods live here, once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn

import numpy as np

from simai.checks import check_int, check_seconds
from simai.store import codec, counters
from simai.store.codec import CorruptValueError

MAX_KEY_BYTES = 1024


def check_key(key: Any, what: str = "key") -> str:
    """Return `key` if it is a valid store key, else raise ValueError saying why."""
    if type(key) is str and key.isascii() and 0 < len(key) <= MAX_KEY_BYTES and "\0" not in key:
        return key
    if not isinstance(key, str):
        raise ValueError(f"{what} must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError(f"{what} must not be empty")
    try:
        n = len(key.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid UTF-8: {e}") from None
    if n > MAX_KEY_BYTES:
        raise ValueError(f"{what} is {n} bytes long; the limit is {MAX_KEY_BYTES} bytes of UTF-8")
    if "\0" in key:
        raise ValueError(f"{what} must not contain NUL characters")
    return key


POLICIES = ("block", "drop_oldest")
"""What `append` does to a bounded stream that holds `maxlen` values (see `create_stream`)."""


class StoreClosedError(RuntimeError):
    """The store was closed by this process, or destroyed."""


class StreamEnded(Exception):
    """Raised inside backends when a stream was closed by its producer and fully read."""


class StreamTrimmed(Exception):
    """Raised inside backends when the index asked for was trimmed; `start` is the first index
    the stream still holds."""

    def __init__(self, start: int) -> None:
        super().__init__(start)
        self.start = start


class Store(ABC):
    """Key-value and stream store for tensors, bytes and JSON metadata.

    Values: numpy arrays (any numeric or bool dtype, any shape), torch tensors (stored as
    arrays, returned as numpy), bytes, and JSON-serializable metadata. Arbitrary objects only
    with `allow_pickle=True`, since unpickling runs code.
    """

    url: str

    _closed = ""
    """Why the store cannot be used any more ("is closed", "was destroyed"), or ""."""
    _seals = False
    """Whether the backend computes the checksum of a large payload itself, while it copies the
    payload, and `codec.seal`s its header; else `put` and `append` hand it headers sealed."""

    def __init__(self, allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle

    # --- primitives each backend implements -------------------------------------------

    @abstractmethod
    def _write(self, key: str, header: bytes, payload: memoryview) -> None:
        """Store one entry atomically: readers see the old entry or the new one, never a mix."""

    @abstractmethod
    def _read(self, key: str, view: bool) -> tuple[Any, int]:
        """The verified value of `key` (arrays: a private copy, or a read-only view if `view`)
        and the size of its entry; KeyError if missing, CorruptValueError if damaged."""

    @abstractmethod
    def _read_into(self, key: str, out: np.ndarray) -> None:
        """Copy an array entry into `out` and verify the copy (KeyError if missing, TypeError
        if not an array, ValueError if `out` does not fit)."""

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _delete(self, key: str) -> bool:
        """Delete; return whether the key existed."""

    @abstractmethod
    def _keys(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def _wait(self, key: str, deadline: float | None) -> bool:
        """Block until `key` exists or the monotonic `deadline` passes; return whether it exists."""

    @abstractmethod
    def _create_stream(self, stream: str, maxlen: int, policy: str) -> None:
        """Give a stream bounds, atomically; ValueError if it has other bounds, or values
        appended without bounds."""

    @abstractmethod
    def _append(
        self, stream: str, header: bytes, payload: memoryview, deadline: float | None
    ) -> int | None:
        """Append one entry to a stream; return its index, or None if a "block" stream was
        still full at `deadline`. ValueError if the stream was closed."""

    @abstractmethod
    def _stream_read(
        self, stream: str, index: int, deadline: float | None, view: bool
    ) -> tuple[Any, int] | None:
        """The verified value of entry `index` of a stream and its size, as `_read` gives
        them, waiting until `deadline`; None on timeout.

        Raises StreamEnded when the stream was closed and has no entry `index`, StreamTrimmed
        when entry `index` was trimmed from a bounded stream.
        """

    @abstractmethod
    def _stream_info(self, stream: str) -> dict[str, Any]:
        """The dict `stream_info` documents."""

    @abstractmethod
    def _set_position(self, stream: str, group: str, index: int) -> None:
        """Record that consumer group `group` acknowledged every value before `index`."""

    @abstractmethod
    def _position(self, stream: str, group: str) -> int | None:
        """The position `group` last recorded, or None if it never read the stream."""

    @abstractmethod
    def _stream_len(self, stream: str) -> int: ...

    @abstractmethod
    def _close_stream(self, stream: str) -> None: ...

    @abstractmethod
    def _delete_stream(self, stream: str) -> bool: ...

    def _write_many(self, entries: list[tuple[str, bytes, memoryview]]) -> None:
        """Store several encoded entries; backends that can batch them do."""
        for key, header, payload in entries:
            self._write(key, header, payload)

    def _read_many(self, keys: list[str], view: bool) -> list[tuple[Any, int]]:
        """The values of several keys and their sizes, as `_read` gives them (KeyError if one
        is missing); backends that can batch the reads do."""
        return [self._read(k, view) for k in keys]

    def _decode(self, buf: Any, view: bool) -> tuple[Any, int]:
        """A whole entry's verified value and size, for backends that read entries whole."""
        value = codec.decode(buf, writable=not view, allow_pickle=self.allow_pickle)
        return value, memoryview(buf).nbytes

    def close(self) -> None:
        """Release client resources (connections, mappings); later calls raise
        StoreClosedError. Stored data stays."""
        self._closed = self._closed or "is closed"

    def _raise_closed(self) -> NoReturn:
        raise StoreClosedError(f"store {self.url} {self._closed}")

    # --- public API ---------------------------------------------------------------------

    def put(self, key: str, value: Any) -> None:
        """Store `value` under `key`, replacing what was there."""
        if self._closed:
            self._raise_closed()
        check_key(key)
        header, payload = codec.encode(value, self.allow_pickle, self._seals)
        self._write(key, header, payload)
        if counters.enabled:
            counters.add("put", key, len(header) + payload.nbytes)

    def get(self, key: str, view: bool = False, out: np.ndarray | None = None) -> Any:
        """Return the value of `key` (KeyError if missing).

        Arrays are private copies by default; `view=True` returns a read-only zero-copy view
        where the backend can give one (the node-local store), else a read-only copy.
        `out=` copies an array into a preallocated C-contiguous array of the same dtype and
        shape and returns it: a training loop that reuses its buffers allocates nothing.
        """
        if self._closed:
            self._raise_closed()
        check_key(key)
        if out is not None:
            if view:
                raise ValueError("get() takes view=True or out=, not both")
            if not isinstance(out, np.ndarray) or not out.flags.c_contiguous:
                raise ValueError("out= must be a C-contiguous numpy array")
            if not out.flags.writeable:
                raise ValueError("out= must be writable")
            try:
                self._read_into(key, out)
            except CorruptValueError as e:
                raise CorruptValueError(f"key {key!r} in {self.url}: {e}") from None
            if counters.enabled:
                counters.add("get", key, codec.header_size(out.ndim) + out.nbytes)
            return out
        try:
            value, size = self._read(key, view)
        except CorruptValueError as e:
            raise CorruptValueError(f"key {key!r} in {self.url}: {e}") from None
        if counters.enabled:
            counters.add("get", key, size)
        return value

    def exists(self, key: str) -> bool:
        if self._closed:
            self._raise_closed()
        return self._exists(check_key(key))

    def delete(self, key: str) -> bool:
        """Delete `key`; return whether it existed."""
        if self._closed:
            self._raise_closed()
        existed = self._delete(check_key(key))
        if counters.enabled:
            counters.add("delete", key, 0)
        return existed

    def keys(self, prefix: str = "") -> list[str]:
        """All keys starting with `prefix`, sorted."""
        if self._closed:
            self._raise_closed()
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a str, not {type(prefix).__name__}")
        return sorted(self._keys(prefix))

    def wait(self, key: str, timeout: float | None = None) -> None:
        """Block until `key` exists; TimeoutError after `timeout` seconds."""
        if self._closed:
            self._raise_closed()
        check_key(key)
        if not self._wait(key, _deadline(timeout)):
            raise TimeoutError(
                f"key {key!r} did not appear within {_seconds(timeout)} in {self.url}"
            )

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store several values (pipelined where the backend can); every key and value is
        checked and encoded before anything is written."""
        if self._closed:
            self._raise_closed()
        entries = []
        for key, value in items.items():
            check_key(key)
            entries.append((key, *codec.encode(value, self.allow_pickle, self._seals)))
        self._write_many(entries)
        if counters.enabled:
            for key, header, payload in entries:
                counters.add("put_many", key, len(header) + payload.nbytes)

    def get_many(self, keys: Iterable[str], view: bool = False) -> list[Any]:
        """Values of several keys (pipelined where the backend can); KeyError if one is
        missing."""
        if self._closed:
            self._raise_closed()
        keys = [check_key(k) for k in keys]
        try:
            read = self._read_many(keys, view)
        except CorruptValueError:
            for key in keys:  # which one: get() names it
                self.get(key, view)
            raise
        if counters.enabled:
            for key, (_, size) in zip(keys, read, strict=True):
                counters.add("get_many", key, size)
        return [value for value, _ in read]

    def create_stream(self, name: str, maxlen: int | None = None, policy: str = "block") -> None:
        """Declare stream `name`, bounded to `maxlen` retained values, before its first append.

        A bounded stream keeps at most its newest `maxlen` values; `stream_info(name)["start"]`
        is the first index it still holds. When a new value would exceed `maxlen`:

        - policy "block": `append` waits while the slowest consumer group (see
          `stream(group=)`) has `maxlen` values it has not acknowledged, and trims only values
          every group acknowledged, so no group loses anything. With no group registered yet,
          the producer waits once `maxlen` values are held, until a group reads.
        - policy "drop_oldest": `append` never waits; the oldest value is trimmed, and each one
          trimmed before the slowest group acknowledged it (every one, with no group) is
          counted in `stream_info(name)["dropped"]`.

        Declaring again with the same bounds does nothing, so producers and consumers may all
        declare; other bounds, or bounds for a stream that already holds values appended
        without them, are a ValueError. `maxlen=None` (unbounded) is what an undeclared stream
        is. The bounds last until `delete_stream`.
        """
        if self._closed:
            self._raise_closed()
        check_key(name, "stream name")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if maxlen is None:
            bounds = self._stream_info(name)["maxlen"]
            if bounds is not None:
                raise ValueError(
                    f"stream {name!r} is bounded to maxlen={bounds}; "
                    "it cannot be declared unbounded"
                )
            return
        check_int("maxlen", maxlen, 1, optional=True)
        self._create_stream(name, maxlen, policy)

    def append(self, stream: str, value: Any, timeout: float | None = None) -> int:
        """Append `value` to `stream`; return its index. Acknowledged appends are never lost,
        except to a "drop_oldest" bound, which counts what it drops.

        Only a full "block" stream makes `append` wait; TimeoutError after `timeout` seconds,
        and the value is not appended.
        """
        if self._closed:
            self._raise_closed()
        check_key(stream, "stream name")
        header, payload = codec.encode(value, self.allow_pickle, self._seals)
        index = self._append(stream, header, payload, _deadline(timeout))
        if index is None:
            raise TimeoutError(
                f"stream {stream!r} stayed full for {_seconds(timeout)} in {self.url}: its "
                "consumer groups did not catch up (policy 'block')"
            )
        if counters.enabled:
            counters.add("append", stream, len(header) + payload.nbytes)
        return index

    def stream(
        self,
        name: str,
        start: int | None = None,
        timeout: float | None = None,
        view: bool = False,
        *,
        last: int | None = None,
        group: str | None = None,
    ) -> StreamReader:
        """Iterate the values of stream `name` in order, from index `start`, as they arrive.

        The iteration ends when the producer called `close_stream` and every value was read;
        waiting longer than `timeout` seconds for the next value raises TimeoutError. Any
        number of consumers may read the same stream, each from its own index.

        `last=N` starts N values before the newest (a replay window; at most what the stream
        still holds). `group="trainer"` records the reader's position in the store: each
        value counts as acknowledged once the next one is asked for, a "block" stream's
        producers wait for the slowest group, and a reader of the same group started later
        (a restarted trainer) resumes at the recorded position unless `start` or `last` is
        given. One reader per group at a time. Without `start`, `last` or a recorded
        position, reading starts at 0.

        Values trimmed from a bounded stream before this reader got to them are skipped; the
        returned iterator counts them in `.skipped` (`.index` is the next index it reads).
        """
        if self._closed:
            self._raise_closed()
        check_key(name, "stream name")
        if group is not None:
            check_key(group, "group name")
        if start is not None and last is not None:
            raise ValueError("stream() takes start= or last=, not both")
        check_int("start", start, 0, optional=True)
        check_int("last", last, 0, optional=True)
        if last is not None:
            info = self._stream_info(name)
            start = max(info["start"], info["length"] - last)
        elif start is None:
            start = (self._position(name, group) if group is not None else None) or 0
        return StreamReader(self, name, start, timeout, view, group)

    def stream_info(self, name: str) -> dict[str, Any]:
        """A stream's state: `length` (values appended so far, as `stream_len`), `start` (the
        first index still held), `maxlen` and `policy` (None when unbounded), `dropped` (values
        a "drop_oldest" bound trimmed before every group acknowledged them), `closed`, and
        `groups` (each consumer group's position: the index it reads next)."""
        if self._closed:
            self._raise_closed()
        return self._stream_info(check_key(name, "stream name"))

    def stream_len(self, name: str) -> int:
        """Number of values appended to stream `name` so far."""
        if self._closed:
            self._raise_closed()
        return self._stream_len(check_key(name, "stream name"))

    def close_stream(self, name: str) -> None:
        """Mark stream `name` finished: consumers end their iteration after the last value."""
        if self._closed:
            self._raise_closed()
        self._close_stream(check_key(name, "stream name"))

    def delete_stream(self, name: str) -> bool:
        if self._closed:
            self._raise_closed()
        return self._delete_stream(check_key(name, "stream name"))

    # --- mapping access -----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(key) and self.exists(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class StreamReader(Iterator[Any]):
    """The iterator `Store.stream` returns: `index` is the next index it reads, `skipped` the
    values trimmed from a bounded stream before it got to them."""

    def __init__(
        self,
        store: Store,
        name: str,
        start: int,
        timeout: float | None,
        view: bool,
        group: str | None,
    ) -> None:
        self.store, self.name, self.index, self.skipped = store, name, start, 0
        self.group, self.timeout, self.view = group, timeout, view
        self._acked = -1
        check_seconds("timeout", timeout, optional=True)
        if group is not None:
            self._ack()

    def _ack(self) -> None:
        assert self.group is not None
        self.store._set_position(self.name, self.group, self.index)
        self._acked = self.index

    def __iter__(self) -> StreamReader:
        return self

    def __next__(self) -> Any:
        store = self.store
        if store._closed:
            store._raise_closed()
        while True:
            if self.group is not None and self._acked != self.index:
                self._ack()
            try:
                got = self._read(self.index, self.deadline())
            except StreamEnded:
                raise StopIteration from None
            except StreamTrimmed as e:
                if e.start > self.index:
                    self.skipped += e.start - self.index
                    self.index = e.start
                continue
            except CorruptValueError as e:
                raise CorruptValueError(
                    f"stream {self.name!r} entry {self.index} in {store.url}: {e}"
                ) from None
            if got is None:
                raise TimeoutError(
                    f"stream {self.name!r} had no entry {self.index} within "
                    f"{_seconds(self.timeout)} in {store.url}"
                )
            self.index += 1
            if counters.enabled:
                counters.add("stream", self.name, got[1])
            return got[0]

    def _read(self, index: int, deadline: float | None) -> tuple[Any, int] | None:
        """Entry `index` as `Store._stream_read` gives it; a backend's reader with a
        connection of its own overrides this."""
        return self.store._stream_read(self.name, index, deadline, self.view)

    def deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout


def _deadline(timeout: Any) -> float | None:
    seconds = check_seconds("timeout", timeout, optional=True)
    return None if seconds is None else time.monotonic() + seconds


def _seconds(timeout: float | None) -> str:
    """A timeout as a message shows it: 30 s, 0.25 s."""
    return f"{timeout:.3g} s"
