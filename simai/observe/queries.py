"""A run's records, shaped for the report and ``simai status``.

Reads through :class:`simai.workflow.Records`, read-only and in one snapshot, so a run
still writing its records is read safely and never blocked. Task columns come back as
numpy arrays rather than one dict per row: a 100,000-task run loads in a fraction of a
second.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simai.workflow.records import Records
from simai.workflow.rundir import RunDir

#: component events that end an interval in the component's timeline
_COMPONENT_ENDS = {"restarting", "finished", "failed", "stopped", "cancelled", "lost"}
_COMPONENT_STARTS = {"started", "restarted"}


@dataclass
class Tasks:
    """One entry per task, as parallel arrays (``nan`` where a time is not recorded).

    Parameters
    ----------
    names : list of str
        The distinct task names, which ``name`` indexes.
    name : numpy.ndarray
        Each task's name, as an int32 index into ``names``.
    item : list of str
        Each task's item id.
    state : numpy.ndarray
        Each task's state (str objects, see :data:`simai.workflow.STATE_OF`).
    submitted : numpy.ndarray
        When each task was submitted (epoch seconds).
    started : numpy.ndarray
        When each task started.
    ended : numpy.ndarray
        When each task ended.
    host : list of str
        Where each task ran ("" when not recorded).
    worker : list of str or None
        The worker slot or pid that ran each task.
    cpus : numpy.ndarray
        Each task's cores (cpus × ranks).
    retries : numpy.ndarray
        Each task's retries (int32).
    cpu : numpy.ndarray
        Each task's CPU seconds, its tries together (``nan`` where not measured).
    peak_rss : numpy.ndarray
        Each task's peak resident memory in bytes, the highest of its tries (``nan`` where
        not measured).
    reason : list of str or None
        Why each task's last failed try failed (``oom``, ``walltime``, ...; None if none).
    """

    names: list[str]
    name: np.ndarray
    item: list[str]
    state: np.ndarray
    submitted: np.ndarray
    started: np.ndarray
    ended: np.ndarray
    host: list[str]
    worker: list[str | None]
    cpus: np.ndarray
    retries: np.ndarray
    cpu: np.ndarray = field(default_factory=lambda: np.empty(0))
    peak_rss: np.ndarray = field(default_factory=lambda: np.empty(0))
    reason: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.name)


@dataclass
class Component:
    """A component's history: its run intervals ``(start, end, how it ended)``."""

    name: str
    state: str
    restarts: int
    host: str | None
    cpus: float
    intervals: list[tuple[float, float | None, str | None]] = field(default_factory=list)


@dataclass
class Series:
    """A time series of one name (a metric, a counter): times, steps and values.

    Parameters
    ----------
    name : str
        What it measures.
    source : str or None
        Who logged it (a component's name, ``workflow``, ``host:pid``).
    time : numpy.ndarray
        When each value was taken (epoch seconds).
    value : numpy.ndarray
        The values.
    step : numpy.ndarray or None
        Each value's step, when it was logged with one.
    since : numpy.ndarray or None
        For amounts: the start of the interval each covers (``nan``: since the process
        started).
    """

    name: str
    source: str | None
    time: np.ndarray
    value: np.ndarray
    step: np.ndarray | None = None
    since: np.ndarray | None = None


@dataclass
class RunData:
    """What the report draws, loaded from one run directory.

    Parameters
    ----------
    path : Path
        The run directory.
    config : dict
        Its ``config.json``.
    live : dict or None
        The process running it (pid, host), or None when none does.
    runs : list of dict
        Its attempts (:meth:`simai.workflow.Records.runs`), a killed one ``interrupted``.
    t0 : float
        Where the time axes start: the first start of the run (epoch seconds).
    t1 : float
        Where they end: the last record, or now while the run is live.
    tasks : Tasks
        Every task.
    components : list of Component
        Every component, with its intervals of running.
    failures : list of dict
        The newest failures, with their detail.
    failures_total : int
        How many failures there are in all.
    metrics : list of Series
        Every user metric, per name and source.
    store : StoreTraffic or None
        Store bytes moved, when the run recorded store counters.
    backlog : list of Series or None
        Stream backlogs over time, when there are any.
    backlog_unknown : list of str
        The watched streams whose backlog is not known (read without consumer groups).
    loaded_at : float
        When it was loaded (epoch seconds).
    """

    path: Path
    config: dict[str, Any]
    live: dict[str, Any] | None
    runs: list[dict[str, Any]]
    t0: float
    t1: float
    tasks: Tasks
    components: list[Component]
    failures: list[dict[str, Any]]
    failures_total: int
    metrics: list[Series]
    store: StoreTraffic | None
    backlog: list[Series] | None
    backlog_unknown: list[str]
    loaded_at: float


