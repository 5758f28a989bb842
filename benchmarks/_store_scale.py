"""Two store measurements beside the producer/consumer table of store.py:

- `scale`: whether an operation's cost grows with the store's size. The store is grown to 1k,
  10k, 100k and 1M keys of 8 KiB (and one stream to as many small entries); at each size the
  median latency of put (overwrite), get, append (of 8 KiB), stream_info, stream_len and wait
  (a key that exists), and keys(prefix) for a prefix holding 100 keys, are taken over random
  keys. A size that would not fit in /dev/shm (8 KiB values take 12 KiB there: three LMDB
  pages) is skipped, and the report says so.
- `fresh`: large reads by a process that never touched the store. One process puts 32 arrays
  of 42 MB (float64, 2×10×512×512: 1.3 GB), a fresh process gets them all, twice; beside it
  np.load of the same arrays as .npy files (on a disk directory and on /dev/shm) and the copy
  limit (np.copyto of the same bytes into preallocated arrays), each in a fresh process. A
  get returns new arrays, whose memory a fresh process must first be given (as np.load's
  are); get(out=) reads into preallocated ones, as np.copyto writes.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

SCALE_COUNTS = (1_000, 10_000, 100_000, 1_000_000)
SCALE_SIZE = 8 * 1024
SAMPLES = 2000
FEW = 100


def _median_us(fn: Any, args: list[Any]) -> float:
    times = []
    for a in args:
        t0 = time.perf_counter_ns()
        fn(a)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def scale(url: str, counts: tuple[int, ...] = SCALE_COUNTS) -> dict[str, Any]:
    """Median µs of each operation at each store size (see the module docstring)."""
    import simai

    store = simai.open_store(url)
    arr = np.zeros(SCALE_SIZE // 4, np.float32)
    rng = random.Random(0)
    store.put_many({f"few/{i:03d}": arr for i in range(FEW)})
    have = 0
    rows: dict[str, list[float]] = {}
    tiny = np.zeros(4, np.float32)
    done = []
    for n in counts:
        vfs = os.statvfs(store.root)
        if (n - have) * 3 * 4096 * 1.2 > vfs.f_bavail * vfs.f_frsize:
            print(f"    {n:,} keys would not fit in {store.root}: skipped", flush=True)
            break
        t0 = time.monotonic()
        while have < n:
            batch = min(1000, n - have)
            store.put_many({f"scale/{i}": arr for i in range(have, have + batch)})
            for _ in range(batch):
                store.append("scale/stream", tiny)
            have += batch
        fill = time.monotonic() - t0
        keys = [f"scale/{rng.randrange(n)}" for _ in range(SAMPLES)]
        ops = {
            "put": _median_us(lambda k: store.put(k, arr), keys),
            "get": _median_us(store.get, keys),
            "append": _median_us(lambda k: store.append("scale/stream", arr), keys),
            "stream_info": _median_us(lambda k: store.stream_info("scale/stream"), keys[:500]),
            "stream_len": _median_us(lambda k: store.stream_len("scale/stream"), keys),
            "wait": _median_us(lambda k: store.wait(k, timeout=1), keys),
            "keys(prefix) of 100": _median_us(lambda k: store.keys("few/"), keys[:200]),
        }
        done.append(n)
        for op, us in ops.items():
            rows.setdefault(op, []).append(us)
        print(f"    {n:>9,} keys (filled in {fill:.0f} s): "
              + ", ".join(f"{op} {us:.3g} µs" for op, us in ops.items()), flush=True)  # fmt: skip
    t0 = time.perf_counter()
    listed = len(store.keys("scale/"))
    every = (time.perf_counter() - t0) / listed * 1e6
    store.destroy()
    return {"counts": done, "rows": rows, "keys_per_listed_us": every, "listed": listed}


def render_scale(res: dict[str, Any]) -> list[str]:
    counts = res["counts"]
    head = " | ".join(f"{n:,} keys" for n in counts)
    out = [
        "## Costs as the store grows (node-local, 8 KiB values, one process, median µs)",
        "",
        f"| operation | {head} | largest / smallest | goal | met |",
        "| --- | " + " | ".join("---:" for _ in counts) + " | ---: | ---: | :---: |",
    ]
    for op, us in res["rows"].items():
        r = us[-1] / us[0]
        cells = " | ".join(f"{u:.3g}" for u in us)
        out.append(f"| {op} | {cells} | {r:.2f}× | ≤ 1.5× | {'yes' if r <= 1.5 else 'NO'} |")
    out += [
        "",
        f'`keys("scale/")` returned {res["listed"]:,} keys at {res["keys_per_listed_us"]:.2f} µs '
        "a key: listing costs what it returns.",
    ]
    return out


# --- large reads by a fresh process -----------------------------------------------------------

FRESH_COUNT = 32
FRESH_SHAPE = (2, 10, 512, 512)

_READER = r"""
import json, sys, time
import numpy as np
how, where, count, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
passes = []
if how in ("store", "out"):
    import simai
