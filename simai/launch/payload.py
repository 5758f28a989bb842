"""How a Python task travels to a worker process: one pickle of (function, args, kwargs).

Functions from `__main__` or defined inside other functions travel by value (cloudpickle);
that pickle is made once per function object, so globals such a function reads are captured
at its first submission (as Dask and Ray do). Everything else pickles by reference.
"""

from __future__ import annotations

import pickle
import weakref
from typing import TYPE_CHECKING, Any

import cloudpickle

if TYPE_CHECKING:
    from simai.launch.executor import Task

_BY_VALUE: weakref.WeakKeyDictionary[Any, bytes | None] = weakref.WeakKeyDictionary()


def _function_for_payload(fn: Any) -> Any:
    """``fn`` itself when it pickles by reference, else its by-value pickle, made once."""
    try:
        cached = _BY_VALUE.get(fn, False)
    except TypeError:
        cached = False
    if cached is None:
        return fn
    if cached is not False:
        return cached
    module = getattr(fn, "__module__", None)
    by_value: bytes | None = None
    if module in ("__main__", "__mp_main__", None):
        by_value = cloudpickle.dumps(fn, protocol=5)
    else:
        try:
            pickle.dumps(fn, protocol=5)
        except Exception:
            by_value = cloudpickle.dumps(fn, protocol=5)
    try:
        _BY_VALUE[fn] = by_value
    except TypeError:
        pass
    return fn if by_value is None else by_value


def dumps_payload(fn: Any, args: tuple, kwargs: dict[str, Any]) -> bytes:
    return cloudpickle.dumps((_function_for_payload(fn), args, kwargs), protocol=5)


def _blank(value: Any, deps: set[int], depth: int = 0) -> Any:
    """``value`` with dependency futures replaced by None, to test that it pickles."""
    if id(value) in deps:
        return None
    if depth == 0:
        if isinstance(value, list | tuple):
            return [_blank(v, deps, 1) for v in value]
        if isinstance(value, set | frozenset):
            return [_blank(v, deps, 1) for v in value]
        if isinstance(value, dict):
            return {k: _blank(v, deps, 1) for k, v in value.items()}
    return value


def checked_payload(task: Task, where: str) -> bytes | None:
    """The task's payload, made at submission so that what cannot be pickled is refused
    before anything runs; None while dependencies are unresolved (checked with them blanked,
    pickled again once they are resolved)."""
    from simai.launch.executor import _find_futures

    args: Any = task.args
    kwargs: Any = task.kwargs
    if task.has_dependencies:
        deps = {id(f) for f in _find_futures(args, kwargs)}
        args = tuple(_blank(v, deps) for v in args)
        kwargs = {k: _blank(v, deps) for k, v in kwargs.items()}
    try:
        payload = dumps_payload(task.fn, args, kwargs)
    except Exception as exc:
        raise TypeError(
            f"{task.label}: cannot send the function or its arguments to {where} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return None if task.has_dependencies else payload
