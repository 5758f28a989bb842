"""Task memoization for resume: a finished task is known by its function and arguments."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle

from simai.launch.executor import Task
from simai.launch.memokey import command_key, function_key, legacy_function_key
from simai.store.counters import COMPONENT_ENV
from simai.workflow.records import Records

_log = logging.getLogger(__name__)


def memo_key(task: Task) -> str | None:
    """What the task computes, hashed (:mod:`simai.launch.memokey`); None for components,
    which are never memoized."""
    cmd = task.command
    if cmd is None:
        return function_key(task.fn, task.args, task.kwargs)
    if COMPONENT_ENV in (cmd.env or {}):
        return None
    return command_key(cmd.argv, cmd.cwd, cmd.env)


class RecordsMemo:
    """Finished tasks in the run's records database: recalled on resume, never run twice.

    Results are kept as pickle bytes (cloudpickle for what pickle cannot take, such as
    lambdas), so a recalled result has exactly the type it had (JSON would turn tuples into
    lists and int keys into strings). The run directory is the
    user's own, written by their own workflow: resuming one unpickles it, so never resume a
    run directory from a source you do not trust.

    With the records' ``journals`` directory, a backend that can (the local executor) has
    its workers keep the memos: the worker computes the key as :func:`memo_key` does (or
    takes ``task.memo_key``, set here on a resume) and the result's pickle and appends
    them to its journal before it reports the result, and the records writer folds the
    journals into the memo table; this process then does nothing per task. The worker
    leaves the memo to :meth:`remember` for arguments whose pickle may not survive a round
    trip byte for byte (anything but plain numbers, strings, bytes and small lists, tuples
    and dicts of them), and so does a backend that cannot.
    """

    def __init__(self, records: Records, recall: bool = True) -> None:
        self.records = records
        self.journal = None if records.journals is None else str(records.journals)
        self.recalls = recall
        self.recalled = 0

    def recall(self, task: Task) -> tuple[bool, Any]:
        if not self.recalls:
            return False, None
        key = task.memo_key = memo_key(task)
        entry = self.records._memo_get(key) if key is not None else None
        if entry is None and task.command is None:  # kept by an older simai?
            legacy = legacy_function_key(task.fn, task.args, task.kwargs)
            if legacy is not None and legacy != key:
                entry = self.records._memo_get(legacy)
        if entry is None or entry.status != "done":
            return False, None
        try:
            result = pickle.loads(entry.result)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - e.g. its class is gone from the code
            _log.warning("%s runs again: its kept result cannot be loaded (%s)", task.label, exc)
            return False, None
        self.recalled += 1
        observer = task.observer
        if observer is not None:  # its end is a recall: it does not run
            task.observer = lambda events: observer(
                [(t, "recalled" if e == "finished" else e, x) for t, e, x in events]
            )
        return True, result

    def remember(
        self,
        ended: list[tuple[Task, Any]],
        done: Callable[[Task, Any, BaseException | None], None],
    ) -> None:
        entries, now = [], []
        for task, result in ended:
            try:
                key, blob = _key_and_pickle(task, result)
            except Exception as exc:  # noqa: BLE001 - this task fails, not the others
                now.append((task, result, exc))
                continue
            if key is None:  # not memoized: a component, or arguments that cannot be hashed
                now.append((task, result, None))
                continue
            entries.append((key, task.name, blob))
        if entries:
            kept = ended
            if now:
                skip = {id(t) for t, _, _ in now}
                kept = [(t, r) for t, r in ended if id(t) not in skip]
            self.records._memo_put_many(
                entries, on_durable=lambda error: _conclude_all(kept, done, error)
            )
        for task, result, error in now:
            done(task, result, error)


def _key_and_pickle(task: Task, result: Any) -> tuple[str | None, bytes | None]:
    """The task's memo key and its result's pickle (cloudpickle for lambdas and local
    classes), each computed unless the backend or the recall did; sets ``task.memo_key``."""
    key = task.memo_key = task.memo_key or memo_key(task)
    if key is None:
        return None, None
    blob = task.result_bytes
    if blob is None:
        try:
            blob = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - cloudpickle takes what pickle cannot
            blob = cloudpickle.dumps(result)
    return key, blob


def _conclude_all(
    kept: list[tuple[Task, Any]],
    done: Callable[[Task, Any, BaseException | None], None],
    error: BaseException | None,
) -> None:
    """Settle the tasks one commit made durable (each on its own: one that raises does
    not leave the others hanging)."""
    for task, result in kept:
        try:
            done(task, result, error)
        except Exception:  # noqa: BLE001 - logged; the other tasks still settle
            _log.exception("settling %s after its memo commit failed", task.label)
