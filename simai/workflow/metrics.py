"""User metrics from any process of a run: ``simai.log_metric(name, value, step)``.

The channel is a directory of append-only files in the run directory, ``channel/``: each
process that logs appends one JSON line per value to its own file
(``<host>-<pid>.jsonl``), in one ``write`` call, and goes on at once (a few
microseconds, no server, no lock). The workflow process reads the new complete lines of
every file about once a second and each time it ends, and puts them into the run's
records, with the offset up to which each file was read committed beside them
(``channel_files``). Lines written are in the kernel's page cache as soon as ``write``
returns, so they survive the death of the process that logged them, SIGKILL included; a
workflow killed before reading them reads them when the run resumes (or ``ingest(run_dir)``
does, for a run that will not resume).

In the workflow process itself, values go straight into its records. Processes find the
run through ``$SIMAI_RUN_DIR``, which the workflow sets for everything it launches.
Outside a run, ``log_metric`` warns once per process and drops the values, so code that
logs metrics also runs unchanged in a notebook or a unit test.

Store counters (:mod:`simai.store.counters`) travel the same way: every process of a run
that imports simai (components, task workers, commands in Python) ships the counts that
changed every ``COUNTERS_INTERVAL`` seconds and when it exits, from a daemon thread; the
workflow process ships its own from its monitor thread. They land in ``store_counters``.

Each line is a JSON list: ``[time, "m", name, value, step, source]`` for a metric,
``[time, "c", host, pid, [[component, op, prefix, ops, bytes], ...]]`` for the store
counters that changed (running totals of that process); lines of other kinds are skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simai.checks import check_int
from simai.store.counters import COMPONENT_ENV

if TYPE_CHECKING:
    from simai.workflow.records import Records

ENV_RUN_DIR = "SIMAI_RUN_DIR"
CHANNEL = "channel"
#: the most a single read of one file takes in (a bigger backlog is read over several polls)
_READ_MAX = 8 << 20
_log = logging.getLogger(__name__)

_lock = threading.Lock()
_fd: tuple[int, int, str] | None = None  # (pid, descriptor, run dir) of this process's file
_local: tuple[int, Records] | None = None  # (pid, records) while this process runs a workflow
_warned = False


def _source() -> str:
    component = os.environ.get(COMPONENT_ENV)
    if component:
        return component
    return f"{socket.gethostname()}:{os.getpid()}"


def _check(name: Any, value: Any, step: Any) -> tuple[str, float, int | None]:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a metric name must be a non-empty string, not {name!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"metric {name!r}: value must be a number (int, float, numpy or 0-d tensor), "
            f"not {type(value).__name__}"
        ) from None
    return name, number, check_int(f"metric {name!r}: step", step, optional=True)


def log_metric(name: str, value: float, step: int | None = None) -> None:
    """Record metric ``name`` = ``value`` (at ``step``, e.g. a training step or model
    version) with the run's records, from any task, component or the workflow itself.

    Outside a workflow run (no ``$SIMAI_RUN_DIR``) it warns once and does nothing.
    """
    global _warned
    name, number, step = _check(name, value, step)
    local = _local
    if local is not None and local[0] == os.getpid():
        local[1].log_metric(name, number, step, source="workflow")
        return
    run_dir = os.environ.get(ENV_RUN_DIR)
    if not run_dir:
        if not _warned:
            _warned = True
            warnings.warn(
                f"simai.log_metric({name!r}) outside a workflow run: metrics are dropped "
                f"(${ENV_RUN_DIR} is not set)",
                RuntimeWarning,
                stacklevel=2,
            )
        return
    _append([time.time(), "m", name, number, step, _source()], run_dir)


def _append(line: list[Any], run_dir: str) -> None:
    """Append one line to this process's channel file (opened once per process)."""
    global _fd
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    with _lock:
        pid = os.getpid()
        if _fd is None or _fd[0] != pid or _fd[2] != run_dir:
            if _fd is not None and _fd[0] == pid:
                os.close(_fd[1])
            folder = Path(run_dir, CHANNEL)
            folder.mkdir(exist_ok=True)
            path = folder / f"{socket.gethostname()}-{pid}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            _fd = (pid, fd, run_dir)
        os.write(_fd[1], data)


def append_line(line: list[Any]) -> bool:
    """Append one raw channel line (``[time, kind, ...]``) if this process is in a run;
    False when it is not. For other kinds of records, e.g. store counter snapshots."""
    run_dir = os.environ.get(ENV_RUN_DIR)
    if not run_dir:
        return False
    _append(line, run_dir)
    return True


