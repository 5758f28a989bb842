"""Counts of the store operations this process made: values and bytes, per operation and key
prefix, for every backend (the Store base class counts, so each backend is counted alike).

    from simai.store import counters
    counters.snapshot()   # [{"component": "trainer", "op": "get", "prefix": "wave",
                          #   "ops": 960, "bytes": 2013265920}, ...]
    counters.reset()

Operations: `put`, `get` (also `get(view=True)` and `get(out=)`), `append`, `stream` (each
value a stream reader yields), `put_many` and `get_many` (one per value), `delete` (one per
call, 0 bytes). Bytes are those of the stored entries: the value's bytes plus its header
(64 bytes for arrays up to 4 dimensions; see codec.py). Only calls that succeed count.

The prefix of a key (or stream name) is its first `depth` parts separated by "/" (depth 1:
"wave/sim3/step7" counts under "wave"; a key with fewer parts counts under itself). At most
`MAX_PREFIXES` prefixes per operation are kept; later new ones count under `OTHER`.
$SIMAI_STORE_COUNTER_DEPTH sets the depth, `SIMAI_STORE_COUNTERS=0` turns counting off; both
are read when this module is imported, and `configure` changes them later.

The component is $SIMAI_COMPONENT as the process had it when this module was imported (or at
the last `reset`): a workflow component is a process of its own, and tasks have none (""). A
forked child starts from zero. Counts are running totals since the process started (or
since the last reset); ship them by taking snapshots, not deltas.

Counting is on by default because it is cheap: a cached lookup and two additions, with no
lock (CPython's GIL keeps each addition whole; a count racing a `reset` may be lost). It adds
about 2.5 % to the CPU time of an 8 KiB put+get round trip on the node-local store, and less
for larger values (`benchmarks/_profile_store.py --counting`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from simai.checks import check_int

COMPONENT_ENV = "SIMAI_COMPONENT"
"""The variable naming a process's component (simai.workflow.component.COMPONENT_ENV)."""

ENV_ENABLED = "SIMAI_STORE_COUNTERS"
ENV_DEPTH = "SIMAI_STORE_COUNTER_DEPTH"
OPS = ("put", "get", "append", "stream", "put_many", "get_many", "delete")
MAX_PREFIXES = 1000
OTHER = "..."

enabled = os.environ.get(ENV_ENABLED, "1").strip().lower() not in ("0", "false", "no", "off")
"""Whether the store counts; read by the Store on every operation."""

_depth = 1
_lock = threading.Lock()
_counts: dict[str, dict[str, list[int]]] = {op: {} for op in OPS}
_by_key: dict[str, dict[str, list[int]]] = {op: {} for op in OPS}
_CACHE_KEYS = 10_000
_component = os.environ.get(COMPONENT_ENV, "")


def configure(enabled: bool | None = None, depth: int | None = None) -> None:
    """Turn counting on or off, or set how many "/"-separated key parts make a prefix."""
    global _depth
    if depth is not None:
        check_int("depth", depth, 1)
        with _lock:
            _depth = depth
            for cache in _by_key.values():
                cache.clear()
    if enabled is not None:
        globals()["enabled"] = bool(enabled)


def _parse_depth(text: str) -> int:
    try:
        depth = int(text)
    except ValueError:
        depth = 0
    if depth < 1:
        raise ValueError(f"${ENV_DEPTH} must be a positive integer, not {text!r}")
    return depth


def prefix_of(key: str) -> str:
    """The prefix `key` counts under."""
    end = -1
    for _ in range(_depth):
        end = key.find("/", end + 1)
        if end < 0:
            return key
    return key[:end]


def add(op: str, key: str, nbytes: int) -> None:
    """Count one operation `op` moving `nbytes` bytes on `key` (a key or stream name)."""
    c = _by_key[op].get(key)
    if c is None:
        c = _counter(op, key)
    c[0] += 1
    c[1] += nbytes


def _counter(op: str, key: str) -> list[int]:
    """The [ops, bytes] counter of `key`'s prefix, remembered for `key` (in a bounded cache:
    a key's prefix is worked out once, not on every operation)."""
    prefix = prefix_of(key)
    with _lock:
        per_op = _counts[op]
        if len(per_op) >= MAX_PREFIXES and prefix not in per_op:
            prefix = OTHER
        c = per_op.setdefault(prefix, [0, 0])
        cache = _by_key[op]
        if len(cache) >= _CACHE_KEYS:
            cache.clear()
        cache[key] = c
        return c


def snapshot(reset: bool = False) -> list[dict[str, Any]]:
    """This process's counts: one dict per (op, prefix) counted, with keys `component`, `op`,
    `prefix`, `ops` and `bytes`, sorted by op and prefix; `reset=True` also starts over."""
    with _lock:
        rows = [
            {"component": _component, "op": op, "prefix": p, "ops": c[0], "bytes": c[1]}
            for op in OPS
            for p, c in sorted(_counts[op].items())
        ]
        if reset:
            _clear()
    return rows


def reset() -> None:
    """Start counting from zero (and read $SIMAI_COMPONENT again)."""
    with _lock:
        _clear()


def _clear() -> None:
    global _component
    for table in (*_counts.values(), *_by_key.values()):
        table.clear()
    _component = os.environ.get(COMPONENT_ENV, "")


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _clear()


_depth = _parse_depth(os.environ.get(ENV_DEPTH, "1"))
os.register_at_fork(after_in_child=_after_fork_in_child)
