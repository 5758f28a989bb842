"""The wire format of a stored value: a small language-neutral header plus the raw buffer, with
a checksum over both that every read verifies.

Layout (all integers little-endian), documented in the README for C and Fortran readers:

    offset     size      field
    0          4         magic b"SMAI"
    4          1         format version (2)
    5          1         kind: 0 bytes, 1 array, 2 JSON (UTF-8), 3 pickle (opt-in only)
    6          1         ndim (0..32; 0 for anything but arrays of rank 1+)
    7          1         reserved, 0
    8          8         dtype as a numpy typestr, ASCII, NUL-padded ("<f4", "|b1", "<c16")
    16         8         payload length in bytes (uint64)
    24         8*ndim    shape (uint64 each), C order
    24+8*ndim  8         checksum: XXH3-64 of the payload, seeded with the XXH3-64 of every
                         header byte before this field
    ...                  zero padding up to a multiple of 64 bytes; the payload starts there

Arrays are always stored in C order, so a non-contiguous array is copied once on the way in.
XXH3 runs at tens of GB/s on one core, so verifying every read costs a fraction of the copy.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import queue
import struct
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import numpy as np
from xxhash import xxh3_64_intdigest

T = TypeVar("T")

MAGIC = b"SMAI"
VERSION = 2
ALIGN = 64
MAX_NDIM = 32

BYTES, ARRAY, JSON, PICKLE = 0, 1, 2, 3

PARALLEL_MIN = 4 << 20
"""Payloads at least this large are hashed on another core while they are copied."""

_FIXED = struct.Struct("<4sBBBB8sQ")
_SUM = struct.Struct("<Q")
_NUMERIC_KINDS = frozenset("biufc")
_CACHED = 4096


class CorruptValueError(ValueError):
    """A stored entry is truncated, or its header or payload was altered after it was written."""


class Header(NamedTuple):
    """A header's fields, checked: every header that parses describes a payload it can decode."""

    kind: int
    dtype: str
    shape: tuple[int, ...]
    offset: int
    """Where the payload starts in the entry (the header's length)."""
    nbytes: int
    """The payload's length."""
    seed: int
    """XXH3-64 of the header bytes the checksum covers: the seed of the payload's hash."""
    dt: np.dtype | None
    """The numpy dtype of an array entry (None for other kinds)."""


