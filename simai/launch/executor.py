"""The Executor contract every backend implements, modelled on concurrent.futures.

A backend subclasses :class:`Executor` and implements three hooks:

* ``_prepare(task)``: check at submission that the task can run here (resources fit,
  arguments serialisable, executable found); raise to refuse it before anything runs.
* ``_run(task)``: start one attempt of a task whose dependencies are resolved; when it ends
  call ``self._finish(task, result=...)`` or ``self._finish(task, error=...)`` from any
  thread. Call ``task.start()`` first when the attempt really begins: it returns False when
  the user cancelled the future, and the backend then drops the task.
* ``_shutdown(wait, cancel_futures)``: stop the backend's workers.

The base class does the rest the same way for every backend: validating arguments,
resolving futures passed as arguments (dependencies), retries, and failing dependents
with :class:`DependencyError` naming the task that failed first.
"""

from __future__ import annotations

import abc
import importlib
import itertools
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from simai.checks import check_int, check_seconds
from simai.launch.resources import Resources, as_resources

if TYPE_CHECKING:
    from simai.launch.command import Command

__all__ = [
    "DependencyError",
    "Executor",
    "Task",
    "TaskTimeoutError",
    "WorkerLostError",
    "failure_reason",
    "get_executor",
    "register_executor",
]

_ids = itertools.count(1)


class DependencyError(RuntimeError):
    """A task did not run because a future it depends on failed or was cancelled.

    ``task_id`` and ``task_name`` name the task that failed first; ``__cause__`` holds
    that task's exception.
    """

    def __init__(self, message: str, task_id: int | None = None, task_name: str | None = None):
        super().__init__(message)
        self.task_id = task_id
        self.task_name = task_name


class TaskTimeoutError(TimeoutError):
    """A task ran past its walltime; its whole process tree was killed."""


class TaskTerminated(RuntimeError):
    """A task did not end because simai stopped its executor first (``terminate``, or the
    end of the workflow or loop that owned it): its result was no longer wanted. Records
    count it as cancelled, not failed, and it is not retried."""


class WorkerLostError(RuntimeError):
    """The process running a task died before reporting a result (signal, crash, OOM).

    ``returncode`` is its exit status (negative: the signal that killed it; None when not
    known), ``oom`` whether the kernel's out-of-memory killer killed it, ``max_rss`` its
    peak memory in bytes (None when not known).
    """

    returncode: int | None = None
    oom: bool = False
    max_rss: int | None = None

    def __init__(
        self,
        message: str,
        *,
        returncode: int | None = None,
        oom: bool = False,
        max_rss: int | None = None,
    ) -> None:
        super().__init__(message)
        self.returncode, self.oom, self.max_rss = returncode, oom, max_rss

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), str(self), self.__dict__))


def _rebuild_error(cls: type, message: str, state: dict[str, Any]) -> BaseException:
    err = cls.__new__(cls)
    RuntimeError.__init__(err, message)
    err.__dict__.update(state)
    return err


#: the reasons :func:`failure_reason` gives
FAILURE_REASONS = ("exit", "signal", "walltime", "oom", "exception", "cancelled")


def failure_reason(error: BaseException) -> str:
    """Why a task failed, in one word (what the records keep): ``oom`` (the kernel's
    out-of-memory killer killed it), ``walltime`` (killed at its walltime), ``signal``
    (its process died of a signal, or was lost), ``exit`` (its process exited with a
    non-zero status),
    ``cancelled`` (not run to its end: cancelled, a dependency failed, the executor was
    terminated) or ``exception`` (it raised, or anything else)."""
    if getattr(error, "oom", False) is True:
        return "oom"
    if isinstance(error, TaskTimeoutError):
        return "walltime"
    if isinstance(error, DependencyError | TaskTerminated | CancelledError):
        return "cancelled"
    from simai.launch.command import CommandError

    if isinstance(error, WorkerLostError | CommandError):
        returncode = error.returncode
        return "exit" if returncode is not None and returncode >= 0 else "signal"
    return "exception"


