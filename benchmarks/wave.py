"""Wave benchmark: the examples/wave workload (staged) with its data moved four ways.

32 simulations each write 10 pairs (2 x 512 x 512 float32, 2 MiB) and 3 trainers (kernel
sizes 3, 5, 7) then read all 320 pairs, through:

- simai local: `simai.Workflow(store="local")`, sims put one key per pair, trainers get them;
- simai redis: `simai.Workflow(store="redis")` (one redis-server shard the workflow starts);
- futures: a `concurrent.futures.ProcessPoolExecutor`: each simulation returns its pairs, the
  driver passes all of them to each trainer as an argument;
- files: `np.save` of one .npy per pair into a directory, `np.load` by the trainers; the
  directory is in the temp dir (`--files-dir`, a disk here, where a user's scratch files go),
  and, for reference, "files-shm" does the same on /dev/shm (tmpfs).

Two more rows read without copying: "local-view" (`store.get(key, view=True)`) and its
filesystem counterpart "files-mmap" (`np.load(path, mmap_mode="r")`); a trainer that samples
crops then touches only the pages it trains on.

Every way runs its simulations and trainers as Python tasks on as many worker processes as
there are cores (simai's LocalExecutor, or a ProcessPoolExecutor), at most that many trainers
at once, with the same shortened training: one epoch, one optimizer step on one 32 x 32 crop
per pair. Ways run in rounds, interleaved in time; figures are medians over rounds.

    .venv/bin/python benchmarks/wave.py --out benchmarks/results/wave.md
    .venv/bin/python benchmarks/wave.py --num-sims 4 --grid-size 128 --rounds 1   # quick
    .venv/bin/python benchmarks/wave.py --ways local,files --copy-profile   # + where time goes

`--copy-profile` adds a table of what one pair costs to write and read back in one process,
in CPU time (less sensitive than wall time to other jobs on a shared machine): np.save/np.load
and raw write(2)/pread(2) on the files directory and on /dev/shm, and the node-local store.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples" / "wave"))

import wavelib  # noqa: E402

import simai  # noqa: E402

PREFIX = "wave"
TRAIN = {"epochs": 1, "patch": 32, "patches": 1}
WAYS: dict[str, str] = {
    "local": "simai local",
    "redis": "simai redis",
    "futures": "futures",
    "files": "np.save/np.load",
    "files-shm": "np.save/np.load on /dev/shm",
    "local-view": "simai local, get(view=True)",
    "files-mmap": "np.save/np.load(mmap_mode='r')",
}


# --- the futures baseline: data travels in task arguments and results ------------------------


def _moved(start: float, value: Any, end: float) -> Timed:
    timed = Timed(value)
    timed.moved_s = end - start
    return timed


class _PickledLast:
    """Pickled after the value; unpickles as the time unpickling finished."""

    def __reduce__(self) -> tuple:
        return (time.time, ())


class Timed:
    """A value whose trip through pickle is timed: from the start of pickling in the sending
    process to the end of unpickling in the receiving one (pickling, pipe, unpickling)."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.moved_s = 0.0

    def __reduce__(self) -> tuple:
        return (_moved, (time.time(), self.value, _PickledLast()))


def futures_simulate(sim: int, period: float, grid_size: int, steps: int) -> Timed:
    return Timed(wavelib.simulate(sim, period, grid_size, steps, wavelib.ListSink()))


def futures_train(kernel: int, pairs: Timed) -> dict[str, Any]:
    report = wavelib.train(kernel, wavelib.ListSource(pairs.value), **TRAIN)
    report["data_s"] = pairs.moved_s
    return report


# --- the other ways: the same simulate/train with a sink and a source -------------------------


def store_simulate(sim: int, period: float, grid_size: int, steps: int) -> dict[str, Any]:
    return wavelib.simulate(sim, period, grid_size, steps, wavelib.StoreSink(PREFIX))


def store_train(kernel: int, num_sims: int, steps: int, view: bool) -> dict[str, Any]:
    source = wavelib.StoreKeysSource(PREFIX, num_sims, steps, view=view)
    return wavelib.train(kernel, source, **TRAIN)


def npy_simulate(sim: int, period: float, grid_size: int, steps: int, d: str) -> dict[str, Any]:
    return wavelib.simulate(sim, period, grid_size, steps, wavelib.NpySink(d))


def npy_train(kernel: int, num_sims: int, steps: int, d: str, mmap: bool) -> dict[str, Any]:
    return wavelib.train(kernel, wavelib.NpySource(d, num_sims, steps, mmap=mmap), **TRAIN)


