"""No-op task benchmark: simai's executors beside ProcessPool, Parsl HTEX, Dask and Ray.

For each framework, in one process and one after the other:

* first result: seconds from creating the executor to the first no-op result;
* round trip: median of sequential submit -> result of one no-op task;
* throughput: N no-op tasks submitted at once, tasks per second until the last result; the
  best of ``--bursts`` such bursts (3), as ``timeit`` takes the best of its repeats: the
  others were slowed by whatever else ran on the machine, not by the framework.

"simai Workflow" is the local executor inside a ``simai.Workflow``: every task gets a row in
the run's records and its result goes to the memo (its worker journals it before it reports it);
"simai Workflow, memoize=False" writes the records only. Their throughput beside "simai
LocalExecutor" (the same executor bare) is what recording, and the memo that resume needs,
cost. ``--rounds R`` measures every framework R times, interleaved, and reports
medians with the load average of each round (the machine may be shared).

Each framework is shut down after its part and checked for leftover processes (found by an
environment marker that every child inherits). Frameworks that are not installed are skipped
with the reason. Run from the repository root::

    .venv/bin/python benchmarks/tasks.py --out benchmarks/out/tasks.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKER = "SIMAI_BENCH_MARKER"
WORKERS = 2

Submit = Callable[..., Any]
Gather = Callable[[list[Any]], list[Any]]


def noop(x: Any = None) -> Any:
    """The task: return the argument."""
    return x


@dataclass
class Row:
    """One framework's figures, or why it was skipped."""

    name: str
    throughput: float | None = None
    round_trip_ms: float | None = None
    first_result_s: float | None = None
    shutdown_s: float | None = None
    note: str = ""
    leftovers: list[str] = field(default_factory=list)


# -- frameworks: each yields (submit, gather) and shuts everything down on exit ----------------


def _futures_gather(futures: list[Any]) -> list[Any]:
    return [f.result() for f in futures]


@contextlib.contextmanager
def process_pool() -> Iterator[tuple[Submit, Gather]]:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(WORKERS) as pool:
        yield pool.submit, _futures_gather


def _parsl_config(run_dir: str) -> Any:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    htex = HighThroughputExecutor(
        label="htex",
        max_workers_per_node=WORKERS,
        provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
    )
    return Config(executors=[htex], run_dir=run_dir, usage_tracking=0)


@contextlib.contextmanager
def parsl_htex() -> Iterator[tuple[Submit, Gather]]:
    import parsl
    from parsl.app.python import PythonApp

    run_dir = tempfile.mkdtemp(prefix="simai-bench-parsl-")
    try:
        dfk = parsl.load(_parsl_config(run_dir))
        try:
            app = PythonApp(noop, data_flow_kernel=dfk, executors=["htex"])
            yield (lambda fn, *a: app(*a)), _futures_gather
        finally:
            dfk.cleanup()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def dask_local() -> Iterator[tuple[Submit, Gather]]:
    import dask
    from distributed import Client, LocalCluster

    scratch = tempfile.mkdtemp(prefix="simai-bench-dask-")
    try:
        dask.config.set({"temporary-directory": scratch})
        cluster = LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
            local_directory=scratch,
        )
        try:
            client = Client(cluster)
            try:
                yield (lambda fn, *a: client.submit(fn, *a, pure=False)), client.gather
            finally:
                client.close()
        finally:
            cluster.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def ray_local() -> Iterator[tuple[Submit, Gather]]:
    import ray

    scratch = tempfile.mkdtemp(prefix="simai-bench-ray-")
    try:
        ray.init(
            num_cpus=WORKERS,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=False,
            _temp_dir=scratch,
        )
        try:
            remote = ray.remote(noop)
            yield (lambda fn, *a: remote.remote(*a)), ray.get
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _simai_executor(name: str, **config: Any) -> Any:
    launch = importlib.import_module("simai.launch")
    if name == "local" and hasattr(launch, "LocalExecutor"):
        return launch.LocalExecutor(**config)
    return launch.get_executor(name, **config)


