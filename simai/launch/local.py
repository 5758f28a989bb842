"""The embedded executor for one node: warm Python workers, resource-aware, no fixed pool.

One scheduler thread owns every worker. Tasks wait in per-shape queues (cores, GPUs,
kind) until enough free cores and GPUs exist; each running task holds specific cores
(``sched_setaffinity``) and GPUs (``CUDA_VISIBLE_DEVICES``/``ZE_AFFINITY_MASK``). Python
tasks run in warm worker interpreters started with ``subprocess`` (a fresh interpreter,
like multiprocessing's forkserver, but without its process-wide state, without
re-running ``__main__`` and safe with threads and CUDA in the parent). When many short
tasks are queued, several are sent to a worker in one message. Commands run as
subprocesses in their own session, so walltime, shutdown and Ctrl-C kill the whole tree.

A task of ``cpus=0`` (one that mostly waits) holds no core: it runs on all of the executor's
cores at a lower CPU priority (nice +10), at most ``4 x cores`` of them at once. Tasks get huge
pages for their large allocations unless they or ``$SIMAI_HUGE_PAGES`` opt out (see
``simai.launch.memory``); a worker's environment and priority are set when it starts, so
workers are kept per kind (huge pages or not, waiting or not).
"""

from __future__ import annotations

import atexit
import collections
import heapq
import itertools
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from simai.checks import check_int
from simai.launch.executor import Executor, Task, TaskTerminated, TaskTimeoutError, WorkerLostError
from simai.launch.memory import huge_pages_default, huge_pages_env, huge_pages_setting, thp_mode
from simai.launch.payload import checked_payload, dumps_payload
from simai.launch.processes import kill_tree, run_command
from simai.launch.resources import Resources
from simai.launch.signals import leave_stop_signals_to_main_thread, unblock_stop_signals
from simai.launch.usage import KILLED, fmt_mib, oom_watch, spawn_floor, wait_process

__all__ = ["LocalExecutor", "node_gpus"]

try:
    import cloudpickle as _cloudpickle
except ImportError:  # pragma: no cover - cloudpickle is a dependency
    _cloudpickle = None

_HEADER = struct.Struct("<Q")
_WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))
_GPU_VARS = ("CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")
_SHORT_TASK = 0.005
#: tasks of cpus=0 (they mostly wait) that may run at once, per core of the executor
_WAITING_PER_CORE = 4
_MAX_BATCH = 64
# how long a fresh worker may take to start (interpreter, imports) before its first task's
# walltime begins; a worker that never reports ready is still stopped after this more
_STARTUP_ALLOWANCE = 60.0
_LIVE: weakref.WeakSet[LocalExecutor] = weakref.WeakSet()


def node_gpus(env: dict[str, str] | None = None) -> list[str]:
    """GPU ids visible to this process: ``CUDA_VISIBLE_DEVICES``, else ``ZE_AFFINITY_MASK``."""
    env = os.environ if env is None else env
    for var in _GPU_VARS:
        value = env.get(var)
        if value is not None:
            return [v.strip() for v in value.split(",") if v.strip()]
    return []


