"""The records writer process: commits batches that a :class:`Records` object sends it.

Run as ``python -I _recorder.py DB BUSY_TIMEOUT HOST HOLD [JOURNALS]`` with pipes on stdin and
stdout; it imports only the standard library, so it starts in a few tens of milliseconds.
Writing SQLite here rather than in a thread of the workflow process keeps that work off the
workflow's GIL.

Protocol: each frame on stdin is ``<Q length`` + ``marshal.dumps((seq, items))``, items
being ``(type, row)`` tuples: EVENT, TASK (tasks' whole rows, ``marshal.dumps((attempt,
host, rows))`` apart: see :meth:`Records.tasks` and :data:`UPSERT_TASK`), MEMO, METRIC,
ROW (an ``(sql, args)`` statement for the smaller tables) and FLUSH (write every held row
too); the frame is committed in one transaction and ``<Q seq`` written back.

Task events are folded into one row per task, and a task that has not ended yet is held
here for up to ``HOLD`` seconds before its row is written: a short task then costs one
insert (submitted, started and ended together) instead of three writes. A FLUSH item in a
frame (``Records.flush``) writes every held row with that frame. A TASK item is a row
folded already (the workflow's way: it knows each task's times when the task ends) and is
written as it comes; do not mix the two for one task.

At end of input (the workflow closed it, or died, SIGKILL included) the held rows are
committed too and the process exits, so it never outlives its workflow and
loses nothing it received.

Memo journals: with a JOURNALS directory, the memos that the local executor's workers
appended to their ``*.memo`` files there (a record for the results sent together, see
``simai/launch/_worker.py``) are folded into the memo table when this process starts,
before its first frame (what a killed attempt left), and when it ends; not in between, so
a run spends nothing on them while its tasks run. Each file's offset is committed with
its rows (``memo_journals``), so a record goes in once; a record cut short (its worker was
killed while it wrote it) ends the reading of its file. At the end, the files folded in
to their last byte are removed.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import select
import signal
import sqlite3
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from typing import Any

EVENT, MEMO, METRIC, FLUSH, ROW, TASK = range(6)
FRAME = struct.Struct("<Q")
#: seconds a task row that has not ended waits here for its end (one write instead of three)
HOLD = 1.0
#: deferred TASK rows are committed when no frame came for IDLE seconds, or at DEFER_MAX
IDLE = 0.002
DEFER_MAX = 10000
#: a memo journal record: body length and CRC-32 of the body, then the body,
#: ``marshal.dumps((finished, [(key, name, result_pickle), ...]))``, key None and the call's
#: ``(function_ident, args, sorted_kwargs)`` after the pickle for plain arguments, whose key
#: is made here (``_worker.py`` writes it)
JOURNAL_RECORD = struct.Struct("<II")


def _load_atom_key() -> Any:
    """``memokey.atom_key`` from simai/launch/memokey.py, by its path (this process imports
    only the standard library; memokey.py does too)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch",
                        "memokey.py")  # fmt: skip
    spec = importlib.util.spec_from_file_location("simai_memokey", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.atom_key


atom_key = _load_atom_key()
JOURNAL_SUFFIX = ".memo"
_JOURNAL_READ = 64 << 20  # bytes of a journal read and committed at a time, at most

STATE_OF = {
    "submitted": "submitted",
    "started": "running",
    "finished": "done",
    "failed": "failed",
    "retried": "retried",
    "restarting": "restarting",
    "restarted": "running",
    "stopped": "stopped",
    "cancelled": "cancelled",
    "recalled": "recalled",
    "lost": "lost",
}
#: task events also kept in the events log (the routine ones only update the task's row)
LOGGED_TASK_EVENTS = frozenset(("failed", "retried", "cancelled"))
ENDED = frozenset(("done", "failed", "cancelled", "recalled", "lost"))

INSERT_EVENT = "INSERT INTO events VALUES (NULL,?,?,?,?,?,?,?,?,?,?)"
#: what a row's attempts used: CPU seconds add up, the peak memory is the highest
_USAGE = """
    cpu = CASE WHEN excluded.cpu IS NULL THEN tasks.cpu
               ELSE coalesce(tasks.cpu, 0) + excluded.cpu END,
    peak_rss = max(coalesce(excluded.peak_rss, tasks.peak_rss),
                   coalesce(tasks.peak_rss, excluded.peak_rss))"""
#: a task's row from (name, item_id, attempt, state, last_event, submitted, started, ended,
#: host, worker, resources, retries, detail, recording host, cpu, peak_rss, reason): times
#: and the last host named are kept, retries and CPU seconds add up, the peak memory is the
#: highest, the reason (like the detail) that of its last failure; each attempt has rows of its
#: own (a task's id is one of its attempt: ids start again when a run is resumed)
UPSERT_TASK = f"""
INSERT INTO tasks VALUES (?1,?2,?3,?4,?5,?6,?7,?8,coalesce(?9,?14),?10,?11,?12,?13,?15,?16,?17)
ON CONFLICT (attempt, name, item_id) DO UPDATE SET
    state = excluded.state, last_event = excluded.last_event,
    submitted = coalesce(tasks.submitted, excluded.submitted),
    started = CASE WHEN excluded.state IN ('submitted', 'retried') THEN NULL
                   ELSE coalesce(excluded.started, tasks.started) END,
    ended = CASE WHEN excluded.state IN ('submitted', 'retried', 'running') THEN NULL
                 ELSE coalesce(excluded.ended, tasks.ended) END,
    host = coalesce(?9, tasks.host), worker = coalesce(excluded.worker, tasks.worker),
    resources = coalesce(excluded.resources, tasks.resources),
    retries = tasks.retries + excluded.retries, detail = coalesce(excluded.detail, tasks.detail),
    reason = coalesce(excluded.reason, tasks.reason),{_USAGE}
"""
#: the row of a task that finished (nearly every row of a run): (name, item_id, attempt,
#: submitted, started, ended, resources, retries, recording host, cpu, peak_rss), none of the
#: first nine None (binding None costs sqlite3 several times what a number does); what
#: :data:`UPSERT_TASK` does with such a row
UPSERT_FINISHED = f"""
INSERT INTO tasks VALUES (?1,?2,?3,'done','finished',?4,?5,?6,?9,NULL,?7,?8,NULL,?10,?11,NULL)
ON CONFLICT (attempt, name, item_id) DO UPDATE SET
    state = 'done', last_event = 'finished',
    submitted = coalesce(tasks.submitted, excluded.submitted),
    started = excluded.started, ended = excluded.ended,
    resources = coalesce(excluded.resources, tasks.resources),
    retries = tasks.retries + excluded.retries,{_USAGE}
"""
INSERT_MEMO = "INSERT INTO memo VALUES (?,?,?,?,?)"
SET_JOURNAL_OFFSET = "INSERT OR REPLACE INTO memo_journals VALUES (?,?)"
INSERT_METRIC = "INSERT INTO metrics VALUES (?,?,?,?,?)"


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, rolled back if the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def merge_task(
    tasks: dict[tuple[int, str, str], list[Any]], row: tuple, host_default: str
) -> tuple[int, str, str]:
    """Fold one task event into the batch's row for that task (one upsert per task).

    A task's host is the last one an event named; the recording host if none did.
    """
    at, attempt, _, name, item_id, event, host, worker, resources, detail, started = row[:11]
    cpu, peak_rss, reason = row[11:14]
    key = (attempt or 0, name, str(item_id))
    t = tasks.get(key)
    if t is None:
        t = [
            name,
            key[2],
            key[0],
            "",
            "",
            None,
            None,
            None,
            None,
            None,
            None,
            0,
            None,
            host_default,
            None,
            None,
            None,
        ]
        tasks[key] = t
    if cpu is not None:
        t[14] = cpu if t[14] is None else t[14] + cpu
    if peak_rss is not None and (t[15] is None or peak_rss > t[15]):
        t[15] = peak_rss
    if reason is not None:
        t[16] = reason
    t[3], t[4] = STATE_OF[event], event
    if event == "submitted":
        t[5] = t[5] or at
    elif event in ("started", "restarted"):
        t[6], t[7] = at, None
    elif event == "retried":
        t[6], t[7], t[11] = None, None, t[11] + 1
    else:
        t[7] = at
        if started is not None:
            t[6] = started
    if host is not None:
        t[8] = host
    if worker is not None:
        t[9] = str(worker)
    if resources is not None:
        t[10] = resources
    if detail is not None:
        t[12] = detail
    return key


def task_rows(
    attempt: int, host: str, rows: list[tuple], events: list[tuple], runs: list[tuple[str, list]]
) -> None:
    """Append the rows of a TASK item (``Records.tasks``: 9 fields, or 12 with the usage and
    failure reason) to ``runs``, ``(sql, rows)`` runs
    of consecutive rows for one statement (:data:`UPSERT_FINISHED` or :data:`UPSERT_TASK`;
    in order, since a task may have several), and the events log's rows of its failed,
    retried and cancelled tasks to ``events``. ``attempt`` None (no run started) is 0."""
    attempt = attempt or 0
    for name, item, event, submitted, started, ended, resources, retries, detail, *usage in rows:
        if event == "finished" and detail is None and started is not None and ended is not None:
            sql = UPSERT_FINISHED  # item_id: the column's TEXT affinity stores an int as text
            row: tuple = (name, item, attempt, submitted, started, ended, resources, retries, host)
            row += (usage[0], usage[1]) if usage else (None, None)
        else:
            sql, item = UPSERT_TASK, str(item)
            row = (name, item, attempt, STATE_OF[event], event, submitted, started, ended)
            row += (None, None, resources, retries, detail, host)
            row += tuple(usage) if usage else (None, None, None)
            if event in LOGGED_TASK_EVENTS:
                at = ended if ended is not None else time.time()
                log = (at, attempt, "task", name, item, event, host, None, resources, detail)
                events.append(log)
        if runs and runs[-1][0] is sql:
            runs[-1][1].append(row)
        else:
            runs.append((sql, [row]))


class Batcher:
    """Folds frames into transactions, holding the rows of tasks that have not ended and
    deferring TASK rows while frames keep coming."""

    def __init__(self, db: sqlite3.Connection, host: str, hold: float = HOLD) -> None:
        self.db, self.host, self.hold = db, host, hold
        self.held: dict[tuple[int, str, str], list[Any]] = {}  # in the order first held
        self.since: dict[tuple[int, str, str], float] = {}
        self.deferred: list[tuple[str, list]] = []  # runs, see task_rows
        self.deferred_rows = 0
        self.deferred_since = 0.0

    def commit(
        self, items: list[tuple[int, Any]], now: float, flush: bool = False, idle: bool = False
    ) -> None:
        """Commit one frame atomically: events, memos, metrics, extra rows, and the task
        rows that ended, waited ``hold`` seconds, or all of them with ``flush``.

        TASK rows wait in :attr:`deferred` until the input is ``idle`` (no frame came
        within :meth:`wait_time`), a FLUSH, ``DEFER_MAX`` of them or ``hold`` seconds:
        during a burst of results the frames then commit only what someone waits for
        (memos, whose commit settles the tasks' futures), and the task rows go in one
        transaction after it."""
        events, memos, metrics, rows = [], [], [], []
        held, since, host = self.held, self.since, self.host
        ended: list[tuple[int, str, str]] = []
        for kind, row in items:
            if kind == EVENT:
                if row[2] == "task":
                    key = merge_task(held, row, host)
                    if key not in since:
                        since[key] = now
                    if held[key][3] in ENDED:
                        ended.append(key)
                    if row[5] not in LOGGED_TASK_EVENTS:
                        continue
                events.append(row[:10] if row[6] is not None else (*row[:6], host, *row[7:10]))
            elif kind == TASK:
                if not self.deferred:
                    self.deferred_since = now
                row = marshal.loads(row)
                task_rows(*row, events, self.deferred)
                self.deferred_rows += len(row[2])
            elif kind == MEMO:
                memos += row
            elif kind == METRIC:
                metrics.append(row)
            elif kind == ROW:
                rows.append(row)
            elif kind == FLUSH:
                flush = True
        tasks = self._take(ended, now, flush)
        runs, due = self.deferred, now - self.deferred_since >= self.hold
        if runs and (flush or idle or due or self.deferred_rows >= DEFER_MAX):
            self.deferred, self.deferred_rows = [], 0
        else:
            runs = []
        if not (events or tasks or runs or memos or metrics or rows):
            return
        db = self.db
        with transaction(db):
            if events:
                db.executemany(INSERT_EVENT, events)
            if tasks:
                db.executemany(UPSERT_TASK, tasks)
            for sql, run in runs:
                db.executemany(sql, run)
            if memos:
                db.executemany(INSERT_MEMO, memos)
            if metrics:
                db.executemany(INSERT_METRIC, metrics)
            for sql, args in rows:
                db.execute(sql, args)

    def _take(self, ended: list[tuple[int, str, str]], now: float, flush: bool) -> list[list[Any]]:
        held, since = self.held, self.since
        if flush:
            taken = list(held.values())
            held.clear()
            since.clear()
            return taken
        taken = []
        for key in ended:
            if key in held and held[key][3] in ENDED:
                taken.append(held.pop(key))
                del since[key]
        cutoff = now - self.hold
        due = []
        for key, first in since.items():  # one pass: the rows held longest come first
            if first > cutoff:
                break
            due.append(key)
        for key in due:
            del since[key]
            taken.append(held.pop(key))
        return taken

    def wait_time(self, now: float) -> float | None:
        """Seconds to wait for a frame before committing what waits here (``IDLE`` for
        deferred rows, until the oldest held row is due otherwise); None when nothing
        waits."""
        due = None
        if self.since:
            due = max(0.0, self.since[next(iter(self.since))] + self.hold - now)
        if self.deferred:
            due = IDLE if due is None else min(due, IDLE)
        return due


def parse_journal(data: bytes, memos: list[tuple]) -> int:
    """Append the :data:`INSERT_MEMO` rows of the whole records at the start of ``data`` to
    ``memos``; return how many bytes they took (a record cut short or failing its
    checksum ends the reading)."""
    pos, size, header = 0, len(data), JOURNAL_RECORD.size
    while pos + header <= size:
        length, crc = JOURNAL_RECORD.unpack_from(data, pos)
        end = pos + header + length
        if end > size:
            break
        body = data[pos + header : end]
        if zlib.crc32(body) != crc:
            break
        try:
            finished, entries = marshal.loads(body)
            for key, name, result, *call in entries:
                if key is None:  # plain arguments, journaled for their key to be made here
                    key = atom_key(*call)
                memos.append((key, name, "done", result, finished))
        except (ValueError, EOFError, TypeError):
            break
        pos = end
    return pos


def fold_journals(db: sqlite3.Connection, directory: str, remove: bool = False) -> int:
    """Commit the memos of the journals in ``directory`` that are not in the memo table
    yet, each file's new offset with them; with ``remove``, then remove the files folded
    in to their last byte (only once nothing writes to them). Returns the memos added."""
    offsets = dict(db.execute("SELECT file, offset FROM memo_journals").fetchall())
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(JOURNAL_SUFFIX))
    except OSError:  # gone, or not a directory: no journals
        names = []
    added = 0
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            offset = offsets.get(name, 0)
            f.seek(offset)
            while data := f.read(_JOURNAL_READ):
                memos: list[tuple] = []
                used = parse_journal(data, memos)
                if not used and len(data) >= JOURNAL_RECORD.size:  # a record bigger than
                    need = JOURNAL_RECORD.size + JOURNAL_RECORD.unpack_from(data)[0]  # a read
                    data += f.read(max(0, need - len(data)))
                    used = parse_journal(data, memos)
                if not used:
                    break
                offset += used
                with transaction(db):
                    db.executemany(INSERT_MEMO, memos)
                    db.execute(SET_JOURNAL_OFFSET, (name, offset))
                added += len(memos)
                f.seek(offset)
            offsets[name] = offset
            if remove and offset == os.fstat(f.fileno()).st_size:
                os.unlink(path)
                db.execute("DELETE FROM memo_journals WHERE file=?", (name,))
    return added