@dataclass(eq=False)
class Task:
    """One submitted task or command as backends see it.

    Attributes
    ----------
    id : int
        Executor-wide task number.
    name : str
        The function's or command's name.
    future : Future
        Resolved with the result or the error.
    resources : Resources
        What one attempt needs.
    retries : int
        Further attempts after a failed one.
    walltime : float or None
        Seconds one attempt may run.
    fn : callable or None
        The function (None for a command).
    args : tuple
        Its positional arguments.
    kwargs : dict
        Its keyword arguments.
    command : Command or None
        The command (None for a function).
    attempt : int
        The attempt running now, from 0.
    has_dependencies : bool
        Whether arguments were futures when it was submitted.
    started : bool
        Whether an attempt has started.
    backend_data : Any
        Whatever the backend keeps with the task.
    observer : Observer or None
        Told when the task starts, ends and fails.
    memo_key : str or None
        Its memo key, set by the memo (see :meth:`Memo.recall`).
    memo_kept : bool
        Set by a backend whose workers keep memos (:attr:`Memo.journal`) when the worker did.
    result_bytes : bytes or None
        The result's pickle, set by such a backend when the worker did not keep it.
    submitted_at : float
        When it was submitted (``time.time()``).
    started_at : float or None
        When its first attempt started.
    cpu_time : float or None
        CPU seconds (user + system) its latest attempt used, when its backend measures it
        (the local executor does); None before it ended or when not known.
    max_rss : int or None
        Peak resident memory of its latest attempt, in bytes, likewise.
    huge_pages : str or None
        Whether it runs with huge pages for its large allocations: ``on``, ``off`` or
        ``unavailable`` (see :func:`simai.launch.memory.huge_pages_setting`); set by its
        backend when it is submitted.
    """

    id: int
    name: str
    future: Future
    resources: Resources
    retries: int = 0
    walltime: float | None = None
    fn: Callable[..., Any] | None = None
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    command: Command | None = None
    attempt: int = 0
    has_dependencies: bool = False
    started: bool = False
    backend_data: Any = None
    observer: Observer | None = None
    memo_key: str | None = None
    memo_kept: bool = False
    result_bytes: bytes | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    cpu_time: float | None = None
    max_rss: int | None = None
    huge_pages: str | None = None

    @property
    def label(self) -> str:
        """``task 'name' (id N)``, used in every error about this task."""
        return f"task {self.name!r} (id {self.id})"

    def start(self) -> bool:
        """Mark the future running (and ``started_at``); False if it was cancelled and
        must not run."""
        if self.started:
            return not self.future.done()
        self.started = True
        running = self.future.set_running_or_notify_cancel()
        if running:
            self.started_at = time.time()
        else:
            self.notify("cancelled", CancelledError("its future was cancelled before it ran"))
        return running

    def notify(self, event: str, error: BaseException | None = None) -> None:
        """Tell the executor's observer (the workflow's records) what happened."""
        if self.observer is not None:
            self.observer([(self, event, error)])


#: what an executor tells its observer: ``observer(events)`` with ``(task, event, error)``
#: tuples; events are ``submitted`` (alone, in the submitting thread), then ``finished``,
#: ``failed``, ``retried`` or ``cancelled`` (a dependency failed, or the future was cancelled
#: before the task ran), several at once when tasks end together (the
#: start of a task is ``task.started_at``, not an event: it happens on the hot path)
Observer = Callable[[list[tuple[Task, str, BaseException | None]]], None]


def check_retries_walltime(retries: Any, walltime: Any) -> tuple[int, float | None]:
    """`retries` (an int >= 0) and `walltime` (seconds > 0 or None), checked."""
    walltime = check_seconds("walltime", walltime, positive=True, optional=True)
    return check_int("retries", retries, 0), walltime


