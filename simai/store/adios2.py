"""ADIOS2 streams: a store whose streams travel over an ADIOS2 engine (SST or BP5).

`adios2:///path/dir?engine=SST` (the default engine) or `adios2:///path/dir?engine=BP5`.
Stream `NAME` is the ADIOS2 stream `<dir>/NAME`: for SST its contact file is `<dir>/NAME.sst`,
for BP5 its directory is `<dir>/NAME`. So an existing ADIOS2 reader (`adios2.Stream(path, "r")`)
reads a simai producer's stream, and an existing simulation that writes ADIOS2 steps feeds
`store.stream(NAME)` with no change to its code.

Each `append` is one ADIOS2 step holding two variables:

- `value`: the value itself. An array keeps its dtype and shape (bool travels as uint8, float16
  as uint16 bits, a non-native byte order as native); bytes (and pickles) are a 1-D uint8 array;
  JSON metadata is an ADIOS2 string. An ADIOS2 variable has one type and one rank per stream,
  so appending a value of another type or rank to the same stream is a TypeError.
- `simai_header`: the simai header of the value (uint8), with its XXH3 checksum. A simai reader
  verifies every step that has one (damage is a CorruptValueError); steps of other producers
  have none and cannot be verified.

A step written by another producer reads as the value of its one variable, or as a dict
{variable name: value} when it has several (sorted by name); `variables=[...]` (or `?vars=a,b`)
picks the ones to read.

What holds of the stream contract (docs/guide/adios2.md has the table): order per producer
and end-of-stream on both engines. SST is not a store: it holds only steps not yet released
by its connected readers; a reader sees steps from when it connects (earlier ones count as
`skipped`), the writer's first append waits for `readers` readers (the URL's `readers=`,
ADIOS2's RendezvousReaderCount, default 1), bounds map to QueueLimit with QueueFullPolicy Block
("block") or Discard ("drop_newest": SST drops the newest step, not the oldest, so
"drop_oldest" is refused). It keeps no consumer groups and no length a reader could ask for.
BP5 is a file: every step stays, so `start=`, `last=` and consumer groups (positions kept in
`<dir>/.simai-groups/`) work, and bounds do not. What does not hold raises NotSupported. Keys
(put/get/...) are not held here: open a second store (local://, file://, redis://) for them.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import time
import weakref
from typing import Any, NoReturn
from urllib.parse import parse_qs

import numpy as np

from simai.checks import check_int
from simai.store import codec
from simai.store.base import (
    POLICIES,
    Store,
    StreamEnded,
    StreamReader,
    StreamTrimmed,
    check_key,
)
from simai.store.codec import CorruptValueError
from simai.store.file import encode_name
from simai.store.private import private_dir

VALUE = "value"
"""The ADIOS2 variable that holds the value of a step simai wrote."""
HEADER = "simai_header"
"""The ADIOS2 variable that holds the simai header (dtype, shape, checksum) of that value."""
ENGINES = ("SST", "BP5")
ADIOS2_POLICIES = (*POLICIES, "drop_newest")
"""Bounds policies of an SST stream: "block" (QueueFullPolicy Block) and "drop_newest"
(QueueFullPolicy Discard); "drop_oldest" is refused, as SST cannot drop its oldest step."""

_GROUPS = ".simai-groups"
_FOREVER = 10.0 * 365 * 24 * 3600  # ADIOS2 takes no "no timeout" for opening a reader
_POLL = "0.01"  # seconds between a BP5 reader's looks for a new step
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TYPES = {  # numpy dtype kind+size -> ADIOS2 type name, for what travels natively
    "i1": "int8_t",
    "i2": "int16_t",
    "i4": "int32_t",
    "i8": "int64_t",
    "u1": "uint8_t",
    "u2": "uint16_t",
    "u4": "uint32_t",
    "u8": "uint64_t",
    "f4": "float",
    "f8": "double",
    "c8": "float complex",
    "c16": "double complex",
}
_FROM_ADIOS = {
    "char": "i1",
    "int8_t": "i1",
    "int16_t": "i2",
    "int32_t": "i4",
    "int64_t": "i8",
    "uint8_t": "u1",
    "uint16_t": "u2",
    "uint32_t": "u4",
    "uint64_t": "u8",
    "float": "f4",
    "double": "f8",
    "float complex": "c8",
    "complex": "c8",
    "double complex": "c16",
}
_ids = itertools.count()
_open_stores: weakref.WeakSet[Adios2Store] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """End the streams of stores still open at exit, so their readers see the end of the
    stream rather than a writer that vanished."""
    for store in list(_open_stores):
        try:
            store.close()
        except Exception:
            pass


class NotSupported(NotImplementedError):
    """An operation this ADIOS2 engine cannot perform with the meaning the Store contract gives
    it; the message says why and what to use instead."""


def _adios2() -> Any:
    try:
        import adios2
    except ImportError:
        raise ImportError(
            "the adios2:// store needs the adios2 package: pip install 'simai[adios2]'"
        ) from None
    return adios2


def _message(e: BaseException) -> str:
    """An ADIOS2 exception's text without its colours and timestamp."""
    text = _ANSI.sub("", str(e)).strip()
    return re.sub(r"^\[[^]]*\]\s*", "", text)