def _resources_cpus(text: str | None, cache: dict[str | None, float]) -> float:
    cpus = cache.get(text)
    if cpus is None:
        try:
            res = json.loads(text) if text else {}
            cpus = float(res.get("cpus") or 1) * float(res.get("ranks") or 1)
        except (ValueError, TypeError, AttributeError):
            cpus = 1.0
        cache[text] = cpus
    return cpus


def load_tasks(records: Records) -> Tasks:
    """All task rows, in submission order."""
    rows = records.task_columns()
    if not rows:
        empty = np.empty(0)
        return Tasks(
            [],
            np.empty(0, np.int32),
            [],
            np.empty(0, object),
            empty,
            empty,
            empty,
            [],
            [],
            empty,
            np.empty(0, np.int32),
        )
    (name, item, state, submitted, started, ended, host, worker, resources, retries, cpu_time,
     peak_rss, reason) = zip(*rows, strict=True)  # fmt: skip
    index: dict[str, int] = {}
    codes = [index.setdefault(n, len(index)) for n in name]
    cache: dict[str | None, float] = {}
    cpus = [_resources_cpus(r, cache) for r in resources]
    return Tasks(
        names=list(index),
        name=np.array(codes, np.int32),
        item=list(item),
        state=np.array(state, dtype=object),
        submitted=np.array(submitted, dtype=float),
        started=np.array(started, dtype=float),
        ended=np.array(ended, dtype=float),
        host=[h or "" for h in host],
        worker=list(worker),
        cpus=np.array(cpus, dtype=float),
        retries=np.array([r or 0 for r in retries], np.int32),
        cpu=np.array(cpu_time, dtype=float),
        peak_rss=np.array(peak_rss, dtype=float),
        reason=list(reason),
    )


def load_components(records: Records) -> list[Component]:
    """Each component's state (:meth:`Records.components`) and intervals of running, from
    its events."""
    comps = {
        c["name"]: Component(c["name"], c["state"], c["restarts"], c["host"], 1.0)
        for c in records.components()
    }
    cache: dict[str | None, float] = {}
    for e in records.events(kind="component"):
        c, event, t = comps[e["name"]], e["event"], e["time"]
        if e["resources"] is not None:
            c.cpus = _resources_cpus(e["resources"], cache)
        open_ = bool(c.intervals) and c.intervals[-1][1] is None
        if event in _COMPONENT_STARTS:
            if open_ and event == "started":
                c.intervals[-1] = (c.intervals[-1][0], t, "restarting")
            if not open_ or event == "started":
                c.intervals.append((t, None, None))
        elif event in _COMPONENT_ENDS and open_:
            c.intervals[-1] = (c.intervals[-1][0], t, event)
    return list(comps.values())


