"""The records database of a run: every task and component event, task memos, metrics.

One SQLite file (``records.db`` in the run directory) in WAL mode with
``synchronous=NORMAL``: every commit is atomic, and a committed transaction survives the
death of the processes writing it (SIGKILL, walltime); only a power loss or kernel crash
can undo the last commits. A killed run leaves a database that opens and holds a prefix
of what was recorded.

Writing costs the workflow process almost nothing: :meth:`Records.event`,
:meth:`Records.tasks`, :meth:`Records.log_metric` and the memo's ``_memo_put_many(...,
durable=False)`` append to an in-memory queue (a couple of microseconds, or less a row
for batches); a flusher thread sends the queue every ``interval`` seconds (or at
``batch`` items) as one marshal frame to a small writer process (``_recorder.py``,
standard library only), which commits each frame in one transaction and acknowledges it.
SQLite's work thus runs outside the workflow's GIL. ``flush()`` waits until everything
queued is committed; ``_memo_put_many(..., durable=True)`` (the default) waits for its own
commit, shared with whatever else is queued. ``close()`` flushes and stops the
writer; so does the end of the interpreter. The writer exits when its pipe closes, so it
never outlives the workflow process, SIGKILL included, and commits all it received first.

Several processes may write to one database, each through its own :class:`Records`
(SQLite serialises the writers, each waiting up to ``busy_timeout`` seconds); by default
only the workflow process writes. Readers (``simai status``) never block writers. A
:class:`Records` object does not survive ``os.fork()``: open a new one in the child.

Tables (plain SQL: ``sqlite3 records.db`` answers ad-hoc questions):

- ``runs(attempt, started, ended, status, host, pid, seen)``: one row per start of the
  run (attempt 1, then 2, ... after each resume); status ``running``, ``done``,
  ``failed``, ``interrupted`` (a later attempt found it still ``running``: the process was
  killed); ``seen`` when the workflow was last known alive (:meth:`Records.heartbeat`).
- ``tasks(name, item_id, attempt, state, last_event, submitted, started, ended, host,
  worker, resources, retries, detail, cpu, peak_rss, reason)``: one row per task and
  attempt, updated by its events (its state is that of its latest event, see
  :data:`STATE_OF`); what a Gantt chart needs. ``cpu`` is the CPU seconds (user + system) its
  tries used, ``peak_rss`` the highest peak resident memory of its tries in bytes (both
  NULL where the executor does not measure them), ``reason`` why its last failed try failed,
  in one word (:data:`simai.launch.executor.FAILURE_REASONS`: ``exit``, ``signal``,
  ``walltime``, ``oom``, ``exception``, ``cancelled``) beside ``detail``, its error. One
  row per task rather than one per event keeps 100k-task runs small and fast. A resume
  recalls the tasks an earlier attempt finished (state ``recalled``: their results come
  from the memo, they do not run again), and the start of an attempt marks
  the unfinished tasks and components of the earlier ones ``lost`` (their process was
  killed), ended when that attempt was last known alive.
- ``events(id, time, attempt, kind, name, item_id, event, host, worker, resources,
  detail)``: the event log: every component and store event, and the task events worth a
  history (``failed``, ``retried``, ``cancelled``); ``resources`` is JSON, ``detail`` an
  error message or log tail.
- ``memo(key, name, status, result, finished)``: finished tasks in the order their results
  were kept, the result as the bytes given (the workflow's memo keeps pickles). No index:
  lookups read the keys into memory once, and a key kept twice counts by its latest row.
- ``memo_journals(file, offset)``: how far each memo journal (the files that the local
  executor's workers append finished tasks' memos to, ``Records(journals=...)``) was
  folded into ``memo``.
- ``metrics(time, name, value, step, source)``: user metrics (``simai.log_metric``;
  ``source`` is the component's name, ``workflow``, or ``host:pid`` of a task's worker).
- ``channel_files(file, offset)``: how far each process's metrics file in the run's
  ``channel/`` folder was read (:mod:`simai.workflow.metrics`).
- ``stream_backlog(time, stream, length, backlog)``: samples of the streams the workflow
  watches (``Workflow.watch_streams``), taken when they change, about once a second.
- ``store_counters(time, host, pid, component, op, prefix, ops, bytes)``: snapshots of
  each process's store operation counters: running totals since that process started,
  per operation and key prefix (``component`` empty for tasks and the workflow).

A task costs one row write, not one per event: the workflow writes a task's row when it
ends (:meth:`Records.tasks`), and the row of a task that has not ended after ``HOLD`` (1)
second (``Workflow`` for its tasks, the writer for rows from :meth:`Records.event`). While
frames keep coming, the writer commits each frame's memos and defers the task rows until
it is idle, for at most ``HOLD``: futures that wait for their memo's commit do not wait
for the rows too (see ``_recorder.py``). ``flush()`` writes every row held or deferred.

Most memos do not come through here at all: a local executor's workers append them to
journal files in the ``journals`` directory, which the writer folds into ``memo`` when it
starts and when it ends (``_recorder.py``); the memo lookups see them from the next
attempt on.

The database keeps its schema's version (:data:`SCHEMA_VERSION`) in ``PRAGMA
user_version``; a database of another version is refused, for writing and for reading
alike (there are no migrations: a run is resumed by the simai that made it).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import functools
import json
import logging
import marshal
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from simai.store.private import private_file
from simai.workflow import _recorder
from simai.workflow._recorder import EVENT, FLUSH, FRAME, MEMO, METRIC, ROW, TASK

KINDS = ("task", "component", "store")
EVENTS = (
    "submitted",
    "started",
    "finished",
    "failed",
    "retried",
    "restarting",
    "restarted",
    "stopped",
    "cancelled",
    "recalled",
    "lost",
)
#: the state a task or component is in after each event (its state is that of its latest)
STATE_OF = _recorder.STATE_OF
_KINDS = frozenset(KINDS)
_EVENTS = frozenset(EVENTS)

#: the version of the tables below, kept in the database's ``PRAGMA user_version``: change
#: it with them (a database of another version is refused, see :class:`Records`)
SCHEMA_VERSION = 5
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    attempt INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL,
    status TEXT NOT NULL, host TEXT, pid INTEGER, seen REAL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, attempt INTEGER, kind TEXT NOT NULL,
    name TEXT NOT NULL, item_id TEXT, event TEXT NOT NULL, host TEXT, worker TEXT,
    resources TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS events_name ON events (kind, name);
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT NOT NULL, item_id TEXT NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL,
    last_event TEXT NOT NULL, submitted REAL, started REAL, ended REAL, host TEXT,
    worker TEXT, resources TEXT, retries INTEGER NOT NULL, detail TEXT, cpu REAL,
    peak_rss INTEGER, reason TEXT, PRIMARY KEY (attempt, name, item_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memo (
    key TEXT NOT NULL, name TEXT, status TEXT NOT NULL, result BLOB, finished REAL);
CREATE TABLE IF NOT EXISTS metrics (
    time REAL NOT NULL, name TEXT NOT NULL, value REAL, step INTEGER, source TEXT);
CREATE INDEX IF NOT EXISTS metrics_name ON metrics (name, step);
CREATE TABLE IF NOT EXISTS channel_files (
    file TEXT PRIMARY KEY, offset INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memo_journals (
    file TEXT PRIMARY KEY, offset INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_backlog (
    time REAL NOT NULL, stream TEXT NOT NULL, length INTEGER NOT NULL, backlog INTEGER);
CREATE TABLE IF NOT EXISTS store_counters (
    time REAL NOT NULL, host TEXT, pid INTEGER, component TEXT, op TEXT NOT NULL,
    prefix TEXT NOT NULL, ops INTEGER NOT NULL, bytes INTEGER NOT NULL);
"""
_TABLES = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA)
_STATEMENTS = [part.strip() for part in _SCHEMA.split(";") if part.strip()]
_SET_OFFSET = "INSERT OR REPLACE INTO channel_files VALUES (?,?)"
_SET_SEEN = "UPDATE runs SET seen = ? WHERE attempt = ?"
#: what the start of an attempt does to the earlier ones: one still ``running`` was killed,
#: and ends at its last sign of life; their tasks and components that had not ended are
#: lost, at the end of their attempt
_END_KILLED = """
UPDATE runs SET status = 'interrupted', ended = max(coalesce(seen, started),
    coalesce((SELECT max(e.time) FROM events e WHERE e.attempt = runs.attempt), started),
    coalesce((SELECT max(max(coalesce(t.submitted, 0), coalesce(t.started, 0),
        coalesce(t.ended, 0))) FROM tasks t WHERE t.attempt = runs.attempt), started))
WHERE status = 'running'"""
_LOSE_TASKS = """
UPDATE tasks SET state = 'lost', last_event = 'lost', ended = coalesce(
    (SELECT r.ended FROM runs r WHERE r.attempt = tasks.attempt), started, submitted)
WHERE state IN ('submitted', 'running', 'retried')"""
_LOSE_COMPONENTS = """
INSERT INTO events (time, attempt, kind, name, event, host, worker)
SELECT coalesce(r.ended, e.time), e.attempt, 'component', e.name, 'lost', e.host, e.worker
FROM events e LEFT JOIN runs r ON r.attempt = e.attempt
WHERE e.id IN (SELECT max(id) FROM events WHERE kind = 'component' GROUP BY name)
    AND e.event IN ('started', 'restarted', 'restarting')"""