def _wire_dtype(dt: np.dtype) -> np.dtype:
    """The dtype an array of `dt` travels as in ADIOS2 (same bytes, or native byte order)."""
    if dt.kind == "b":
        return np.dtype(np.uint8)
    if dt.kind == "f" and dt.itemsize == 2:
        return np.dtype(np.uint16)
    native = dt.newbyteorder("=")
    if f"{native.kind}{native.itemsize}" not in _TYPES:
        raise TypeError(
            f"cannot append an array of dtype {dt!r} to an ADIOS2 stream: ADIOS2 has no such "
            "type (use float64, or another store)"
        )
    return native


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Adios2Store(Store):
    """Streams over ADIOS2 SST (in-memory, writer to connected readers) or BP5 (files); holds
    no keys.

    `variables`: the variables to read from each step of a stream another producer writes (all,
    if None). `params`: further ADIOS2 engine parameters (e.g. {"DataTransport": "WAN"}).
    """

    def __init__(
        self,
        url: str,
        allow_pickle: bool = False,
        variables: list[str] | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        super().__init__(allow_pickle)
        rest = url.split("://", 1)[1]
        path, _, query = rest.partition("?")
        if not path:
            raise ValueError(f"adios2 store URL {url!r} names no directory: use adios2:///path")
        if not path.startswith("/"):
            raise ValueError(
                f"adios2 store URL {url!r} names a relative path or a host ({path!r}): the "
                "directory must be absolute, adios2:///path/dir (three slashes)"
            )
        parsed = parse_qs(query, keep_blank_values=True)
        twice = sorted(k for k, v in parsed.items() if len(v) > 1)
        if twice:
            raise ValueError(f"adios2 store URL {url!r} gives {', '.join(twice)} more than once")
        opts = {k: v[0] for k, v in parsed.items()}
        unknown = set(opts) - {"engine", "readers", "vars"}
        if unknown:
            raise ValueError(
                f"adios2 store URL {url!r} has unknown options {sorted(unknown)}: "
                "it takes engine=SST|BP5, readers=N and vars=a,b"
            )
        engine = opts.get("engine", "SST").upper()
        if engine not in ENGINES:
            raise ValueError(f"adios2 store URL {url!r}: engine must be SST or BP5, not {engine}")
        if engine == "BP5" and "readers" in opts:
            raise ValueError(
                f"adios2 store URL {url!r}: readers= is for SST (the writer waits for them); "
                "a BP5 file is read by any number of readers, whenever they come"
            )
        if "vars" in opts and not any(opts["vars"].split(",")):
            raise ValueError(f"adios2 store URL {url!r}: vars= names no variable")
        if params is not None and not isinstance(params, dict):
            raise TypeError(
                f"params must be a dict of ADIOS2 engine parameters, e.g. "
                f'{{"DataTransport": "WAN"}}, not {type(params).__name__} {params!r}'
            )
        try:
            readers = int(opts.get("readers", "1"))
        except ValueError:
            raise ValueError(f"adios2 store URL {url!r}: readers= must be an integer") from None
        check_int("readers", readers, 0)
        if "vars" in opts:
            if variables is not None:
                raise ValueError("give variables= or ?vars= in the URL, not both")
            variables = [v for v in opts["vars"].split(",") if v]
        if variables is not None and (
            isinstance(variables, str) or not all(isinstance(v, str) and v for v in variables)
        ):
            raise ValueError("variables must be a list of variable names")
        self._adios = _adios2()
        self.engine, self.readers = engine, readers
        self.variables = list(variables) if variables is not None else None
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.root = os.path.abspath(path)
        extra = "" if readers == 1 else f"&readers={readers}"
        if self.variables is not None and all("," not in v for v in self.variables):
            extra += "&vars=" + ",".join(self.variables)
        self.url = f"adios2://{self.root}?engine={engine}{extra}"  # opens the same elsewhere
        try:
            private_dir(self.root)
        except PermissionError:  # someone else's directory: said as it is
            raise
        except OSError as e:
            raise ConnectionError(f"cannot open store {self.url}: {e.strerror}") from None
        self._ad = self._adios.Adios()
        self._writers: dict[str, _Writer] = {}
        self._bounds: dict[str, tuple[int, str]] = {}
        self._closed_streams: set[str] = set()
        self._cursors: dict[str, _Cursor] = {}
        self._open_readers: weakref.WeakSet[Adios2StreamReader] = weakref.WeakSet()
        _open_stores.add(self)

    @property
    def sst(self) -> bool:
        """Whether the engine is SST (else BP5)."""
        return self.engine == "SST"

    def close(self) -> None:
        """End every stream this store writes (its readers see the end of the stream) and
        release its readers."""
        if not self._closed:
            for reader in list(self._open_readers):
                reader.close()
            for cursor in self._cursors.values():
                cursor.close()
            for writer in self._writers.values():
                writer.close()
            self._cursors.clear()
        super().close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit, modules may be gone
            pass

    # --- names and paths ----------------------------------------------------------------

    def path(self, stream: str) -> str:
        """The ADIOS2 name of stream `stream` (SST adds ".sst" for its contact file)."""
        parts = stream.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts) or any(
            not c.isprintable() for c in stream
        ):
            raise ValueError(
                f"stream name {stream!r} cannot name an ADIOS2 stream: its /-separated parts "
                "must be non-empty, printable and not start with '.'"
            )
        return os.path.join(self.root, *parts)

    def _exists_on_disk(self, stream: str) -> bool:
        p = self.path(stream)
        return os.path.lexists(p + ".sst" if self.sst else p)

    def _io(self, kind: str, params: dict[str, str]) -> Any:
        io = self._ad.declare_io(f"simai-{kind}-{os.getpid()}-{next(_ids)}")
        io.set_engine(self.engine)
        io.set_parameters({**params, **self.params})
        return io

    def _drop_io(self, io: Any) -> None:
        with contextlib.suppress(Exception):
            self._ad.remove_io(io._name)

    def _refuse_keys(self, *_: Any) -> NoReturn:
        raise NotSupported(
            f"store {self.url} holds ADIOS2 streams only, not keys: keep keys in a second store "
            "(local://, file:// or redis://) and use this one for create_stream, append and "
            "stream"
        )

    # --- keys: not held ------------------------------------------------------------------

    def _write(self, key: str, header: bytes, payload: memoryview) -> None:
        self._refuse_keys()

    def _read(self, key: str, view: bool) -> tuple[Any, int]:
        self._refuse_keys()

    def _read_into(self, key: str, out: np.ndarray) -> None:
        self._refuse_keys()

    def _exists(self, key: str) -> bool:
        self._refuse_keys()

    def _delete(self, key: str) -> bool:
        self._refuse_keys()

    def _keys(self, prefix: str) -> list[str]:
        self._refuse_keys()

    def _wait(self, key: str, deadline: float | None) -> bool:
        self._refuse_keys()

    def _write_many(self, entries: list[tuple[str, bytes, memoryview]]) -> None:
        self._refuse_keys()

    # --- writing -------------------------------------------------------------------------

    def create_stream(self, name: str, maxlen: int | None = None, policy: str = "block") -> None:
        """Bound an SST stream before its first append: `maxlen` steps queued for its slowest
        reader (QueueLimit), then "block" (QueueFullPolicy Block: `append` waits) or
        "drop_newest" (Discard: the new step is dropped). "drop_oldest" and any bound of a BP5
        stream (a file keeps every step) are NotSupported."""
        if self._closed:
            self._raise_closed()
        check_key(name, "stream name")
        self.path(name)
        if policy not in ADIOS2_POLICIES:
            raise ValueError(f"policy must be one of {ADIOS2_POLICIES}, not {policy!r}")
        if maxlen is None:
            if name in self._bounds:
                raise ValueError(
                    f"stream {name!r} is bounded to maxlen={self._bounds[name][0]}; "
                    "it cannot be declared unbounded"
                )
            return
        check_int("maxlen", maxlen, 1)
        self._create_stream(name, maxlen, policy)

    def _create_stream(self, stream: str, maxlen: int, policy: str) -> None:
        if not self.sst:
            raise NotSupported(
                f"a BP5 stream is a file that keeps every step, so it cannot be bounded "
                f"(stream {stream!r}); use engine=SST, or another store, for a bounded stream"
            )
        if policy == "drop_oldest":
            raise NotSupported(
                "SST cannot drop the oldest step of a full queue: its Discard policy drops the "
                "newest; declare policy='drop_newest' for that, or 'block'"
            )
        had = self._bounds.get(stream)
        if had is not None and had != (maxlen, policy):
            raise ValueError(
                f"stream {stream!r} is bounded to maxlen={had[0]} policy={had[1]!r}, "
                f"not maxlen={maxlen} policy={policy!r}"
            )
        writer = self._writers.get(stream)
        if had is None and writer is not None:
            raise ValueError(f"stream {stream!r} already holds values appended without bounds")
        self._bounds[stream] = (maxlen, policy)

    def _writer(self, stream: str) -> _Writer:
        writer = self._writers.get(stream)
        if writer is not None:
            return writer
        if stream in self._closed_streams:
            raise ValueError(f"stream {stream!r} was closed; it takes no more values")
        path = self.path(stream)
        if self._exists_on_disk(stream):
            raise ValueError(
                f"stream {stream!r} already exists at {path}{'.sst' if self.sst else ''} "
                "(another producer, or an earlier run): an ADIOS2 stream has one producer; "
                "delete_stream() it first or use another name"
            )
        parent = os.path.dirname(path)
        if parent != self.root:
            os.makedirs(parent, 0o700, exist_ok=True)
        params: dict[str, str] = {}
        if self.sst:
            params["RendezvousReaderCount"] = str(self.readers)
            maxlen, policy = self._bounds.get(stream, (0, "block"))
            params["QueueLimit"] = str(maxlen)
            params["QueueFullPolicy"] = "Discard" if policy == "drop_newest" else "Block"
        io = self._io("w", params)
        try:
            engine = io.open(path, self._adios.Mode.Write)
        except Exception as e:
            self._drop_io(io)
            raise ConnectionError(f"cannot open ADIOS2 stream {path}: {_message(e)}") from None
        writer = _Writer(self, io, engine, path)
        self._writers[stream] = writer
        return writer

    def _append(
        self, stream: str, header: bytes, payload: memoryview, deadline: float | None
    ) -> int | None:
        writer = self._writers.get(stream)
        if deadline is not None and self.sst:
            if writer is None and self.readers:
                raise NotSupported(
                    f"the first append to SST stream {stream!r} waits, without a timeout ADIOS2 "
                    f"can honour, until {self.readers} reader(s) connect: append it with "
                    "timeout=None, or open the store with readers=0"
                )
            if self._bounds.get(stream, (0, ""))[1] == "block":
                raise NotSupported(
                    f"an append to SST stream {stream!r}, bounded with policy 'block', may "
                    "wait (when its queue is full) without a timeout ADIOS2 can honour: append "
                    "with timeout=None"
                )
        head, _ = codec.parse_header(header)
        if head.kind == codec.ARRAY:
            assert head.dt is not None
            wire, native = _wire_dtype(head.dt), head.dt.newbyteorder("=")
            arr = np.frombuffer(payload, dtype=head.dt).reshape(head.shape)
            if not head.dt.isnative:
                arr = arr.astype(native)
            value: Any = arr if wire == native else arr.view(wire)
        elif head.kind == codec.JSON:
            value = bytes(payload).decode("utf-8")
        else:
            value = np.frombuffer(payload, dtype=np.uint8)
        writer = self._writer(stream)
        return writer.put(np.frombuffer(bytearray(header), np.uint8), value, stream)

    def _close_stream(self, stream: str) -> None:
        writer = self._writers.get(stream)
        if writer is None and stream not in self._closed_streams:
            if self._exists_on_disk(stream):
                raise NotSupported(
                    f"stream {stream!r} is written by another process: only its producer can "
                    "end an ADIOS2 stream (its close ends it)"
                )
            writer = self._writer(stream)  # an empty stream that ends at once
        if writer is not None:
            writer.close()
        self._closed_streams.add(stream)

    def _delete_stream(self, stream: str) -> bool:
        writer = self._writers.pop(stream, None)
        if writer is not None:
            writer.close()
        self._bounds.pop(stream, None)
        self._closed_streams.discard(stream)
        cursor = self._cursors.pop(stream, None)
        if cursor is not None:
            cursor.close()
        path = self.path(stream)
        existed = writer is not None
        if self.sst:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + ".sst")
                existed = True
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            existed = True
        groups = self._groups_dir(stream)
        if os.path.isdir(groups):
            shutil.rmtree(groups, ignore_errors=True)
        return existed

    # --- reading -------------------------------------------------------------------------

    def stream(
        self,
        name: str,
        start: int | None = None,
        timeout: float | None = None,
        view: bool = False,
        *,
        last: int | None = None,
        group: str | None = None,
    ) -> Adios2StreamReader:
        """Iterate the steps of stream `name` in order, as `Store.stream` does, each through its
        own ADIOS2 reader.

        On SST the reader sees the steps the writer still queues when it connects (earlier
        ones count in `.skipped`), `start=` skips forward, and `last=` and `group=` are
        NotSupported (SST keeps neither a length nor positions). On BP5 all of them work.
        """
        if self._closed:
            self._raise_closed()
        check_key(name, "stream name")
        self.path(name)
        if group is not None:
            check_key(group, "group name")
        if start is not None and last is not None:
            raise ValueError("stream() takes start= or last=, not both")
        check_int("start", start, 0, optional=True)
        check_int("last", last, 0, optional=True)
        if self.sst and group is not None:
            raise NotSupported(
                "SST keeps no consumer positions: a reader that reconnects sees the steps from "
                "then on; use engine=BP5 (a file), or another store, for consumer groups"
            )
        if self.sst and last is not None:
            raise NotSupported(
                "SST keeps no steps a reader could replay: last= needs engine=BP5 or another store"
            )
        if last is not None:
            info = self._stream_info(name)
            start = max(0, info["length"] - last)
        elif start is None:
            start = (self._position(name, group) if group is not None else None) or 0
        reader = Adios2StreamReader(self, name, start, timeout, view, group)
        self._open_readers.add(reader)
        return reader

    def _stream_read(
        self, stream: str, index: int, deadline: float | None, view: bool
    ) -> tuple[Any, int] | None:
        cursor = self._cursors.get(stream)
        if cursor is None:
            cursor = self._cursors[stream] = _Cursor(self, stream)
        return cursor.read(index, deadline, view)

    def _scan(self, stream: str) -> tuple[int, bool]:
        """A BP5 stream's (number of complete steps, whether its writer closed it)."""
        adios2 = self._adios
        path = self.path(stream)
        if not os.path.isdir(path):
            return 0, False
        io = self._io("scan", {"OpenTimeoutSecs": "0"})
        try:
            engine = io.open(path, adios2.Mode.Read)
        except Exception:
            self._drop_io(io)
            return 0, False
        n, closed = 0, False
        try:
            while True:
                status = engine.begin_step(adios2.StepMode.Read, 0.0)
                if status == adios2.StepStatus.OK:
                    n += 1
                    engine.end_step()
                    continue
                closed = status == adios2.StepStatus.EndOfStream
                break
        finally:
            engine.close()
            self._drop_io(io)
        return n, closed

    def _stream_len(self, stream: str) -> int:
        if not self.sst:
            return self._scan(stream)[0]
        writer = self._writers.get(stream)
        if writer is None:
            raise NotSupported(
                f"SST cannot tell how many steps another process wrote to stream {stream!r}; "
                "only its producer knows (stream_len there), or use engine=BP5"
            )
        return writer.count

    def _stream_info(self, stream: str) -> dict[str, Any]:
        if self.sst:
            writer = self._writers.get(stream)
            maxlen, policy = self._bounds.get(stream, (None, None))
            return {
                "length": None if writer is None else writer.count,
                "start": 0,
                "maxlen": maxlen,
                "policy": policy,
                "dropped": None,
                "closed": stream in self._closed_streams,
                "groups": {},
                "engine": "SST",
            }
        length, closed = self._scan(stream)
        return {
            "length": length,
            "start": 0,
            "maxlen": None,
            "policy": None,
            "dropped": 0,
            "closed": closed,
            "groups": self._groups(stream),
            "engine": "BP5",
        }

    # --- consumer groups (BP5 only) --------------------------------------------------------

    def _groups_dir(self, stream: str) -> str:
        return os.path.join(self.root, _GROUPS, encode_name(stream))

    def _set_position(self, stream: str, group: str, index: int) -> None:
        if self.sst:
            raise NotSupported("SST keeps no consumer positions; use engine=BP5")
        d = self._groups_dir(stream)
        os.makedirs(d, 0o700, exist_ok=True)
        name = os.path.join(d, encode_name(group))
        tmp = f"{name}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{index}\n{group}")
        os.replace(tmp, name)

    def _position(self, stream: str, group: str) -> int | None:
        if self.sst:
            return None
        try:
            with open(os.path.join(self._groups_dir(stream), encode_name(group)), "rb") as f:
                return int(f.read().split(b"\n", 1)[0])
        except FileNotFoundError:
            return None

    def _groups(self, stream: str) -> dict[str, int]:
        d = self._groups_dir(stream)
        out = {}
        with contextlib.suppress(FileNotFoundError):
            for n in os.listdir(d):
                if n.endswith(".tmp"):
                    continue
                with contextlib.suppress(FileNotFoundError, ValueError):
                    with open(os.path.join(d, n), encoding="utf-8") as f:
                        index, _, group = f.read().partition("\n")
                    out[group] = int(index)
        return out


