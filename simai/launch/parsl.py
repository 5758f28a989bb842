"""The Parsl executor: simai tasks and commands on Parsl HighThroughputExecutor blocks.

Parsl decides *where* work runs (a ``parsl.config.Config``: providers such as Slurm, PBS Pro
or the local machine, launchers, blocks); simai keeps *what* runs and how it behaves:
dependencies, retries and error types come from :class:`~simai.launch.executor.Executor`, so
a workflow gives the same results and exceptions here as on the local executor.

Tasks go straight to the HighThroughputExecutor (``submit_payload``), not through Parsl
apps: the DataFlowKernel is kept for block scaling and cleanup only, so Parsl's own
dependency handling and retries never double simai's.
"""

from __future__ import annotations

import atexit
import copy
import os
import pickle
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
import weakref
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simai.checks import check_int
from simai.launch.executor import Executor, Task, TaskTerminated, TaskTimeoutError, WorkerLostError
from simai.launch.memory import huge_pages_default, huge_pages_setting, thp_mode
from simai.launch.payload import checked_payload, dumps_payload
from simai.launch.processes import kill_tree, run_command
from simai.launch.resources import Resources

if TYPE_CHECKING:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor

__all__ = ["ParslExecutor", "default_config"]

_VENV_BIN = os.path.dirname(sys.executable)
_EXECUTE = f"{__name__}._execute"
_LIVE: weakref.WeakSet[ParslExecutor] = weakref.WeakSet()
_signals_installed = False


def _path_with_venv(path: str | None) -> str:
    parts = (path or "").split(os.pathsep)
    if _VENV_BIN in parts:
        return path or _VENV_BIN
    return os.pathsep.join([_VENV_BIN, *[p for p in parts if p]])


_IGNORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def _ignoring_sigint(cmd: list[str] | tuple[str, ...]) -> list[str]:
    """``cmd`` started with SIGINT ignored (for the HTEX interchange).

    A terminal's Ctrl-C signals its whole foreground process group. The interchange, started
    in ours, died of it at once; Parsl's job-status poller then waited forever for its reply
    (the command channel has no timeout), and the DataFlowKernel's cleanup, which joins the
    poller, never returned. Ignoring SIGINT (inherited across exec), the interchange lives
    until cleanup stops it; it stays in our process group, so signals meant to end the
    whole group (SIGTERM, SIGKILL) still reach it.
    """
    cmd = list(cmd)
    if cmd[1:3] == ["-c", _IGNORE_SIGINT]:
        return cmd
    return [sys.executable, "-c", _IGNORE_SIGINT, *cmd]


def _worker_init_with_venv(worker_init: str, huge_pages: bool) -> str:
    """``worker_init`` with this interpreter's bin directory put first on ``PATH`` and, with
    ``huge_pages``, the allocators' huge page switches (see :mod:`simai.launch.memory`) set
    where the user did not set them."""
    lines = []
    if _VENV_BIN not in (worker_init or ""):
        lines.append(f'export PATH="{_VENV_BIN}:$PATH"')
    if huge_pages and "THP_MEM_ALLOC_ENABLE" not in (worker_init or ""):
        lines.append('export THP_MEM_ALLOC_ENABLE="${THP_MEM_ALLOC_ENABLE:-1}"')
        lines.append(
            'case "$GLIBC_TUNABLES" in *glibc.malloc.hugetlb*) ;; *) export '
            'GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1";; esac'
        )
    if worker_init:
        lines.append(worker_init)
    return "\n".join(lines)


def default_config(
    workers: int | None = None,
    *,
    cores_per_worker: int = 1,
    run_dir: str | os.PathLike[str] | None = None,
    strategy_period: float = 0.5,
) -> Config:
    """HTEX on this machine: ``workers`` worker processes (default: one per usable core).

    More workers than cores is allowed (components that mostly wait): Parsl's worker pool
    caps its workers at the node's cores unless ``PARSL_CORES`` says otherwise, so the
    provider's ``worker_init`` sets it; without that, work needing all ``workers`` at once
    would wait forever for workers that never start.
    ``strategy_period`` is half a second instead of Parsl's 5 s because the first block is
    only started at the scaling strategy's second tick, which delays the first result.
    """
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    cores = len(os.sched_getaffinity(0))
    if workers is None:
        workers = max(1, cores // cores_per_worker)
    check_int("workers", workers, 1)
    provider = LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1)
    if workers * cores_per_worker > cores:
        provider.worker_init = f"export PARSL_CORES={workers * cores_per_worker}"
    htex = HighThroughputExecutor(
        label="htex",
        max_workers_per_node=workers,
        cores_per_worker=cores_per_worker,
        address="127.0.0.1",
        provider=provider,
    )
    return Config(
        executors=[htex],
        run_dir=os.fspath(run_dir) if run_dir is not None else "runinfo",
        strategy_period=strategy_period,
        usage_tracking=0,
    )