def _simai_missing(name: str) -> str | None:
    """Why simai's executor ``name`` cannot be built here, or None when it can."""
    from simai.launch.executor import executor_names

    if name not in executor_names():
        return f"simai has no executor named {name!r}"
    if name == "parsl":
        try:
            importlib.import_module("parsl")
        except ImportError as exc:
            return f"parsl is not installed ({exc})"
    return None


@contextlib.contextmanager
def simai_local() -> Iterator[tuple[Submit, Gather]]:
    with _simai_executor("local") as executor:
        yield executor.submit, _futures_gather


@contextlib.contextmanager
def simai_workflow(memoize: bool = True) -> Iterator[tuple[Submit, Gather]]:
    from simai import Workflow

    run_dir = tempfile.mkdtemp(prefix="simai-bench-workflow-")
    try:
        with Workflow("bench", run_dir=Path(run_dir, "run"), resume=False, memoize=memoize) as wf:
            yield wf.submit, _futures_gather
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def simai_workflow_records() -> contextlib.AbstractContextManager[tuple[Submit, Gather]]:
    return simai_workflow(memoize=False)


@contextlib.contextmanager
def simai_parsl() -> Iterator[tuple[Submit, Gather]]:
    run_dir = tempfile.mkdtemp(prefix="simai-bench-parsl-")
    try:
        with _simai_executor("parsl", config=_parsl_config(run_dir)) as executor:
            yield executor.submit, _futures_gather
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _module_missing(module: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure means "skip with reason"
            return f"cannot import {module} ({type(exc).__name__}: {exc})"
        return None

    return missing


def _all_missing(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    return lambda: next((why for check in checks if (why := check())), None)


FRAMEWORKS: dict[str, tuple[str, Callable[[], Any], Callable[[], str | None]]] = {
    # key: (table name, context manager, why it cannot run here or None)
    "processpool": (f"ProcessPoolExecutor({WORKERS})", process_pool, lambda: None),
    "simai-local": ("simai LocalExecutor", simai_local, lambda: _simai_missing("local")),
    "simai-workflow": (
        "simai Workflow (LocalExecutor + records + memo)",
        simai_workflow,
        lambda: _simai_missing("local"),
    ),
    "simai-workflow-records": (
        "simai Workflow, memoize=False (LocalExecutor + records)",
        simai_workflow_records,
        lambda: _simai_missing("local"),
    ),
    "parsl": (
        f"Parsl HTEX (LocalProvider, {WORKERS} workers)",
        parsl_htex,
        _module_missing("parsl"),
    ),
    "simai-parsl": (
        "simai Parsl executor (same HTEX)",
        simai_parsl,
        _all_missing(_module_missing("parsl"), lambda: _simai_missing("parsl")),
    ),
    "dask": (
        f"Dask LocalCluster(n_workers={WORKERS})",
        dask_local,
        _module_missing("distributed"),
    ),
    "ray": (f"Ray (num_cpus={WORKERS})", ray_local, _module_missing("ray")),
}


# -- measuring ---------------------------------------------------------------------------------


def _marked_processes(marker: str) -> list[Any]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.environ().get(MARKER) != marker:
                continue
            if proc.ppid() == os.getpid() and "resource_tracker" in " ".join(proc.cmdline()):
                continue  # this interpreter's own multiprocessing helper; exits with it
            found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _reap_leftovers(marker: str, grace: float = 15.0) -> list[str]:
    """Wait for the framework's processes to exit; kill and name those that do not."""
    import psutil

    deadline = time.monotonic() + grace
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    names = []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            names.append(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
            proc.kill()
    return names


def measure(key: str, n: int, round_trips: int, bursts: int = 3) -> Row:
    name, opener, missing = FRAMEWORKS[key]
    row = Row(name)
    if why := missing():
        row.note = f"skipped: {why}"
        return row
    marker = uuid.uuid4().hex
    os.environ[MARKER] = marker
    try:
        t0 = time.perf_counter()
        with opener() as (submit, gather):
            assert gather([submit(noop, 1)]) == [1]
            row.first_result_s = time.perf_counter() - t0
            gather([submit(noop, i) for i in range(50)])
            times = []
            for i in range(round_trips):
                start = time.perf_counter()
                gather([submit(noop, i)])
                times.append(time.perf_counter() - start)
            row.round_trip_ms = statistics.median(times) * 1e3
            for _ in range(bursts):
                start = time.perf_counter()
                results = gather([submit(noop, i) for i in range(n)])
                throughput = n / (time.perf_counter() - start)
                if results != list(range(n)):
                    raise RuntimeError("wrong results")
                row.throughput = max(row.throughput or 0.0, throughput)
            closing = time.perf_counter()
        row.shutdown_s = time.perf_counter() - closing
    except Exception as exc:  # noqa: BLE001 - report the failure in the table, go on
        row.note = f"failed: {type(exc).__name__}: {str(exc)[:160]}"
    finally:
        os.environ.pop(MARKER, None)
        row.leftovers = _reap_leftovers(marker)
    for line in row.leftovers:
        print(f"   left after shutdown: {line}", file=sys.stderr)
    if row.leftovers:
        row.note = (row.note + "; " if row.note else "") + (
            f"{len(row.leftovers)} processes left after shutdown (killed)"
        )
    return row


# -- report ------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    lines = [
        "| framework | throughput (tasks/s) | round trip, median (ms) | first result (s) "
        "| shutdown (s) | note |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {_fmt(r.throughput, ',.0f')} | {_fmt(r.round_trip_ms, '.2f')} "
            f"| {_fmt(r.first_result_s, '.2f')} | {_fmt(r.shutdown_s, '.2f')} | {r.note} |"
        )
    return "\n".join(lines)


def median_row(rows: list[Row]) -> Row:
    """One row of medians over rounds (the notes of failed or skipped rounds kept)."""
    if len(rows) == 1:
        return rows[0]

    def med(attr: str) -> float | None:
        values = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
        return statistics.median(values) if values else None

    notes = sorted({r.note for r in rows if r.note})
    out = Row(rows[0].name, med("throughput"), med("round_trip_ms"), med("first_result_s"))
    out.shutdown_s = med("shutdown_s")
    per_round = ", ".join(_fmt(r.throughput, ",.0f") for r in rows)
    out.note = "; ".join([*notes, f"throughput per round: {per_round}"])
    return out


def records_overhead(runs: dict[str, list[Row]]) -> tuple[list[str], dict[str, float]]:
    """The records section: simai Workflow, with and without its memo, against the bare
    LocalExecutor, round by round (measured one after the other in each round), and the
    medians of the paired ratios (by framework key)."""
    off = runs.get("simai-local")
    kinds = [k for k in ("simai-workflow-records", "simai-workflow") if runs.get(k)]
    if not off or not kinds:
        return [], {}
    columns = {
        k: [
            a.throughput / b.throughput if a.throughput and b.throughput else None
            for a, b in zip(runs[k], off, strict=True)
        ]
        for k in kinds
    }
    medians = {
        k: statistics.median(r for r in ratios if r is not None)
        for k, ratios in columns.items()
        if any(r is not None for r in ratios)
    }
    names = {"simai-workflow-records": "records", "simai-workflow": "records + memo"}
    header = "| round | off (tasks/s) |" + "".join(
        f" {names[k]} (tasks/s) | {names[k]} / off |" for k in kinds
    )
    lines = [
        "## Records overhead",
        "",
        "Throughput of the local executor inside a Workflow over the bare executor (off), "
        "paired within each round: with records only (`memoize=False`), and with records and "
        "the memo that resume needs (the default: each task's worker appends its result to a "
        "memo journal before it reports it):",
        "",
        header,
        "| ---: | ---: |" + " ---: | ---: |" * len(kinds),
    ]
    for i, row in enumerate(off):
        cells = "".join(
            f" {_fmt(runs[k][i].throughput, ',.0f')} | {_fmt(columns[k][i], '.2f')} |"
            for k in kinds
        )
        lines.append(f"| {i + 1} | {_fmt(row.throughput, ',.0f')} |{cells}")
    cells = "".join(
        f" | **{medians[k]:.2f}** (overhead {100 * (1 - medians[k]):.0f}%) |"
        if k in medians
        else " | — |"
        for k in kinds
    )
    lines += [f"| median | |{cells}", ""]
    return lines, medians


def summary_at_scale(n: int) -> tuple[list[str], float]:
    """Record a synthetic run of ``n`` tasks (through the real records writer, the way a
    workflow does: a row for each task as it ends, 64 at a time, and its memo appended to a
    worker's journal, folded in at the end; 1% failed, 4 components) and time the query
    behind ``simai status``."""
    from simai.launch._worker import _journal_record
    from simai.workflow import Records

    scratch = tempfile.mkdtemp(prefix="simai-bench-records-")
    try:
        path, journals = Path(scratch, "records.db"), Path(scratch, "memo")
        journals.mkdir()
        start = time.perf_counter()
        with Records(path, journals=journals) as r, open(journals / "1-a.memo", "ab") as journal:
            r.start_run()
            t0 = time.time()
            for c in range(4):
                r.event("component", f"component-{c}", "started", at=t0)
            resources = '{"cpus": 1, "gpus": 0, "ranks": 1}'
            for first in range(0, n, 64):
                rows, memos = [], []
                for i in range(first, min(n, first + 64)):
                    at, name = t0 + i * 1e-3, f"task-{i % 7}"
                    failed = i % 100 == 99
                    event, detail = ("failed", "Boom") if failed else ("finished", None)
                    rows.append((name, i, event, at, at + 0.1, at + 0.2, resources, 0, detail))
                    if not failed:
                        memos.append((f"{i:064x}", name, b"\x80\x05K\x01."))
                journal.write(_journal_record(memos))
                journal.flush()
                r.tasks(rows)
            r.end_run()
        write_s = time.perf_counter() - start
        times = []
        with Records(path, readonly=True) as ro:
            for _ in range(5):
                t = time.perf_counter()
                s = ro.summary()
                times.append(time.perf_counter() - t)
        assert sum(s["tasks"].values()) == n, s["tasks"]
        query_s = statistics.median(times)
        size = sum(f.stat().st_size for f in Path(scratch).iterdir() if f.is_file()) / 1e6
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = [
        f"## Records at scale ({n:,} tasks)",
        "",
        "| what | measured |",
        "| --- | ---: |",
        f"| recording {n:,} tasks (a row and a memo each), wall | {write_s:.1f} s |",
        f"| database size | {size:.1f} MB |",
        f"| `Records.summary()` (what `simai status` shows), median of 5 | {query_s:.3f} s |",
        "",
    ]
    return lines, query_s


def targets(
    rows: dict[str, Row],
    summary_s: float | None = None,
    records_ratios: dict[str, float] | None = None,
) -> str:
    def thr(key: str) -> float | None:
        row = rows.get(key)
        return row.throughput if row else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    local = rows.get("simai-local")
    checks = [
        ("simai local throughput / ProcessPool", ratio(thr("simai-local"), thr("processpool")),
         ">= 0.5", lambda v: v >= 0.5, ".2f"),
        ("simai local throughput / Parsl HTEX", ratio(thr("simai-local"), thr("parsl")),
         ">= 5", lambda v: v >= 5, ".1f"),
        ("simai local round trip (ms)", local.round_trip_ms if local else None,
         "<= 0.3", lambda v: v <= 0.3, ".3f"),
        ("simai local first result (s)", local.first_result_s if local else None,
         "<= 0.3", lambda v: v <= 0.3, ".3f"),
        ("simai Parsl throughput / Parsl HTEX", ratio(thr("simai-parsl"), thr("parsl")),
         ">= 0.8", lambda v: v >= 0.8, ".2f"),
        ("simai Workflow records (memoize=False) / LocalExecutor throughput, median of "
         "paired rounds", (records_ratios or {}).get("simai-workflow-records"), ">= 0.9",
         lambda v: v >= 0.9, ".2f"),
        ("simai Workflow records + memo (the default) / LocalExecutor throughput, median of "
         "paired rounds", (records_ratios or {}).get("simai-workflow"), ">= 0.9",
         lambda v: v >= 0.9, ".2f"),
        ("summary query of the records of 100k tasks (s)", summary_s,
         "< 1", lambda v: v < 1, ".3f"),
    ]  # fmt: skip
    lines = ["| target | measured | wanted | met |", "| --- | ---: | --- | --- |"]
    for label, value, wanted, ok, spec in checks:
        met = "not measured" if value is None else ("yes" if ok(value) else "**no**")
        lines.append(f"| {label} | {_fmt(value, spec)} | {wanted} | {met} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for mod in ("parsl", "distributed", "ray"):
        with contextlib.suppress(Exception):
            versions.append(f"{mod} {importlib.import_module(mod).__version__}")
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; " + ", ".join(versions)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="tasks for throughput (5000)")
    parser.add_argument("--round-trips", type=int, default=200, help="sequential tasks (200)")
    parser.add_argument(
        "--only", default=",".join(FRAMEWORKS), help=f"comma list of {', '.join(FRAMEWORKS)}"
    )
    parser.add_argument(
        "--bursts", type=int, default=3, help="throughput: the best of this many bursts (3)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (1)")
    parser.add_argument(
        "--summary-tasks",
        type=int,
        default=0,
        help="also time the records summary of a synthetic run of this many tasks (e.g. 100000)",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in FRAMEWORKS]
    if unknown:
        parser.error(f"unknown framework(s) {', '.join(unknown)}; known: {', '.join(FRAMEWORKS)}")
    if min(args.n, args.round_trips, args.rounds, args.bursts) < 1:
        parser.error("-n, --round-trips, --rounds and --bursts must be at least 1")

    for noisy in ("distributed", "parsl", "ray", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    runs: dict[str, list[Row]] = {key: [] for key in keys}
    loads: list[tuple[float, float]] = []
    for r in range(args.rounds):
        load_before = os.getloadavg()[0]
        for key in keys if r % 2 == 0 else keys[::-1]:  # interleaved: alternate the order
            print(f"-- {FRAMEWORKS[key][0]} (round {r + 1}) ...", file=sys.stderr, flush=True)
            runs[key].append(measure(key, args.n, args.round_trips, args.bursts))
            print(table([runs[key][-1]]).splitlines()[-1], file=sys.stderr, flush=True)
        loads.append((load_before, os.getloadavg()[0]))
    rows = {key: median_row(rs) for key, rs in runs.items()}
    overhead, records_ratios = records_overhead(runs)
    scale: list[str] = []
    summary_s = None
    if args.summary_tasks:
        print(f"-- records of {args.summary_tasks:,} tasks ...", file=sys.stderr, flush=True)
        scale, query_s = summary_at_scale(args.summary_tasks)
        summary_s = query_s if args.summary_tasks >= 100_000 else None

    command = "python " + " ".join(shlex.quote(a) for a in [*sys.argv])
    rounds = f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""
    load_text = ", ".join(f"{a:.2f}->{b:.2f}" for a, b in loads)
    report = "\n".join(
        [
            f"# No-op task benchmark (N = {args.n:,}, throughput = best of {args.bursts} "
            f"bursts, round trip = median of {args.round_trips}{rounds})",
            "",
            f"- command: `{command}`",
            f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {machine()}",
            f"- load average (1 min) at the start -> end of each round: {load_text}",
            "",
            table(list(rows.values())),
            "",
            *overhead,
            *scale,
            "## Targets",
            "",
            targets(rows, summary_s, records_ratios),
            "",
        ]
    )
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    # Workers must import the task by module name, not from __main__.
    sys.path.insert(0, str(ROOT))
    # Parsl starts interchange.py and process_worker_pool.py from PATH.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    from benchmarks.tasks import main as _main

    sys.exit(_main())
