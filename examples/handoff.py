"""Producer process → consumer process through the store: what moved and how fast.

    python examples/handoff.py                      # node-local store (the default)
    python examples/handoff.py --store file         # a directory, as on a parallel filesystem
    python examples/handoff.py --store redis        # a real redis-server started for the run

The producer (a simulation stand-in) appends float32 snapshots to a stream and publishes
metadata; the consumer (a trainer stand-in) reads the stream as it is written, checks every
snapshot, and reports throughput. Both are separate processes that find the store through
$SIMAI_STORE, as processes launched by a workflow do.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

import simai


def produce(count: int, side: int) -> None:
    store = simai.open_store()
    in_store = 0.0
    for step in range(count):
        snapshot = np.full((side, side), step, dtype=np.float32)
        snapshot[0, 0] = -step
        start = time.perf_counter()
        store.append("snapshots", snapshot)
        in_store += time.perf_counter() - start
    store.close_stream("snapshots")
    store.put("producer/seconds", in_store)


def consume(timeout: float) -> None:
    store = simai.open_store()
    moved = 0
    for step, snapshot in enumerate(store.stream("snapshots", timeout=timeout)):
        if snapshot[0, 0] != -step or snapshot[-1, -1] != step:
            raise SystemExit(f"snapshot {step} is wrong: got {snapshot[-1, -1]}")
        moved += snapshot.nbytes
        if step % 16 == 0:
            print(f"  consumer: {step + 1} snapshots, {moved / 2**20:,.0f} MiB", flush=True)
    store.put("consumer/bytes", moved)


@contextlib.contextmanager
def open_backend(kind: str):
    """Yield (url, extra environment) for a fresh store of `kind`, removed afterwards."""
    name = f"handoff-{uuid.uuid4().hex[:8]}"
    if kind == "local":
        url = f"local://{name}"
        try:
            yield url, {}
        finally:
            simai.open_store(url).destroy()
    elif kind == "file":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"file://{tmp}/{name}", {}
    else:
        from simai.store.redis_server import RedisServers

        with RedisServers(shards=1, port=0) as servers:
            yield servers.url, {"SIMAI_STORE_PASSWORD": servers.password}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["local", "file", "redis"], default="local")
    parser.add_argument("--count", type=int, default=64, help="snapshots to hand over")
    parser.add_argument("--side", type=int, default=1024, help="snapshot is side x side float32")
    parser.add_argument("--role", choices=["produce", "consume"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "produce":
        return produce(args.count, args.side)
    if args.role == "consume":
        return consume(timeout=120)

    size = args.count * args.side * args.side * 4
    print(
        f"handing {args.count} snapshots of {args.side}x{args.side} float32 "
        f"({size / 2**20:,.0f} MiB) through the {args.store} store"
    )
    with open_backend(args.store) as (url, extra):
        env = dict(os.environ, SIMAI_STORE=url, **extra)
        me = [
            sys.executable,
            os.path.abspath(__file__),
            "--count",
            str(args.count),
            "--side",
            str(args.side),
        ]
        start = time.perf_counter()
        consumer = subprocess.Popen([*me, "--role", "consume"], env=env)
        producer = subprocess.Popen([*me, "--role", "produce"], env=env)
        try:
            if producer.wait() or consumer.wait():
                raise SystemExit("a process failed; see its output above")
        finally:
            for p in (producer, consumer):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        wall = time.perf_counter() - start
        store = simai.open_store(
            url, **({"password": extra["SIMAI_STORE_PASSWORD"]} if extra else {})
        )
        moved = store.get("consumer/bytes")
        put_s = store.get("producer/seconds")
        print(
            f"producer: {size / 2**30:.2f} GiB appended, {put_s:.2f} s inside the store "
            f"({size / put_s / 1e9:.2f} GB/s)"
        )
        print(
            f"consumer: {moved / 2**30:.2f} GiB read while it was written, every snapshot "
            f"checked; {moved / wall / 1e9:.2f} GB/s end to end"
        )
        print(f"wall time {wall:.2f} s, store {url}")
        store.close()


if __name__ == "__main__":
    main()