def limited(submit: Callable[..., Future], calls: list[tuple], limit: int) -> list[Any]:
    """Results of `submit(*call)` for every call, with at most `limit` submitted at a time."""
    pending: dict[Future, int] = {}
    results: list[Any] = [None] * len(calls)
    queue = list(enumerate(calls))
    while queue or pending:
        while queue and len(pending) < limit:
            i, call = queue.pop(0)
            pending[submit(*call)] = i
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            results[pending.pop(fut)] = fut.result()
    return results


def run_way(way: str, args: argparse.Namespace, scratch: str) -> dict[str, Any]:
    """One staged run of the workload; returns its timings."""
    n, steps, cores = args.grid_size, 10, len(os.sched_getaffinity(0))
    jobs = list(enumerate(wavelib.periods(args.num_sims)))
    t0 = time.perf_counter()
    if way == "futures":
        with ProcessPoolExecutor(max_workers=cores) as pool:
            futs = [pool.submit(futures_simulate, i, p, n, steps) for i, p in jobs]
            timed = [f.result() for f in futs]
            t1 = time.perf_counter()
            sims = [dict(t.value, put_s=t.value["put_s"] + t.moved_s) for t in timed]
            pairs = [pair for s in sims for pair in s.pop("data")]
            del timed
            calls = [(futures_train, k, Timed(pairs)) for k in wavelib.KERNELS]
            trainers = limited(pool.submit, calls, cores)
            t2 = time.perf_counter()
        del pairs
    elif way in ("files", "files-shm", "files-mmap"):
        where = "/dev/shm" if way == "files-shm" else args.files_dir
        directory = tempfile.mkdtemp(prefix="simai-wave-npy-", dir=where)
        try:
            with ProcessPoolExecutor(max_workers=cores) as pool:
                futs = [pool.submit(npy_simulate, i, p, n, steps, directory) for i, p in jobs]
                sims = [f.result() for f in futs]
                t1 = time.perf_counter()
                mmap = way == "files-mmap"
                calls = [
                    (npy_train, k, args.num_sims, steps, directory, mmap) for k in wavelib.KERNELS
                ]
                trainers = limited(pool.submit, calls, cores)
                t2 = time.perf_counter()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        run_dir = os.path.join(scratch, f"run-{way}")
        kind = way.removesuffix("-view")
        with simai.Workflow("wave-bench", store=kind, run_dir=run_dir, resume=False) as wf:
            futs = [wf.submit(store_simulate, i, p, n, steps) for i, p in jobs]
            sims = [f.result() for f in futs]
            t1 = time.perf_counter()
            view = way.endswith("-view")
            calls = [(store_train, k, args.num_sims, steps, view) for k in wavelib.KERNELS]
            trainers = limited(wf.submit, calls, cores)
            t2 = time.perf_counter()
            with wf.store() as store:
                for key in store.keys(PREFIX + "/"):
                    store.delete(key)
        shutil.rmtree(run_dir, ignore_errors=True)
    assert sum(s["pairs"] for s in sims) == args.num_sims * steps
    assert all(sum(t["pairs_per_epoch"]) == args.num_sims * steps for t in trainers)
    return {
        "sims_wall": t1 - t0,
        "sims_run": sum(s["run_s"] for s in sims),
        "sims_data": sum(s["put_s"] for s in sims),
        "train_wall": t2 - t1,
        "train_run": sum(t["run_s"] + t["startup_s"] for t in trainers),
        "train_data": sum(t["data_s"] for t in trainers),
        "total": t2 - t0,
        "loss": {t["kernel"]: t["loss"] for t in trainers},
    }


