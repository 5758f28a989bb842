"""The run report at scale: a synthetic 100,000-task run, its `simai report` and summary.

Writes a run's records through the real :class:`simai.workflow.Records` API (tasks on
hosts x worker slots with log-normal durations, 1% failures, components with restarts, a
training loss metric), then measures:

* the summary query behind `simai status` (``simai.observe.queries.summary``);
* generating the report (``simai.observe.report.write_report``) and its size;
* opening it in headless Chromium (`chromium --headless --screenshot`, the whole browser
  process), beside a blank page for the browser's own start-up, and checking through
  ``--dump-dom`` that every chart was drawn and no JavaScript error was logged.

Run from the repository root::

    .venv/bin/python benchmarks/report.py --out benchmarks/results/report.md
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from simai.observe import _report_browser as browser
from simai.observe import queries
from simai.observe.report import write_report
from simai.workflow import Records, RunDir

STORE_TRAFFIC = (  # component, op, key prefix, bytes/s
    ("simulation-1", "append", "samples", 40e6),
    ("simulation-2", "append", "samples", 35e6),
    ("trainer", "stream", "samples", 75e6),
    ("trainer", "put", "models", 2e6),
    ("evaluator", "get", "models", 2e6),
    ("", "get", "inputs", 10e6),
)
NAMES = ("simulate", "featurize", "dock", "score", "train-shard", "validate")


def make_run(path: Path, tasks: int, hosts: int, slots: int, seed: int = 1) -> float:
    """Record a synthetic finished run of ``tasks`` tasks; returns the seconds it took."""
    rng = random.Random(seed)
    rd = RunDir(path)
    rd.write_config(workflow="synthetic", identity="synthetic", store="redis", executor="local")
    start = time.perf_counter()
    workers = hosts * slots
    # draw the run first, then shift it so that it ends now, as the metrics (logged now) do
    free = [rng.random() for _ in range(workers)]
    rows = []
    for i in range(tasks):
        k = i % workers
        name = NAMES[min(int(rng.expovariate(0.6)), len(NAMES) - 1)]
        submitted = free[k] - rng.random() * 2
        started = max(free[k], submitted) + rng.random() * 0.05
        ended = started + rng.lognormvariate(0.9, 0.6)
        rows.append((name, f"{name}-{i}", k, submitted, started, ended, rng.random() > 0.01))
        free[k] = ended
    shift = time.time() - max(free) - 1
    end = max(free) + shift
    t0 = shift
    with Records(rd.records_path) as r:
        r.start_run()
        for c in ("simulation-1", "simulation-2", "trainer", "evaluator"):
            r.event("component", c, "started", at=t0, resources={"cpus": 1})
        restart = t0 + (end - t0) * 0.6
        r.event("component", "trainer", "restarting", at=restart, detail="exit 1: CUDA OOM")
        r.event("component", "trainer", "started", at=restart + 2, resources={"cpus": 1})
        for name, item, k, submitted, started, ended, ok in rows:
            r.event("task", name, "submitted", item, at=submitted + shift, resources={"cpus": 1})
            r.event(
                "task",
                name,
                "finished" if ok else "failed",
                item,
                at=ended + shift,
                started=started + shift,
                host=f"node{k // slots:03d}",
                worker=k % slots,
                detail=None if ok else f"ValueError: input {item} out of range",
            )
        timed = "at" in inspect.signature(r.log_metric).parameters
        for step in range(0, 20000):
            loss = 1.0 / (1 + step / 300) + rng.random() * 0.002
            at = {"at": t0 + (end - t0) * step / 20000} if timed else {}
            r.log_metric("loss", loss, step=step, **at)
        if hasattr(r, "store_counters"):  # running totals per process, op and key prefix
            totals = {}
            for t in range(int(t0) + 10, int(end), 10):
                snapshot = []
                for comp, op, prefix, rate in STORE_TRAFFIC:
                    key = (comp, op, prefix)
                    totals[key] = totals.get(key, 0) + int(rate * 10 * (0.5 + rng.random()))
                    ops = totals[key] // 65536 + 1
                    snapshot.append((t, "node000", 100, comp, op, prefix, ops, totals[key]))
                r.store_counters(snapshot)
        for c in ("simulation-1", "simulation-2", "trainer", "evaluator"):
            r.event("component", c, "stopped", at=end)
        r.end_run("done")
    return time.perf_counter() - start


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_time(fn, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", default=None, help="keep the run and report in this folder")
    parser.add_argument("--out", default=None, help="write the results (markdown) here")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="simai-report-bench-"))
    run_path = work / "run"
    lines = [
        f"# `simai report` at scale ({args.tasks:,} tasks)",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"command: `.venv/bin/python benchmarks/report.py {' '.join(sys.argv[1:])}`",
        "",
        f"Synthetic run: {args.tasks:,} tasks on {args.hosts} hosts x {args.slots} worker slots "
        "(log-normal durations, 1% failed), 4 components (one restart), 20,000 loss values, "
        "store counter snapshots every 10 s; recorded through `simai.workflow.Records`.",
        "",
        "| what | figure | load average (1, 5, 15 min) |",
        "| --- | --- | --- |",
    ]

    def row(what: str, figure: str) -> None:
        lines.append(f"| {what} | {figure} | {loadavg()} |")
        print(f"{what}: {figure}   (load {loadavg()})", flush=True)

    if run_path.exists():
        raise SystemExit(f"{run_path} exists: pick an empty --keep folder")
    took = make_run(run_path, args.tasks, args.hosts, args.slots)
    row("recording the run (Records API, all events)", f"{took:.2f} s")
    db_size = (run_path / "records.db").stat().st_size
    row("records.db size", f"{db_size / 1e6:.1f} MB")
    rd = RunDir(run_path, create=False)

    med, all_ = median_time(lambda: queries.summary(rd), args.repeat)
    row("summary query (`simai status` data), median", f"{med * 1000:.0f} ms ({_list(all_)})")

    report = work / "report.html"
    med, all_ = median_time(lambda: write_report(rd, report), args.repeat)
    row("report generation (`simai report`), median", f"{med:.2f} s ({_list(all_)})")
    size = report.stat().st_size
    row("report file size", f"{size / 1e6:.2f} MB")

    exe = browser.find_chromium()
    if exe is None:
        row("headless Chromium", "not installed: skipped")
    else:
        version = os.popen(f"{exe} --version").read().strip()
        blank = work / "blank.html"
        blank.write_text("<!DOCTYPE html><title>blank</title><p>blank</p>")
        shot = work / "shot.png"
        base = [browser.open_page(blank, screenshot=shot).seconds for _ in range(args.repeat)]
        row(f"{version}: blank page, --screenshot, median", f"{statistics.median(base):.2f} s")
        opened = [
            browser.open_page(report, screenshot=shot, size=(1280, 3000)).seconds
            for _ in range(args.repeat)
        ]
        row(
            "the report, --screenshot 1280x3000, median (whole browser process)",
            f"{statistics.median(opened):.2f} s ({_list(opened)})",
        )
        dom = browser.open_page(report)
        rendered = re.search(r'data-rendered="(\w+)"', dom.dom)
        charts = re.search(r'data-charts="(\d+)"', dom.dom)
        drawn = re.search(r'data-drawn="(\d+)"', dom.dom)
        ready = [
            int(re.search(r'data-ready-ms="(\d+)"', browser.open_page(report).dom).group(1))
            for _ in range(args.repeat)
        ]
        row(
            "the report's own time to charts drawn (navigation to its script's end, "
            "parsing and layout included), median",
            f"{statistics.median(ready) / 1000:.2f} s ({_list([r / 1000 for r in ready])})",
        )
        row(
            "charts drawn (--dump-dom), JavaScript errors",
            f"{drawn and drawn.group(1)} of {charts and charts.group(1)} "
            f"({rendered and rendered.group(1)}), {len(dom.errors)} errors",
        )
    lines += ["", "Load average printed at each line; 2-core machine shared with other work."]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    print(f"run and report in {work}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


def _list(xs: list[float]) -> str:
    return ", ".join(f"{x:.3g}" for x in xs)


if __name__ == "__main__":
    sys.exit(main())