def _find_futures(args: tuple, kwargs: dict[str, Any]) -> list[Future]:
    found: list[Future] = []

    def visit(value: Any, depth: int) -> None:
        if isinstance(value, Future):
            found.append(value)
        elif depth == 0 and isinstance(value, list | tuple | set | frozenset):
            for item in value:
                visit(item, 1)
        elif depth == 0 and isinstance(value, Mapping):
            for item in value.values():
                visit(item, 1)

    for value in args:
        visit(value, 0)
    for value in kwargs.values():
        visit(value, 0)
    return list({id(f): f for f in found}.values())


def _substitute(value: Any, depth: int = 0) -> Any:
    """Replace futures (one container level deep) by their results."""
    if isinstance(value, Future):
        return value.result()
    if depth == 0:
        if isinstance(value, list):
            return [_substitute(v, 1) for v in value]
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(_substitute(v, 1) for v in value)
        if isinstance(value, set | frozenset):
            return type(value)(_substitute(v, 1) for v in value)
        if isinstance(value, dict):
            return type(value)((k, _substitute(v, 1)) for k, v in value.items())
    return value


def describe_future(future: Future) -> str:
    """``task 'name' (id N)`` for futures made by simai, ``a dependency`` otherwise."""
    task = getattr(future, "simai_task", None)
    return task.label if task is not None else "a dependency"


def _dependency_error(dep: Future) -> DependencyError:
    if dep.cancelled():
        task = getattr(dep, "simai_task", None)
        return DependencyError(
            f"{describe_future(dep)} was cancelled",
            task_id=task.id if task else None,
            task_name=task.name if task else None,
        )
    exc = dep.exception()
    if isinstance(exc, DependencyError):
        err = DependencyError(str(exc), exc.task_id, exc.task_name)
        err.__cause__ = exc.__cause__
        return err
    task = getattr(dep, "simai_task", None)
    err = DependencyError(
        f"{describe_future(dep)} failed: {type(exc).__name__}: {exc}",
        task_id=task.id if task else None,
        task_name=task.name if task else None,
    )
    err.__cause__ = exc
    return err


class Memo(Protocol):
    """Remembers finished tasks so a resumed run does not redo them (see simai.workflow)."""

    #: a directory where the workers of a backend that can (the local executor) keep the
    #: memos of the Python tasks they finish, each in its own journal file, before they
    #: report the result (format: ``_worker.py``); the memo's owner folds them in. None:
    #: every result goes through :meth:`remember`
    journal: str | None
    #: whether :meth:`recall` may know a task (a resumed run); else it is not asked
    recalls: bool

    def recall(self, task: Task) -> tuple[bool, Any]:
        """``(True, result)`` for a task that already finished, else ``(False, None)``.

        It may set ``task.memo_key`` (the key it computed). The workers of a backend with
        a :attr:`journal` compute the key of a Python task without one themselves, off
        the executor's process, when its arguments are plain data (see ``_worker.py``);
        ``remember`` computes what they left out."""

    def remember(
        self,
        ended: list[tuple[Task, Any]],
        done: Callable[[Task, Any, BaseException | None], None],
    ) -> None:
        """Keep the results of tasks that just finished, ``(task, result)`` pairs, that
        their worker did not keep (``task.memo_kept``); call ``done(task, result, None)``
        for each once its result is durable (a task counts as finished only then),
        ``done(task, result, error)`` if it could not be kept. Backends pass the tasks
        that end together in one call, so one commit covers them all."""


