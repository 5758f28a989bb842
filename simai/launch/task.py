"""``@task``: Python functions that return futures, and the current executor."""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, Generic, ParamSpec, TypeVar, overload

from simai.launch.command import Command
from simai.launch.executor import Executor, check_retries_walltime, get_executor
from simai.launch.resources import Resources, as_resources

__all__ = ["TaskFunction", "current_executor", "submit", "task", "use"]

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_stack: list[Executor] = []
_default: Executor | None = None


def current_executor() -> Executor:
    """The executor ``@task`` functions submit to: the innermost :func:`use`, else a
    process-wide ``LocalExecutor`` created on first use and terminated at exit."""
    global _default
    with _lock:
        if _stack:
            return _stack[-1]
        if _default is None or _default._closed:
            from simai.launch.local import LocalExecutor

            _default = LocalExecutor()
        return _default


@contextlib.contextmanager
def use(executor: str | Executor = "local", **config: Any) -> Iterator[Executor]:
    """Make ``executor`` current for ``@task`` calls inside the block (process-wide).

    A name (``"local"``, ``"parsl"``) builds one from ``config`` and shuts it down when the
    block ends, as ``with executor:`` would; an instance is used as is and left running.
    """
    owned = not isinstance(executor, Executor)
    ex = get_executor(executor, **config)
    with _lock:
        _stack.append(ex)
    try:
        yield ex
    finally:
        with _lock:
            _stack.remove(ex)
        if owned:
            ex.__exit__(*sys.exc_info())


def submit(fn_or_command: Callable[..., Any] | Command, /, *args: Any, **kwargs: Any) -> Future:
    """Submit a function or a :class:`Command` to the current executor."""
    return current_executor().submit(fn_or_command, *args, **kwargs)


class TaskFunction(Generic[P, R]):
    """A function whose calls run as tasks and return ``Future``s.

    ``.fn`` is the plain function (call it to run inline); ``.submit_to(executor, ...)``
    sends a call to a given executor instead of the current one.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        resources: Resources,
        retries: int,
        walltime: float | None,
        executor: Executor | None,
    ) -> None:
        self.fn = fn
        self.resources = resources
        self.retries = retries
        self.walltime = walltime
        self.executor = executor
        functools.update_wrapper(self, fn)

    @property
    def __simai_function__(self) -> Callable[P, R]:
        return self.fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Future:
        return self.submit_to(self.executor or current_executor(), *args, **kwargs)

    def submit_to(self, executor: Executor, /, *args: Any, **kwargs: Any) -> Future:
        return executor.submit(
            self,
            *args,
            resources=self.resources,
            retries=self.retries,
            walltime=self.walltime,
            **kwargs,
        )

    def __reduce__(self) -> Any:
        module = getattr(self.fn, "__module__", None)
        qualname = getattr(self.fn, "__qualname__", "")
        if module not in (None, "__main__") and "<locals>" not in qualname:
            return (_import_attr, (module, qualname))
        return (
            TaskFunction,
            (self.fn, self.resources, self.retries, self.walltime, None),
        )

    def __repr__(self) -> str:
        return f"<simai task {getattr(self.fn, '__qualname__', self.fn)!r}>"


def _import_attr(module: str, qualname: str) -> Any:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(
    *,
    cpus: int = 1,
    gpus: int = 0,
    retries: int = 0,
    walltime: float | None = None,
    resources: Resources | Mapping[str, int] | None = None,
    executor: Executor | None = None,
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    cpus: int | None = None,
    gpus: int | None = None,
    retries: int = 0,
    walltime: float | None = None,
    resources: Resources | Mapping[str, int] | None = None,
    executor: Executor | None = None,
) -> Any:
    """Make a function run as a task: each call submits it and returns a ``Future``.

    Use as ``@task`` or ``@task(cpus=2, gpus=1, retries=1, walltime=60)``. Calls go to
    ``executor`` if given, else to :func:`current_executor`. Bad values raise here.
    """
    res = as_resources(resources, cpus=cpus, gpus=gpus)
    retries, walltime = check_retries_walltime(retries, walltime)
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be an Executor, got {type(executor).__name__}")

    def wrap(f: Callable[..., Any]) -> TaskFunction:
        if not callable(f):
            raise TypeError(f"@task needs a function, got {type(f).__name__}")
        return TaskFunction(f, res, retries, walltime, executor)

    return wrap if fn is None else wrap(fn)
