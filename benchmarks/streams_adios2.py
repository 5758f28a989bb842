"""Streams benchmark: a producer process streams float32 arrays to a consumer process through
ADIOS2 SST (simai's adios2:// store), simai's node-local store and simai's Redis store.

For each way and size the producer appends one warm-up array and then `count` arrays to a fresh
stream, and closes it; the consumer iterates `store.stream(...)`. The clock runs in the
consumer, from the warm-up value (so process start, imports and SST's reader rendezvous are not
counted) to the end of the stream; throughput is the payload bytes of the timed arrays over that
time. Every way verifies a checksum on every value it reads (simai's XXH3) and returns private
copies (no views). Ways run in rounds, interleaved in time; figures are medians over rounds.

- adios2-sst: `adios2:///dev/shm/...?engine=SST`, ADIOS2's default SST data transport (the
  PyPI wheel's: EVPath over TCP sockets, ControlTransport sockets);
- adios2-bp5: `adios2:///dev/shm/...?engine=BP5`, a BP5 file on tmpfs read while written;
- local: `local://` (node-local shared memory);
- redis: `redis://` with one redis-server shard from `simai.store.redis_server.RedisServers`.

    .venv/bin/python benchmarks/streams_adios2.py --out /tmp/adios-bench.md
    .venv/bin/python benchmarks/streams_adios2.py --rounds 1 --sizes 8K,1M   # quick
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import numpy as np

KIB, MIB = 1024, 1024 * 1024
WAYS = ("adios2-sst", "adios2-bp5", "local", "redis")
BUDGET = 256 * MIB  # timed bytes per size and round (at most 2000 arrays)


def parse_size(text: str) -> int:
    text = text.strip().upper()
    for suffix, mult in (("K", KIB), ("M", MIB), ("G", 1024 * MIB)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * mult)
    return int(text)


def fmt_size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def count_for(size: int) -> int:
    return max(8, min(2000, BUDGET // size))


def _producer(url: str, sizes: list[int], env: dict[str, str]) -> None:
    os.environ.update(env)
    from simai.store import open_store

    store = open_store(url)
    for size in sizes:
        name = f"bench/{size}"
        arr = np.random.default_rng(size).random(size // 4, dtype=np.float32)
        store.append(name, arr)  # warm-up: the consumer starts its clock on it
        for _ in range(count_for(size)):
            store.append(name, arr)
        store.close_stream(name)
    store.close()


def _consumer(url: str, sizes: list[int], env: dict[str, str], results: Any) -> None:
    os.environ.update(env)
    from simai.store import open_store

    store = open_store(url)
    out = {}
    for size in sizes:
        name = f"bench/{size}"
        reader = store.stream(name, timeout=300)
        first = next(reader)
        assert first.nbytes == size
        t0 = time.perf_counter()
        n = 0
        for value in reader:
            n += value.nbytes == size
        elapsed = time.perf_counter() - t0
        assert n == count_for(size), (n, count_for(size))
        out[size] = n * size / elapsed
        if not url.startswith("adios2"):
            store.delete_stream(name)
    store.close()
    results.put(out)


def run_way(url: str, sizes: list[int], env: dict[str, str], timeout: float) -> dict[int, float]:
    """One producer and one consumer process (spawned, as a user's would be); their result."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    consumer = ctx.Process(target=_consumer, args=(url, sizes, env, results))
    producer = ctx.Process(target=_producer, args=(url, sizes, env))
    consumer.start()
    producer.start()
    try:
        out = results.get(timeout=timeout)
        producer.join(timeout)
        consumer.join(timeout)
        if producer.exitcode != 0 or consumer.exitcode != 0:
            raise RuntimeError(f"{url}: producer {producer.exitcode}, consumer {consumer.exitcode}")
        return out
    finally:
        for p in (producer, consumer):
            if p.is_alive():
                p.kill()
                p.join()


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version()}
    for mod in ("numpy", "adios2", "redis"):
        try:
            info[mod] = version(mod)
        except Exception:
            info[mod] = "not installed"
    return info


def render(results: dict[str, list[dict[int, float]]], sizes: list[int], rounds: int) -> str:
    def med(way: str, size: int) -> float | None:
        got = [r[size] for r in results.get(way, []) if size in r]
        return statistics.median(got) if got else None

    ways = [w for w in WAYS if w in results]
    head = ["size", *[f"{w} GB/s" for w in ways]]
    ratios = [(a, b) for a in ("adios2-sst", "adios2-bp5") for b in ("local", "redis")]
    ratios = [(a, b) for a, b in ratios if a in results and b in results]
    head += [f"{a} / {b}" for a, b in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in sizes:
        cells = [fmt_size(size)]
        for w in ways:
            v = med(w, size)
            cells.append("–" if v is None else f"{v / 1e9:.3g}")
        for a, b in ratios:
            va, vb = med(a, size), med(b, size)
            cells.append("–" if va is None or vb is None else f"{va / vb:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    info = machine_info()
    return "\n".join(
        [
            "# ADIOS2 SST streams beside simai's node-local and Redis streams",
            "",
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {rounds} round(s), medians; a producer "
            "process appends float32 arrays, a consumer process iterates the stream (private, "
            "verified copies); throughput from the consumer's first value to the stream's end.",
            "",
            *lines,
            "",
            "Arrays per size and round: "
            + ", ".join(f"{fmt_size(s)}: {count_for(s)}" for s in sizes)
            + ".",
            "",
            "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
            "",
            "    " + " ".join([os.path.relpath(sys.executable), *sys.argv]),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="8K,1M,16M")
    p.add_argument("--ways", default=",".join(WAYS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", help="also write the Markdown table to this file")
    args = p.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    ways = [w for w in args.ways.split(",") if w]
    unknown = set(ways) - set(WAYS)
    if unknown:
        p.error(f"unknown ways {sorted(unknown)}; choose from {WAYS}")
    results: dict[str, list[dict[int, float]]] = {w: [] for w in ways}
    tmp = tempfile.mkdtemp(prefix="simai-bench-adios2-", dir="/dev/shm")
    servers = None
    try:
        env: dict[str, str] = {}
        if "redis" in ways:
            from simai.store.redis_server import RedisServers

            servers = RedisServers(shards=1, port=0)
            env["SIMAI_STORE_PASSWORD"] = servers.password
        for r in range(args.rounds):
            for way in ways:
                if way == "adios2-sst":
                    url = f"adios2://{tmp}/sst{r}?engine=SST"
                elif way == "adios2-bp5":
                    url = f"adios2://{tmp}/bp5{r}?engine=BP5"
                elif way == "local":
                    url = f"local://bench-adios2-{os.getpid()}-{r}"
                else:
                    assert servers is not None
                    url = servers.url
                got = run_way(url, sizes, env, args.timeout)
                results[way].append(got)
                print(
                    f"round {r + 1} {way}: "
                    + ", ".join(f"{fmt_size(s)} {v / 1e9:.3g} GB/s" for s, v in got.items()),
                    flush=True,
                )
                if way == "local":
                    from simai.store import open_store

                    store = open_store(url)
                    if hasattr(store, "destroy"):
                        store.destroy()
                    else:
                        store.close()
                shutil.rmtree(f"{tmp}/sst{r}", ignore_errors=True)
                shutil.rmtree(f"{tmp}/bp5{r}", ignore_errors=True)
    finally:
        if servers is not None:
            servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(results, sizes, args.rounds)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