class Executor(abc.ABC):
    """Runs Python tasks and commands, returning ``concurrent.futures.Future`` objects.

    Use it like ``concurrent.futures.Executor``: ``submit``, ``shutdown``, or as a
    context manager that shuts down on exit (and kills everything at once when the
    block is left by ``KeyboardInterrupt``).

    A workflow attaches an ``observer`` (see :data:`Observer`) and a ``memo`` (finished
    tasks are recalled instead of run again); both are None for a bare executor.
    """

    observer: Observer | None = None
    memo: Memo | None = None
    _log_dir: Path | None = None
    _log_prefix = "simai-launch-"

    def __init__(self) -> None:
        self._closed = False
        self._base_lock = threading.Lock()
        self._waiting: set[Task] = set()

    # -- public API -------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any] | Command,
        /,
        *args: Any,
        resources: Resources | Mapping[str, int] | None = None,
        retries: int = 0,
        walltime: float | None = None,
        **kwargs: Any,
    ) -> Future:
        """Schedule ``fn(*args, **kwargs)`` and return its future (a :class:`Command` is
        run as by :meth:`submit_command`).

        Futures among the arguments (also one level inside lists, tuples, sets and dict
        values) are waited for and replaced by their results. ``retries`` reruns a failed
        attempt that many times; ``walltime`` (seconds) kills an attempt that runs longer.
        Bad input raises here, before anything runs.
        """
        if not callable(fn):
            from simai.launch.command import Command

            if not isinstance(fn, Command):
                raise TypeError(f"submit() needs a callable, got {type(fn).__name__} {fn!r}")
            if args or kwargs or resources is not None:
                raise TypeError("a Command takes no arguments or resources: it holds its own")
            return self.submit_command(fn, retries=retries, walltime=walltime)
        res = as_resources(resources)
        retries, walltime = check_retries_walltime(retries, walltime)
        name = getattr(fn, "__name__", None) or getattr(
            getattr(fn, "func", None), "__name__", type(fn).__name__
        )
        task = Task(
            id=next(_ids),
            name=name,
            future=Future(),
            resources=res,
            retries=retries,
            walltime=walltime,
            fn=fn,
            args=args,
            kwargs=kwargs,
        )
        return self._submit(task)

    def submit_command(
        self, command: Command, /, *, retries: int = 0, walltime: float | None = None
    ) -> Future:
        """Run an executable described by a :class:`~simai.launch.command.Command`.

        The future's result is a :class:`~simai.launch.command.CommandResult`; a non-zero
        exit fails it with :class:`~simai.launch.command.CommandError`.
        """
        from simai.launch.command import Command

        if not isinstance(command, Command):
            raise TypeError(f"submit_command() needs a Command, got {type(command).__name__}")
        retries, walltime = check_retries_walltime(retries, walltime)
        task = Task(
            id=next(_ids),
            name=command.name,
            future=Future(),
            resources=command.resources,
            retries=retries,
            walltime=walltime if walltime is not None else command.walltime,
            command=command,
        )
        return self._submit(task)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        resources: Resources | Mapping[str, int] | None = None,
        retries: int = 0,
        walltime: float | None = None,
    ) -> Iterator[Any]:
        """Like ``concurrent.futures.Executor.map``: submit all calls now, yield results in
        order (the first failure raises)."""
        futures = [
            self.submit(fn, *args, resources=resources, retries=retries, walltime=walltime)
            for args in zip(*iterables, strict=False)
        ]
        end = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[Any]:
            try:
                for fut in futures:
                    yield fut.result(None if end is None else max(0.0, end - time.monotonic()))
            finally:
                for fut in futures:
                    fut.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; finish (or, with ``cancel_futures``, cancel) queued ones.

        With ``wait`` it returns once every task has ended and every worker is stopped.
        """
        self._stop_accepting(cancel_waiting=cancel_futures)
        self._shutdown(wait, cancel_futures)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.shutdown(wait=False, cancel_futures=True)
            self.terminate()
        else:
            self.shutdown(wait=True)

    def terminate(self) -> None:
        """Kill every worker and command at once; unfinished futures fail. Idempotent."""
        self.shutdown(wait=False, cancel_futures=True)

    def huge_pages(self, resources: Resources) -> str:
        """Whether a task of these resources runs with huge pages here: ``on``, ``off`` or
        ``unavailable`` (see :mod:`simai.launch.memory`). Unless a backend says otherwise,
        it gets none from simai."""
        return "off"

    # -- for backends -----------------------------------------------------------------

    def _stop_accepting(self, cancel_waiting: bool) -> None:
        """Refuse new tasks; cancel those still waiting for their dependencies if asked."""
        with self._base_lock:
            self._closed = True
            waiting = list(self._waiting) if cancel_waiting else []
        for task in waiting:
            task.future.cancel()

    def _log_paths(self, task: Task) -> tuple[Path, Path]:
        """Where a command's stdout and stderr go: the files it names, else
        ``<log_dir>/<name>-<id>[.<attempt>].out|.err`` (a new temporary folder, kept after
        shutdown so the logs stay readable, when the executor was given none)."""
        cmd = task.command
        assert cmd is not None
        suffix = f".{task.attempt}" if task.attempt else ""
        if cmd.stdout is None or cmd.stderr is None:
            if self._log_dir is None:
                self._log_dir = Path(tempfile.mkdtemp(prefix=self._log_prefix))
            self._log_dir.mkdir(parents=True, exist_ok=True)
        base = f"{cmd.name.replace(os.sep, '_')}-{task.id}{suffix}"
        stdout = cmd.stdout or self._log_dir / f"{base}.out"  # type: ignore[operator]
        stderr = cmd.stderr or self._log_dir / f"{base}.err"  # type: ignore[operator]
        return stdout, stderr

    def _submit(self, task: Task) -> Future:
        if self._closed:
            raise RuntimeError("cannot submit to an executor that was shut down")
        task.future.simai_task = task  # type: ignore[attr-defined]
        task.observer = observer = self.observer
        deps = _find_futures(task.args, task.kwargs)
        task.has_dependencies = bool(deps)
        self._prepare(task)
        task.submitted_at = time.time()
        if observer is not None:
            observer([(task, "submitted", None)])
        if not deps:
            self._launch(task)
            return task.future
        with self._base_lock:
            self._waiting.add(task)
        remaining = [len(deps)]
        lock = threading.Lock()
        failed = [False]

        def on_done(dep: Future) -> None:
            with lock:
                if failed[0]:
                    return
                if dep.cancelled() or dep.exception() is not None:
                    failed[0] = True
                    ready = False
                else:
                    remaining[0] -= 1
                    ready = remaining[0] == 0
                    if not ready:
                        return
            with self._base_lock:
                self._waiting.discard(task)
            if task.future.cancelled():
                return
            if not ready:
                self._set_exception(task, _dependency_error(dep))
                return
            try:
                task.args = tuple(_substitute(v) for v in task.args)
                task.kwargs = {k: _substitute(v) for k, v in task.kwargs.items()}
                self._launch(task)
            except BaseException as exc:  # noqa: BLE001 - reported through the future
                self._set_exception(task, exc)

        for dep in deps:
            dep.add_done_callback(on_done)
        return task.future

    def _launch(self, task: Task) -> None:
        """Run a task whose arguments are resolved, unless the memo knows its result."""
        memo = self.memo
        if memo is not None and memo.recalls:
            known, result = memo.recall(task)
            if known:
                if task.start():
                    task.args, task.kwargs = (), {}
                    task.future.set_result(result)
                    task.notify("finished")
                return
        self._run(task)

    def _finish(self, task: Task, result: Any = None, error: BaseException | None = None) -> None:
        """Record the end of one attempt: retry, or settle the future (once the memo, if
        any, has kept the result durably)."""
        self._finish_many([(task, result, error)])

    def _finish_many(self, ended: list[tuple[Task, Any, BaseException | None]]) -> None:
        """:meth:`_finish` for attempts that ended together, ``(task, result, error)``: the
        observer hears of the finished ones at once and the memo keeps their results in
        one commit."""
        finished = []
        for task, result, error in ended:
            if error is not None:
                self._retry_or_fail(task, error)
            elif not task.future.done():  # else it was failed meanwhile (terminate)
                finished.append((task, result))
        if not finished:
            return
        observer = self.observer
        if observer is not None:
            events = [(t, "finished", None) for t, _ in finished if t.observer is not None]
            if events:
                observer(events)
        memo, conclude = self.memo, self._conclude
        if memo is None:
            for task, result in finished:
                conclude(task, result, None)
            return
        to_keep = []
        for task, result in finished:
            if task.memo_kept:  # kept where it ran
                conclude(task, result, None)
            else:
                to_keep.append((task, result))
        if not to_keep:
            return
        try:
            memo.remember(to_keep, conclude)
        except Exception as exc:  # noqa: BLE001 - results that cannot be kept fail
            for task, result in to_keep:
                conclude(task, result, exc)

    def _conclude(self, task: Task, result: Any, error: BaseException | None) -> None:
        """Settle a finished task's future (its result is kept), or retry or fail it when
        its result could not be kept."""
        if error is not None:
            self._retry_or_fail(task, error)
            return
        task.args, task.kwargs, task.backend_data, task.result_bytes = (), {}, None, None
        if not task.future.done():
            try:
                task.future.set_result(result)
            except InvalidStateError:
                pass

    def _retry_or_fail(self, task: Task, error: BaseException) -> None:
        if (
            task.attempt < task.retries
            and not isinstance(error, DependencyError | CancelledError | TaskTerminated)
            and not task.future.done()
        ):
            task.attempt += 1
            task.notify("retried", error)
            task.cpu_time = task.max_rss = None  # the next attempt's, once it ends
            try:
                self._run(task)
                return
            except BaseException as exc:  # noqa: BLE001
                error = exc
        self._set_exception(task, error)

    @staticmethod
    def _set_exception(task: Task, error: BaseException) -> None:
        task.args, task.kwargs, task.backend_data = (), {}, None
        fut = task.future
        if fut.done():
            return
        cancelled = isinstance(error, DependencyError | TaskTerminated)
        task.notify("cancelled" if cancelled else "failed", error)
        if not task.started:
            task.started = True
            if not fut.set_running_or_notify_cancel():
                return
        try:
            fut.set_exception(error)
        except InvalidStateError:
            pass

    @abc.abstractmethod
    def _prepare(self, task: Task) -> None:
        """Refuse, by raising, a task that cannot run on this executor."""

    @abc.abstractmethod
    def _run(self, task: Task) -> None:
        """Start one attempt of a task whose dependencies are resolved."""

    @abc.abstractmethod
    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Stop the backend."""