def copy_profile(args: argparse.Namespace) -> list[tuple[str, float, float, float, float]]:
    """(what, write CPU ms, read CPU ms, write wall ms, read wall ms) per pair, medians of 3."""
    n = args.num_sims * 10
    pair = np.random.default_rng(0).random((2, args.grid_size, args.grid_size), np.float32)
    raw = pair.tobytes()

    def write_raw(path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, raw)
        os.close(fd)

    def pread(path: str) -> np.ndarray:
        fd = os.open(path, os.O_RDONLY)
        buf = np.empty(os.fstat(fd).st_size, np.uint8)
        os.preadv(fd, [buf], 0)
        os.close(fd)
        return buf

    out_buf = np.empty_like(pair)
    rows = []
    for where in (args.files_dir, "/dev/shm"):
        for what, write, read in (
            ("np.save / np.load", lambda p: np.save(p, pair), np.load),
            ("write(2) / pread(2)", write_raw, pread),
        ):
            rows.append((f"{what} in {where}", where, write, read))
    store = simai.open_store(f"local://wave-profile-{os.getpid()}")
    for what, kw in (
        ("", {}),
        ("(out=)", {"out": out_buf}),
        ("(view=True)", {"view": True}),
    ):
        rows.append(
            (
                f"simai local put / get{what}",
                None,
                lambda k: store.put(k, pair),
                lambda k, kw=kw: store.get(k, **kw),
            )
        )
    results = []
    try:
        for what, where, write, read in rows:
            samples = []
            for _ in range(3):
                d = tempfile.mkdtemp(prefix="simai-wave-profile-", dir=where) if where else None
                names = [f"{d}/{i}.npy" if d else f"{PREFIX}/{i}" for i in range(n)]
                try:
                    timing = []
                    for fn in (write, read):
                        c0, w0 = time.process_time(), time.perf_counter()
                        for name in names:
                            fn(name)
                        timing.append((time.process_time() - c0, time.perf_counter() - w0))
                    samples.append([t * 1e3 / n for pair_t in timing for t in pair_t])
                finally:
                    if d:
                        shutil.rmtree(d, ignore_errors=True)
                    else:
                        for name in names:
                            store.delete(name)
            w_cpu, w_wall, r_cpu, r_wall = (
                statistics.median(x) for x in zip(*samples, strict=True)
            )
            results.append((what, w_cpu, r_cpu, w_wall, r_wall))
            print(f"{what}: write {w_cpu:.3f} ms CPU, read {r_cpu:.3f} ms CPU", flush=True)
    finally:
        store.destroy()
    return results


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} CPUs ({cpu}), {kb / 1024**2:.0f} GiB, Linux {platform.release()}"


def filesystem(path: str) -> str:
    """The filesystem type and device that hold `path`, from /proc/mounts."""
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, fstype = line.split()[:3]
        if os.path.realpath(path).startswith(mnt.rstrip("/") + "/") or mnt == "/":
            if len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    return f"{best[1]} ({best[2]} mounted on {best[0]})"