class _Writer:
    """The ADIOS2 engine that writes one stream; each put is one step."""

    def __init__(self, store: Adios2Store, io: Any, engine: Any, path: str) -> None:
        self.store, self.io, self.engine, self.path = store, io, engine, path
        self.count = 0
        self.closed = False
        self.kind: tuple[str, int] | None = None  # the value variable's type and rank

    def _variable(self, name: str, value: Any, what: str, stream: str) -> Any:
        var = self.io.inquire_variable(name)
        if isinstance(value, str):
            kind = ("string", 0)
        else:
            kind = (value.dtype.str, value.ndim)
        if var is None:
            if isinstance(value, str):
                var = self.io.define_variable(name, value)
            else:  # the binding takes the type from a writable example
                example = np.zeros(1, dtype=value.dtype)
                shape = list(value.shape)
                var = self.io.define_variable(name, example, shape, [0] * value.ndim, shape)
            if what == VALUE:
                self.kind = kind
            return var
        if what == VALUE and kind != self.kind:
            assert self.kind is not None
            raise TypeError(
                f"stream {stream!r} carries {_describe(self.kind)} in ADIOS2 variable "
                f"{VALUE!r}; an ADIOS2 variable keeps its type and rank, so it cannot take "
                f"{_describe(kind)}: append it to another stream"
            )
        if not isinstance(value, str) and value.ndim:
            shape = list(value.shape)
            var.set_shape(shape)
            var.set_selection([[0] * value.ndim, shape])
        return var

    def put(self, header: np.ndarray, value: Any, stream: str) -> int:
        if self.closed:
            raise ValueError(f"stream {stream!r} was closed; it takes no more values")
        adios2 = self.store._adios
        hvar = self._variable(HEADER, header, HEADER, stream)
        vvar = self._variable(VALUE, value, VALUE, stream)
        engine = self.engine
        engine.begin_step(adios2.StepMode.Append, -1.0)
        try:
            engine.put(hvar, header, adios2.Mode.Sync)
            if isinstance(value, str):
                engine.put(vvar, value)
            else:
                if not value.flags.writeable:  # the binding crashes on read-only buffers
                    value = value.copy()
                engine.put(vvar, value, adios2.Mode.Sync)
        finally:
            engine.end_step()
        self.count += 1
        return self.count - 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.engine.close()
            self.store._drop_io(self.io)


