"""A tight put/get loop on one store, to run under a profiler when a benchmark target is missed.

    .venv/bin/py-spy record -r 2000 -f raw -o /tmp/local-8k.txt -- \\
        .venv/bin/python benchmarks/_profile_store.py --destroy local://bench 8K roundtrip
    .venv/bin/python benchmarks/_profile_store.py --cprofile --destroy local://bench 64M get

`op` is put, get or roundtrip (put then get of the same key). Redis URLs read the password
from $SIMAI_STORE_PASSWORD, as everywhere else. The loop runs for `--seconds` and prints the
median time per op; the keys it wrote are deleted at the end. `--keys N` cycles through N keys
as the benchmark does (it overwrites 128 keys of 1 MiB, 8 of 16 MiB, 4 of 64 MiB).

`--counting` measures what store operation counting (simai.store.counters) costs: the loop
runs in blocks of `--block` ops, alternately with counting on and off, and prints the median
CPU time (this process's user + system: steadier than wall time on a shared machine) and wall
time per op of each, and their ratio. For Redis the server's CPU time is not in it, so the
ratio overstates the cost there.

    .venv/bin/python benchmarks/_profile_store.py --counting --destroy local://bench 8K roundtrip
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import parse_size  # noqa: E402

import simai  # noqa: E402
from simai.store import counters  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("size", type=parse_size)
    p.add_argument("op", choices=("put", "get", "roundtrip"))
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--keys", type=int, default=1, help="cycle through this many keys")
    p.add_argument("--view", action="store_true", help="get(key, view=True)")
    p.add_argument(
        "--destroy", action="store_true", help="delete the whole store afterwards (scratch stores)"
    )
    p.add_argument("--cprofile", action="store_true", help="print the top cProfile entries")
    p.add_argument(
        "--counting", action="store_true", help="compare counting on and off (see above)"
    )
    p.add_argument("--block", type=int, default=200, help="ops per block with --counting")
    args = p.parse_args()
    s = simai.open_store(args.url)
    arr = (np.arange(args.size // 4, dtype=np.float32) % 4093).astype(np.float32)
    keys = [f"bench/profile/{i}" for i in range(max(1, args.keys))]
    for key in keys:
        s.put(key, arr)
    times = []

    def loop() -> None:
        end = time.monotonic() + args.seconds
        i = 0
        while time.monotonic() < end:
            key = keys[i % len(keys)]
            i += 1
            t0 = time.perf_counter_ns()
            if args.op != "get":
                s.put(key, arr)
            if args.op != "put":
                v = s.get(key, view=args.view)
                del v
            times.append(time.perf_counter_ns() - t0)

    def one(i: int) -> None:
        key = keys[i % len(keys)]
        if args.op != "get":
            s.put(key, arr)
        if args.op != "put":
            v = s.get(key, view=args.view)
            del v

    def compare() -> None:
        per_op: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        end = time.monotonic() + args.seconds
        i = 0
        while time.monotonic() < end:
            for on in (True, False):
                counters.configure(enabled=on)
                c0, w0 = time.process_time_ns(), time.perf_counter_ns()
                for _ in range(args.block):
                    one(i)
                    i += 1
                cpu = (time.process_time_ns() - c0) / args.block
                per_op[on].append((cpu, (time.perf_counter_ns() - w0) / args.block))
        counters.configure(enabled=True)
        med = {
            on: [statistics.median(x[j] for x in per_op[on]) * 1e-3 for j in (0, 1)]
            for on in per_op
        }
        print(
            f"{args.url} {args.op} {args.size} B, {len(per_op[True])} blocks of {args.block} "
            f"ops each way: counting on {med[True][0]:.2f} µs CPU ({med[True][1]:.2f} µs wall), "
            f"off {med[False][0]:.2f} µs CPU ({med[False][1]:.2f} µs wall) per op; "
            f"on / off: {med[True][0] / med[False][0]:.3f} CPU, "
            f"{med[True][1] / med[False][1]:.3f} wall"
        )

    try:
        if args.counting:
            compare()
            return 0
        if args.cprofile:
            prof = cProfile.Profile()
            prof.runcall(loop)
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        else:
            loop()
    finally:
        for key in keys:
            s.delete(key)
        if args.destroy and hasattr(s, "destroy"):
            s.destroy()
        s.close()
    med = statistics.median(times) * 1e-9
    print(
        f"{args.url} {args.op} {args.size} B: {len(times)} ops, median {med * 1e6:.1f} µs, "
        f"{args.size / med / 1e9:.2f} GB/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