def report(args: argparse.Namespace, results: dict[str, list[dict]], meta: dict) -> str:
    def med(way: str, field: str) -> float:
        return statistics.median(r[field] for r in results[way])

    mib = args.num_sims * 10 * 2 * args.grid_size**2 * 4 / 2**20
    lines = [
        "# Wave benchmark: the examples/wave workload's data moved four ways",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}, total {meta['elapsed']:.0f} s",
        f"- machine: {machine()}; load average {meta['load0']:.2f} at start, "
        f"{meta['load1']:.2f} at end",
        f"- software: python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {meta['torch']}",
        f"- workload: staged, {args.num_sims} simulations x 10 pairs of 2 x {args.grid_size}"
        f" x {args.grid_size} float32 ({mib:.0f} MiB), then 3 trainers (kernels 3, 5, 7) each "
        f"reading all pairs once; training shortened to one step on one 32 x 32 crop per pair; "
        f"{meta['cores']} worker processes; {args.rounds} round(s), medians",
        f"- files baseline directory: {args.files_dir} on {filesystem(args.files_dir)}; "
        f"files-shm: /dev/shm on {filesystem('/dev/shm/x')}",
        "",
        "Data movement is summed over processes: simulations' puts (np.save; for futures, the "
        "result's pickling, pipe and unpickling in the driver), trainers' gets (np.load; for "
        "futures, the pickling of all pairs into each trainer's arguments, the pipe and the "
        "unpickling). Run time is summed over processes too (trainers include `import torch`); "
        "wall times are the phases as the driver saw them, total includes starting the "
        "workflow or pool.",
        "",
        "| way | sims wall s | sims run s | sims data s | trainers wall s | trainers run s "
        "| trainers data s | data s (all) | total s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for way in results:
        data = med(way, "sims_data") + med(way, "train_data")
        lines.append(
            f"| {WAYS[way]} | {med(way, 'sims_wall'):.2f} | {med(way, 'sims_run'):.2f} | "
            f"{med(way, 'sims_data'):.2f} | {med(way, 'train_wall'):.2f} | "
            f"{med(way, 'train_run'):.2f} | {med(way, 'train_data'):.2f} | {data:.2f} | "
            f"{med(way, 'total'):.2f} |"
        )
    if {"local", "files", "futures"} <= set(results):

        def data(way: str) -> float:
            return statistics.median(r["sims_data"] + r["train_data"] for r in results[way])

        ratio = data("local") / data("files")
        worst = max(med("files", "total"), med("futures", "total"))
        best = min(med("files", "total"), med("futures", "total"))
        lines += [
            "",
            "## Targets",
            "",
            f"- node-local data movement / files baseline: {ratio:.2f} "
            f"(target <= 0.5: {'yes' if ratio <= 0.5 else 'NO'})",
            *(
                [
                    f"- node-local data movement / the same files on /dev/shm (tmpfs): "
                    f"{data('local') / data('files-shm'):.2f} (for reference)"
                ]
                if "files-shm" in results
                else []
            ),
            *(
                [
                    f"- zero-copy reads: simai local view / np.load mmap data movement: "
                    f"{data('local-view') / data('files-mmap'):.2f}; simai local view / files "
                    f"baseline: {data('local-view') / data('files'):.2f} (for reference)"
                ]
                if {"local-view", "files-mmap"} <= set(results)
                else []
            ),
            f"- node-local total {med('local', 'total'):.2f} s vs futures "
            f"{med('futures', 'total'):.2f} s and files {med('files', 'total'):.2f} s "
            f"(target: no worse than either: {'yes' if med('local', 'total') <= best else 'NO'}"
            f"{'' if med('local', 'total') <= worst else ', worse than both'})",
        ]
        if max(meta["load0"], meta["load1"]) > meta["cores"]:
            lines.append(
                f"- caution: the load average passed the {meta['cores']} cores during the run, so "
                "other jobs competed for them; the ratios above may not hold on an idle machine"
            )
    lines += [
        "",
        "Per round (total s): "
        + "; ".join(
            f"{WAYS[w]} " + ", ".join(f"{r['total']:.1f}" for r in rs) for w, rs in results.items()
        ),
    ]
    losses = {w: rs[-1]["loss"] for w, rs in results.items()}
    lines.append(
        "Final losses (last round, kernel 3/5/7): "
        + "; ".join(
            f"{WAYS[w]} " + "/".join(f"{v:.2g}" for v in ls.values()) for w, ls in losses.items()
        )
    )
    if meta.get("profile"):
        mib = 2 * args.grid_size**2 * 4 / 2**20
        lines += [
            "",
            "## Where the time goes: one pair written and read back in one process",
            "",
            f"`--copy-profile`: {args.num_sims * 10} pairs of {mib:.3g} MiB written under new "
            "names, then each read once into a new array, in the driver process alone; "
            "milliseconds per pair, medians of 3 repetitions; CPU time is the process's "
            f"(user + system). Load average {meta['profile_load'][0]:.2f} before, "
            f"{meta['profile_load'][1]:.2f} after.",
            "",
            "| what | write ms CPU | read ms CPU | write ms wall | read ms wall |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {what} | {wc:.3f} | {rc:.3f} | {ww:.3f} | {rw:.3f} |"
            for what, wc, rc, ww, rw in meta["profile"]
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-sims", type=int, default=32)
    parser.add_argument("--grid-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--ways", default=",".join(WAYS), help="comma-separated subset of " + ",".join(WAYS)
    )
    parser.add_argument(
        "--files-dir",
        default=tempfile.gettempdir(),
        help="where the files baseline writes (default: the temp dir)",
    )
    parser.add_argument("--out", help="write the Markdown report here too")
    parser.add_argument(
        "--copy-profile",
        action="store_true",
        help="also time one pair's write and read in one process, in CPU time (see above)",
    )
    args = parser.parse_args()
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    unknown = [w for w in ways if w not in WAYS]
    if unknown or not ways:
        parser.error(f"--ways: unknown {unknown}; choose from {','.join(WAYS)}")
    if args.num_sims < 1 or args.grid_size < 32 or args.rounds < 1:
        parser.error("--num-sims and --rounds must be >= 1, --grid-size >= 32")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    meta: dict[str, Any] = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load0": os.getloadavg()[0],
        "torch": version("torch"),
        "cores": len(os.sched_getaffinity(0)),
    }
    start = time.perf_counter()
    results: dict[str, list[dict]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(prefix="simai-wave-bench-") as scratch:
        for rnd in range(args.rounds):
            for way in ways:
                r = run_way(way, args, scratch)
                results[way].append(r)
                print(
                    f"round {rnd + 1} {WAYS[way]:>16}: total {r['total']:.2f} s, data "
                    f"{r['sims_data']:.2f} + {r['train_data']:.2f} s",
                    flush=True,
                )
    if args.copy_profile:
        load = os.getloadavg()[0]
        meta["profile"] = copy_profile(args)
        meta["profile_load"] = (load, os.getloadavg()[0])
    meta["elapsed"] = time.perf_counter() - start
    meta["load1"] = os.getloadavg()[0]
    text = report(args, results, meta)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