_INSERT_COUNTERS = "INSERT INTO store_counters VALUES (?,?,?,?,?,?,?,?)"
_INSERT_BACKLOG = "INSERT INTO stream_backlog VALUES (?,?,?,?)"
_FRAME_ITEMS = 20000
_PIPE_SIZE = 1 << 20  # the default /proc/sys/fs/pipe-max-size
_log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
_Callback = Callable[[BaseException | None], None]


def _widen_pipe(fd: int) -> None:
    """Let a frame of a burst of results (about 200 bytes a task) go to the writer in one
    write: with the default 64 KiB pipe, a bigger frame waits for the writer to be
    scheduled and read, which is slow on a busy node (Linux only; best effort)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class RecordsClosed(RuntimeError):
    """The records object was closed, or its writer thread failed."""


@dataclass(frozen=True)
class MemoEntry:
    """A finished task's memo: its result as kept (the workflow keeps pickles)."""

    key: str
    name: str | None
    status: str
    result: bytes | None
    finished: float | None


def _locked(method: F) -> F:
    """Serialise a method's use of the shared query connection across threads."""

    @functools.wraps(method)
    def wrapper(self: Records, *args: Any, **kw: Any) -> Any:
        with self._lock:
            return method(self, *args, **kw)

    return wrapper  # type: ignore[return-value]


