"""Task memoization for resume: a finished task is known by its function and arguments."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle

from simai.launch.executor import Task
from simai.workflow.component import COMPONENT_ENV
from simai.workflow.records import Records


def memo_key(task: Task) -> str | None:
    """sha256 of what the task computes: the function's identity (module and qualified
    name) or the command's argv, cwd and environment, and the resolved arguments.
    None for components, which are never memoized."""
    if task.command is not None:
        cmd = task.command
        if COMPONENT_ENV in (cmd.env or {}):
            return None
        what: Any = ("command", list(cmd.argv), str(cmd.cwd), sorted((cmd.env or {}).items()))
    else:
        fn = task.fn
        ident = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        what = ("function", ident, task.args, sorted(task.kwargs.items()))
    try:
        blob = cloudpickle.dumps(what)
    except Exception:  # noqa: BLE001 - an argument that cannot be hashed is not memoized
        return None
    return hashlib.sha256(blob).hexdigest()


class RecordsMemo:
    """Finished tasks in the run's records database: recalled on resume, never run twice.

    Results are kept as cloudpickle bytes, so a recalled result has exactly the type it had
    (JSON would turn tuples into lists and int keys into strings). The run directory is the
    user's own, written by their own workflow: resuming one unpickles it, so never resume a
    run directory from a source you do not trust.
    """

    def __init__(self, records: Records, recall: bool = True) -> None:
        self.records = records
        self.recall_enabled = recall
        self.recalled = 0

    def recall(self, task: Task) -> tuple[bool, Any]:
        if not self.recall_enabled:
            return False, None
        key = memo_key(task)
        entry = self.records.memo_get(key) if key is not None else None
        if entry is None or entry.status != "done":
            return False, None
        self.recalled += 1
        return True, pickle.loads(entry.result)

    def remember(
        self, task: Task, result: Any, done: Callable[[BaseException | None], None]
    ) -> None:
        key = memo_key(task)
        if key is None:
            done(None)
            return
        blob = cloudpickle.dumps(result)
        self.records.memo_put(key, task.name, blob, on_durable=done)