def _describe(kind: tuple[str, int]) -> str:
    return "JSON text" if kind[0] == "string" else f"{np.dtype(kind[0])} arrays of rank {kind[1]}"


class _Cursor:
    """One ADIOS2 reader of one stream: the steps it read, in order, one at a time."""

    def __init__(self, store: Adios2Store, stream: str) -> None:
        self.store, self.stream = store, stream
        self.io: Any = None
        self.engine: Any = None
        self.pending: tuple[int, tuple[Any, int]] | None = None
        self.next = 0  # the index after the last step handed out
        self.ended = False

    def close(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            with contextlib.suppress(Exception):
                engine.close()
            self.store._drop_io(self.io)

    def _open(self, deadline: float | None) -> bool:
        store = self.store
        adios2 = store._adios
        left = _remaining(deadline)
        params = {"OpenTimeoutSecs": str(_FOREVER if left is None else max(left, 0.001))}
        if not store.sst:
            params["BeginStepPollingFrequencySecs"] = _POLL
        self.io = store._io("r", params)
        path = store.path(self.stream)
        try:
            self.engine = self.io.open(path, adios2.Mode.Read)
        except Exception as e:
            store._drop_io(self.io)
            text = _message(e)
            left = _remaining(deadline)
            if store.sst and os.path.exists(path + ".sst") and (left is None or left > 0.5):
                raise ConnectionError(  # it failed well before the deadline: no writer there
                    f"cannot read ADIOS2 stream {path}: its contact file {path}.sst is there "
                    f"but no writer answers ({text}); a producer that died leaves it behind: "
                    f"delete_stream({self.stream!r}) removes it"
                ) from None
            if deadline is not None and "imeout" in text:  # nothing to read came in time
                return False
            raise ConnectionError(f"cannot read ADIOS2 stream {path}: {text}") from None
        return True

    def read(self, index: int, deadline: float | None, view: bool) -> tuple[Any, int] | None:
        adios2 = self.store._adios
        while True:
            if self.pending is not None:
                step, got = self.pending
                if step > index:
                    raise StreamTrimmed(step)
                self.pending = None
                if step == index:
                    self.next = step + 1
                    return got
                continue
            if self.ended:
                raise StreamEnded(self.stream)
            if index < self.next:
                raise NotSupported(
                    f"step {index} of stream {self.stream!r} was already read by this reader; "
                    "an ADIOS2 reader moves forward only (open another reader)"
                )
            if self.engine is None and not self._open(deadline):
                return None
            left = _remaining(deadline)
            status = self.engine.begin_step(adios2.StepMode.Read, -1.0 if left is None else left)
            if status == adios2.StepStatus.NotReady:
                return None
            if status == adios2.StepStatus.EndOfStream:
                self.ended = True
                self.close()
                continue
            if status != adios2.StepStatus.OK:
                raise ConnectionError(
                    f"ADIOS2 stream {self.store.path(self.stream)} failed (step status {status})"
                )
            try:
                step = self.engine.current_step()
                if step >= index:
                    self.pending = step, self._step(view)
            finally:
                self.engine.end_step()
            if self.pending is None:
                self.next = step + 1

    def _get(self, name: str, var: Any) -> Any:
        """The whole of variable `name` in the current step: a string at once, an array
        filled by the next `perform_gets` (deferred, so one step's gets make one request)."""
        adios2 = self.store._adios
        kind = var.type()
        if kind == "string":
            return self.engine.get(var)
        code = _FROM_ADIOS.get(kind)
        if code is None:
            raise TypeError(f"ADIOS2 variable {name!r} has type {kind}, which simai cannot read")
        sid = var.shape_id()
        if sid == adios2.ShapeID.GlobalValue:
            out = np.empty((), dtype=code)
        elif sid == adios2.ShapeID.GlobalArray:
            shape = var.shape()
            var.set_selection([[0] * len(shape), shape])
            out = np.empty(shape, dtype=code)
        else:
            raise NotSupported(
                f"ADIOS2 variable {name!r} is a local (per-writer-block) variable; simai reads "
                "global arrays and values"
            )
        if out.size:
            self.engine.get(var, out, adios2.Mode.Deferred)
        return out

    def _step(self, view: bool) -> tuple[Any, int]:
        io = self.io
        hvar = io.inquire_variable(HEADER)
        if hvar is not None:
            return self._simai_step(hvar, view)
        names = sorted(io.available_variables())
        if self.store.variables is not None:
            missing = [n for n in self.store.variables if n not in names]
            if missing:
                raise KeyError(
                    f"step {self.engine.current_step()} of ADIOS2 stream {self.stream!r} has no "
                    f"variable {missing[0]!r} (it has {names})"
                )
            names = self.store.variables
        values = {n: self._get(n, io.inquire_variable(n)) for n in names}
        self.engine.perform_gets()
        for v in values.values():
            if view and isinstance(v, np.ndarray):
                v.flags.writeable = False
        size = sum(v.nbytes if isinstance(v, np.ndarray) else len(v) for v in values.values())
        if len(values) == 1:
            return next(iter(values.values())), size
        return values, size

    def _simai_step(self, hvar: Any, view: bool) -> tuple[Any, int]:
        raw = self._get(HEADER, hvar)
        vvar = self.io.inquire_variable(VALUE)
        if vvar is None:
            raise CorruptValueError(f"step has a simai header but no variable {VALUE!r}")
        got = self._get(VALUE, vvar)
        self.engine.perform_gets()
        if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 1:
            raise CorruptValueError(f"ADIOS2 variable {HEADER!r} is not a simai header")
        head, checksum = codec.parse_header(raw.tobytes())
        if head.kind == codec.JSON:
            if not isinstance(got, str):
                raise CorruptValueError("a JSON step does not hold an ADIOS2 string")
            payload: Any = got.encode("utf-8")
        else:
            if not isinstance(got, np.ndarray):
                raise CorruptValueError(f"step's {VALUE!r} is not an array")
            if head.kind == codec.ARRAY:
                assert head.dt is not None
                if got.shape != tuple(head.shape):
                    raise CorruptValueError(
                        f"step's array has shape {got.shape}, its header says {head.shape}"
                    )
                if got.dtype != _wire_dtype(head.dt):
                    raise CorruptValueError(
                        f"step's array has dtype {got.dtype}, its header says {head.dt}"
                    )
                native = head.dt.newbyteorder("=")
                if got.dtype != native:
                    got = got.view(native)
                if not head.dt.isnative:
                    got = got.astype(head.dt)
            payload = got.reshape(-1).view(np.uint8) if got.size else b""
        if len(payload) != head.nbytes:
            raise CorruptValueError(
                f"step holds {len(payload)} bytes, its header says {head.nbytes}"
            )
        value = codec.decode_payload(head, checksum, payload, not view, self.store.allow_pickle)
        if head.kind == codec.ARRAY and not view and not value.flags.writeable:
            value = value.copy()
        return value, head.offset + head.nbytes


class Adios2StreamReader(StreamReader):
    """The iterator `Adios2Store.stream` returns: a StreamReader with its own ADIOS2 reader,
    closed when the stream ends, when `close()` is called, or with the store."""

    def __init__(
        self,
        store: Adios2Store,
        name: str,
        start: int,
        timeout: float | None,
        view: bool,
        group: str | None,
    ) -> None:
        super().__init__(store, name, start, timeout, view, group)
        self._cursor = _Cursor(store, name)

    def close(self) -> None:
        """Disconnect from the stream (an SST writer stops queueing steps for this reader)."""
        self._cursor.close()

    def __del__(self) -> None:
        try:
            self._cursor.close()
        except Exception:  # at interpreter exit, modules may be gone
            pass

    def _read(self, index: int, deadline: float | None) -> tuple[Any, int] | None:
        return self._cursor.read(index, deadline, self.view)