def failures(records: Records, limit: int, tasks: Tasks) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` failures (tasks whose state is failed, component failures and
    restarts, store failures) with their detail, and how many there are in all."""
    out = records.failed_tasks(limit)
    total = int((tasks.state == "failed").sum())
    for kind in ("component", "store"):
        for e in records.events(kind=kind):
            if e["event"] in ("failed", "restarting"):
                total += 1
                out.append(
                    {
                        "kind": kind if e["event"] == "failed" else "restart",
                        "item_id": None,
                        **{k: e[k] for k in ("name", "time", "host", "worker", "detail")},
                        "reason": None,
                    }
                )
    out.sort(key=lambda f: f["time"] or 0, reverse=True)
    return out[:limit], total


def load_metrics(records: Records) -> list[Series]:
    """Every user metric, one series per (name, source), in time order."""
    rows = records.metric_points()
    if not rows:
        return []
    name, source, t, value, step = zip(*rows, strict=True)
    keys = np.array([f"{n}\0{s}" for n, s in zip(name, source, strict=True)], dtype=object)
    t_arr = np.array(t, dtype=float)
    v_arr = np.array(value, dtype=float)
    s_arr = np.array(step, dtype=float)
    out = []
    cut = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    for a, b in zip([0, *cut.tolist()], [*cut.tolist(), len(keys)], strict=True):
        steps = s_arr[a:b]
        out.append(
            Series(
                name[a],
                source[a] or None,
                t_arr[a:b],
                v_arr[a:b],
                None if np.isnan(steps).all() else steps,
            )
        )
    return out


@dataclass
class StoreTraffic:
    """Store bytes moved: per component over time, and totals per component, op and prefix."""

    series: list[Series]  # bytes moved at each snapshot, per component
    totals: list[dict[str, Any]]  # component, op, prefix, ops, bytes; biggest first


#: the label of store traffic by tasks and the workflow process (no component)
NO_COMPONENT = "tasks and workflow"


def load_store(records: Records) -> StoreTraffic | None:
    """Store traffic from the ``store_counters`` snapshots (running totals per process, op
    and key prefix, turned here into what moved between snapshots); ``None`` when the run
    recorded none."""
    rows = records.store_traffic()
    if not rows:
        return None
    per: dict[str, list[tuple[float, float, float]]] = {}
    totals: dict[tuple[str, str, str], list[int]] = {}
    for t, before, comp, op, prefix, nbytes, ops in rows:
        comp = comp or NO_COMPONENT
        per.setdefault(comp, []).append((t, np.nan if before is None else before, nbytes))
        tot = totals.setdefault((comp, op, prefix), [0, 0])
        tot[0] += ops
        tot[1] += nbytes
    series = []
    for comp, pts in per.items():
        a = np.array(pts, dtype=float)
        order = np.argsort(a[:, 0], kind="stable")
        series.append(Series(comp, None, a[order, 0], a[order, 2], since=a[order, 1]))
    series.sort(key=lambda x: -float(x.value.sum()))
    table = [
        {"component": c, "op": op, "prefix": p, "ops": v[0], "bytes": v[1]}
        for (c, op, p), v in totals.items()
    ]
    table.sort(key=lambda r: (-r["bytes"], -r["ops"]))
    return StoreTraffic(series, table)


def is_backlog(name: str) -> bool:
    """Whether metric ``name`` is a stream backlog (drawn apart from the other metrics)."""
    return "backlog" in name


def load_backlog(records: Records, metrics: list[Series]) -> tuple[list[Series] | None, list[str]]:
    """Stream backlog over time: the samples of the streams the workflow watched
    (``stream_backlog``: entries not yet read by the slowest consumer group), then the
    metrics whose name contains ``backlog`` (e.g. ``backlog:sine/samples``), ``None`` when
    there are none; and the watched streams whose backlog is unknown: a stream read
    without consumer groups keeps no account of what was read."""
    found = []
    per: dict[str, list[tuple[float, float]]] = {}
    for t, stream, _, backlog in records.stream_samples():
        pts = per.setdefault(stream, [])
        if backlog is not None:
            pts.append((t, backlog))
    for stream, pts in per.items():
        if pts:
            a = np.array(pts, dtype=float)
            found.append(Series(f"backlog:{stream}", None, a[:, 0], a[:, 1]))
    found += [m for m in metrics if is_backlog(m.name)]
    return found or None, [stream for stream, pts in per.items() if not pts]


def _read(run_dir: RunDir) -> Records:
    """The run's records, opened for reading."""
    return Records(run_dir.records_path, readonly=True)


def _mark_interrupted(runs: list[dict[str, Any]], live: dict[str, Any] | None) -> None:
    """With no live process, an attempt still marked running was killed."""
    if live is None:
        for r in runs:
            if r["status"] == "running":
                r["status"] = "interrupted"


def load(run_dir: RunDir, failure_limit: int = 200) -> RunData:
    """Everything the report draws for the run in ``run_dir`` (finished or in progress)."""
    now = time.time()
    live = run_dir.holder()
    with _read(run_dir) as records, records.snapshot():
        runs = records.runs()
        tasks = load_tasks(records)
        components = load_components(records)
        fails, total = failures(records, failure_limit, tasks)
        metrics = load_metrics(records)
        store = load_store(records)
        backlog, backlog_unknown = load_backlog(records, metrics)
        last_event = records.last_event_time()
    _mark_interrupted(runs, live)
    starts = [r["started"] for r in runs if r["started"]]
    times = [
        *(t for t in (last_event,) if t),
        *(r["ended"] for r in runs if r["ended"]),
        *(float(np.nanmax(a)) for a in (tasks.submitted, tasks.ended) if np.isfinite(a).any()),
        *(float(m.time[-1]) for m in metrics if len(m.time)),
    ]
    t0 = min(starts) if starts else (min(times) if times else now)
    if np.isfinite(tasks.submitted).any():
        t0 = min(t0, float(np.nanmin(tasks.submitted)))
    t1 = now if live is not None else max(times, default=t0)
    return RunData(
        path=run_dir.path,
        config=run_dir.config(),
        live=live,
        runs=runs,
        t0=t0,
        t1=max(t1, t0 + 1e-3),
        tasks=tasks,
        components=components,
        failures=fails,
        failures_total=total,
        metrics=metrics,
        store=store,
        backlog=backlog,
        backlog_unknown=backlog_unknown,
        loaded_at=now,
    )


def summary(run_dir: RunDir, failure_limit: int = 20) -> dict[str, Any]:
    """The one-screen summary of ``simai status``, as plain JSON-able data.

    What :meth:`simai.workflow.Records.summary` gives (``runs``, ``tasks`` counts per
    state, ``task_names``, ``components``, ``events``, ``failures``, ``failures_total``)
    plus ``run_dir``, ``config``, ``live``, ``elapsed`` (seconds from the first start to
    the last record, or to now while live), ``queued`` (tasks submitted or retried and not
    started), ``durations`` (per task name: count, mean, min, max and total seconds of the
    finished tasks, and ``cpu``, the CPU seconds of all its tasks, and ``peak_rss``, the
    highest peak memory of any in bytes; None where not measured), ``uptime`` per
    component, ``metrics`` (per name: the latest value, step, time, source and how many
    values) and ``store`` (bytes per component, ``None`` when no store counters were
    recorded).
    """
    now = time.time()
    live = run_dir.holder()
    data: dict[str, Any] = {"run_dir": str(run_dir.path), "config": run_dir.config()}
    data["live"] = live
    if not run_dir.records_path.is_file():
        return data | {
            "runs": [],
            "tasks": {},
            "task_names": {},
            "components": [],
            "events": {},
            "failures": [],
            "failures_total": 0,
            "failure_reasons": {},
            "elapsed": None,
            "queued": 0,
            "durations": {},
            "metrics": {},
            "store": None,
        }
    with _read(run_dir) as records, records.snapshot():
        data.update(records.summary(failures=failure_limit))
        durations = {}
        firsts, lasts = [], []
        for d in records.task_durations():
            firsts.append(d["first"])
            lasts.append(d["last"])
            if d["count"] or d["cpu"] is not None or d["peak_rss"] is not None:
                durations[d["name"]] = {
                    k: d[k] for k in ("count", "mean", "min", "max", "total", "cpu", "peak_rss")
                }
        first_task = min((t for t in firsts if t), default=None)
        last_task = max((t for t in lasts if t), default=None)
        uptime = {}
        for c in load_components(records):
            uptime[c.name] = sum(((e if e is not None else now) - s) for s, e, _ in c.intervals)
        metrics = records.latest_metrics()
        traffic = load_store(records)
        last_event = records.last_event_time()
    _mark_interrupted(data["runs"], live)
    store = None
    if traffic is not None:
        store = {x.name: int(x.value.sum()) for x in traffic.series}
    runs = data["runs"]
    starts = [t for t in (first_task, *(r["started"] for r in runs)) if t]
    ends = [t for t in (last_event, last_task, *(r["ended"] for r in runs)) if t]
    elapsed = None
    if starts:
        elapsed = (now if live is not None else max(ends, default=min(starts))) - min(starts)
    for c in data["components"]:
        c["uptime"] = uptime.get(c["name"])
    tasks = data["tasks"]
    return data | {
        "elapsed": elapsed,
        "queued": tasks.get("submitted", 0) + tasks.get("retried", 0),
        "durations": durations,
        "metrics": metrics,
        "store": store,
    }
