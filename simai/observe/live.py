"""Live progress of a running workflow, in the terminal that runs it.

    with simai.Workflow("sine") as wf, simai.observe.progress(wf, streams=["sine/samples"]):
        ...

shows, refreshed twice a second: tasks done, running, queued and failed; each component's
state and restarts; store throughput (from the store counters the run records, when there
are any) and each named stream's length, growth and backlog (values appended that the
slowest consumer group has not read); and the latest value of every user metric
(``simai.log_metric``). It is drawn with ``rich`` on ``stderr`` when that is a terminal;
otherwise (CI, batch jobs, a pipe) it prints one plain line every ``interval`` seconds
(default 5) and a last one at the end. ``quiet=True`` turns it off, and so does
``$SIMAI_PROGRESS=off`` (``live`` or ``plain`` force a mode).

It only reads: the workflow's in-memory task counts and component states, its records
(through a read-only :class:`simai.workflow.Records` of its own: the run's writes and memo
lookups never wait for it), and ``stream_info`` of the streams named. Nothing it does can
stop or slow the run beyond a few milliseconds of one thread every refresh.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from simai.checks import check_seconds
from simai.workflow.records import Records

if TYPE_CHECKING:
    from simai.workflow import Workflow

ENV_PROGRESS = "SIMAI_PROGRESS"
MODES = ("live", "plain", "off")
_log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """What the display shows at one moment (plain data, for tests and other displays)."""

    elapsed: float
    tasks: dict[str, int]
    components: list[tuple[str, str, int]]  # (name, state, restarts)
    metrics: dict[str, tuple[float | None, int | None]]  # name -> (latest value, step)
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    store: dict[str, float] | None = None  # bytes_per_s, ops_per_s, bytes, ops


class Progress:
    """Collects :class:`Snapshot` s of a workflow and shows them (see the module doc)."""

    def __init__(
        self,
        workflow: Workflow,
        *,
        mode: str | None = None,
        streams: Iterable[str] = (),
        interval: float | None = None,
        file: IO[str] | None = None,
    ) -> None:
        self.workflow = workflow
        self.file = file if file is not None else sys.stderr
        self.mode = resolve_mode(mode, self.file)
        self.streams = list(streams)
        workflow.watch_streams(*self.streams)  # recorded over time even when not shown
        interval = check_seconds("interval", interval, positive=True, optional=True)
        self.interval = interval if interval is not None else (0.5 if self.mode == "live" else 5.0)
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: Any = None
        self._records: Records | None = None
        self._metric_row = 0
        self._metrics: dict[str, tuple[float | None, int | None]] = {}
        self._counter_row = 0
        self._counters: dict[tuple, tuple[int, int]] = {}
        self._last_totals: tuple[float, int, int] | None = None
        self._last_lengths: dict[str, tuple[float, int]] = {}
        self._failed_once = False
        self._live: Any = None

    # --- data ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The run's state now."""
        wf = self.workflow
        comps = [(c.name, c.state, c.restarts) for c in list(wf.components.values())]
        return Snapshot(
            elapsed=time.monotonic() - self._start,
            tasks=wf.task_counts(),
            components=comps,
            metrics=self._read_metrics(),
            streams=self._read_streams(),
            store=self._read_store(),
        )

    def _reader(self) -> Records:
        """The display's own read-only connection to the run's records (opened on first
        use): it never takes the lock of the workflow's, which the run's writes use."""
        if self._records is None:
            self._records = Records(self.workflow.run_dir.records_path, readonly=True)
        return self._records

    def _read_metrics(self) -> dict[str, tuple[float | None, int | None]]:
        for rowid, name, value, step in self._reader().metrics_since(self._metric_row):
            self._metric_row = rowid
            self._metrics[name] = (value, step)
        return dict(self._metrics)

    def _read_store(self) -> dict[str, float] | None:
        rows = self._reader().store_counters_since(self._counter_row)
        for rowid, host, pid, _, op, prefix, ops, nbytes in rows:
            self._counter_row = rowid
            self._counters[(host, pid, op, prefix)] = (ops, nbytes)
        if not self._counters:
            return None
        ops = sum(o for o, _ in self._counters.values())
        nbytes = sum(b for _, b in self._counters.values())
        now = time.monotonic()
        rate_b = rate_o = 0.0
        if self._last_totals is not None and now > self._last_totals[0]:
            dt = now - self._last_totals[0]
            rate_b = max(0, nbytes - self._last_totals[2]) / dt
            rate_o = max(0, ops - self._last_totals[1]) / dt
        self._last_totals = (now, ops, nbytes)
        return {"bytes_per_s": rate_b, "ops_per_s": rate_o, "bytes": nbytes, "ops": ops}

    def _read_streams(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if not self.streams:
            return out
        if self._store is None:
            self._store = self.workflow.store()
        now = time.monotonic()
        for name in self.streams:
            try:
                info = self._store.stream_info(name)
            except KeyError:
                out[name] = {"length": None, "rate": None, "backlog": None}
                continue
            length = info["length"]
            groups = info.get("groups") or {}
            backlog = length - min(groups.values()) if groups else None
            rate = None
            last = self._last_lengths.get(name)
            if last is not None and now > last[0]:
                rate = (length - last[1]) / (now - last[0])
            self._last_lengths[name] = (now, length)
            out[name] = {"length": length, "rate": rate, "backlog": backlog}
        return out

    # --- showing ------------------------------------------------------------------------

    def line(self, snap: Snapshot) -> str:
        """One plain log line."""
        t = snap.tasks
        recalled = f"{t['recalled']} recalled, " if t.get("recalled") else ""
        parts = [
            f"[simai {self.workflow.name} {snap.elapsed:6.1f} s] tasks {t['done']} done, "
            f"{recalled}{t['running']} running, {t['queued']} queued, {t['failed']} failed"
        ]
        if snap.components:
            parts.append(
                "components "
                + ", ".join(
                    f"{n} {s}" + (f" ({r} restarts)" if r else "") for n, s, r in snap.components
                )
            )
        if snap.store:
            parts.append(
                f"store {_bytes(snap.store['bytes_per_s'])}/s {snap.store['ops_per_s']:.0f} ops/s"
            )
        for name, s in snap.streams.items():
            if s["length"] is None:
                parts.append(f"stream {name} -")
                continue
            text = f"stream {name} {s['length']}"
            if s["rate"] is not None:
                text += f" (+{s['rate']:.0f}/s)"
            if s["backlog"] is not None:
                text += f" backlog {s['backlog']}"
            parts.append(text)
        if snap.metrics:
            parts.append(
                "metrics "
                + " ".join(f"{n}={_num(v)}" + ("" if st is None else f"@{st}")
                           for n, (v, st) in sorted(snap.metrics.items()))
            )  # fmt: skip
        return " | ".join(parts)

    def renderable(self, snap: Snapshot) -> Any:
        """The rich renderable of the live display."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        t = snap.tasks
        head = Text.assemble(
            (f"simai {self.workflow.name}", "bold"),
            f"  {snap.elapsed:.0f} s   tasks ",
            (f"{t['done']} done", "green"),
            "  ",
            (f"{t['recalled']} recalled  " if t.get("recalled") else "", "green"),
            (f"{t['running']} running", "cyan"),
            "  ",
            (f"{t['queued']} queued", "yellow"),
            "  ",
            (f"{t['failed']} failed", "red" if t["failed"] else ""),
        )
        parts: list[Any] = [head]
        if snap.components:
            table = Table(box=None, pad_edge=False, header_style="bold")
            table.add_column("component")
            table.add_column("state")
            table.add_column("restarts", justify="right")
            style = {"running": "cyan", "done": "green", "failed": "red", "restarting": "yellow"}
            for name, state, restarts in snap.components:
                table.add_row(name, Text(state, style.get(state, "")), str(restarts))
            parts.append(table)
        if snap.store or snap.streams:
            table = Table(box=None, pad_edge=False, header_style="bold")
            table.add_column("data")
            table.add_column("size", justify="right")
            table.add_column("rate", justify="right")
            table.add_column("backlog", justify="right")
            if snap.store:
                table.add_row(
                    "store",
                    _bytes(snap.store["bytes"]),
                    f"{_bytes(snap.store['bytes_per_s'])}/s, {snap.store['ops_per_s']:.0f} ops/s",
                    "",
                )
            for name, s in snap.streams.items():
                table.add_row(
                    f"stream {name}",
                    "-" if s["length"] is None else f"{s['length']:,}",
                    "" if s["rate"] is None else f"+{s['rate']:.0f}/s",
                    "" if s["backlog"] is None else f"{s['backlog']:,}",
                )
            parts.append(table)
        if snap.metrics:
            table = Table(box=None, pad_edge=False, header_style="bold")
            table.add_column("metric")
            table.add_column("latest", justify="right")
            table.add_column("step", justify="right")
            for name, (value, step) in sorted(snap.metrics.items()):
                table.add_row(name, _num(value), "" if step is None else str(step))
            parts.append(table)
        return Group(*parts)

    # --- running ------------------------------------------------------------------------

    def _safe_snapshot(self) -> Snapshot | None:
        try:
            return self.snapshot()
        except Exception:  # noqa: BLE001 - a display must never stop the run
            if not self._failed_once:
                self._failed_once = True
                _log.exception("simai progress display: reading the run's state failed")
            return None

    def _run_plain(self) -> None:
        while not self._stop.wait(self.interval):
            snap = self._safe_snapshot()
            if snap is not None:
                print(self.line(snap), file=self.file, flush=True)

    def _run_live(self, live: Any) -> None:
        while not self._stop.wait(self.interval):
            snap = self._safe_snapshot()
            if snap is not None:
                live.update(self.renderable(snap))

    def __enter__(self) -> Progress:
        if self.mode == "off":
            return self
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.file)
            self._live = Live(
                self.renderable(self.snapshot()),
                console=console,
                refresh_per_second=max(1.0, 1.0 / self.interval),
                redirect_stdout=_same_terminal(sys.stdout, self.file),
                redirect_stderr=self.file is sys.stderr,
            )
            self._live.start()
            target, args = self._run_live, (self._live,)
        else:
            target, args = self._run_plain, ()
        self._thread = threading.Thread(target=target, args=args, name="simai-progress")
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mode == "off" or self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):  # the last values, if the records still take them
            self.workflow.poll_metrics()
        snap = self._safe_snapshot()
        if self._live is not None:
            if snap is not None:
                self._live.update(self.renderable(snap))
            self._live.stop()
        elif snap is not None:
            print(self.line(snap), file=self.file, flush=True)
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
        if self._records is not None:
            with contextlib.suppress(Exception):
                self._records.close()
            self._records = None


def resolve_mode(mode: str | None, file: IO[str]) -> str:
    """``live`` on a terminal, ``plain`` elsewhere, unless ``mode`` or ``$SIMAI_PROGRESS``
    says otherwise."""
    chosen = mode or os.environ.get(ENV_PROGRESS) or None
    if chosen is None:
        chosen = "live" if _is_terminal(file) else "plain"
    if chosen not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, not {chosen!r}")
    return chosen


def _is_terminal(file: IO[str]) -> bool:
    try:
        return file.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _same_terminal(a: IO[str], b: IO[str]) -> bool:
    try:
        return a.isatty() and b.isatty() and os.ttyname(a.fileno()) == os.ttyname(b.fileno())
    except (AttributeError, ValueError, OSError):
        return False


@contextlib.contextmanager
def progress(
    workflow: Workflow,
    *,
    quiet: bool = False,
    mode: str | None = None,
    streams: Iterable[str] = (),
    interval: float | None = None,
    file: IO[str] | None = None,
) -> Iterator[Progress]:
    """Show the live progress of ``workflow`` while the block runs (see the module doc).

    ``quiet`` turns it off; ``mode`` forces ``live``, ``plain`` or ``off``; ``streams``
    names streams whose length and backlog to show; ``interval`` is the refresh (live,
    default 0.5 s) or log line (plain, default 5 s) period; ``file`` defaults to stderr.
    """
    view = Progress(
        workflow, mode="off" if quiet else mode, streams=streams, interval=interval, file=file
    )
    with view:
        yield view


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isfinite(value) and value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