class Records:
    """The records database at ``path``, created with its tables if missing: the one
    writer and reader of a run's records (:mod:`simai.observe` reads through it too).

    Parameters
    ----------
    path : path
        The database file.
    readonly : bool
        Open an existing database for queries only (no writer process).
    journals : path, optional
        A directory of memo journals that the writer folds into the memo table (see
        ``_recorder.py``); close the records only after their writers stopped.
    interval : float
        Seconds a write waits in memory at most before it goes to the writer.
    batch : int
        Writes queued at most before they go to the writer.
    busy_timeout : float
        Seconds a write waits at most for another writer of the same database.
    hold : float
        Seconds the row of a task that has not ended may wait for its end.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        journals: str | os.PathLike[str] | None = None,
        interval: float = 0.05,
        batch: int = 5000,
        busy_timeout: float = 30.0,
        hold: float = _recorder.HOLD,
    ):
        self.path = Path(path)
        self.readonly = readonly
        self.journals = None if journals is None or readonly else Path(journals)
        self._acked = False  # the writer committed a frame (and folded the journals first)
        self.attempt: int | None = None
        self._interval = interval
        self._batch = batch
        self._busy_timeout = busy_timeout
        self._host = socket.gethostname()
        self._lock = threading.RLock()
        if readonly and not self.path.is_file():
            raise FileNotFoundError(f"no records database at {self.path}")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # private from its first byte: memo results are pickles that resume loads
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            private_file(self.path)
        target = f"{self.path.absolute().as_uri()}?mode=ro" if readonly else str(self.path)
        try:
            self._db = self._connect(target)
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path} is not a simai records database: {e}") from None
        try:
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._create_schema()
            self._check_schema()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ValueError(f"{self.path} is not a simai records database: {e}") from None
        except BaseException:
            self._db.close()
            raise
        self._memo_rows: dict[str, int] = {}  # memo key -> its latest row
        self._memo_seen = 0
        self._pending: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._sync_lock = threading.Lock()
        self._sync_last = 0
        self._waiters: dict[int, threading.Event] = {}
        # after_commit callbacks in queue order: the flusher counts them before it takes
        # the queue, so each one counted had its own writes queued before the count
        self._callbacks: collections.deque[_Callback] = collections.deque()
        self._error: str | None = None
        self._closed = False
        self._refuse = readonly  # closed, read-only or failed: writes call _writable()
        self._proc: subprocess.Popen | None = None
        self._flusher: threading.Thread | None = None
        if not readonly:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    _recorder.__file__,
                    str(self.path),
                    str(busy_timeout),
                    self._host,
                    str(hold),
                    *([] if self.journals is None else [str(self.journals)]),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            _widen_pipe(self._proc.stdin.fileno())  # type: ignore[union-attr]
            self._flusher = threading.Thread(
                target=self._flush_loop, name="simai-records", daemon=True
            )
            self._flusher.start()
            atexit.register(self._close_at_exit)

    def _connect(self, target: str) -> sqlite3.Connection:
        db = sqlite3.connect(
            target,
            uri=target.startswith("file:"),
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        db.execute("PRAGMA synchronous=NORMAL")
        db.row_factory = sqlite3.Row
        return db

    def _create_schema(self) -> None:
        """Create the tables of a new database and stamp it with :data:`SCHEMA_VERSION`, in
        one transaction (another process may be creating it at the same time)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            (objects,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if version == 0 and objects == 0:  # a new database
                for statement in _STATEMENTS:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _check_schema(self) -> None:
        """Refuse a database of another schema version, or one that is not a records db."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA_VERSION:
            tables = {
                name
                for (name,) in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            if version != 0 or {"runs", "tasks", "memo"} <= tables:
                raise ValueError(
                    f"{self.path} was made by another simai version (records schema version "
                    f"{version}, this simai uses {SCHEMA_VERSION}); start a fresh run or use "
                    "that version"
                )
            raise ValueError(
                f"{self.path} is not a simai records database (no records tables in it)"
            )
        self._db.execute(f"SELECT 1 FROM {', '.join(_TABLES)} LIMIT 0")

    # --- writing -------------------------------------------------------------------------

    @_locked
    def start_run(self, host: str | None = None, pid: int | None = None) -> int:
        """Record a start of the run (on `host`, default this one) and return its attempt
        number (1, 2, ...).

        Earlier attempts still marked ``running`` become ``interrupted``, ended when last
        known alive; their tasks and components that had not ended become ``lost``. Later
        events carry this attempt number.
        """
        self._writable()
        self.flush()
        db = self._db
        with db:
            db.execute("BEGIN IMMEDIATE")
            for statement in (_END_KILLED, _LOSE_TASKS, _LOSE_COMPONENTS):
                db.execute(statement)
            (last,) = db.execute("SELECT coalesce(max(attempt), 0) FROM runs").fetchone()
            self.attempt = last + 1
            db.execute(
                "INSERT INTO runs VALUES (?,?,NULL,'running',?,?,NULL)",
                (
                    self.attempt,
                    time.time(),
                    host or self._host,
                    os.getpid() if pid is None else pid,
                ),
            )
        return self.attempt

    def heartbeat(self) -> None:
        """Queue a note that the current attempt is alive now: where a killed attempt ends."""
        if self._refuse:
            self._writable()
        self._pending.append((ROW, (_SET_SEEN, (time.time(), self.attempt))))

    @_locked
    def end_run(self, status: str = "done") -> None:
        """Mark the current attempt ended with ``status`` (``done``, ``failed``, ...),
        after committing everything queued."""
        self._writable()
        if self.attempt is None:
            raise RuntimeError("end_run() without start_run()")
        self.flush()
        with self._db:
            self._db.execute(
                "UPDATE runs SET ended=?, status=? WHERE attempt=?",
                (time.time(), status, self.attempt),
            )

    def event(
        self,
        kind: str,
        name: str,
        event: str,
        item_id: str | int | None = None,
        *,
        host: str | None = None,
        worker: str | int | None = None,
        resources: dict[str, Any] | str | None = None,
        detail: str | None = None,
        at: float | None = None,
        started: float | None = None,
        cpu: float | None = None,
        peak_rss: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Queue one event (committed by the writer thread within ``interval`` seconds).

        ``kind`` is one of :data:`KINDS`, ``event`` one of :data:`EVENTS`. Tasks need an
        ``item_id`` telling apart the calls of one function in an attempt (each attempt
        has rows of its own: a resumed task gets a new row). ``host`` is
        where it happened (default: this host; a task's row keeps the last host named);
        ``at`` the event's time (default: now); ``worker`` a slot or pid; ``resources`` a
        JSON-serialisable dict (or JSON text); ``detail`` an error message or log tail.
        ``started`` (a task's ``finished``/``failed`` event only) is when it started, so one
        event records both ends: executors learn both at completion, and two events per
        task cost less than three. A task's ``finished``, ``failed`` or ``retried`` event
        may tell what that try used, ``cpu`` seconds (they add up over its tries) and
        ``peak_rss`` bytes (the highest is kept), and a failure its ``reason`` (see the
        ``tasks`` table).
        """
        if kind not in _KINDS or event not in _EVENTS:
            raise ValueError(
                f"unknown record kind {kind!r} or event {event!r}; kinds: {', '.join(KINDS)}; "
                f"events: {', '.join(EVENTS)}"
            )
        if item_id is None and kind == "task":
            raise ValueError(f"a task event needs an item_id (task {name!r}, event {event!r})")
        if self._refuse:
            self._writable()
        if resources is not None and type(resources) is not str:
            resources = json.dumps(resources)
        self._pending.append(
            (
                EVENT,
                (
                    float(at) if at else time.time(),  # numpy scalars would marshal as bytes
                    self.attempt,
                    kind,
                    name,
                    item_id,
                    event,
                    host,
                    worker,
                    resources,
                    detail,
                    None if started is None else float(started),
                    None if cpu is None else float(cpu),
                    None if peak_rss is None else int(peak_rss),
                    reason,
                ),
            )
        )

    def tasks(self, rows: list[tuple]) -> None:
        """Queue tasks' whole rows: ``(name, item_id, event, submitted, started, ended,
        resources, retries, detail, cpu, peak_rss, reason)`` (the last three may be left
        out), each task as it stands after ``event`` (one of :data:`EVENTS`), ``resources``
        JSON text, ``retries`` those since its last row, ``cpu`` and ``peak_rss`` what the
        try that ended with ``event`` used (see the ``tasks`` table).
        For a caller that keeps each task's times itself (the workflow): one write per
        task instead of one per event, and the writer process builds the rows. Unchecked:
        the workflow's hot path. ``failed``, ``retried`` and ``cancelled`` rows also go to
        the events log. Do not mix with :meth:`event` for one task."""
        if self._refuse:
            self._writable()
        # marshalled at once: bytes are not tracked by the garbage collector, while rows
        # kept as tuples until the next frame survive young collections and make the
        # collector's older generations, and the whole run, slower
        self._pending.append((TASK, marshal.dumps((self.attempt, self._host, rows))))

    def log_metric(
        self,
        name: str,
        value: float,
        step: int | None = None,
        source: str | None = None,
        at: float | None = None,
    ) -> None:
        """Queue one metric value (``step`` e.g. a training epoch; ``source`` the writer;
        ``at`` when it was logged, default now)."""
        if self._refuse:
            self._writable()
        if step is not None:
            step = int(step)
        row = (float(at) if at else time.time(), name, float(value), step, source)
        self._pending.append((METRIC, row))

    def store_counters(self, rows: list[tuple]) -> None:
        """Queue store counter rows ``(time, host, pid, component, op, prefix, ops, bytes)``:
        one process's running totals per operation and key prefix at ``time``."""
        if self._refuse:
            self._writable()
        self._pending.extend((ROW, (_INSERT_COUNTERS, tuple(r))) for r in rows)

    def stream_sample(
        self, stream: str, length: int, backlog: int | None, at: float | None = None
    ) -> None:
        """Queue a sample of a stream: values appended so far and the backlog (appended
        values the slowest consumer group has not read; None without groups)."""
        if self._refuse:
            self._writable()
        row = (
            float(at) if at else time.time(),
            stream,
            int(length),
            None if backlog is None else int(backlog),
        )
        self._pending.append((ROW, (_INSERT_BACKLOG, row)))

    def _channel_offset(self, file: str, offset: int) -> None:
        """Queue how far channel file ``file`` was read (committed after what it held)."""
        if self._refuse:
            self._writable()
        self._pending.append((ROW, (_SET_OFFSET, (file, offset))))

    @_locked
    def _channel_offsets(self) -> dict[str, int]:
        """How far each channel file was read (see :mod:`simai.workflow.metrics`)."""
        return dict(self._db.execute("SELECT file, offset FROM channel_files").fetchall())

    def _memo_put_many(
        self,
        entries: list[tuple[str, str | None, bytes]],
        *,
        status: str = "done",
        durable: bool = True,
        on_durable: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Store finished tasks' results (their pickles, or any bytes), ``(key, name, result)``
        entries under their memo keys, committed together; none is queued if one is not
        bytes (``TypeError``).

        A run must not report a task finished before its memo would survive a kill, so
        with ``durable=True`` (the default) this returns only once the memos are committed.
        That costs a commit's latency per call: a workflow finishing thousands of tasks a
        second passes ``on_durable`` instead, which returns at once and has the records
        thread call ``on_durable(None)`` after the commit (``on_durable(error)`` if the
        writer failed): resolve the tasks' futures there. ``durable=False`` only queues them.
        """
        self._writable()
        now = time.time()
        rows = [(key, name, status, result, now) for key, name, result in entries]
        for row in rows:
            if type(row[3]) is not bytes:
                raise TypeError(
                    f"memo {row[0]!r}: a result is kept as bytes (a pickle), "
                    f"not {type(row[3]).__name__}"
                )
        self._pending.append((MEMO, rows))
        if on_durable is not None:
            self._after_commit(on_durable)
        elif durable:
            self.flush()

    def _after_commit(self, fn: Callable[[BaseException | None], None]) -> None:
        """Call ``fn(None)`` in the records thread once everything queued so far is
        committed, without waiting for it; ``fn(error)`` if the writer fails first.
        ``fn`` must be quick and must not raise (what it raises is logged and dropped)."""
        self._writable()
        self._callbacks.append(fn)
        if not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed."""
        self._writable()
        done = threading.Event()
        self._mark(done)
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.2):
            self._writable()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"records not flushed to {self.path} within {timeout:g} s")
        self._writable()

    def _mark(self, waiter: threading.Event) -> None:
        """Number a flush waiter in queue order; it is released once everything queued
        before it is committed (the flusher reads the last number before it takes the
        queue)."""
        with self._sync_lock:
            self._sync_last += 1
            self._waiters[self._sync_last] = waiter
            self._pending.append((FLUSH, self._sync_last))  # held task rows too

    def close(self) -> None:
        """Commit everything queued, stop the writer and close the database."""
        if self._closed:
            return
        self._closed = self._refuse = True
        atexit.unregister(self._close_at_exit)
        try:
            if self._flusher is not None:
                self._wake.set()
                self._flusher.join()
        finally:
            self._db.close()
        if self._error is not None:
            raise RecordsClosed(f"records writer for {self.path} failed: {self._error}")

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except RecordsClosed as e:
            print(f"simai: {e}", file=sys.stderr)

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writable(self) -> None:
        if self.readonly:
            raise RecordsClosed(f"records at {self.path} were opened read-only")
        if self._error is not None:
            raise RecordsClosed(f"records writer for {self.path} failed: {self._error}")
        if self._closed:
            raise RecordsClosed(f"records at {self.path} are closed")

    def _flush_loop(self) -> None:
        """Every ``interval`` (or at once when woken), send what is pending to the writer
        process as one frame and wait for its commit; then release the flush waiters."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        pending, wake, seq = self._pending, self._wake, 0
        send, receive = proc.stdin.fileno(), proc.stdout.fileno()
        try:
            while True:
                closing = self._closed
                if not closing and len(pending) < self._batch:
                    wake.wait(self._interval)
                    wake.clear()
                    closing = self._closed
                synced, called = self._sync_last, len(self._callbacks)
                left = len(pending)
                while left:
                    n = min(left, _FRAME_ITEMS)
                    left -= n
                    items = [pending.popleft() for _ in range(n)]
                    seq += 1
                    body = marshal.dumps((seq, items))
                    try:  # one write and one read: each gives up the GIL, and getting it
                        _write_all(send, FRAME.pack(len(body)) + body)  # back takes a while
                        ack = os.read(receive, FRAME.size)  # on a busy workflow
                    except OSError:
                        ack = b""
                    if len(ack) != FRAME.size or FRAME.unpack(ack)[0] != seq:
                        raise RecordsClosed(self._writer_died(proc))
                    self._acked = True
                self._release(synced, called=called)
                if closing:
                    break
            self._release(None, RecordsClosed(f"records at {self.path} closed before commit"))
        except BaseException as e:
            self._error = str(e) or type(e).__name__
            self._refuse = True
            self._release(None, RecordsClosed(f"records writer for {self.path} failed: {e}"))
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            if proc.stderr is not None:
                proc.stderr.close()

    def _release(
        self, upto: int | None, error: BaseException | None = None, called: int = 0
    ) -> None:
        """Release the flush waiters whose marker (numbered in queue order) is committed
        and the first ``called`` callbacks, or all of them with ``error`` when the writer
        failed."""
        with self._sync_lock:
            if upto is None:
                waiters = list(self._waiters.values())
                self._waiters.clear()
            else:  # numbered in insertion order: the released ones come first
                waiters = []
                for token in self._waiters:
                    if token > upto:
                        break
                    waiters.append(token)
                waiters = [self._waiters.pop(t) for t in waiters]
        callbacks = self._callbacks
        if upto is None:
            called = len(callbacks)
        for _ in range(called):
            fn = callbacks.popleft()
            try:
                fn(error)
            except Exception:
                _log.exception("records: an after_commit callback raised")
        for waiter in waiters:  # a flush returns after the callbacks committed with it
            waiter.set()

    def _writer_died(self, proc: subprocess.Popen) -> str:
        try:
            proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        tail = err.splitlines()[-1] if err else "no message"
        return f"the records writer process exited with status {proc.returncode}: {tail}"

    # --- memo ----------------------------------------------------------------------------

    @_locked
    def _memo_get(self, key: str) -> MemoEntry | None:
        """The committed memo of ``key`` (the latest, if kept twice), or ``None`` if that
        task never finished."""
        self._load_memo_keys()
        rowid = self._memo_rows.get(key)
        if rowid is None:
            return None
        row = self._db.execute("SELECT * FROM memo WHERE rowid=?", (rowid,)).fetchone()
        return MemoEntry(row["key"], row["name"], row["status"], row["result"], row["finished"])

    def _load_memo_keys(self) -> None:
        """Read the memo keys committed since the last call into memory: the memo table
        has no index (appending to it is what keeps recording cheap), so lookups go
        through this map of key to row. The first call waits for the writer to have
        folded in the memo journals that an earlier attempt left."""
        if not self._acked and self.journals is not None:  # the writer folds them in
            # before its first commit; the records thread (a commit callback) must not wait
            # for itself: until a commit, it looks up without them
            if threading.current_thread() is not self._flusher:
                self.flush()
        rows = self._db.execute(
            "SELECT rowid, key FROM memo WHERE rowid > ? ORDER BY rowid", (self._memo_seen,)
        ).fetchall()
        if rows:
            self._memo_rows.update((key, rowid) for rowid, key in rows)
            self._memo_seen = rows[-1][0]

    # --- queries -------------------------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read in one snapshot: the queries in the block see the same commits, even while
        the run goes on writing (one read transaction, other threads' queries wait)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    @_locked
    def runs(self) -> list[dict[str, Any]]:
        """The run attempts, oldest first."""
        return [dict(r) for r in self._db.execute("SELECT * FROM runs ORDER BY attempt")]

    @_locked
    def events(
        self,
        name: str | None = None,
        kind: str | None = None,
        item_id: str | int | None = None,
        *,
        after: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Committed events, oldest first, filtered by name/kind/item_id; ``after`` an
        event id to continue from (for following a live run)."""
        where, args = ["id > ?"], [after]
        for column, value in (("name", name), ("kind", kind), ("item_id", item_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(str(value) if column == "item_id" else value)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [dict(r) for r in self._db.execute(sql, args)]

    @_locked
    def metrics(self, name: str | None = None) -> list[dict[str, Any]]:
        """Committed metric values, by name then time."""
        sql, args = "SELECT * FROM metrics", ()
        if name is not None:
            sql, args = sql + " WHERE name = ?", (name,)
        return [dict(r) for r in self._db.execute(sql + " ORDER BY name, time", args)]

    @_locked
    def tasks_table(
        self, name: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """One row per task, in submission order: ``name``, ``item_id``, ``state`` (of its
        latest event), ``last_event``, ``submitted``/``started``/``ended`` times, ``host``,
        ``worker``, ``resources``, ``retries``, ``detail`` (its last error), ``attempt``,
        ``cpu`` (seconds), ``peak_rss`` (bytes) and ``reason`` (of its last failure)."""
        where, args = [], []
        for column, value in (("name", name), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur = self._db.cursor()
        cur.row_factory = None
        cur.execute(sql + " ORDER BY submitted", args)
        columns = [d[0] for d in cur.description]
        return [dict(zip(columns, r, strict=True)) for r in cur]

    @_locked
    def components(self) -> list[dict[str, Any]]:
        """Each component as its latest event left it, by name: ``name``, ``state``,
        ``restarts`` (its ``restarting`` events), ``last_event``, ``time``, ``host``,
        ``worker``, ``detail``."""
        restarts = dict(
            self._db.execute(
                "SELECT name, count(*) FROM events WHERE kind = 'component' "
                "AND event = 'restarting' GROUP BY name"
            ).fetchall()
        )
        return [
            {
                "name": r["name"],
                "state": STATE_OF.get(r["event"], r["event"]),
                "restarts": restarts.get(r["name"], 0),
                "last_event": r["event"],
                "time": r["time"],
                "host": r["host"],
                "worker": r["worker"],
                "detail": r["detail"],
            }
            for r in self._db.execute(
                "SELECT * FROM events WHERE id IN (SELECT max(id) FROM events "
                "WHERE kind = 'component' GROUP BY name) ORDER BY name"
            )
        ]

    @_locked
    def failed_tasks(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` tasks whose state is ``failed``: ``kind`` (``task``),
        ``name``, ``item_id``, ``time`` (when it ended), ``host``, ``worker``, ``detail``,
        ``reason``, ``cpu`` and ``peak_rss``."""
        return [
            {"kind": "task"} | dict(r)
            for r in self._db.execute(
                "SELECT name, item_id, ended AS time, host, worker, detail, reason, cpu, "
                "peak_rss FROM tasks WHERE state = 'failed' ORDER BY ended DESC LIMIT ?",
                (int(limit),),
            )
        ]

    def _tuples(self, sql: str, args: tuple = ()) -> list[tuple]:
        """The rows of one of this module's queries, as tuples (cheaper than Rows)."""
        cur = self._db.cursor()
        cur.row_factory = None
        return cur.execute(sql, args).fetchall()

    @_locked
    def task_columns(self) -> list[tuple]:
        """Every task's ``(name, item_id, state, submitted, started, ended, host, worker,
        resources, retries, cpu, peak_rss, reason)``, in submission order, as tuples: what a
        report of 100k tasks loads (see :meth:`tasks_table` for dicts)."""
        return self._tuples(
            "SELECT name, item_id, state, submitted, started, ended, host, worker, resources, "
            "retries, cpu, peak_rss, reason FROM tasks ORDER BY submitted"
        )

    @_locked
    def task_durations(self) -> list[dict[str, Any]]:
        """Per task name: ``name``, ``first`` (its first submission), ``last`` (its last
        end), the ``count``, ``mean``, ``min``, ``max`` and ``total`` seconds of its
        finished (``done``) tasks (``None`` but the count when there are none), and of all
        its tasks the ``cpu`` seconds in all and the highest ``peak_rss`` (bytes; ``None``
        when none was measured)."""
        done = "CASE WHEN state = 'done' THEN ended - started END"
        keys = ("name", "first", "last", "count", "mean", "min", "max", "total", "cpu", "peak_rss")
        rows = self._tuples(
            f"SELECT name, min(submitted), max(ended), count({done}), avg({done}), "
            f"min({done}), max({done}), sum({done}), sum(cpu), max(peak_rss) FROM tasks "
            "GROUP BY name"
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    @_locked
    def metric_points(self) -> list[tuple]:
        """Every metric value's ``(name, source, time, value, step)``, by name then time,
        as tuples (``source`` ``""`` when not recorded)."""
        return self._tuples(
            "SELECT name, coalesce(source, ''), time, value, step FROM metrics ORDER BY name, time"
        )

    @_locked
    def latest_metrics(self) -> dict[str, dict[str, Any]]:
        """Per metric name, by name: its latest ``value``, ``step``, ``time``, ``source``
        and ``count`` (how many values it has)."""
        rows = self._tuples(
            "SELECT m.name, c.n, m.time, m.value, m.step, m.source FROM metrics m JOIN "
            "(SELECT name, count(*) AS n, max(rowid) AS last FROM metrics GROUP BY name) c "
            "ON m.rowid = c.last ORDER BY m.name"
        )
        return {
            name: {"value": value, "step": step, "time": t, "count": n, "source": source}
            for name, n, t, value, step, source in rows
        }

    @_locked
    def metrics_since(self, rowid: int) -> list[tuple]:
        """The metric values committed after row ``rowid`` (0: all), in commit order, as
        ``(rowid, name, value, step)``: pass the last rowid seen to follow a live run."""
        return self._tuples(
            "SELECT rowid, name, value, step FROM metrics WHERE rowid > ? ORDER BY rowid",
            (int(rowid),),
        )

    @_locked
    def store_counters_since(self, rowid: int) -> list[tuple]:
        """The store counter snapshots committed after row ``rowid`` (0: all), in commit
        order, as ``(rowid, host, pid, component, op, prefix, ops, bytes)``: running totals
        per process, operation and key prefix (``component`` ``""`` for tasks and the
        workflow)."""
        return self._tuples(
            "SELECT rowid, host, pid, component, op, prefix, ops, bytes FROM store_counters "
            "WHERE rowid > ? ORDER BY rowid",
            (int(rowid),),
        )

    @_locked
    def store_traffic(self) -> list[tuple]:
        """What the store moved between each process's counter snapshots (they hold running
        totals): ``(time, since, component, op, prefix, bytes, ops)``, ``since`` the time of
        that process's previous snapshot of the same op and prefix (``None`` for its first,
        which counts from the process's start), ``component`` ``None`` for tasks and the
        workflow. A total lower than the one before (a restarted process) counts whole."""
        return self._tuples(
            """SELECT time, lag(time, 1, NULL) OVER w, nullif(component, ''), op, prefix,
                CASE WHEN bytes >= lag(bytes, 1, 0) OVER w
                     THEN bytes - lag(bytes, 1, 0) OVER w ELSE bytes END,
                CASE WHEN ops >= lag(ops, 1, 0) OVER w THEN ops - lag(ops, 1, 0) OVER w
                     ELSE ops END
            FROM store_counters
            WINDOW w AS (PARTITION BY host, pid, component, op, prefix ORDER BY time)"""
        )

    @_locked
    def stream_samples(self) -> list[tuple]:
        """The samples of the watched streams (:meth:`stream_sample`), oldest first, as
        ``(time, stream, length, backlog)``."""
        return self._tuples(
            "SELECT time, stream, length, backlog FROM stream_backlog ORDER BY time"
        )

    @_locked
    def last_event_time(self) -> float | None:
        """When the newest event of the events log happened, or ``None`` when it is empty."""
        return self._db.execute("SELECT max(time) FROM events").fetchone()[0]

    @_locked
    def summary(self, failures: int = 50) -> dict[str, Any]:
        """Everything ``simai status`` shows, as plain data:

        ``runs`` (attempts, each with its ``tasks`` counts per state), ``tasks`` (task
        counts per state over all attempts: they add up), ``task_names`` (the same per task
        name), ``components`` (see :meth:`components`), ``events`` (counts per kind and
        event in the events log), ``failures`` (up to ``failures`` tasks and components
        whose latest event is ``failed``, newest first, with their detail and ``reason``),
        ``failures_total`` and ``failure_reasons`` (failed tasks per reason, see the
        ``tasks`` table; ``unknown`` for those recorded without one).
        """
        db = self._db
        tasks: dict[str, int] = {}
        per_name: dict[str, dict[str, int]] = {}
        per_attempt: dict[int, dict[str, int]] = {}
        for attempt, name, state, n in db.execute(
            "SELECT attempt, name, state, count(*) FROM tasks GROUP BY attempt, name, state"
        ):
            for counts_of in (
                tasks,
                per_name.setdefault(name, {}),
                per_attempt.setdefault(attempt, {}),
            ):
                counts_of[state] = counts_of.get(state, 0) + n
        counts: dict[str, dict[str, int]] = {}
        for kind, event, n in db.execute(
            "SELECT kind, event, count(*) FROM events GROUP BY kind, event"
        ):
            counts.setdefault(kind, {})[event] = n
        components = self.components()
        failed = [
            {"kind": "component", "name": c["name"], "item_id": None, "time": c["time"]}
            | {k: c[k] for k in ("host", "worker", "detail")}
            | {"reason": None, "cpu": None, "peak_rss": None}
            for c in components
            if c["state"] == "failed"
        ]
        reasons = dict(
            db.execute(
                "SELECT coalesce(reason, 'unknown') AS r, count(*) FROM tasks "
                "WHERE state = 'failed' GROUP BY r ORDER BY r"
            ).fetchall()
        )
        failed += self.failed_tasks(failures)
        failed.sort(key=lambda f: f["time"] or 0, reverse=True)
        runs = self.runs()
        for run in runs:
            run["tasks"] = per_attempt.get(run["attempt"], {})
        return {
            "runs": runs,
            "tasks": tasks,
            "task_names": per_name,
            "components": components,
            "events": counts,
            "failures": failed[: int(failures)],
            "failures_total": tasks.get("failed", 0)
            + sum(c["state"] == "failed" for c in components),
            "failure_reasons": reasons,
        }