class ParslExecutor(Executor):
    """Runs simai tasks and commands on a Parsl ``HighThroughputExecutor`` (HTEX).

    ``config``: a ``parsl.config.Config`` holding at least one HTEX (any provider); ``label``
    picks one when there are several. ``None`` builds :func:`default_config` (``workers``,
    ``cores_per_worker``) in a temporary run directory that is removed at shutdown. A given
    Config is used as it is (its ``strategy_period``, default 5 s, delays the first result by
    up to two periods), except that each HTEX provider's ``worker_init`` gets this Python's
    bin directory put first on ``PATH``, where the interchange and worker pool are found,
    and the huge page switches of :mod:`simai.launch.memory` unless ``$SIMAI_HUGE_PAGES`` is
    0 (for every task: a task cannot opt out alone here, its workers are already started),
    and the chosen HTEX's interchange is started ignoring SIGINT, so that a terminal's
    Ctrl-C ends this process (whose cleanup stops the interchange) without killing the
    interchange under Parsl. This process's ``PATH`` gets the bin directory too.
    ``log_dir``: where commands' stdout/stderr go when the Command names no files (a new
    ``simai-parsl-*`` temporary directory by default; it must be visible from the workers).

    How simai resources map onto Parsl (HTEX accepts no per-task resources, so a task must
    fit one worker, checked when it is submitted):

    * ``cpus`` of a Python task or one-rank Command: at most the HTEX ``cores_per_worker``
      (pin workers to their cores with the HTEX's ``cpu_affinity``).
    * ``gpus``: at most 1, and only when the HTEX has ``available_accelerators`` (Parsl
      gives each worker one accelerator and sets ``CUDA_VISIBLE_DEVICES`` etc.).
    * A Command with ``ranks > 1`` runs from one worker through the MPI launcher that
      :func:`~simai.launch.mpi.detect_launcher` finds *on the worker*: ``srun --mpi=pmix``
      inside a Slurm block, ``mpiexec`` elsewhere. Its nodes must fit the provider's
      ``nodes_per_block`` and its cores per node the provider's ``cores_per_node`` (when set).
    * ``walltime``: enforced on the worker; the task runs in a child process (its own
      session) that is killed with its whole tree, and the future fails with
      :class:`~simai.launch.executor.TaskTimeoutError`.
    * ``retries``: done by simai (resubmitted to Parsl), never by Parsl's own retries.
    * A worker that dies mid-task (Parsl ``WorkerLost``/``ManagerLost``) fails the attempt
      with :class:`~simai.launch.executor.WorkerLostError`; Parsl notices a dead worker
      after the HTEX ``heartbeat_period`` (30 s by default).

    The DataFlowKernel is stopped by ``shutdown``, ``terminate``, at interpreter exit and on
    SIGTERM (SIGINT raises ``KeyboardInterrupt`` and ends in the same cleanup): blocks are
    cancelled (LocalProvider kills the block's process group, SlurmProvider ``scancel``s)
    and the interchange is stopped. A process killed with SIGKILL cannot clean up; its
    Slurm blocks still end at their walltime.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        label: str | None = None,
        workers: int | None = None,
        cores_per_worker: int = 1,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        from parsl.config import Config
        from parsl.dataflow.dflow import DataFlowKernel
        from parsl.executors import HighThroughputExecutor

        self._own_run_dir: str | None = None
        if config is None:
            config = default_config(workers, cores_per_worker=cores_per_worker)
            self._own_run_dir = config.run_dir = tempfile.mkdtemp(prefix="simai-parsl-run-")
        elif not isinstance(config, Config):
            raise TypeError(f"config must be a parsl.config.Config, got {type(config).__name__}")
        elif workers is not None or cores_per_worker != 1:
            raise TypeError("workers and cores_per_worker only apply when no config is given")
        candidates = [
            ex
            for ex in config.executors
            if isinstance(ex, HighThroughputExecutor) and not getattr(ex, "enable_mpi_mode", False)
        ]
        if label is not None:
            candidates = [ex for ex in candidates if ex.label == label]
        if not candidates:
            labels = [f"{ex.label} ({type(ex).__name__})" for ex in config.executors]
            wanted = f"labelled {label!r}" if label is not None else "at all"
            raise ValueError(
                f"the Parsl config has no HighThroughputExecutor {wanted} "
                f"(without MPI mode); it has: {', '.join(labels) or 'no executors'}"
            )
        self._htex: HighThroughputExecutor = candidates[0]
        self._huge_pages = huge_pages_setting(huge_pages_default(), thp_mode())
        for ex in config.executors:
            provider = getattr(ex, "provider", None)
            if provider is not None and hasattr(provider, "worker_init"):
                provider.worker_init = _worker_init_with_venv(
                    provider.worker_init, self._huge_pages == "on"
                )
        for ex in candidates:
            ex.interchange_launch_cmd = _ignoring_sigint(ex.interchange_launch_cmd)
        os.environ["PATH"] = _path_with_venv(os.environ.get("PATH"))
        self.config = config
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._log_prefix = "simai-parsl-"
        self._sys_path = tuple(sys.path)
        self._submit_lock = threading.Lock()
        self._cond = threading.Condition()
        self._inflight: dict[int, Task] = {}
        self._attempts = 0
        self._closing = threading.Lock()
        self._closed_down = False
        try:
            self._dfk = DataFlowKernel(config)
        except BaseException:
            for ex in config.executors:  # stop the interchanges that did start
                try:
                    ex.shutdown()
                except Exception:  # noqa: BLE001 - best effort; the start error matters
                    pass
            self._remove_run_dir()
            raise
        _LIVE.add(self)
        atexit.register(self.terminate)
        _install_signal_handlers()

    def huge_pages(self, resources: Resources) -> str:
        return self._huge_pages  # its workers' setting, for every task

    # -- resources ----------------------------------------------------------------------

    def _limits(self) -> tuple[float, int, int, int | None]:
        """(cores per worker, GPUs per worker, nodes per block, cores per node or None)."""
        htex = self._htex
        provider = htex.provider
        cores_per_node = getattr(provider, "cores_per_node", None)
        if cores_per_node is None and type(provider).__name__ == "LocalProvider":
            cores_per_node = len(os.sched_getaffinity(0))
        gpus = 1 if htex.available_accelerators else 0
        nodes = int(getattr(provider, "nodes_per_block", 1) or 1)
        return float(htex.cores_per_worker), gpus, nodes, cores_per_node

    def _check_resources(self, task: Task) -> None:
        res = task.resources
        cores_per_worker, gpus_per_worker, nodes, cores_per_node = self._limits()
        where = f"HTEX {self._htex.label!r}"
        is_mpi = task.command is not None and task.command.mpi
        if not is_mpi:
            if res.ranks > 1 or res.nodes > 1:
                raise ValueError(
                    f"{task.label} asks for {res.ranks} ranks; only a Command runs MPI"
                )
            if res.cpus > cores_per_worker:
                raise ValueError(
                    f"{task.label} asks for {res.cpus} cores but each worker of {where} has "
                    f"cores_per_worker={cores_per_worker:g}; build the HighThroughputExecutor "
                    f"with cores_per_worker>={res.cpus}"
                )
            if res.gpus > gpus_per_worker:
                raise ValueError(
                    f"{task.label} asks for {res.gpus} GPUs but each worker of {where} has "
                    f"{gpus_per_worker} (Parsl gives a worker one of available_accelerators)"
                )
            return
        if res.nodes > nodes:
            raise ValueError(
                f"{task.label} asks for {res.nodes} nodes but a block of {where} has "
                f"nodes_per_block={nodes}"
            )
        cpus, _ = res.per_node()
        if cores_per_node is not None and cpus > cores_per_node:
            raise ValueError(
                f"{task.label} needs {cpus} cores on a node but the provider of {where} "
                f"gives cores_per_node={cores_per_node}"
            )

    # -- Executor hooks -----------------------------------------------------------------

    def _prepare(self, task: Task) -> None:
        if self._closed_down:
            raise RuntimeError("the Parsl executor has shut down")
        self._check_resources(task)
        task.huge_pages = self.huge_pages(task.resources)
        if self._huge_pages == "on" and not task.resources.huge_pages:
            raise ValueError(
                f"{task.label} opts out of huge pages, but the Parsl executor's workers got "
                "them when they started, for every task; set SIMAI_HUGE_PAGES=0 before the "
                "executor starts to turn them off for all"
            )
        if task.command is not None:
            probe = copy.copy(task.command)
            probe.mpi = False
            probe.full_argv()  # the executable must exist; the MPI launcher is found later
            return
        task.backend_data = checked_payload(task, "a Parsl worker")

    def _run(self, task: Task) -> None:
        if self._closed_down:
            raise TaskTerminated("the Parsl executor has shut down")
        if not task.start():
            return
        if task.command is not None:
            stdout, stderr = self._log_paths(task)
            buffer = pickle.dumps((task.command, stdout, stderr), protocol=5)
            kind = "command"
        else:
            buffer = task.backend_data
            if buffer is None:  # arguments that were futures are resolved only now
                buffer = task.backend_data = dumps_payload(task.fn, task.args, task.kwargs)
            kind = "python"
        context = {
            "task_executor": {"f": _EXECUTE, "a": (kind, task.walltime, task.label, self._sys_path)}
        }
        with self._cond:
            self._attempts += 1
            self._inflight[task.id] = task
        try:
            with self._submit_lock:
                future = self._htex.submit_payload(context, buffer)
        except BaseException:
            self._attempt_over(task)
            raise
        future.add_done_callback(lambda fut, task=task: self._on_done(task, fut))

    def _on_done(self, task: Task, fut: Future) -> None:
        error = fut.exception()
        result = None if error is not None else fut.result()
        if task.command is not None:  # its CommandResult or error tells what it used
            measured = result if error is None else error
            task.cpu_time = getattr(measured, "cpu_time", None)
            task.max_rss = getattr(measured, "max_rss", None)
        if error is not None and type(error).__name__ in ("WorkerLost", "ManagerLost"):
            lost = WorkerLostError(f"the Parsl worker running {task.label} was lost: {error}")
            lost.__cause__ = error
            error = lost
        try:
            self._finish(task, result, error)
        finally:
            self._attempt_over(task)

    def _attempt_over(self, task: Task) -> None:
        with self._cond:
            self._attempts -= 1
            if self._inflight.get(task.id) is task and task.future.done():
                del self._inflight[task.id]
            self._cond.notify_all()

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        if not wait:
            threading.Thread(target=self._drain_and_close, name="simai-parsl-shutdown",
                             daemon=True).start()  # fmt: skip
            return
        try:
            self._drain_and_close()
        except BaseException:
            self.terminate()
            raise

    def terminate(self) -> None:
        """Stop the DataFlowKernel now: blocks cancelled, unfinished futures fail."""
        self._stop_accepting(cancel_waiting=True)
        self._close()

    # -- internals ----------------------------------------------------------------------

    def _drain_and_close(self) -> None:
        with self._cond:
            while self._attempts or self._waiting:
                if self._closed_down:
                    return
                self._cond.wait(0.05)
        self._close()

    def _close(self) -> None:
        with self._closing:
            if self._closed_down:
                return
            self._closed_down = True
        _LIVE.discard(self)
        atexit.unregister(self.terminate)
        try:
            self._cleanup_dfk()
        finally:
            with self._cond:
                left = list(self._inflight.values())
                self._inflight.clear()
                self._cond.notify_all()
            for task in left:
                self._set_exception(
                    task, TaskTerminated("the Parsl executor was shut down before the task ended")
                )
            self._remove_run_dir()

    def _cleanup_dfk(self, grace: float = 2.0) -> None:
        """``DataFlowKernel.cleanup()``, bounded when the interchange has died.

        Before it stops the interchange, cleanup joins Parsl's job-status poller and scales
        the blocks in, and both ask the interchange over a command channel that has no
        timeout: if the interchange died (killed, crashed, out of memory), cleanup would
        wait forever. When the interchange has been dead for ``grace`` seconds and Parsl has
        not begun to shut it down, the blocks are cancelled here instead and the stuck
        cleanup is left to its daemon thread.
        """
        done = threading.Event()
        errors: list[BaseException] = []

        def cleanup() -> None:
            try:
                self._dfk.cleanup()
            except BaseException as e:  # noqa: BLE001 - re-raised in the closing thread
                errors.append(e)
            finally:
                done.set()

        threading.Thread(target=cleanup, name="simai-parsl-cleanup", daemon=True).start()
        stopping = getattr(self._htex, "_result_queue_thread_exit", None)  # set by its shutdown
        dead_since = None
        while not done.wait(0.1):
            proc = self._htex.interchange_proc
            if proc is None or proc.poll() is None or stopping is None or stopping.is_set():
                dead_since = None
            elif dead_since is None:
                dead_since = time.monotonic()
            elif time.monotonic() - dead_since > grace:
                self._cancel_blocks()
                return
        if errors:
            raise errors[0]

    def _cancel_blocks(self) -> None:
        """Cancel the HTEX's blocks through its provider (what cleanup would have done)."""
        jobs = list(self._htex.blocks_to_job_id.values())
        warnings.warn(
            f"the Parsl interchange of HTEX {self._htex.label!r} died before shutdown; "
            f"cancelling its blocks directly ({len(jobs)} job(s))",
            RuntimeWarning,
            stacklevel=4,
        )
        if jobs and self._htex.provider is not None:
            try:
                self._htex.provider.cancel(jobs)
            except Exception as e:  # noqa: BLE001 - best effort; the workers time out anyway
                warnings.warn(f"cancelling Parsl blocks {jobs} failed: {e}", RuntimeWarning,
                              stacklevel=4)  # fmt: skip

    def _remove_run_dir(self) -> None:
        if self._own_run_dir is not None:
            shutil.rmtree(self._own_run_dir, ignore_errors=True)