def header_size(ndim: int) -> int:
    raw = _FIXED.size + 8 * ndim + _SUM.size
    return -(-raw // ALIGN) * ALIGN


_PADS = [bytes(header_size(n) - _FIXED.size - 8 * n - _SUM.size) for n in range(MAX_NDIM + 1)]
_bodies: dict[Any, tuple[bytes, int, struct.Struct]] = {}  # what a header says -> its body,
# seed, and the struct that packs the body, a checksum and the padding into a whole header
_parsed: dict[bytes, Header] = {}  # header bytes before the checksum -> its fields


# --- encoding ---------------------------------------------------------------------------------


def _to_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    mod = type(value).__module__
    if mod.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return None


def encode(value: Any, allow_pickle: bool = False, defer: bool = False) -> tuple[bytes, memoryview]:
    """Return (header, payload) for a value; the payload is a view, not a copy, where possible.

    `defer=True` leaves the checksum of a payload of PARALLEL_MIN bytes or more 0, for a caller
    that computes it while it copies the payload (`hash_while`) and then `seal`s the header."""
    arr = value if type(value) is np.ndarray else _to_array(value)
    if arr is not None:
        ident = (arr.dtype, arr.shape)
        made = _bodies.get(ident)
        if made is None:
            dt = arr.dtype
            if dt.kind not in _NUMERIC_KINDS or dt.fields is not None:
                raise TypeError(
                    f"cannot store an array of dtype {dt!r}: only numeric and bool dtypes "
                    "travel as raw buffers (object, string, datetime and structured arrays do "
                    "not; convert them, e.g. datetimes with .astype('int64'))"
                )
            if arr.ndim > MAX_NDIM:
                raise TypeError(
                    f"cannot store an array of {arr.ndim} dimensions (at most {MAX_NDIM})"
                )
            made = _body(ident, ARRAY, dt.str, arr.shape, arr.nbytes)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        if arr.ndim and arr.size:
            payload = memoryview(arr).cast("B")
        else:
            payload = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
        return _sealed(made, payload, defer), payload
    if isinstance(value, (bytes, bytearray, memoryview)):
        payload = memoryview(value).cast("B")
        return _header(BYTES, payload, defer), payload
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError as e:
        why = str(e)
        if "Out of range float" in why:
            why = "NaN and Infinity have no JSON form (store them in a numpy array)"
        raise ValueError(f"cannot store {_short(value)} as JSON metadata: {why}") from None
    except TypeError as e:
        if not allow_pickle:
            raise TypeError(
                f"cannot store a value of type {type(value).__name__} ({e}): store numpy "
                "arrays, torch tensors, bytes or JSON metadata (dicts, lists, str, int, float, "
                "bool, None; numpy scalars inside metadata need int() or float()), or open the "
                "store with allow_pickle=True"
            ) from None
        payload = memoryview(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        return _header(PICKLE, payload, defer), payload
    if isinstance(value, (dict, list, tuple)):
        _check_keys(value)
    payload = memoryview(text.encode())
    return _header(JSON, payload, defer), payload


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(value: Any) -> None:
    """Refuse dict keys that JSON would turn into strings, so a value comes back as it went in."""
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str:
                back = json.dumps(next(iter(json.loads(json.dumps({k: 0})))))
                raise ValueError(
                    f"cannot store {_short(value)} as JSON metadata: key {k!r} is not a str, "
                    f"and would come back as the string {back} (JSON keys are strings)"
                )
            if isinstance(v, (dict, list, tuple)):
                _check_keys(v)
    else:
        for v in value:
            if isinstance(v, (dict, list, tuple)):
                _check_keys(v)


def _body(
    ident: Any, kind: int, dtype: str, shape: tuple[int, ...], nbytes: int
) -> tuple[bytes, int, struct.Struct]:
    """The header bytes before the checksum, the seed they give, and a struct that packs them
    with a checksum and the padding after it."""
    fixed = _FIXED.pack(MAGIC, VERSION, kind, len(shape), 0, dtype.encode("ascii"), nbytes)
    body = fixed + struct.pack(f"<{len(shape)}Q", *shape) if shape else fixed
    if len(_bodies) >= _CACHED:
        _bodies.clear()
    sealed = struct.Struct(f"<{len(body)}sQ{len(_PADS[len(shape)])}x")
    made = _bodies[ident] = (body, xxh3_64_intdigest(body), sealed)
    return made


def _header(kind: int, payload: memoryview, defer: bool) -> bytes:
    """The header of a bytes, JSON or pickle payload."""
    ident = (kind, payload.nbytes)
    made = _bodies.get(ident) or _body(ident, kind, "", (), payload.nbytes)
    return _sealed(made, payload, defer)


def _sealed(made: tuple[bytes, int, struct.Struct], payload: memoryview, defer: bool) -> bytes:
    body, seed, sealed = made
    if defer and payload.nbytes >= PARALLEL_MIN:
        return sealed.pack(body, 0)
    return sealed.pack(body, xxh3_64_intdigest(payload, seed))


def header_seed(header: bytes) -> int:
    """The seed of the payload's hash: XXH3-64 of the header bytes before the checksum."""
    return xxh3_64_intdigest(header[: _FIXED.size + 8 * header[6]])


def seal(header: bytes, checksum: int) -> bytes:
    """`header` (from `encode(..., defer=True)`) with its checksum filled in."""
    end = _FIXED.size + 8 * header[6]
    return header[:end] + _SUM.pack(checksum) + header[end + _SUM.size :]


# --- hashing a large payload beside its copy ------------------------------------------------

_jobs: queue.SimpleQueue | None = None


def _hash_jobs() -> None:
    assert _jobs is not None
    while True:
        payload, seed, box, done = _jobs.get()
        try:
            box.append(xxh3_64_intdigest(payload, seed))
        except BaseException as e:  # noqa: BLE001 - handed back to the waiting caller
            box.append(e)
        done.release()


def _forget_jobs() -> None:
    global _jobs
    _jobs = None  # the helper thread did not survive the fork


os.register_at_fork(after_in_child=_forget_jobs)


def hash_beside(payload: Any, seed: int) -> Callable[[], int]:
    """Start the XXH3-64 of `payload` (seeded) and return a function that waits for it. A
    large payload is hashed by a helper thread on another core meanwhile, so that a copy of it
    (which releases the GIL) runs beside; a small one is hashed when the function is called."""
    global _jobs
    if memoryview(payload).nbytes < PARALLEL_MIN or len(os.sched_getaffinity(0)) < 2:
        return lambda: xxh3_64_intdigest(payload, seed)
    if _jobs is None:
        _jobs = queue.SimpleQueue()
        threading.Thread(target=_hash_jobs, name="simai-checksum", daemon=True).start()
    box: list[Any] = []
    done = threading.Lock()
    done.acquire()
    _jobs.put((payload, seed, box, done))

    def digest() -> int:
        done.acquire()
        done.release()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    return digest


def hash_while(payload: Any, seed: int, work: Callable[[], T]) -> tuple[int, T]:
    """The XXH3-64 of `payload` (seeded) and what `work()` returned, the hash computed beside
    `work` (a copy from or into the payload) where it is large (see hash_beside)."""
    digest = hash_beside(payload, seed)
    try:
        result = work()
    finally:
        checksum = digest()
    return checksum, result


# --- decoding ---------------------------------------------------------------------------------


def parse_header(buf: Any) -> tuple[Header, int]:
    """The header at the start of `buf` and the checksum it holds, or CorruptValueError saying
    what is wrong with it."""
    mv = buf if type(buf) is memoryview and buf.format == "B" else memoryview(buf).cast("B")
    n = len(mv)
    if n < _FIXED.size + _SUM.size:
        raise CorruptValueError(f"entry is truncated: {n} bytes, shorter than a header")
    end = _FIXED.size + 8 * mv[6]
    if n < end + _SUM.size:
        raise CorruptValueError("entry is truncated inside its header")
    head = _parsed.get(mv[:end]) if mv.readonly else None  # hashable as its bytes are
    if head is None:
        body = mv[:end].tobytes()
        head = _parsed.get(body)
        if head is None:
            head = _parse(body)
            if len(_parsed) >= _CACHED:
                _parsed.clear()
            _parsed[body] = head
    return head, _SUM.unpack_from(mv, end)[0]


def _parse(body: bytes) -> Header:
    magic, version, kind, ndim, _, dtype, nbytes = _FIXED.unpack_from(body)
    if magic != MAGIC:
        raise CorruptValueError("entry does not start with the simai magic bytes")
    if version != VERSION:
        raise CorruptValueError(
            f"entry has format version {version}, this simai reads version {VERSION}"
        )
    if ndim > MAX_NDIM or kind > PICKLE:
        raise CorruptValueError("entry header is damaged")
    shape = struct.unpack_from(f"<{ndim}Q", body, _FIXED.size) if ndim else ()
    try:
        typestr = dtype.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        raise CorruptValueError("entry header is damaged") from None
    dt = None
    if kind == ARRAY:
        try:
            dt = np.dtype(typestr)
        except TypeError:
            raise CorruptValueError(f"entry has an unknown dtype {typestr!r}") from None
        if dt.kind not in _NUMERIC_KINDS or math.prod(shape) * dt.itemsize != nbytes:
            raise CorruptValueError("entry payload length does not match its dtype and shape")
    elif typestr or ndim:
        raise CorruptValueError("entry header is damaged")
    return Header(kind, typestr, shape, header_size(ndim), nbytes, xxh3_64_intdigest(body), dt)


def verify(head: Header, checksum: int, payload: Any) -> None:
    """CorruptValueError unless `payload` is the payload `head` and `checksum` came with."""
    check(checksum, xxh3_64_intdigest(payload, head.seed))


def check(checksum: int, digest: int) -> None:
    """CorruptValueError unless `digest` (of a payload) is the `checksum` its header holds."""
    if digest != checksum:
        raise CorruptValueError("entry fails its checksum: it was altered after it was written")


def decode(buf: Any, writable: bool = True, allow_pickle: bool = False) -> Any:
    """Decode and verify a whole entry; arrays are views on `buf` (zero-copy)."""
    mv = memoryview(buf).cast("B")
    head, checksum = parse_header(mv)
    if mv.nbytes != head.offset + head.nbytes:
        raise CorruptValueError(
            f"entry is truncated or padded: expected {head.offset + head.nbytes} bytes, "
            f"found {mv.nbytes}"
        )
    return decode_payload(head, checksum, mv[head.offset :], writable, allow_pickle)


def decode_payload(
    head: Header, checksum: int, payload: Any, writable: bool, allow_pickle: bool
) -> Any:
    """The value of an entry's payload, verified first (arrays are views on `payload`)."""
    verify(head, checksum, payload)
    kind = head.kind
    if kind == ARRAY:
        arr = np.frombuffer(payload, dtype=head.dt).reshape(head.shape)
        if not writable and arr.flags.writeable:
            arr.flags.writeable = False
        return arr
    if kind == BYTES:
        return bytes(payload)
    if kind == JSON:
        try:
            return json.loads(bytes(payload))
        except ValueError as e:
            raise CorruptValueError(f"entry holds damaged JSON: {e}") from None
    if not allow_pickle:
        raise TypeError(
            "entry holds a pickled object; open the store with allow_pickle=True to load it "
            "(unpickling runs code: only do so for data you trust)"
        )
    return pickle.loads(payload)


def new_array(head: Header) -> np.ndarray:
    """An empty array with the dtype and shape of an array entry."""
    return np.empty(head.shape, dtype=head.dt)


def check_into(head: Header, size: int, out: np.ndarray) -> None:
    """Check that the entry of `size` bytes with header `head` is an array that fits `out`."""
    if size != head.offset + head.nbytes:
        raise CorruptValueError(
            f"entry is truncated or padded: expected {head.offset + head.nbytes} bytes, "
            f"found {size}"
        )
    if head.kind != ARRAY:
        raise TypeError("out= needs an array entry; this entry holds bytes or metadata")
    if head.dt != out.dtype or tuple(head.shape) != out.shape:
        raise ValueError(
            f"out= is {out.dtype} {out.shape}, the stored array is {head.dt} {head.shape}"
        )


def decode_into(buf: Any, out: np.ndarray) -> np.ndarray:
    """Copy an array entry into `out`, which must have the entry's dtype and shape, and verify
    the copy."""
    mv = memoryview(buf).cast("B")
    head, checksum = parse_header(mv)
    check_into(head, mv.nbytes, out)
    flat = out.reshape(-1).view(np.uint8)
    if out.nbytes:
        np.copyto(flat, np.frombuffer(mv, np.uint8, out.nbytes, head.offset))
    verify(head, checksum, flat)
    return out