def attach(records: Records | None) -> None:
    """Make this process's :func:`log_metric` write to ``records`` directly (the workflow
    process); ``None`` detaches."""
    global _local
    _local = None if records is None else (os.getpid(), records)


def _counter_rows(records: Records, line: list[Any]) -> None:
    at, _, host, pid, rows = line
    records.store_counters([(at, host, pid, *row) for row in rows])


#: handlers of line kinds other than metrics: kind -> fn(records, line)
HANDLERS: dict[str, Callable[[Records, list[Any]], None]] = {"c": _counter_rows}
COUNTERS_INTERVAL = 2.0
_shipped: dict[tuple[str, str], tuple[int, int]] = {}
_ship_lock = threading.Lock()


def ship_counters() -> int:
    """Send this process's store counters that changed since the last call to the run's
    records (directly in the workflow process, else through the channel); returns the
    number of rows sent, 0 outside a run."""
    from simai.store import counters

    with _ship_lock:
        changed = []
        for c in counters.snapshot():
            key, value = (c["op"], c["prefix"]), (c["ops"], c["bytes"])
            if _shipped.get(key) != value:
                _shipped[key] = value
                changed.append([c["component"], c["op"], c["prefix"], c["ops"], c["bytes"]])
        if not changed:
            return 0
        line = [time.time(), "c", socket.gethostname(), os.getpid(), changed]
        local = _local
        if local is not None and local[0] == os.getpid():
            _counter_rows(local[1], line)
        elif not append_line(line):
            return 0
        return len(changed)


def _ship_forever() -> None:
    while True:
        time.sleep(COUNTERS_INTERVAL)
        try:
            ship_counters()
        except Exception:  # noqa: BLE001 - counting must never break a task
            return


def _start_shipping() -> None:
    """In a process of a run (not the workflow's): ship counters now and then, and at exit."""
    global _shipped
    _shipped = {}
    if not os.environ.get(ENV_RUN_DIR):
        return
    threading.Thread(target=_ship_forever, name="simai-counters", daemon=True).start()


def _ship_at_exit() -> None:
    with contextlib.suppress(Exception):
        ship_counters()


class ChannelReader:
    """Reads the new complete lines of a run's channel files into its records."""

    def __init__(self, run_dir: str | os.PathLike[str], records: Records) -> None:
        self.folder = Path(run_dir, CHANNEL)
        self.records = records
        self.offsets = records._channel_offsets()
        self._lock = threading.Lock()

    def poll(self) -> int:
        """Read what was appended since the last poll; returns the number of lines."""
        with self._lock:
            try:
                entries = list(os.scandir(self.folder))
            except FileNotFoundError:
                return 0
            lines = 0
            for entry in entries:
                if entry.name.endswith(".jsonl"):
                    lines += self._read(entry)
            return lines

    def _read(self, entry: os.DirEntry) -> int:
        start = self.offsets.get(entry.name, 0)
        try:
            size = entry.stat().st_size
        except FileNotFoundError:
            return 0
        if size <= start:
            return 0
        with open(entry.path, "rb") as f:
            f.seek(start)
            data = f.read(min(size - start, _READ_MAX))
        end = data.rfind(b"\n") + 1
        if end == 0:
            return 0  # a line still being written (or longer than a read): next time
        records, n = self.records, 0
        for raw in data[:end].splitlines():
            try:
                line = json.loads(raw)
                if line[1] == "m":
                    at, _, name, value, step, source = line
                    records.log_metric(name, float(value), step, source=source, at=at)
                elif line[1] in HANDLERS:
                    HANDLERS[line[1]](records, line)
                n += 1
            except (ValueError, TypeError, IndexError, KeyError) as e:
                _log.warning("skipping a bad line in %s: %s (%r)", entry.path, e, raw[:200])
        self.offsets[entry.name] = start + end
        records._channel_offset(entry.name, start + end)
        return n


def ingest(run_dir: str | os.PathLike[str]) -> int:
    """Read a stopped run's unread channel lines into its records (the workflow does this
    itself while it runs and when it resumes); returns the number of lines."""
    from simai.workflow.records import Records
    from simai.workflow.rundir import RunDir

    rd = RunDir(run_dir, create=False)
    rd.lock()
    try:
        with Records(rd.records_path) as records:
            n = ChannelReader(rd.path, records).poll()
            records.flush()
        return n
    finally:
        rd.unlock()


_start_shipping()
atexit.register(_ship_at_exit)
os.register_at_fork(after_in_child=_start_shipping)