# -- process-wide cleanup -------------------------------------------------------------------


def _install_signal_handlers() -> None:
    """On SIGTERM (when nobody else handles it): stop every ParslExecutor, then die of it."""
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    _signals_installed = True
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        for executor in list(_LIVE):
            try:
                executor.terminate()
            except Exception:  # noqa: BLE001 - best effort while dying
                pass
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)


# -- worker side ----------------------------------------------------------------------------

_paths_added: tuple[str, ...] = ()


def _execute(buffer: bytes, kind: str, walltime: float | None, label: str, sys_path: tuple) -> Any:
    """Run one simai task inside a Parsl worker (HTEX ``task_executor`` entry point)."""
    global _paths_added
    if sys_path != _paths_added:
        sys.path.extend(p for p in sys_path if p not in sys.path)
        _paths_added = sys_path
    if kind == "command":
        cmd, stdout, stderr = pickle.loads(buffer)
        env = cmd.environment()
        return run_command(
            cmd,
            cmd.full_argv(env),
            env=env,
            stdout=stdout,
            stderr=stderr,
            walltime=walltime,
            label=label,
        )
    if walltime is not None:
        return _run_forked(buffer, walltime, label)
    return _call(buffer)


def _call(buffer: bytes) -> Any:
    fn, args, kwargs = pickle.loads(buffer)
    if isinstance(fn, bytes):
        fn = pickle.loads(fn)
    fn = getattr(fn, "__simai_function__", fn)
    return fn(*args, **kwargs)


def _run_forked(buffer: bytes, walltime: float, label: str) -> Any:
    """Run the task in a forked child in its own session; kill its tree at ``walltime``."""
    import cloudpickle

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_fd)
        code = 0
        try:
            os.setsid()
            try:
                out = cloudpickle.dumps((True, _call(buffer)), protocol=5)
            except BaseException as exc:  # noqa: BLE001 - sent to the parent
                try:
                    out = cloudpickle.dumps((False, exc), protocol=5)
                except Exception:  # noqa: BLE001
                    out = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
            with os.fdopen(write_fd, "wb") as fh:
                fh.write(out)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + walltime
    chunks = []
    timed_out = False
    with os.fdopen(read_fd, "rb", buffering=0) as fh:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fh], [], [], left)[0]:
                timed_out = True
                break
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        kill_tree(pid)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        raise TaskTimeoutError(
            f"{label} ran past its walltime of {walltime:g} s; its process tree was killed"
        )
    if not chunks:
        raise WorkerLostError(
            f"the process running {label} died with status {os.waitstatus_to_exitcode(status)}"
        )
    ok, value = pickle.loads(b"".join(chunks))
    if ok:
        return value
    raise value
