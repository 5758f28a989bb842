"""The wire format of a stored value: a small language-neutral header plus the raw buffer.

Layout (all integers little-endian), documented in the README for C and Fortran readers:

    offset  size      field
    0       4         magic b"SMAI"
    4       1         format version (1)
    5       1         kind: 0 bytes, 1 array, 2 JSON (UTF-8), 3 pickle (opt-in only)
    6       1         ndim (0..32; 0 for anything but arrays of rank 0+)
    7       1         reserved, 0
    8       8         dtype as a numpy typestr, ASCII, NUL-padded ("<f4", "|b1", "<c16")
    16      8         payload length in bytes (uint64)
    24      8*ndim    shape (uint64 each), C order
    24+8*ndim  4      CRC-32 of every header byte before it
    ...               zero padding up to a multiple of 64 bytes; the payload starts there

Arrays are always stored in C order, so a non-contiguous array is copied once on the way in.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import zlib
from typing import Any

import numpy as np

MAGIC = b"SMAI"
VERSION = 1
ALIGN = 64
MAX_NDIM = 32

BYTES, ARRAY, JSON, PICKLE = 0, 1, 2, 3

_FIXED = struct.Struct("<4sBBBB8sQ")
_CRC = struct.Struct("<I")
_NUMERIC_KINDS = frozenset("biufc")


class CorruptValueError(ValueError):
    """A stored entry is truncated or its header is damaged."""


def header_size(ndim: int) -> int:
    raw = _FIXED.size + 8 * ndim + _CRC.size
    return -(-raw // ALIGN) * ALIGN


def _to_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    mod = type(value).__module__
    if mod.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return None


def encode(value: Any, allow_pickle: bool = False) -> tuple[bytes, memoryview]:
    """Return (header, payload) for a value; the payload is a view, not a copy, where possible."""
    arr = _to_array(value)
    if arr is not None:
        if arr.dtype.kind not in _NUMERIC_KINDS or arr.dtype.fields is not None:
            raise TypeError(
                f"cannot store an array of dtype {arr.dtype!r}: only numeric and bool dtypes "
                "travel as raw buffers (object, string and structured arrays do not)"
            )
        if arr.ndim > MAX_NDIM:
            raise TypeError(f"cannot store an array of {arr.ndim} dimensions (at most {MAX_NDIM})")
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        payload = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
        return _header(ARRAY, arr.dtype.str, arr.shape, payload.nbytes), payload
    if isinstance(value, (bytes, bytearray, memoryview)):
        payload = memoryview(value).cast("B")
        return _header(BYTES, "", (), payload.nbytes), payload
    try:
        payload = memoryview(json.dumps(value, allow_nan=True).encode())
        return _header(JSON, "", (), payload.nbytes), payload
    except TypeError:
        if not allow_pickle:
            raise TypeError(
                f"cannot store a {type(value).__name__}: store numpy arrays, torch tensors, bytes "
                "or JSON-serializable metadata, or open the store with allow_pickle=True"
            ) from None
    payload = memoryview(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return _header(PICKLE, "", (), payload.nbytes), payload


def _header(kind: int, dtype: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    fixed = _FIXED.pack(MAGIC, VERSION, kind, len(shape), 0, dtype.encode("ascii"), nbytes)
    body = fixed + struct.pack(f"<{len(shape)}Q", *shape)
    body += _CRC.pack(zlib.crc32(body))
    return body + bytes(header_size(len(shape)) - len(body))


def parse_header(buf: Any) -> tuple[int, str, tuple[int, ...], int, int]:
    """Return (kind, dtype, shape, payload offset, payload length) or raise CorruptValueError."""
    mv = memoryview(buf).cast("B")
    if mv.nbytes < _FIXED.size:
        raise CorruptValueError(f"entry is truncated: {mv.nbytes} bytes, shorter than a header")
    magic, version, kind, ndim, _, dtype, nbytes = _FIXED.unpack_from(mv)
    if magic != MAGIC:
        raise CorruptValueError("entry does not start with the simai magic bytes")
    if version != VERSION:
        raise CorruptValueError(f"entry has format version {version}, this simai reads {VERSION}")
    if ndim > MAX_NDIM or kind > PICKLE:
        raise CorruptValueError("entry header is damaged")
    end = _FIXED.size + 8 * ndim
    if mv.nbytes < end + _CRC.size:
        raise CorruptValueError("entry is truncated inside its header")
    (crc,) = _CRC.unpack_from(mv, end)
    if crc != zlib.crc32(mv[:end]):
        raise CorruptValueError("entry header fails its checksum")
    shape = struct.unpack_from(f"<{ndim}Q", mv, _FIXED.size)
    return kind, dtype.rstrip(b"\0").decode("ascii"), shape, header_size(ndim), nbytes


def decode(buf: Any, writable: bool = True, allow_pickle: bool = False) -> Any:
    """Decode a whole entry; arrays are views on `buf` (zero-copy)."""
    kind, dtype, shape, off, nbytes = parse_header(buf)
    mv = memoryview(buf).cast("B")
    if mv.nbytes != off + nbytes:
        raise CorruptValueError(
            f"entry is truncated or padded: expected {off + nbytes} bytes, found {mv.nbytes}"
        )
    payload = mv[off:]
    if kind == ARRAY:
        dt = np.dtype(dtype)
        count = math.prod(shape)
        if count * dt.itemsize != nbytes:
            raise CorruptValueError("entry payload length does not match its dtype and shape")
        arr = np.frombuffer(payload, dtype=dt, count=count).reshape(shape)
        if not writable and arr.flags.writeable:
            arr.flags.writeable = False
        return arr
    if kind == BYTES:
        return bytes(payload)
    if kind == JSON:
        return json.loads(bytes(payload))
    if not allow_pickle:
        raise TypeError(
            "entry holds a pickled object; open the store with allow_pickle=True to load it "
            "(unpickling runs code: only do so for data you trust)"
        )
    return pickle.loads(payload)


def decode_into(buf: Any, out: np.ndarray) -> np.ndarray:
    """Copy an array entry into `out`, which must have the entry's dtype and shape."""
    mv = memoryview(buf).cast("B")
    off = check_into(mv, mv.nbytes, out)
    if out.nbytes:
        np.copyto(out.reshape(-1).view(np.uint8), np.frombuffer(mv, np.uint8, out.nbytes, off))
    return out


def check_into(head: Any, size: int, out: np.ndarray) -> int:
    """Check that the entry of `size` bytes whose header starts `head` is an array that fits
    `out`; return the payload offset."""
    kind, dtype, shape, off, nbytes = parse_header(head)
    if size != off + nbytes:
        raise CorruptValueError(
            f"entry is truncated or padded: expected {off + nbytes} bytes, found {size}"
        )
    if kind != ARRAY:
        raise TypeError("out= needs an array entry; this entry holds bytes or metadata")
    if np.dtype(dtype) != out.dtype or tuple(shape) != out.shape:
        raise ValueError(
            f"out= is {out.dtype} {out.shape}, the stored array is {np.dtype(dtype)} {tuple(shape)}"
        )
    if nbytes != out.nbytes:
        raise CorruptValueError("entry payload length does not match its dtype and shape")
    return off


def payload_size(buf: Any) -> int:
    """Total entry size announced by a header (header + payload)."""
    _, _, _, off, nbytes = parse_header(buf)
    return off + nbytes