def _signal_text(returncode: int | None) -> str:
    if returncode is None:
        return "an unknown status"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name} ({-returncode})"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class _RemoteTraceback(Exception):
    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class _Worker:
    """A warm interpreter and the tasks sent to it, in order."""

    _fds = itertools.count()

    def __init__(self, executor_sys_path: list[str], kind: tuple[bool, bool]) -> None:
        # the out-of-memory kill counts of the cgroups it starts in (ours), see _on_worker_exit
        self.oom_before = oom_watch.before(os.getpid())
        self.floor = spawn_floor(False)  # its ru_maxrss starts from ours (see Reaper)
        self.kind = kind  # (huge pages, waiting): its environment and priority
        huge, waiting = kind
        env = dict(os.environ)
        if huge:
            env.update(huge_pages_env(env))
        parent, child = socket.socketpair()
        try:  # -P: the script's own folder (simai/launch) must not shadow top-level packages
            self.proc = subprocess.Popen(
                [sys.executable, "-P", _WORKER_SCRIPT, str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
                env=env,
            )
        finally:
            child.close()
        if waiting:
            _lower_priority(self.proc.pid)
        parent.setblocking(False)
        self.sock = parent
        self.fd = parent.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.outstanding: collections.deque[Task] = collections.deque()
        self.shape: tuple | None = None
        self.cores: tuple[int, ...] = ()
        self.last_cores: tuple[int, ...] = ()
        self.gpus: tuple[str, ...] = ()
        self.gpu_key: tuple[str, ...] | None = None
        self.deadline: float | None = None
        self.ready = False  # the worker process has started and said so
        self.walltime: float | None = None  # of the task it runs, while it starts
        self.kill_reason: BaseException | None = None
        self.alone = False  # it runs a task that was lost with others, by itself
        self.send(("init", list(sys.path)))

    def send(self, msg: Any) -> None:
        data = pickle.dumps(msg, protocol=5)
        self.wbuf += _HEADER.pack(len(data))
        self.wbuf += data

    def flush(self) -> bool:
        """Write what the socket takes now; True when everything went."""
        while self.wbuf:
            try:
                n = self.sock.send(self.wbuf)
            except BlockingIOError:
                return False
            except OSError:
                self.wbuf.clear()
                return True
            del self.wbuf[:n]
        return True

    def read(self) -> tuple[list[tuple], bool]:
        """Frames available now, and whether the worker closed its end."""
        eof = False
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            self.rbuf += chunk
            if len(chunk) < (1 << 20):
                break
        frames, pos, buf = [], 0, self.rbuf
        end = len(buf)
        while end - pos >= 8:
            (size,) = _HEADER.unpack_from(buf, pos)
            if end - pos - 8 < size:
                break
            frames.append(pickle.loads(memoryview(buf)[pos + 8 : pos + 8 + size]))
            pos += 8 + size
        if pos:
            del buf[:pos]
        return frames, eof

    def kill(self) -> None:
        kill_tree(self.proc.pid)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class LocalExecutor(Executor):
    """Runs tasks and commands on this node, each bound to its own cores and GPUs.

    ``cores``: the core ids to use (default ``os.sched_getaffinity(0)``). ``gpus``: a count
    or a list of GPU ids (default from ``CUDA_VISIBLE_DEVICES`` or ``ZE_AFFINITY_MASK``).
    ``oversubscribe``: ``False`` keeps every core and GPU to one task at a time; ``True``
    lets up to 4 tasks share one (Slurm's default), an int sets that number. ``prestart``:
    workers to start at once (default ``min(cores, 4)``). ``log_dir``: where commands'
    stdout/stderr go by default (a new ``simai-launch-*`` temporary directory, kept after
    shutdown so logs stay readable).
    """

    def __init__(
        self,
        *,
        cores: Iterable[int] | int | None = None,
        gpus: int | Sequence[str] | None = None,
        oversubscribe: bool | int = False,
        prestart: int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        allowed = sorted(_allowed_cores())
        if cores is None:
            core_list = allowed
        elif isinstance(cores, int) and not isinstance(cores, bool):
            core_list = allowed[: check_int("cores", cores, 1, maximum=len(allowed))]
        else:
            core_list = sorted(set(cores))
            bad = [c for c in core_list if c not in allowed]
            if bad or not core_list:
                raise ValueError(
                    f"cores {core_list} are not all usable here; this process may use {allowed}"
                )
        if gpus is None:
            gpu_list = node_gpus()
        elif isinstance(gpus, int) and not isinstance(gpus, bool):
            gpu_list = [str(i) for i in range(check_int("gpus", gpus, 0))]
        else:
            gpu_list = [str(g) for g in gpus]
        if oversubscribe is True:
            share = 4
        elif oversubscribe is False:
            share = 1
        else:
            share = check_int("oversubscribe", oversubscribe, 1)
        self.cores: tuple[int, ...] = tuple(core_list)
        self.gpus: tuple[str, ...] = tuple(gpu_list)
        self.oversubscribe = share
        self._has_gpus = bool(gpu_list) or any(v in os.environ for v in _GPU_VARS)
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._core_load = dict.fromkeys(self.cores, 0)
        self._gpu_load = dict.fromkeys(self.gpus, 0)
        self._max_workers = len(self.cores) * share
        self._max_waiting = _WAITING_PER_CORE * len(self.cores)
        self._waiting_running = 0  # tasks of cpus=0 running now
        self._huge_pages = huge_pages_default()
        self._thp_mode = thp_mode()
        if prestart is None:
            prestart = min(len(self.cores), 4)
        else:
            check_int("prestart", prestart, 0)
        self._prestart = prestart

        self._incoming: collections.deque[tuple] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._loop_exited = False
        self._pids: set[int] = set()
        self._wake_pending = False
        self._queues: dict[tuple, collections.deque[Task]] = {}
        self._seq = itertools.count()
        self._workers: dict[int, _Worker] = {}
        self._idle: list[_Worker] = []
        self._active: set[_Worker] = set()
        self._running_tasks: dict[int, Task] = {}
        self._commands: dict[int, subprocess.Popen] = {}
        self._command_tasks: dict[int, Task] = {}
        self._command_lock = threading.Lock()
        self._deadlines: list[tuple[float, int, _Worker]] = []
        self._ema: dict[tuple, float] = {}
        self._suspects: set[int] = set()  # ids of tasks lost with others (_on_worker_exit)
        self._outstanding = 0
        self._stop = False
        self._terminated = False
        self._cancel_queued = False
        self._poll = select.poll()
        self._poll.register(self._wake_r.fileno(), select.POLLIN)
        self._thread = threading.Thread(target=self._loop, name="simai-local-executor", daemon=True)
        _LIVE.add(self)
        self._thread.start()

    # -- Executor hooks ---------------------------------------------------------------

    def _prepare(self, task: Task) -> None:
        res = task.resources
        if res.nodes > 1:
            raise ValueError(
                f"{task.label} asks for {res.nodes} nodes; LocalExecutor runs on one node "
                "(use the parsl executor for several)"
            )
        cpus, gpus = res.total_cpus, res.total_gpus
        if cpus > len(self.cores):
            raise ValueError(
                f"{task.label} asks for {cpus} cores but this LocalExecutor has "
                f"{len(self.cores)} (cores {list(self.cores)})"
            )
        if gpus > len(self.gpus):
            raise ValueError(
                f"{task.label} asks for {gpus} GPUs but this LocalExecutor has "
                f"{len(self.gpus)}" + (f" ({list(self.gpus)})" if self.gpus else "")
            )
        task.huge_pages = self.huge_pages(res)
        if task.command is not None:
            task.backend_data = task.command.full_argv()
            return
        task.backend_data = checked_payload(task, "a worker process")

    def _run(self, task: Task) -> None:
        if self._terminated:
            raise TaskTerminated("the executor was terminated")
        if task.command is None and task.backend_data is None:
            task.backend_data = dumps_payload(task.fn, task.args, task.kwargs)
        if self._loop_exited:
            raise TaskTerminated("the executor has shut down")
        self._post(("task", task))

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self._post(("shutdown", cancel_futures))
        if wait and threading.current_thread() is not self._thread:
            try:
                self._thread.join()
            except BaseException:
                self.terminate()
                raise

    def terminate(self) -> None:
        """Kill every worker and command now; unfinished futures fail. Idempotent."""
        self._stop_accepting(cancel_waiting=True)
        self._terminated = True
        with self._command_lock:
            pids = list(self._pids) + list(self._commands)
        for pid in pids:
            kill_tree(pid)
        self._post(("terminate",))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def huge_pages(self, resources: Resources) -> str:
        return huge_pages_setting(self._huge_pages and resources.huge_pages, self._thp_mode)

    # -- scheduler thread -------------------------------------------------------------

    def _post(self, item: tuple) -> None:
        self._incoming.append(item)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass

    def _loop(self) -> None:
        leave_stop_signals_to_main_thread()
        try:
            for _ in range(self._prestart):
                self._spawn((huge_pages_setting(self._huge_pages, self._thp_mode) == "on", False))
            wake_fd = self._wake_r.fileno()
            while True:
                self._drain_incoming()
                if self._terminated:
                    break
                self._dispatch()
                self._flush_all()
                if self._stop and self._outstanding == 0 and not self._waiting:
                    break
                timeout = self._poll_timeout()
                if self._stop and (timeout is None or timeout > 100):
                    timeout = 100
                for fd, events in self._poll.poll(timeout):
                    if fd == wake_fd:
                        continue
                    worker = self._workers.get(fd)
                    if worker is None:
                        continue
                    if events & select.POLLOUT and worker.flush():
                        self._poll.modify(fd, select.POLLIN)
                    if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        self._on_readable(worker)
                self._check_deadlines()
        except BaseException as exc:  # noqa: BLE001 - never leave futures hanging
            self._fail_everything(RuntimeError(f"the local executor's scheduler failed: {exc!r}"))
            raise
        finally:
            self._stop_all()

    def _drain_incoming(self) -> None:
        # the wake-up bytes go before the flag: a post in between then finds the flag still
        # set and its item is taken below, while a post after the reset sends a byte again
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._wake_pending = False
        incoming = self._incoming
        while incoming:
            item = incoming.popleft()
            kind = item[0]
            if kind == "task":
                task = item[1]
                shape = _shape(task, task.command is not None)
                queue = self._queues.get(shape)
                if queue is None:
                    queue = self._queues[shape] = collections.deque()
                self._outstanding += 1
                if task.attempt:
                    queue.appendleft(task)
                else:
                    queue.append(task)
            elif kind == "done":
                _, task, result, error, cores, gpus = item
                self._release(cores, gpus)
                self._outstanding -= 1
                self._finish(task, result, error)
            elif kind == "shutdown":
                self._stop = True
                if item[1]:
                    self._cancel_all_queued()
            elif kind == "terminate":
                self._terminated = True

    def _cancel_all_queued(self) -> None:
        for queue in self._queues.values():
            while queue:
                task = queue.popleft()
                self._outstanding -= 1
                if not task.started:
                    task.future.cancel()
                else:
                    self._set_exception(task, RuntimeError("executor shut down before retry"))

    def _allocate(self, cpus: int, gpus: int) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
        """Cores and GPUs for a task, or None when they are not free; a task of ``cpus=0``
        gets no core, ``()``, and counts among the waiting tasks instead."""
        share = self.oversubscribe
        free_cores = [c for c in self.cores if self._core_load[c] < share]
        if len(free_cores) < cpus or (not cpus and self._waiting_running >= self._max_waiting):
            return None
        free_gpus = [g for g in self.gpus if self._gpu_load[g] < share]
        if len(free_gpus) < gpus:
            return None
        if not cpus:
            self._waiting_running += 1
        cores = tuple(sorted(sorted(free_cores, key=self._core_load.__getitem__)[:cpus]))
        chosen = tuple(sorted(free_gpus, key=self._gpu_load.__getitem__)[:gpus])
        for c in cores:
            self._core_load[c] += 1
        for g in chosen:
            self._gpu_load[g] += 1
        return cores, chosen

    def _release(self, cores: tuple[int, ...], gpus: Iterable[str]) -> None:
        if not cores:
            self._waiting_running -= 1
        for c in cores:
            self._core_load[c] -= 1
        for g in gpus:
            self._gpu_load[g] -= 1

    def _gpu_env(self, gpus: tuple[str, ...]) -> dict[str, str] | None:
        if not self._has_gpus:
            return None
        value = ",".join(gpus)
        return {var: value for var in _GPU_VARS}

    def _spawn(self, kind: tuple[bool, bool]) -> _Worker:
        worker = _Worker(list(sys.path), kind)
        with self._command_lock:
            self._pids.add(worker.proc.pid)
        self._workers[worker.fd] = worker
        self._poll.register(worker.fd, select.POLLIN | select.POLLOUT)
        self._idle.append(worker)
        return worker

    def _take_worker(
        self, gpus: tuple[str, ...], cores: tuple[int, ...], kind: tuple[bool, bool]
    ) -> _Worker:
        key = gpus or None
        best = None
        for worker in self._idle:
            if worker.kind != kind:
                continue
            if worker.gpu_key == key or worker.gpu_key is None:
                if best is None or (worker.last_cores == cores and best.last_cores != cores):
                    best = worker
                if worker.gpu_key == key and worker.last_cores == cores:
                    break
        if best is None:
            if len(self._workers) >= self._max_workers + self._waiting_running + 1:
                for worker in self._idle:
                    self._retire(worker)
                    break
            best = self._spawn(kind)
        self._idle.remove(best)
        return best

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        self._workers.pop(worker.fd, None)
        with self._command_lock:
            self._pids.discard(worker.proc.pid)
        if worker in self._idle:
            self._idle.remove(worker)
        self._active.discard(worker)
        try:
            self._poll.unregister(worker.fd)
        except (KeyError, ValueError):
            pass
        worker.close()
        try:
            worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.kill()

    def _dispatch(self) -> None:
        if not any(self._queues.values()):
            return
        shapes = sorted(
            (shape for shape, queue in self._queues.items() if queue),
            key=lambda s: self._queues[s][0].id,
        )
        for shape in shapes:
            queue = self._queues[shape]
            cpus, gpus, is_command, has_walltime, huge = shape
            while queue:
                alloc = self._allocate(cpus, gpus)
                if alloc is None:
                    break
                if is_command:
                    task = self._pop_startable(queue)
                    if task is None:
                        self._release(*alloc)
                        break
                    self._start_command(task, *alloc)
                    continue
                worker = self._take_worker(alloc[1], alloc[0], (huge, not cpus))
                worker.shape, worker.cores, worker.gpus = shape, alloc[0], alloc[1]
                if alloc[1]:
                    worker.gpu_key = alloc[1]
                self._active.add(worker)
                if not self._send_batch(worker, queue, has_walltime):
                    self._idle_worker(worker)
                    break
        for worker in list(self._active):
            queue = self._queues.get(worker.shape)  # type: ignore[arg-type]
            if (
                not queue
                or worker.deadline is not None
                or worker.alone
                or len(worker.outstanding) > 2
            ):
                continue
            if self._ema.get(worker.shape, 1.0) < _SHORT_TASK:  # type: ignore[arg-type]
                self._send_batch(worker, queue, False)

    def _pop_startable(self, queue: collections.deque[Task]) -> Task | None:
        while queue:
            task = queue.popleft()
            if task.start():
                return task
            self._outstanding -= 1
        return None

    def _send_batch(self, worker: _Worker, queue: collections.deque[Task], single: bool) -> bool:
        size = 1
        if not single and self._ema.get(worker.shape, 1.0) < _SHORT_TASK:  # type: ignore[arg-type]
            share = max(1, len(self._active))
            size = max(1, min(_MAX_BATCH, len(queue) // (2 * share)))
        batch = []
        env = self._gpu_env(worker.gpus)
        cores = set(worker.cores or self.cores)
        journal = None if self.memo is None else self.memo.journal
        while queue and len(batch) < size:
            task = self._pop_startable(queue)
            if task is None:
                break
            if task.id in self._suspects:  # lost with others: it runs by itself
                if batch:
                    queue.appendleft(task)
                    break
                self._suspects.discard(task.id)
                worker.alone, size = True, 1
            memo = None  # the worker keeps the memo in its journal (see _worker.py)
            if journal is not None and task.command is None:
                memo = (task.name, task.memo_key)
            batch.append((task.id, task.backend_data, cores, env, memo))
            worker.outstanding.append(task)
        if not batch:
            return False
        if single and worker.outstanding[0].walltime is not None:
            task = worker.outstanding[0]
            worker.walltime = task.walltime
            # a worker still starting gets its walltime from when it is ready (see _on_readable)
            extra = 0.0 if worker.ready else _STARTUP_ALLOWANCE
            self._set_deadline(worker, time.monotonic() + task.walltime + extra)  # type: ignore[operator]
        worker.send(("run", batch, journal))
        return True

    def _set_deadline(self, worker: _Worker, deadline: float) -> None:
        worker.deadline = deadline
        heapq.heappush(self._deadlines, (deadline, worker.outstanding[0].id, worker))

    def _idle_worker(self, worker: _Worker) -> None:
        worker.alone = False
        self._active.discard(worker)
        self._release(worker.cores, worker.gpus)
        worker.last_cores = worker.cores
        worker.shape, worker.cores, worker.gpus, worker.deadline = None, (), (), None
        worker.walltime = None
        self._idle.append(worker)

    def _flush_all(self) -> None:
        for worker in self._active:
            if worker.wbuf and not worker.flush():
                self._poll.modify(worker.fd, select.POLLIN | select.POLLOUT)
        for worker in self._idle:
            if worker.wbuf and not worker.flush():
                self._poll.modify(worker.fd, select.POLLIN | select.POLLOUT)

    def _on_readable(self, worker: _Worker) -> None:
        frames, eof = worker.read()
        ended: list[tuple[Task, Any, BaseException | None]] = []
        outstanding, shape = worker.outstanding, worker.shape
        ema = self._ema.get(shape)  # type: ignore[arg-type]
        for frame in frames:
            if len(frame) == 1:
                if frame == ("ready",):
                    worker.ready = True
                    if worker.deadline is not None and worker.walltime is not None:
                        self._set_deadline(worker, time.monotonic() + worker.walltime)
                    continue
                for seconds, kept, blob, cpu, rss in frame[0]:  # results with a memo: kept
                    task = outstanding.popleft()  # by the worker, or for the memo to keep
                    task.cpu_time, task.max_rss = cpu, rss
                    ema = seconds if ema is None else 0.8 * ema + 0.2 * seconds
                    try:
                        value = pickle.loads(blob)
                    except Exception as exc:  # noqa: BLE001 - reported through the future
                        ended.append((task, None, exc))
                        continue
                    task.memo_kept = kept
                    if not kept:
                        task.result_bytes = blob
                    ended.append((task, value, None))
                continue
            task = outstanding.popleft()
            ok, value, tb, seconds, task.cpu_time, task.max_rss = frame[1:]
            ema = seconds if ema is None else 0.8 * ema + 0.2 * seconds
            if ok:
                ended.append((task, value, None))
            else:
                if tb:
                    value.__cause__ = _RemoteTraceback(tb)
                ended.append((task, None, value))
        if ema is not None:
            self._ema[shape] = ema  # type: ignore[index]
        self._outstanding -= len(ended)
        if ended:
            self._finish_many(ended)
        if eof:
            self._on_worker_exit(worker)
        elif not worker.outstanding and worker in self._active:
            self._idle_worker(worker)

    def _on_worker_exit(self, worker: _Worker) -> None:
        try:
            returncode, usage, after = wait_process(worker.proc, 2, worker.floor)
        except subprocess.TimeoutExpired:
            worker.kill()
            returncode, usage, after = wait_process(worker.proc, floor=worker.floor)
        lost = list(worker.outstanding)
        worker.outstanding.clear()
        reason = worker.kill_reason
        if reason is None and self._terminated:  # terminate() killed it, before the loop knew
            reason = TaskTerminated("the executor was terminated before the task ended")
        if worker in self._active:
            self._release(worker.cores, worker.gpus)
        self._forget(worker)
        if len(lost) > 1 and reason is None and not worker.alone:
            # A worker holds the results of quick tasks for a moment (see _worker.py), so
            # the task that killed it may be any of these: each runs again by itself (an
            # out-of-memory kill is claimed here, so that no later death is blamed on it).
            if returncode in KILLED:
                oom_watch.claim(worker.oom_before, after)
            for task in reversed(lost):
                self._suspects.add(task.id)
                self._requeue(task)
        elif lost:
            first, rest = lost[0], lost[1:]
            self._outstanding -= 1
            first.max_rss = usage.max_rss  # the worker's peak: its last task's, or above
            if reason is None:
                pid = worker.proc.pid
                if returncode in KILLED and oom_watch.claim(worker.oom_before, after):
                    reason = WorkerLostError(
                        f"the worker process running {first.label} was killed by the "
                        f"kernel's out-of-memory killer (peak memory {fmt_mib(usage.max_rss)}, "
                        f"pid {pid})",
                        returncode=returncode,
                        oom=True,
                        max_rss=usage.max_rss,
                    )
                else:
                    reason = WorkerLostError(
                        f"the worker process running {first.label} died with "
                        f"{_signal_text(returncode)} (pid {pid})",
                        returncode=returncode,
                        max_rss=usage.max_rss,
                    )
            self._finish(first, None, reason)
            for task in reversed(rest):
                self._requeue(task)

    def _requeue(self, task: Task) -> None:
        self._queues.setdefault(_shape(task, False), collections.deque()).appendleft(task)

    def _poll_timeout(self) -> int | None:
        while self._deadlines and self._deadlines[0][2].deadline != self._deadlines[0][0]:
            heapq.heappop(self._deadlines)
        if not self._deadlines:
            return None
        return max(0, int((self._deadlines[0][0] - time.monotonic()) * 1000) + 1)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, worker = heapq.heappop(self._deadlines)
            if worker.deadline != deadline or not worker.outstanding:
                continue
            task = worker.outstanding[0]
            worker.kill_reason = TaskTimeoutError(
                f"{task.label} ran past its walltime of {task.walltime:g} s; "
                "its process tree was killed"
            )
            worker.kill()
            self._on_worker_exit(worker)

    # -- commands ---------------------------------------------------------------------

    def _start_command(self, task: Task, cores: tuple[int, ...], gpus: tuple[str, ...]) -> None:
        with self._command_lock:
            self._command_tasks[task.id] = task
        thread = threading.Thread(
            target=self._command_thread,
            args=(task, cores, gpus),
            name=f"simai-command-{task.id}",
            daemon=True,
        )
        thread.start()

    def _command_thread(self, task: Task, cores: tuple[int, ...], gpus: tuple[str, ...]) -> None:
        leave_stop_signals_to_main_thread()
        cmd = task.command
        assert cmd is not None
        result: Any = None
        error: BaseException | None = None
        core_set, waiting = set(cores or self.cores), not cores
        started: list[subprocess.Popen] = []

        def popen(argv: list[str], **options: Any) -> subprocess.Popen:
            with self._command_lock:
                if self._terminated:
                    raise RuntimeError("the executor was terminated")
                proc = subprocess.Popen(
                    argv, preexec_fn=lambda: _child_setup(core_set, waiting), **options
                )
                self._commands[proc.pid] = proc
            started.append(proc)
            return proc

        try:
            stdout, stderr = self._log_paths(task)
            env = cmd.environment()
            env.update(self._gpu_env(gpus) or {})
            if task.huge_pages == "on":
                env.update(huge_pages_env(env))
            result = run_command(
                cmd,
                task.backend_data,
                env=env,
                stdout=stdout,
                stderr=stderr,
                walltime=task.walltime,
                label=task.label,
                popen=popen,
                popen_forks=True,  # a preexec_fn: subprocess forks
            )
        except BaseException as exc:  # noqa: BLE001 - reported through the future
            error = exc
        finally:
            with self._command_lock:
                for proc in started:
                    self._commands.pop(proc.pid, None)
        measured = result if error is None else error
        task.cpu_time = getattr(measured, "cpu_time", None)
        task.max_rss = getattr(measured, "max_rss", None)
        with self._command_lock:
            mine = self._command_tasks.pop(task.id, None) is not None
            if mine and not self._loop_exited:
                self._post(("done", task, result, error, cores, gpus))
                return
        if mine:
            self._finish(task, result, error)

    # -- ending -----------------------------------------------------------------------

    def _fail_everything(self, error: BaseException) -> None:
        for queue in self._queues.values():
            while queue:
                self._set_exception(queue.popleft(), error)
        for worker in list(self._workers.values()):
            while worker.outstanding:
                self._set_exception(worker.outstanding.popleft(), error)

    def _stop_all(self) -> None:
        self._terminated = True
        for worker in list(self._workers.values()):
            if not worker.outstanding:
                worker.send(("exit",))
                worker.flush()
        deadline = time.monotonic() + 1.0
        for worker in list(self._workers.values()):
            try:
                if worker.outstanding:
                    raise subprocess.TimeoutExpired("worker", 0)
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.proc.wait()
        self._fail_everything(TaskTerminated("the executor was terminated before the task ended"))
        for worker in list(self._workers.values()):
            self._forget(worker)
        with self._command_lock:
            procs = list(self._commands.values())
        for proc in procs:
            kill_tree(proc.pid)
        with self._command_lock:
            self._loop_exited = True
        while self._incoming:
            item = self._incoming.popleft()
            if item[0] == "done":
                self._finish(item[1], item[2], item[3])
            elif item[0] == "task":
                self._set_exception(item[1], TaskTerminated("the executor has shut down"))
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        _LIVE.discard(self)


def _allowed_cores() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))  # no affinity API (macOS): nothing is pinned


def _shape(task: Task, is_command: bool) -> tuple[int, int, bool, bool, bool]:
    """The queue of a task: tasks of one shape can share a worker (or run as commands)."""
    res = task.resources
    return (
        res.total_cpus,
        res.total_gpus,
        is_command,
        task.walltime is not None,
        task.huge_pages == "on",
    )


def _lower_priority(pid: int) -> None:
    """Nice a process that mostly waits, so that its bursts never starve core holders."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, max(os.getpriority(os.PRIO_PROCESS, pid), 10))
    except (AttributeError, OSError):  # not POSIX, or gone already
        pass


def _child_setup(cores: set[int], waiting: bool = False) -> None:
    unblock_stop_signals()
    if waiting:
        _lower_priority(0)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; shutdown kills the group anyway
        pass


@atexit.register
def _terminate_all() -> None:
    for executor in list(_LIVE):
        try:
            executor.terminate()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