if how in ("copyto", "out"):
    dst = [np.empty(shape, np.float64) for _ in range(count)]
    for d in dst:
        d.fill(0)
if how == "copyto":
    src = [np.full(shape, i, np.float64) for i in range(count)]
for _ in range(2):
    t0 = time.perf_counter()
    if how in ("store", "out"):
        s = simai.open_store(where)
        if how == "out":
            got = [s.get(f"fresh/{i}", out=d) for i, d in enumerate(dst)]
        else:
            got = [s.get(f"fresh/{i}") for i in range(count)]
    elif how == "npy":
        got = [np.load(f"{where}/{i}.npy") for i in range(count)]
    else:
        for s_, d in zip(src, dst):
            np.copyto(d, s_)
        got = dst
    passes.append(time.perf_counter() - t0)
    assert all(float(g.flat[0]) == i for i, g in enumerate(got))
    del got
print(json.dumps(passes))
"""


def _read_fresh(how: str, where: str) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", _READER, how, where, str(FRESH_COUNT), json.dumps(FRESH_SHAPE)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return json.loads(out.stdout)


def fresh(url: str, files_dir: str, rounds: int = 3) -> dict[str, Any]:
    """Seconds per pass of each way of reading the 32 arrays, in fresh processes."""
    import simai

    arrays = [np.full(FRESH_SHAPE, i, np.float64) for i in range(FRESH_COUNT)]
    nbytes = sum(a.nbytes for a in arrays)
    store = simai.open_store(url)
    for i, a in enumerate(arrays):
        store.put(f"fresh/{i}", a)
    dirs = {}
    for label, base in (("np.load, disk", files_dir), ("np.load, /dev/shm", "/dev/shm")):
        d = tempfile.mkdtemp(prefix="simai-bench-fresh-", dir=base)
        for i, a in enumerate(arrays):
            np.save(f"{d}/{i}.npy", a)
        dirs[label] = d
    del arrays
    ways = {
        "simai local": ("store", url),
        "simai local get(out=)": ("out", url),
        "np.copyto (the limit)": ("copyto", ""),
    }
    ways.update({label: ("npy", d) for label, d in dirs.items()})
    passes: dict[str, list[list[float]]] = {w: [] for w in ways}
    try:
        for _ in range(rounds):
            for way, (how, where) in ways.items():
                passes[way].append(_read_fresh(how, where))
    finally:
        store.destroy()
        for d in dirs.values():
            subprocess.run(["rm", "-rf", d], check=False)
    return {"bytes": nbytes, "passes": passes}


def render_fresh(res: dict[str, Any]) -> list[str]:
    gb = res["bytes"] / 1e9
    out = [
        f"## Large reads by a fresh process ({FRESH_COUNT} arrays of "
        f"{res['bytes'] / FRESH_COUNT / 1e6:.0f} MB, {gb:.2f} GB; GB/s, each pass's spread over "
        "rounds)",
        "",
        "| way | first pass | second pass | first pass / np.copyto | goal | met |",
        "| --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    limit = statistics.median(p[0] for p in res["passes"]["np.copyto (the limit)"])
    for way, rounds in res["passes"].items():
        cells = []
        for k in (0, 1):
            rates = sorted(gb / p[k] for p in rounds)
            cells.append(f"{statistics.median(rates):.2f} ({rates[0]:.2f}–{rates[-1]:.2f})")
        ratio = limit / statistics.median(p[0] for p in rounds)
        goal = way.startswith("simai local")
        met = ("yes" if ratio >= 0.7 else "NO") if goal else "–"
        out.append(f"| {way} | {cells[0]} | {cells[1]} | {ratio:.2f}× | "
                   f"{'≥ 0.7×' if goal else '(context)'} | {met} |")  # fmt: skip
    return out
