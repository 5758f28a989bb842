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

`--train full` is the training users run (wavelib.train_full): 32 simulations x 10 steps of
512 x 512, each step first waiting `--step-compute` (0.5) s, an emulated solver; then two
trainers (kernels 3 and 5, one thread each), one epoch over all pairs, whole frames, batches
of 4, torch.optim.Adam, and the final loss (the trained model's MSE on every pair). Three
ways, each with huge pages on and off, interleaved in one run:

- npy staged: what one writes without simai, a ProcessPoolExecutor(2): simulations np.save
  one .npy per pair, then the 2 trainers np.load them; huge pages on = the pool's processes
  get the variables simai sets (THP_MEM_ALLOC_ENABLE=1, GLIBC_TUNABLES=glibc.malloc.hugetlb=1),
  as a user who knew them would set them by hand;
- simai staged: simulations are tasks that put one key per pair, then 2 trainer components
  get them (wavelib.run_full);
- simai online: the trainers start first and read each simulation's stream while it is
  written; the simulations, which mostly wait, run as Resources(cpus=0) tasks (no core of
  their own, wavelib.placement);
  for both simai ways huge pages are SIMAI_HUGE_PAGES=1 or 0;
- simai online, Redis store (online-redis): the same with Workflow(store="redis");
- simai online, ADIOS2 BP5 streams (online-bp5): the same with each simulation's pairs in an
  ADIOS2 BP5 stream (adios2://...?engine=BP5, a file read while it is written) instead of the
  run's store. Not SST: two trainers that each poll 32 SST streams crash ADIOS2 2.12.1's SST
  writers (SIGSEGV in its network thread); see docs/benchmarks.md.

    .venv/bin/python benchmarks/wave.py --train full --out benchmarks/results/wave-full.md
    .venv/bin/python benchmarks/wave.py --train full --num-sims 8 --grid-size 256   # 3 min
    .venv/bin/python benchmarks/wave.py --train full --ways online,online-redis,online-bp5 \
        --huge-pages on --rounds 3 --out benchmarks/results/wave-streams.md

On 2 cores the full-size run takes about 15 minutes (16 simulations of 512^2: 7.5 min).
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
from simai.launch.memory import huge_pages_env  # noqa: E402

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
FULL_WAYS: dict[str, str] = {
    "npy": "npy staged",
    "staged": "simai staged",
    "online": "simai online",
    "online-redis": "simai online, Redis store",
    "online-bp5": "simai online, ADIOS2 BP5 streams",
}
ONLINE = ("online", "online-redis", "online-bp5")
DEFAULT_FULL_WAYS = ("npy", "staged", "online")


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


# --- --train full -----------------------------------------------------------------------------


def npy_simulate_full(
    sim: int, period: float, grid_size: int, steps: int, compute_s: float, d: str
) -> dict[str, Any]:
    sink = wavelib.NpySink(d)
    return wavelib.simulate(sim, period, grid_size, steps, sink, compute_s=compute_s)


def npy_train_full(
    kernel: int, num_sims: int, steps: int, d: str, opts: dict[str, Any]
) -> dict[str, Any]:
    return wavelib.train_full(kernel, wavelib.NpySource(d, num_sims, steps), **opts)


def cpu_seconds() -> tuple[float, float]:
    """The whole machine's CPU time so far, (user + nice, system + irq + softirq) seconds,
    from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice) / hz, (system + irq + softirq) / hz


def set_huge_pages(way: str, on: bool) -> None:
    """Switch huge pages for the processes a way starts from now on (see the docstring)."""
    for var in ("SIMAI_HUGE_PAGES", "THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES"):
        os.environ.pop(var, None)
    if way == "npy":
        if on:
            os.environ.update(huge_pages_env({}))
    else:
        os.environ["SIMAI_HUGE_PAGES"] = "1" if on else "0"


def run_full_way(way: str, huge: bool, args: argparse.Namespace, scratch: str) -> dict[str, Any]:
    """One run of the --train full workload one way, huge pages on or off."""
    label = f"{FULL_WAYS[way]}, huge pages {'on' if huge else 'off'}"

    def say(what: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {label}: {what}", file=sys.stderr, flush=True)

    n, steps, compute = args.grid_size, args.steps, args.step_compute
    opts = {"epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": 0}
    jobs = list(enumerate(wavelib.periods(args.num_sims)))
    set_huge_pages(way, huge)
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    overlap, sim_resources = None, None
    if way == "npy":
        directory = tempfile.mkdtemp(prefix="simai-wave-npy-", dir=args.files_dir)
        try:
            # created after the environment is set: its processes inherit it
            with ProcessPoolExecutor(max_workers=len(wavelib.FULL_KERNELS)) as pool:
                say("simulations")
                t1 = time.perf_counter()
                calls = [(npy_simulate_full, i, p, n, steps, compute, directory) for i, p in jobs]
                sims = [f.result() for f in [pool.submit(*c) for c in calls]]
                t2 = time.perf_counter()
                say("training")
                futs = [
                    pool.submit(npy_train_full, k, args.num_sims, steps, directory, opts)
                    for k in wavelib.FULL_KERNELS
                ]
                trainers = [f.result() for f in futs]
                t3 = time.perf_counter()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        sims_wall, train_wall = t2 - t1, t3 - t2
    else:
        online = way in ONLINE
        config, sim_resources = wavelib.placement("local", online, len(wavelib.FULL_KERNELS))
        run_dir = os.path.join(scratch, f"run-{way}-{'on' if huge else 'off'}")
        streams = f"adios2://{run_dir}-bp5?engine=BP5" if way == "online-bp5" else None
        say("workflow start")
        with simai.Workflow(
            "wave-full",
            store="redis" if way == "online-redis" else "local",
            run_dir=run_dir,
            resume=False,
            options=simai.WorkflowOptions(executor_config=config),
        ) as wf:
            out = wavelib.run_full(
                wf, args.num_sims, n, steps, online, compute, opts,
                sim_resources=sim_resources, prefix=PREFIX, streams=streams, progress=say,
            )  # fmt: skip
        shutil.rmtree(f"{run_dir}-bp5", ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        sims, trainers = out["sims"], out["trainers"]
        sims_wall, train_wall, overlap = out["sims_wall_s"], out["train_wall_s"], out["overlap"]
    wall = time.perf_counter() - t0
    cpu1 = cpu_seconds()
    pairs = args.num_sims * steps
    assert sum(s["pairs"] for s in sims) == pairs
    for t in trainers:
        assert t["pairs_per_epoch"] == [pairs] * args.epochs and t["eval_pairs"] == pairs, t
    result = {
        "sims_wall": sims_wall,
        "train_wall": train_wall,
        "compute": {t["kernel"]: t["train_s"] for t in trainers},
        "train_compute": sum(t["train_s"] for t in trainers),
        "sims_data": sum(s["put_s"] for s in sims),
        "train_data": sum(t["data_s"] for t in trainers),
        "wait": sum(t["wait_s"] for t in trainers),
        "startup": max(t["startup_s"] for t in trainers),
        "total": wall,
        "loss": {t["kernel"]: t["loss"] for t in trainers},
        "cpu_user": cpu1[0] - cpu0[0],
        "cpu_sys": cpu1[1] - cpu0[1],
        "minflt": sum(t["minflt"] for t in trainers),
        "overlap": overlap,
        "torch_huge": [t["huge_pages"]["torch"] for t in trainers],
        "given": trainers[0]["huge_pages"]["given"],
        "sim_resources": "default" if sim_resources is None else "cpus=0",
    }
    say(
        f"whole {wall:.1f} s (simulations {sims_wall:.1f} s, training {train_wall:.1f} s), "
        f"final loss " + "/".join(f"{v:.3g}" for v in result["loss"].values())
    )
    return result


def full_report(
    args: argparse.Namespace, results: dict[tuple[str, bool], list[dict]], meta: dict
) -> str:
    """The Markdown of a --train full run."""

    def med(key: tuple[str, bool], field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    def on_off(huge: bool) -> str:
        return "on" if huge else "off"

    mib = args.num_sims * args.steps * 2 * args.grid_size**2 * 4 / 2**20
    pairs = args.num_sims * args.steps
    kernels = "/".join(f"k{k}" for k in wavelib.FULL_KERNELS)
    online = [r for (w, _), rs in results.items() if w in ONLINE for r in rs]
    placed = online[0]["sim_resources"] if online else None
    given = {on_off(h): rs[-1]["given"] for (w, h), rs in results.items() if w != "npy"}
    lines = [
        "# Wave benchmark, full training: "
        + "; ".join(dict.fromkeys(FULL_WAYS[w] for w, _ in results))
        + ", huge pages "
        + " and ".join(dict.fromkeys(on_off(h) for _, h in results)),
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}, total {meta['elapsed']:.0f} s",
        f"- machine: {machine()}; load average {meta['load0']:.2f} at start, "
        f"{meta['load1']:.2f} at end",
        f"- kernel transparent huge pages: enabled `{meta['thp']}`, defrag `{meta['thp_defrag']}`",
        f"- software: python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {meta['torch']}, simai {meta['simai']}",
        f"- workload: {args.num_sims} simulations x {args.steps} steps of {args.grid_size} x "
        f"{args.grid_size} ({pairs} pairs of 2 x {args.grid_size}^2 float32, {mib:.0f} MiB), "
        f"each step first waiting {args.step_compute:g} s (emulated compute); 2 trainers, "
        f"Conv2d(1,8,k) -> tanh -> Conv2d(8,1,k), k = 3 and 5, {args.epochs} epoch(s) over "
        f"all pairs, whole frames, batches of {args.batch}, torch.optim.Adam lr {args.lr:g}, "
        f"float32, one thread each; final loss = the trained model's MSE on every pair "
        f"(a second read of all pairs); {args.rounds} round(s), ways interleaved"
        + (", medians" if args.rounds > 1 else ""),
        "- npy staged: ProcessPoolExecutor(2), np.save / np.load of one .npy per pair in "
        f"{args.files_dir} on {filesystem(args.files_dir)}; huge pages on = "
        + ", ".join(f"{k}={v}" for k, v in huge_pages_env({}).items())
        + " in the pool's environment (what simai sets)",
        '- simai: Workflow(store="local") (online, Redis store: Workflow(store="redis"), one '
        'redis-server shard; online, ADIOS2 BP5 streams: Workflow(store="local") for '
        "everything but the pairs, which go through adios2:///run-dir-bp5?engine=BP5, one BP5 "
        "file per simulation beside the run directory, read while it is written); "
        "simulations are tasks, trainers components "
        "(Resources(cpus=1)); huge pages = SIMAI_HUGE_PAGES=1 or 0; the trainers were given "
        + "; ".join(
            f"{h}: " + ", ".join(f"{k}={v}" for k, v in g.items()) for h, g in given.items()
        ),
        (
            f"- simai online placement: simulations as {placed} tasks"
            + (
                " (no core of their own, nice +10), trainers a core each"
                if placed == "cpus=0"
                else " on an executor that lets 4 tasks share a core (oversubscribe)"
            )
            if online
            else "- simai online: not run"
        ),
        "",
        "Phases as the driver saw them: simulations from their submission to the last one's "
        "end; training, staged, from the trainers' start (torch import and all) to their end, "
        "online the training steps' compute of each trainer (its reads and waits apart). Data "
        "movement: simulations' puts (np.save, store.put or stream appends), trainers' reads "
        "(np.load, store.get or stream reads; both passes), summed over processes. Whole wall: "
        "from before starting the pool or workflow to after shutting it down and removing the "
        "data. Trainers' compute: the training steps of both trainers, summed. CPU: the whole "
        "machine's user (with nice) and system seconds from /proc/stat over the way's run. "
        "Page faults: the trainers' minor faults (getrusage) over their training pass, summed. "
        "Overlap: the fraction of the training steps done before the last simulation ended.",
        "",
        f"| way | huge pages | sims wall s | training s | sims data s | trainers data s | "
        f"whole wall s | final loss {kernels} | trainers' compute s | CPU user s | "
        "CPU sys s | trainers' minor faults | overlap |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (way, huge), rs in results.items():
        last = rs[-1]
        if way in ONLINE:
            per = {k: statistics.median(r["compute"][k] for r in rs) for k in last["compute"]}
            training = " / ".join(f"{v:.1f}" for v in per.values())
        else:
            training = f"{med((way, huge), 'train_wall'):.1f}"
        overlap = f"{statistics.median(r['overlap'] for r in rs):.0%}" if way in ONLINE else "-"
        lines.append(
            f"| {FULL_WAYS[way]} | {on_off(huge)} | {med((way, huge), 'sims_wall'):.1f} | "
            f"{training} | {med((way, huge), 'sims_data'):.2f} | "
            f"{med((way, huge), 'train_data'):.2f} | {med((way, huge), 'total'):.1f} | "
            + "/".join(f"{v:.3g}" for v in last["loss"].values())
            + f" | {med((way, huge), 'train_compute'):.1f} | {med((way, huge), 'cpu_user'):.1f} | "
            f"{med((way, huge), 'cpu_sys'):.1f} | {med((way, huge), 'minflt'):.0f} | {overlap} |"
        )
    lines += ["", "## Targets", ""]

    def target(text: str, ratio: float, limit: float) -> None:
        lines.append(
            f"- {text}: {ratio:.2f} (target <= {limit:g}: {'yes' if ratio <= limit else 'NO'})"
        )

    have = set(results)
    for huge in (True, False):
        if {("online", huge), ("npy", huge)} <= have:
            target(
                f"simai online / npy staged whole wall, huge pages {on_off(huge)}",
                med(("online", huge), "total") / med(("npy", huge), "total"),
                0.6,
            )
    if {("online", True), ("npy", False)} <= have:
        target(
            "simai online, huge pages on / npy staged, huge pages off, whole wall",
            med(("online", True), "total") / med(("npy", False), "total"),
            0.6,
        )
    for huge in (True, False):
        if {("staged", huge), ("npy", huge)} <= have:
            target(
                f"simai staged / npy staged whole wall, huge pages {on_off(huge)}",
                med(("staged", huge), "total") / med(("npy", huge), "total"),
                1.0,
            )
    for way in FULL_WAYS:
        if {(way, True), (way, False)} <= have:
            target(
                f"{FULL_WAYS[way]}: trainers' compute, huge pages on / off",
                med((way, True), "train_compute") / med((way, False), "train_compute"),
                0.7,
            )
    for huge in (True, False):
        if {("staged", huge), ("npy", huge)} <= have:
            target(
                f"trainers' data movement, simai staged / npy staged, huge pages {on_off(huge)}",
                med(("staged", huge), "train_data") / med(("npy", huge), "train_data"),
                1.0,
            )
    for huge in (True, False):
        for way, base in (("online-bp5", "online"), ("online-bp5", "online-redis")):
            if {(way, huge), (base, huge)} <= have:
                ratios = ", ".join(
                    f"{what} {med((way, huge), f) / med((base, huge), f):.2f}"
                    for what, f in (
                        ("whole wall", "total"),
                        ("simulations' data", "sims_data"),
                        ("trainers' data", "train_data"),
                    )
                )
                lines.append(
                    f"- {FULL_WAYS[way]} / {FULL_WAYS[base]}, huge pages {on_off(huge)}: "
                    f"{ratios} (no target; lower is faster)"
                )
    if max(meta["load0"], meta["load1"]) > meta["cores"]:
        lines.append(
            f"- caution: the load average passed the {meta['cores']} cores during the run, so "
            "other jobs competed for them; the ratios above may not hold on an idle machine"
        )
    lines += [
        "",
        "Per round (whole wall s): "
        + "; ".join(
            f"{FULL_WAYS[w]} {on_off(h)} " + ", ".join(f"{r['total']:.1f}" for r in rs)
            for (w, h), rs in results.items()
        ),
        "Trainers' start-up (import torch, model, Adam; the slower of the two, s): "
        + "; ".join(
            f"{FULL_WAYS[w]} {on_off(h)} {med((w, h), 'startup'):.1f}" for (w, h) in results
        ),
        "Trainers' waits for simulations (online, both trainers, s): "
        + "; ".join(
            f"{FULL_WAYS[w]} {on_off(h)} {med((w, h), 'wait'):.1f}"
            for (w, h) in results
            if w in ONLINE
        ),
    ]
    return "\n".join(lines) + "\n"


def main_full(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    ways = [w.strip() for w in (args.ways or ",".join(DEFAULT_FULL_WAYS)).split(",") if w.strip()]
    unknown = [w for w in ways if w not in FULL_WAYS]
    if unknown or not ways:
        parser.error(
            f"--ways: unknown {unknown}; with --train full choose from {','.join(FULL_WAYS)}"
        )
    settings = {"on": True, "off": False}
    huge = [h.strip() for h in args.huge_pages.split(",") if h.strip()]
    if not huge or any(h not in settings for h in huge):
        parser.error(f"--huge-pages: a comma-separated subset of on,off, not {args.huge_pages!r}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    thp = Path("/sys/kernel/mm/transparent_hugepage")
    meta: dict[str, Any] = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load0": os.getloadavg()[0],
        "torch": version("torch"),
        "simai": simai.__version__,
        "cores": len(os.sched_getaffinity(0)),
        "thp": (thp / "enabled").read_text().strip() if thp.exists() else "none",
        "thp_defrag": (thp / "defrag").read_text().strip() if thp.exists() else "none",
    }
    start = time.perf_counter()
    results: dict[tuple[str, bool], list[dict]] = {(w, settings[h]): [] for w in ways for h in huge}
    order = list(results)
    with tempfile.TemporaryDirectory(prefix="simai-wave-bench-") as scratch:
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr, flush=True)
            # interleaved, and the order turned around every other round
            for key in order if rnd % 2 == 0 else order[::-1]:
                results[key].append(run_full_way(*key, args, scratch))
    meta["elapsed"] = time.perf_counter() - start
    meta["load1"] = os.getloadavg()[0]
    text = full_report(args, results, meta)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


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
    parser.add_argument(
        "--train",
        choices=["light", "full"],
        default="light",
        help="light: one step on one 32 x 32 crop per pair (default); full: see the docstring",
    )
    parser.add_argument("--num-sims", type=int, default=32)
    parser.add_argument("--grid-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, help="default: 3; 1 with --train full")
    parser.add_argument(
        "--ways",
        help="comma-separated subset of "
        + ",".join(WAYS)
        + "; with --train full, of "
        + ",".join(FULL_WAYS)
        + " (default: all; with --train full, "
        + ",".join(DEFAULT_FULL_WAYS)
        + ")",
    )
    full = parser.add_argument_group("--train full")
    full.add_argument("--steps", type=int, default=10, help="steps (pairs) per simulation")
    full.add_argument(
        "--step-compute", type=float, default=0.5, help="seconds each simulation step waits"
    )
    full.add_argument("--epochs", type=int, default=1)
    full.add_argument("--batch", type=int, default=4, help="pairs per optimizer step")
    full.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    full.add_argument(
        "--huge-pages", default="on,off", help="comma-separated subset of on,off (default both)"
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
    if args.rounds is None:
        args.rounds = 1 if args.train == "full" else 3
    if args.train == "full":
        if args.num_sims < 1 or args.grid_size < 8 or args.rounds < 1 or args.steps < 1:
            parser.error("--num-sims, --steps and --rounds must be >= 1, --grid-size >= 8")
        if args.epochs < 1 or args.batch < 1 or not args.step_compute >= 0 or not args.lr > 0:
            parser.error("--epochs and --batch must be >= 1, --step-compute >= 0, --lr > 0")
        main_full(args, parser)
        return
    ways = [w.strip() for w in (args.ways or ",".join(WAYS)).split(",") if w.strip()]
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
