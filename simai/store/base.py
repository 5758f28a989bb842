"""The Store ABC: one API for every backend.

A backend implements a handful of raw primitives on encoded entries (header + payload);
validation, encoding, decoding and the convenience methods live here, once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from simai.store import codec

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


class StreamEnded(Exception):
    """Raised inside backends when a stream was closed by its producer and fully read."""


class Store(ABC):
    """Key-value and stream store for tensors, bytes and JSON metadata.

    Values: numpy arrays (any numeric or bool dtype, any shape), torch tensors (stored as
    arrays, returned as numpy), bytes, and JSON-serializable metadata. Arbitrary objects only
    with `allow_pickle=True`, since unpickling runs code.
    """

    url: str

    def __init__(self, allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle

    # --- primitives each backend implements -------------------------------------------

    @abstractmethod
    def _write(self, key: str, header: bytes, payload: memoryview) -> None:
        """Store one entry atomically: readers see the old entry or the new one, never a mix."""

    @abstractmethod
    def _read(self, key: str, view: bool) -> Any:
        """Return the whole entry as a buffer (writable copy, or read-only view if `view`)."""

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
    def _append(self, stream: str, header: bytes, payload: memoryview) -> int:
        """Append one entry to a stream; return its index."""

    @abstractmethod
    def _stream_read(self, stream: str, index: int, deadline: float | None) -> Any | None:
        """Entry `index` of a stream, waiting until `deadline`; None on timeout.

        Raises StreamEnded when the stream was closed and has no entry `index`.
        """

    @abstractmethod
    def _stream_len(self, stream: str) -> int: ...

    @abstractmethod
    def _close_stream(self, stream: str) -> None: ...

    @abstractmethod
    def _delete_stream(self, stream: str) -> bool: ...

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release client resources (connections, mappings). Stored data stays."""

    # --- public API ---------------------------------------------------------------------

    def put(self, key: str, value: Any) -> None:
        """Store `value` under `key`, replacing what was there."""
        check_key(key)
        header, payload = codec.encode(value, self.allow_pickle)
        self._write(key, header, payload)

    def get(self, key: str, view: bool = False, out: np.ndarray | None = None) -> Any:
        """Return the value of `key` (KeyError if missing).

        Arrays are private copies by default; `view=True` returns a read-only zero-copy view
        where the backend can give one (the node-local store), else a read-only copy.
        `out=` copies an array into a preallocated C-contiguous array of the same dtype and
        shape and returns it: a training loop that reuses its buffers allocates nothing.
        """
        check_key(key)
        if out is not None:
            if view:
                raise ValueError("get() takes view=True or out=, not both")
            if not isinstance(out, np.ndarray) or not out.flags.c_contiguous:
                raise ValueError("out= must be a C-contiguous numpy array")
            if not out.flags.writeable:
                raise ValueError("out= must be writable")
            return self._read_into(key, out)
        buf = self._read(key, view)
        return codec.decode(buf, writable=not view, allow_pickle=self.allow_pickle)

    def _read_into(self, key: str, out: np.ndarray) -> np.ndarray:
        """Copy an array entry into `out`; backends that can skip the intermediate copy do."""
        return codec.decode_into(self._read(key, True), out)

    def exists(self, key: str) -> bool:
        return self._exists(check_key(key))

    def delete(self, key: str) -> bool:
        """Delete `key`; return whether it existed."""
        return self._delete(check_key(key))

    def keys(self, prefix: str = "") -> list[str]:
        """All keys starting with `prefix`, sorted."""
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a str, not {type(prefix).__name__}")
        return sorted(self._keys(prefix))

    def wait(self, key: str, timeout: float | None = None) -> None:
        """Block until `key` exists; TimeoutError after `timeout` seconds."""
        check_key(key)
        if not self._wait(key, _deadline(timeout)):
            raise TimeoutError(f"key {key!r} did not appear within {timeout} s in {self.url}")

    def put_many(self, items: Mapping[str, Any]) -> None:
        for key, value in items.items():
            self.put(key, value)

    def get_many(self, keys: Iterable[str], view: bool = False) -> list[Any]:
        return [self.get(k, view=view) for k in keys]

    def append(self, stream: str, value: Any) -> int:
        """Append `value` to `stream`; return its index. Acknowledged appends are never lost."""
        check_key(stream, "stream name")
        header, payload = codec.encode(value, self.allow_pickle)
        return self._append(stream, header, payload)

    def stream(
        self, name: str, start: int = 0, timeout: float | None = None, view: bool = False
    ) -> Iterator[Any]:
        """Yield the values of stream `name` in order, from index `start`, as they arrive.

        The iteration ends when the producer called `close_stream` and every value was read;
        waiting longer than `timeout` seconds for the next value raises TimeoutError. Any
        number of consumers may read the same stream, each from its own index.
        """
        check_key(name, "stream name")
        if not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a non-negative int, not {start!r}")
        index = start
        while True:
            try:
                buf = self._stream_read(name, index, _deadline(timeout))
            except StreamEnded:
                return
            if buf is None:
                raise TimeoutError(
                    f"stream {name!r} had no entry {index} within {timeout} s in {self.url}"
                )
            yield codec.decode(buf, writable=not view, allow_pickle=self.allow_pickle)
            index += 1

    def stream_len(self, name: str) -> int:
        """Number of values appended to stream `name` so far."""
        return self._stream_len(check_key(name, "stream name"))

    def close_stream(self, name: str) -> None:
        """Mark stream `name` finished: consumers end their iteration after the last value."""
        self._close_stream(check_key(name, "stream name"))

    def delete_stream(self, name: str) -> bool:
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


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, not {timeout}")
    return time.monotonic() + timeout