# -- registry -------------------------------------------------------------------------

_REGISTRY: dict[str, str] = {
    "local": "simai.launch.local:LocalExecutor",
    "parsl": "simai.launch.parsl:ParslExecutor",
}


def register_executor(name: str, target: str) -> None:
    """Make ``get_executor(name)`` build the class at ``"module:Class"``."""
    if ":" not in target:
        raise ValueError(f"executor target must look like 'module:Class', got {target!r}")
    _REGISTRY[name] = target


def executor_names() -> list[str]:
    """The names ``get_executor`` knows."""
    return sorted(_REGISTRY)


def check_executor(executor: Any) -> None:
    """Refuse what is neither an Executor nor the name of a known one."""
    if isinstance(executor, Executor):
        return
    known = ", ".join(executor_names())
    if not isinstance(executor, str):
        raise TypeError(f"executor must be an Executor or a name ({known}), not {executor!r}")
    if executor not in _REGISTRY:
        raise ValueError(f"unknown executor {executor!r}; known: {known}")


def get_executor(name_or_instance: str | Executor = "local", **config: Any) -> Executor:
    """An executor by name (``"local"``, ``"parsl"``) built with ``config``, or the instance."""
    check_executor(name_or_instance)
    if isinstance(name_or_instance, Executor):
        if config:
            raise TypeError("configuration given for an executor that already exists")
        return name_or_instance
    module_name, _, class_name = _REGISTRY[name_or_instance].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**config)
