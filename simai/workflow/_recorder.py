"""The records writer process: commits batches that a :class:`Records` object sends it.

Run as ``python -I _recorder.py DB BUSY_TIMEOUT HOST`` with pipes on stdin and stdout; it
imports only the standard library, so it starts in a few tens of milliseconds. Writing
SQLite here rather than in a thread of the workflow process keeps that work off the
workflow's GIL.

Protocol: each frame on stdin is ``<Q length`` + ``marshal.dumps((seq, items))``, items
being ``(type, row)`` tuples (SYNC items are the sender's flush markers, ignored here); the
frame is committed in one transaction and ``<Q seq`` written back.
At end of input (the workflow closed it, or died, SIGKILL included) everything received is
already committed and the process exits, so it never outlives its workflow.
"""

from __future__ import annotations

import marshal
import signal
import sqlite3
import struct
import sys
from typing import Any

EVENT, MEMO, METRIC, SYNC = range(4)
FRAME = struct.Struct("<Q")

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
}
#: task events also kept in the events log (the routine ones only update the task's row)
LOGGED_TASK_EVENTS = frozenset(("failed", "retried", "cancelled"))

INSERT_EVENT = "INSERT INTO events VALUES (NULL,?,?,?,?,?,?,?,?,?,?)"
UPSERT_TASK = """
INSERT INTO tasks VALUES (?1,?2,?3,?4,?5,?6,?7,?8,coalesce(?9,?14),?10,?11,?12,?13)
ON CONFLICT (name, item_id) DO UPDATE SET
    attempt = excluded.attempt, state = excluded.state, last_event = excluded.last_event,
    submitted = coalesce(tasks.submitted, excluded.submitted),
    started = CASE WHEN excluded.state IN ('submitted', 'retried') THEN NULL
                   ELSE coalesce(excluded.started, tasks.started) END,
    ended = CASE WHEN excluded.state IN ('submitted', 'retried', 'running') THEN NULL
                 ELSE coalesce(excluded.ended, tasks.ended) END,
    host = coalesce(?9, tasks.host), worker = coalesce(excluded.worker, tasks.worker),
    resources = coalesce(excluded.resources, tasks.resources),
    retries = tasks.retries + excluded.retries, detail = coalesce(excluded.detail, tasks.detail)
"""
INSERT_MEMO = "INSERT OR REPLACE INTO memo VALUES (?,?,?,?,?)"
INSERT_METRIC = "INSERT INTO metrics VALUES (?,?,?,?,?)"


def merge_task(tasks: dict[tuple[str, str], list[Any]], row: tuple, host_default: str) -> None:
    """Fold one task event into the batch's row for that task (one upsert per task).

    A task's host is the last one an event named; the recording host if none did.
    """
    at, attempt, _, name, item_id, event, host, worker, resources, detail, started = row
    key = (name, str(item_id))
    t = tasks.get(key)
    if t is None:
        t = [
            name,
            key[1],
            attempt,
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
        ]
        tasks[key] = t
    t[2], t[3], t[4] = attempt, STATE_OF[event], event
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


def commit(db: sqlite3.Connection, items: list[tuple[int, tuple]], host: str) -> None:
    """Commit one batch atomically: events, task rows, memos and metrics; ``host`` is
    the recording host, for events that name none."""
    events, memos, metrics = [], [], []
    tasks: dict[tuple[str, str], list[Any]] = {}
    for kind, row in items:
        if kind == EVENT:
            if row[2] == "task":
                merge_task(tasks, row, host)
                if row[5] not in LOGGED_TASK_EVENTS:
                    continue
            events.append(row[:10] if row[6] is not None else (*row[:6], host, *row[7:10]))
        elif kind == MEMO:
            memos.append(row)
        elif kind == METRIC:
            metrics.append(row)
    if not (events or tasks or memos or metrics):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if events:
            db.executemany(INSERT_EVENT, events)
        if tasks:
            db.executemany(UPSERT_TASK, tasks.values())
        if memos:
            db.executemany(INSERT_MEMO, memos)
        if metrics:
            db.executemany(INSERT_METRIC, metrics)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _read_exact(stream: Any, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def main(argv: list[str]) -> int:
    # Stop signals are for the workflow, which flushes and then closes our pipe; a batch
    # system's SIGTERM to every process of the job must not cut the last commits short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    db_path, busy_timeout, host = argv[1], float(argv[2]), argv[3]
    db = sqlite3.connect(db_path, timeout=busy_timeout, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-65536")  # 64 MiB: the tasks table of a big run stays cached
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = _read_exact(stdin, FRAME.size)
        if header is None:
            break
        body = _read_exact(stdin, FRAME.unpack(header)[0])
        if body is None:
            break
        seq, items = marshal.loads(body)
        commit(db, items, host)
        try:
            stdout.write(FRAME.pack(seq))
            stdout.flush()
        except BrokenPipeError:
            break
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
