"""The producer and consumer loops shared by benchmarks/store.py and its Dragon runner.

A backend is reached through a small client object with `prepare(size, n)`, `put(key, i, arr)`,
`get(key, i)`, `delete(key, i)` and `close()`. The producer puts `n` arrays under distinct keys
(overwritten every repetition), then tells the consumer, which gets them; each side times only
its own operations. Results are plain dicts of numbers so they cross process boundaries as JSON.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Protocol

import numpy as np

ROUNDTRIP_SIZE = 8 * 1024
ROUNDTRIP_ITERS = 2000
ROUNDTRIP_BUDGET_S = 2.0


class Client(Protocol):
    def prepare(self, size: int, n: int) -> None: ...
    def put(self, key: str, i: int, arr: np.ndarray) -> None: ...
    def get(self, key: str, i: int) -> Any: ...
    def delete(self, key: str, i: int) -> None: ...
    def close(self) -> None: ...


def payload(size: int) -> np.ndarray:
    """The float32 array of `size` bytes every producer sends (element 0 is a per-put stamp)."""
    return (np.arange(size // 4, dtype=np.float32) % 4093).astype(np.float32)


def key_of(size: int, i: int) -> str:
    return f"bench/{size}/{i}"


def _summary(times_per_rep: list[np.ndarray], size: int) -> dict[str, float]:
    """Median per-repetition bandwidth (GB/s, 1e9 B/s) and median single-op latency (s)."""
    gbps = [len(t) * size / (t.sum() * 1e-9) / 1e9 for t in times_per_rep]
    allops = np.concatenate(times_per_rep)
    return {
        "gbps": statistics.median(gbps),
        "lat_s": float(np.median(allops)) * 1e-9,
        "ops": int(allops.size),
        "per_rep": len(times_per_rep[0]),
    }


def producer(
    client: Client, conn: Any, sizes: list[int], counts: dict[int, int], repeat: int, warmup: int
) -> dict[str, Any]:
    """Put `counts[size]` arrays per repetition; return put stats per size and the round trip."""
    out: dict[str, Any] = {"put": {}}
    for size in sizes:
        n = counts[size]
        client.prepare(size, n)
        arr = payload(size)
        reps = []
        for r in range(warmup + repeat):
            if conn.recv() != "go":
                raise RuntimeError("consumer lost sync")
            times = np.empty(n, dtype=np.int64)
            gc.disable()
            try:
                for i in range(n):
                    arr[0] = r * n + i
                    key = key_of(size, i)
                    t0 = time.perf_counter_ns()
                    client.put(key, i, arr)
                    times[i] = time.perf_counter_ns() - t0
            finally:
                gc.enable()
            conn.send(("ready", r))
            if r >= warmup:
                reps.append(times)
        if conn.recv() != "done":
            raise RuntimeError("consumer lost sync")
        for i in range(n):
            client.delete(key_of(size, i), i)
        out["put"][str(size)] = _summary(reps, size)
    if ROUNDTRIP_SIZE in sizes:
        out["roundtrip_s"] = roundtrip(client)
    return out


def consumer(
    client: Client, conn: Any, sizes: list[int], counts: dict[int, int], repeat: int, warmup: int
) -> dict[str, Any]:
    """Get what the producer put, checking every stamp and (in warm-up) every element."""
    out: dict[str, Any] = {"get": {}}
    for size in sizes:
        n = counts[size]
        client.prepare(size, n)
        expect = payload(size)
        verify = getattr(client, "verify", True)
        reps = []
        for r in range(warmup + repeat):
            conn.send("go")
            msg = conn.recv()
            if msg != ("ready", r):
                raise RuntimeError(f"producer lost sync: {msg!r}")
            times = np.empty(n, dtype=np.int64)
            bad = []
            gc.disable()
            try:
                for i in range(n):
                    key = key_of(size, i)
                    t0 = time.perf_counter_ns()
                    v = client.get(key, i)
                    times[i] = time.perf_counter_ns() - t0
                    if not verify:
                        pass
                    elif v[0] != r * n + i:
                        bad.append(i)
                    elif r < warmup and not np.array_equal(v[1:], expect[1:]):
                        bad.append(i)
                    del v
            finally:
                gc.enable()
            if bad:
                raise RuntimeError(f"size {size}: wrong value read for keys {bad[:5]}")
            if r >= warmup:
                reps.append(times)
        conn.send("done")
        out["get"][str(size)] = _summary(reps, size)
    return out


def roundtrip(client: Client) -> float:
    """Median seconds of put(8 KiB) followed by get of the same key, in one process."""
    client.prepare(ROUNDTRIP_SIZE, 1)
    arr = payload(ROUNDTRIP_SIZE)
    key = "bench/roundtrip"
    times = []
    end = time.monotonic() + ROUNDTRIP_BUDGET_S
    gc.disable()
    try:
        for k in range(ROUNDTRIP_ITERS):
            arr[0] = k
            t0 = time.perf_counter_ns()
            client.put(key, 0, arr)
            v = client.get(key, 0)
            times.append(time.perf_counter_ns() - t0)
            if getattr(client, "verify", True) and v[0] != k:
                raise RuntimeError("round trip read a stale value")
            del v
            if k >= 20 and time.monotonic() > end:
                break
    finally:
        gc.enable()
    client.delete(key, 0)
    return statistics.median(times[10:] or times) * 1e-9