def _read_exact(stream: Any, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def main(argv: list[str]) -> int:
    # Stop signals are for the workflow, which flushes and then closes our pipe; a batch
    # system's SIGTERM to every process of the job must not cut the last commits short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    db_path, busy_timeout, host = argv[1], float(argv[2]), argv[3]
    hold = float(argv[4]) if len(argv) > 4 else HOLD
    db = sqlite3.connect(db_path, timeout=busy_timeout, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-65536")  # 64 MiB: the tasks table of a big run stays cached
    journals = argv[5] if len(argv) > 5 else None
    if journals is not None:
        fold_journals(db, journals)  # what a killed earlier attempt left, before any lookup
    batcher = Batcher(db, host, hold)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    fd = stdin.fileno()
    while True:
        due = batcher.wait_time(time.monotonic())
        if due is not None and not select.select([fd], [], [], due)[0]:
            batcher.commit([], time.monotonic(), idle=True)  # no frame came: rows are due
            continue
        header = _read_exact(stdin, FRAME.size)
        if header is None:
            break
        body = _read_exact(stdin, FRAME.unpack(header)[0])
        if body is None:
            break
        seq, items = marshal.loads(body)
        batcher.commit(items, time.monotonic())
        try:
            stdout.write(FRAME.pack(seq))
            stdout.flush()
        except BrokenPipeError:
            break
    batcher.commit([], time.monotonic(), flush=True)
    if journals is not None:
        fold_journals(db, journals, remove=True)
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
