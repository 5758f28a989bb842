"""The Workflow: one run of coupled tasks and components, its store, records and resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from simai import launch
from simai.checks import check_int
from simai.launch import Command, Executor, Resources, get_executor
from simai.launch.executor import Task, check_executor, failure_reason
from simai.launch.signals import leave_stop_signals_to_main_thread
from simai.store import ENV_PASSWORD, ENV_URL, Store, open_store
from simai.store.access import ENV_ACCESS, ENV_USER, EVERYTHING, StoreAccess
from simai.store.counters import COMPONENT_ENV
from simai.store.local import LocalStore, local_root
from simai.workflow import metrics
from simai.workflow.component import POLICIES, Component
from simai.workflow.memo import RecordsMemo
from simai.workflow.options import WorkflowOptions
from simai.workflow.records import Records
from simai.workflow.rundir import RunDir

ENV_RUN_DIR = metrics.ENV_RUN_DIR
ENV_RESUME = "SIMAI_RESUME"
STOP_REQUEST = "stop-request"
#: seconds a task that has not ended waits for a row: a short one gets one when it ends
HOLD = 1.0
#: the events that end a try: their rows tell what it used (cpu, peak memory)
_MEASURED = frozenset(("finished", "failed", "retried"))
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_log = logging.getLogger(__name__)


def _check_name(name: Any) -> str:
    """A workflow's name, which names its run directory: letters, digits, ``.``, ``_`` and
    ``-``, not ``.`` or ``..`` (TypeError for a non-str, ValueError for another str)."""
    what = "a workflow name (letters, digits, '.', '_' and '-'; not '.' or '..')"
    if not isinstance(name, str):
        raise TypeError(f"name must be {what}, not {name!r}")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"name must be {what}, not {name!r}")
    return name


def local_run_url(run_dir: str | os.PathLike[str]) -> str:
    """The node-local store of the run in `run_dir`, named after the directory, so that an
    attempt on the same node finds the store a killed attempt left behind."""
    tag = hashlib.sha256(str(Path(run_dir).absolute()).encode()).hexdigest()[:12]
    return f"local://run-{tag}"


class WorkflowStopped(KeyboardInterrupt):
    """The run was asked to stop (SIGTERM, `simai stop`): it unwinds like Ctrl-C."""


class Workflow:
    """A run: brings up the store, launches tasks and components, records everything.

    A node-local store keeps what `keep_store` says in the run directory's `store/local`
    (a compact copy a resume loads back): by default everything when the run does not
    complete (an error, Ctrl-C, SIGTERM at a job's time limit) and nothing when it does.
    After a SIGKILL nothing can be saved, but the store stays in /dev/shm, where a resume on
    the same node finds it. Tasks need none of this to be recalled: their results are in
    the run's records.

    Parameters
    ----------
    name : str
        The workflow's name, of letters, digits, ".", "_" and "-": its run directory is
        `runs/<name>` unless `run_dir` says otherwise, and a run directory belongs to one
        name.
    store : str
        "local" (node-local shared memory, the default), "file" (a directory in the run
        directory), "redis" (shards the workflow starts and stops), "dragon" (a Dragon DDict
        for the run, when the workflow runs under `dragon`), or the URL of a store that is
        already running.
    executor : str or Executor
        "local" (the default), "parsl" or an Executor.
    run_dir : path, optional
        The run directory (default `runs/<name>`).
    resume : bool, optional
        True continues a run: finished tasks are recalled, not rerun, and the store's
        contents come back; False starts over in the same directory; None (the default)
        follows $SIMAI_RESUME (set by `simai run --resume`).
    memoize : bool
        False keeps no memo of finished tasks, for runs that will not be resumed (or tasks
        that must run again when they are): a resume then runs every task again, and no
        task's result is pickled and kept, which makes short tasks and big results cheaper.
    keep_store : bool, list of str or None
        What of a node-local store outlives the run: None (the default) everything when the
        run does not complete and nothing when it does; True always everything, False
        nothing; a list of key prefixes always the values and streams under them.
    options : WorkflowOptions, optional
        Placement and tuning: the executor's configuration, the store's shards, cores and
        address, the layout and the components' heartbeat (see :class:`WorkflowOptions`).
    """

    def __init__(
        self,
        name: str,
        store: str = "local",
        executor: str | Executor = "local",
        run_dir: str | os.PathLike[str] | None = None,
        *,
        resume: bool | None = None,
        memoize: bool = True,
        keep_store: bool | Sequence[str] | None = None,
        options: WorkflowOptions | None = None,
    ) -> None:
        name = _check_name(name)
        if not isinstance(store, str):
            raise TypeError(
                f"store must be 'local', 'file', 'redis', 'dragon' or a store URL, not {store!r}"
            )
        if "://" not in store and store not in ("local", "file", "redis", "dragon"):
            raise ValueError(
                f"store must be 'local', 'file', 'redis', 'dragon' or a store URL, not {store!r}"
            )
        if store == "dragon":
            from simai.store.dragon import need_dragon

            need_dragon("Workflow(store='dragon')")
        options = WorkflowOptions() if options is None else options
        if not isinstance(options, WorkflowOptions):
            raise TypeError(f"options must be a WorkflowOptions, not {options!r}")
        options.check_store(store)
        check_executor(executor)
        if resume is not None and not isinstance(resume, bool):
            raise TypeError(f"resume must be True, False or None, not {resume!r}")
        if not isinstance(memoize, bool):
            raise TypeError(f"memoize must be True or False, not {memoize!r}")
        if keep_store is not None and not isinstance(keep_store, bool):
            if isinstance(keep_store, str) or not all(isinstance(p, str) for p in keep_store):
                raise ValueError(
                    f"keep_store must be None, True, False or a list of key prefixes, "
                    f"not {keep_store!r}"
                )
            keep_store = list(keep_store)
        self.name = name
        self.store_kind = store
        self.keep_store = keep_store
        self.resume = os.environ.get(ENV_RESUME) == "1" if resume is None else resume
        self.memoize = memoize
        self.options = options
        self._executor_spec = executor
        self._executor_config = dict(options.executor_config)
        self._run_dir_path = Path(run_dir) if run_dir is not None else Path("runs") / name
        self.components: dict[str, Component] = {}
        self.closing = False
        self._exit = contextlib.ExitStack()
        self._servers: Any = None
        self._admin_store: Store | None = None
        self._store_users: list[str] = []
        self._local_url: str | None = None
        self._dragon: Any = None  # the DDict store of store="dragon"
        self._saved_env: dict[str, str | None] = {}
        self._monitor_stop = threading.Event()
        self._stop_reason: str | None = None
        self._resources_json: dict[tuple[int, int, int, str | None], str] = {}
        self._rows_lock = threading.Lock()
        self._ended = dict.fromkeys(("finished", "recalled", "failed", "cancelled", "retried"), 0)
        self._live: dict[int, Task] = {}  # tasks that have not ended, by id
        self._written: dict[int, tuple[str, int]] = {}  # their last row: event, retries
        self._channel: metrics.ChannelReader | None = None
        self._monitor_thread: threading.Thread | None = None
        self._monitor_store: Store | None = None
        #: streams whose length and backlog the run records (see :meth:`watch_streams`)
        self.watched_streams: list[str] = []
        self._stream_samples: dict[str, tuple[int, int | None]] = {}
        self.run_dir: RunDir
        self.records: Records
        self.executor: Executor
        self.store_url: str

    # --- entering and leaving -------------------------------------------------------------

    def __enter__(self) -> Workflow:
        self.run_dir = RunDir(self._run_dir_path)
        self.run_dir.lock()
        try:
            self._enter()
        except BaseException:
            self._leave(failed=True)
            raise
        return self

    def _enter(self) -> None:
        self.run_dir._check_identity(self.name)
        self.run_dir.write_config(
            workflow=self.name,
            identity=self.name,
            store=self.store_kind,
            executor=self._executor_spec if isinstance(self._executor_spec, str) else "custom",
            script=os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else None,
            layout=self.options.layout,
        )
        Path(self.run_dir.path, STOP_REQUEST).unlink(missing_ok=True)
        self.records = Records(self.run_dir.records_path, journals=self.run_dir.memo_dir)
        self.records.start_run()
        self._channel = metrics.ChannelReader(self.run_dir.path, self.records)
        self._channel.poll()  # what processes of a killed earlier attempt logged
        metrics.attach(self.records)
        self.store_url, password = self._start_store()
        self._set_env(ENV_URL, self.store_url)
        self._set_env(ENV_PASSWORD, password)
        self._set_env(ENV_RUN_DIR, str(self.run_dir.path))
        self.executor = self._make_executor()
        self.submit = self.executor.submit  # type: ignore[method-assign]
        self.executor.observer = self._observe
        self.executor.memo = RecordsMemo(self.records, recall=self.resume) if self.memoize else None
        self._exit.enter_context(launch.use(self.executor))
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._exit.callback(signal.signal, signal.SIGTERM, previous)
        self._monitor_thread = threading.Thread(
            target=self._monitor, name="simai-monitor", daemon=True
        )
        self._monitor_thread.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._leave(failed=exc_type is not None, interrupted=isinstance(exc, KeyboardInterrupt))

    def _leave(self, failed: bool, interrupted: bool = False) -> None:
        self.closing = True
        self._monitor_stop.set()
        errors: list[BaseException] = []

        def attempt(fn: Callable[[], Any]) -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - keep tearing down, report after
                errors.append(e)

        for component in self.components.values():
            if not component.done:
                attempt(lambda c=component: c.stop(grace=5.0))
        if hasattr(self, "executor"):
            if failed:
                attempt(self.executor.terminate)
            else:
                attempt(lambda: self.executor.shutdown(wait=True))
        attempt(self._exit.close)
        if (
            self._monitor_thread is not None
            and self._monitor_thread is not threading.current_thread()
        ):
            self._monitor_thread.join(timeout=self.options.heartbeat_interval + 30)
        if self._channel is not None:
            attempt(self._channel.poll)  # the last values the ended processes logged
            attempt(metrics.ship_counters)
            attempt(self._sample_streams)
            metrics.attach(None)
        if self._monitor_store is not None:
            attempt(self._monitor_store.close)
        attempt(lambda: self._stop_store(complete=not failed))
        if hasattr(self, "records"):
            attempt(lambda: self._write_live_rows(everything=True))  # and cancelled unstarted
            status = "interrupted" if interrupted else ("failed" if failed else "done")
            attempt(lambda: self.records.end_run(status))
            attempt(self.records.close)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.run_dir.unlock()
        if errors and not failed:
            raise errors[0]

    def _set_env(self, key: str, value: str | None) -> None:
        self._saved_env.setdefault(key, os.environ.get(key))
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        reason = self._stop_reason or f"received signal {signum}"
        raise WorkflowStopped(f"workflow {self.name!r} stopped: {reason}")

    def _interrupt(self, reason: str) -> None:
        """Stop the run from the monitor thread: the main thread unwinds as on SIGTERM."""
        self._stop_reason = reason
        self._monitor_stop.set()
        os.kill(os.getpid(), signal.SIGTERM)

    def _monitor(self) -> None:
        leave_stop_signals_to_main_thread()
        stop_file = Path(self.run_dir.path, STOP_REQUEST)
        while not self._monitor_stop.wait(self.options.heartbeat_interval):
            try:
                self.records.heartbeat()
                self._write_live_rows()
                self._channel.poll()  # type: ignore[union-attr]
                metrics.ship_counters()
                self._sample_streams()
            except Exception:  # noqa: BLE001 - metrics must not stop the run
                _log.exception("recording the run's metrics failed")
            for component in list(self.components.values()):
                component._check_heartbeat(self.options.heartbeat_timeout)
            if stop_file.exists():
                stop_file.unlink(missing_ok=True)
                self._interrupt("`simai stop` asked it to")
            elif self._servers is not None and not self._servers.alive_all():
                detail = "a redis-server shard of the run's store died"
                self.records.event("store", "redis", "failed", detail=detail)
                self._interrupt(detail)

    # --- store --------------------------------------------------------------------------

    def _start_store(self) -> tuple[str, str | None]:
        kind = self.store_kind
        persist = self.run_dir.store_dir / kind
        if "://" in kind:
            return kind, os.environ.get(ENV_PASSWORD)
        if kind == "file":
            if not self.resume:
                shutil.rmtree(persist, ignore_errors=True)
            return f"file://{persist}", None
        if kind == "dragon":  # lives as long as the run: nothing to resume from
            from simai.store.dragon import DragonStore

            self._dragon = DragonStore.create()
            return self._dragon.url, None
        if kind == "local":
            url = self._local_url = local_run_url(self.run_dir.path)
            if not self.resume:
                LocalStore(url).destroy()
                shutil.rmtree(persist, ignore_errors=True)
            elif not os.path.isdir(local_root(url)) and (persist / "data.mdb").is_file():
                LocalStore.restore(persist, url).close()
            return url, None
        from simai.store.redis_server import RedisServers

        if not self.resume:
            shutil.rmtree(persist, ignore_errors=True)
        persist.mkdir(mode=0o700, parents=True, exist_ok=True)
        cores = self.options.store_cores
        self._servers = RedisServers(
            shards=self.options.store_shards,
            port=0,
            bind=self.options.store_bind,
            persist_dir=persist,
            log_dir=self.run_dir.logs_dir,
            tls=self.options.store_tls,
        )
        if self._servers.tls is not None:
            for key, value in self._servers.tls.env().items():
                self._set_env(key, value)
        if cores:
            node = sorted(os.sched_getaffinity(0))
            if cores >= len(node):
                raise ValueError(
                    f"store_cores={cores} leaves no core for tasks on this node ({len(node)} cores)"
                )
            for pid in self._servers.pids:
                os.sched_setaffinity(pid, node[:cores])
            self._executor_config.setdefault("cores", node[cores:])
        return self._servers.url, self._servers.password

    def _store_user(self, component: str, access: StoreAccess | None) -> dict[str, str]:
        """A redis store user of the component's own (see :meth:`start`): the environment
        that hands it its name and secret; nothing on other stores."""
        if not self.store_url.startswith(("redis://", "rediss://")):
            return {}
        if self._admin_store is None:
            self._admin_store = open_store(self.store_url)
        user = "simai-" + re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.name}-{component}")
        secret = secrets.token_urlsafe(24)
        access = access or EVERYTHING
        self._admin_store.set_user(user, secret, access)  # type: ignore[attr-defined]
        self._store_users.append(user)
        return {ENV_USER: user, ENV_PASSWORD: secret, ENV_ACCESS: access.to_json()}

    def _stop_store(self, complete: bool) -> None:
        if self._admin_store is not None:
            for user in self._store_users:
                with contextlib.suppress(OSError):
                    self._admin_store.delete_user(user)  # type: ignore[attr-defined]
            self._store_users.clear()
            self._admin_store.close()
            self._admin_store = None
        if self._servers is not None:
            self._servers.stop()
            self._servers = None
        if self._dragon is not None:
            self._dragon.destroy()
            self._dragon = None
        if self._local_url is not None:
            store = LocalStore(self._local_url)
            kept = self.run_dir.store_dir / "local"
            keep = not complete if self.keep_store is None else self.keep_store
            if keep is False:
                shutil.rmtree(kept, ignore_errors=True)
                detail = "kept nothing"
            else:
                size = store.save(kept, None if keep is True else keep)
                what = "everything" if keep is True else f"the keys and streams under {keep}"
                detail = f"kept {what}: {size / 2**20:.1f} MiB in {kept}"
            store.destroy()
            if hasattr(self, "records"):
                self.records.event("store", "local", "stopped", detail=detail)

    def store(self) -> Store:
        """A client of the run's store (the same one launched processes get)."""
        return open_store(self.store_url)

    # --- executor -------------------------------------------------------------------------

    def _make_executor(self) -> Executor:
        spec = self._executor_spec
        if isinstance(spec, Executor):
            return spec
        config = dict(self._executor_config)
        if spec == "local":
            config.setdefault("log_dir", self.run_dir.logs_dir)
        return get_executor(spec, **config)

    def _observe(self, events: list[tuple[Task, str, BaseException | None]]) -> None:
        """The executor's observer, on the hot path of every task: keep the tasks that
        have not ended, and queue the rows of those that did (one row per task; tasks
        that run longer also get rows on the way, see :meth:`_write_live_rows`)."""
        task, event, _ = events[0]
        if event == "submitted":
            cmd = task.command
            if cmd is not None and COMPONENT_ENV in (cmd.env or {}):
                task.observer = None  # a component: Component records its events
            else:
                self._live[task.id] = task
            return
        now = time.time()
        rows = []
        live, written, counts = self._live, self._written, self._ended
        if event == "finished" and not written:  # tasks that succeeded: the hot path
            pop, add, resources = live.pop, rows.append, self._resources
            with self._rows_lock:
                counts["finished"] += len(events)
                for task, _, _ in events:  # _row's tuple, inlined
                    pop(task.id, None)
                    add((task.name, task.id, "finished", task.submitted_at, task.started_at,
                         now, resources(task), task.attempt, None, task.cpu_time,
                         task.max_rss, None))  # fmt: skip
                self.records.tasks(rows)
            return
        with self._rows_lock:
            for task, event, error in events:
                if event == "cancelled" and task.id not in live:
                    continue  # recorded already (see _write_live_rows)
                counts[event] += 1
                last = written.pop(task.id, None) if written else None
                if event == "retried":  # it runs again (also after a "finished" whose
                    live[task.id] = task  # result could not be kept)
                    written[task.id] = ("retried", task.attempt)
                else:
                    live.pop(task.id, None)
                ran = event not in ("retried", "recalled")
                rows.append(
                    self._row(
                        task,
                        event,
                        task.started_at if ran else None,
                        None if event == "retried" else now,
                        last,
                        None if error is None else f"{type(error).__name__}: {error}",
                        None if error is None else failure_reason(error),
                        event in _MEASURED,
                    )
                )
            self.records.tasks(rows)

    def _row(
        self,
        task: Task,
        event: str,
        started: float | None,
        ended: float | None,
        last: tuple[str, int] | None,
        detail: str | None = None,
        reason: str | None = None,
        measured: bool = False,
    ) -> tuple:
        """A task's row for :meth:`Records.tasks`, as it stands after ``event``; ``last`` is
        its previous row (event, retries), whose retries the records have counted already;
        ``measured``: the row of the end of a try, with what that try used."""
        retries = task.attempt - last[1] if last else task.attempt
        times = (task.submitted_at, started, ended)
        usage = (task.cpu_time, task.max_rss) if measured else (None, None)
        row = (task.name, task.id, event, *times, self._resources(task), retries, detail)
        return (*row, *usage, reason)

    def _resources(self, task: Task) -> str:
        """The task's resources as JSON text (cached by shape)."""
        r = task.resources
        shape = (r.cpus, r.gpus, r.ranks, task.huge_pages)
        text = self._resources_json.get(shape)
        if text is None:
            text = json.dumps(
                {"cpus": r.cpus, "gpus": r.gpus, "ranks": r.ranks, "huge_pages": task.huge_pages}
            )
            self._resources_json[shape] = text
        return text

    def _write_live_rows(self, everything: bool = False) -> None:
        """Write the rows of tasks submitted over :data:`HOLD` seconds ago (or all, with
        ``everything``) that have not ended, when their state changed since their last row:
        a short task is then written once, when it ends, and a long one shows queued or
        running. A task whose future was cancelled ends ``cancelled`` here: an executor
        that drops it unstarted (shut down, terminated) tells no one."""
        now = time.time()
        cutoff = None if everything else now - HOLD
        written, live, changed, rows = self._written, self._live, [], []
        for task in list(live.values()):  # in submission order; the lock only for changes
            if cutoff is not None and task.submitted_at > cutoff:
                break
            if task.future.cancelled():
                event = "cancelled"
            else:
                event = "submitted" if task.started_at is None else "started"
            last = written.get(task.id)
            if last is None or last[0] not in (event, "retried") or last[1] != task.attempt:
                changed.append((task, event))
        if not changed:
            return
        with self._rows_lock:
            for task, event in changed:
                if task.id not in live:  # it ended meanwhile: its row is queued already
                    continue
                if event == "cancelled":
                    del live[task.id]
                    self._ended["cancelled"] += 1
                    last = written.pop(task.id, None)
                    detail = "CancelledError: its future was cancelled"
                    rows.append(self._row(task, event, None, now, last, detail, "cancelled"))
                    continue
                last = written.get(task.id)
                written[task.id] = (event, task.attempt)
                rows.append(self._row(task, event, task.started_at, None, last))
            if rows:
                self.records.tasks(rows)

    def task_counts(self) -> dict[str, int]:
        """Tasks of this run by state (done, recalled, running, queued, failed, cancelled),
        from what the executor told it: a cheap live view for progress displays."""
        live = list(self._live.values())
        running = sum(t.started_at is not None for t in live)
        return {
            "done": self._ended["finished"],
            "recalled": self._ended["recalled"],
            "running": running,
            "queued": len(live) - running,
            "failed": self._ended["failed"],
            "cancelled": self._ended["cancelled"],
        }

    # --- public API -----------------------------------------------------------------------

    def watch_streams(self, *names: str) -> None:
        """Record the length and backlog of these streams about once a second, when they
        change (the ``stream_backlog`` table of the records; progress displays and reports
        read it)."""
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a stream name must be a non-empty string, not {name!r}")
            if name not in self.watched_streams:
                self.watched_streams.append(name)

    def _sample_streams(self) -> None:
        if not self.watched_streams:
            return
        store = self._monitor_store
        if store is None:
            store = self._monitor_store = self.store()
        for name in list(self.watched_streams):
            try:
                info = store.stream_info(name)
            except KeyError:
                continue
            groups = info.get("groups") or {}
            sample = (info["length"], info["length"] - min(groups.values()) if groups else None)
            if self._stream_samples.get(name) != sample:
                self._stream_samples[name] = sample
                self.records.stream_sample(name, *sample)

    def poll_metrics(self) -> None:
        """Read the metrics that processes logged since the last read (the workflow does
        this every ``heartbeat_interval`` and when it ends), write the rows of tasks that
        have not ended, and wait for their commit."""
        if self._channel is not None:
            self._channel.poll()
        self._write_live_rows(everything=True)
        self.records.flush()

    def submit(
        self, fn_or_command: Callable[..., Any] | Command, /, *args: Any, **kw: Any
    ) -> Future:
        """Run a function or Command as a task of this run (memoized for resume): the
        executor's ``submit``, which the run binds here when it starts (one call less on
        every task's way)."""
        return self.executor.submit(fn_or_command, *args, **kw)

    def start(
        self,
        target: Callable[..., Any] | Command,
        /,
        *args: Any,
        name: str | None = None,
        resources: Resources | dict[str, int] | None = None,
        restart: str = "never",
        max_restarts: int = 3,
        store_access: StoreAccess | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Component:
        """Start a long-running component: a function called with args, or a Command.

        `restart` is "never", "on-failure" or "always"; at most `max_restarts` restarts.
        On a redis store the component gets a store user of its own: `store_access`
        (``{"read": [prefixes], "write": [prefixes]}``) limits it to those keys and streams,
        and a write elsewhere is a PermissionError; without it the user has every key but
        no administration (see :mod:`simai.store.access`).
        """
        access = StoreAccess.of(store_access)
        if access is not None and not self.store_url.startswith(("redis://", "rediss://")):
            raise ValueError(
                f"store_access needs the redis store, whose servers enforce it; this run's "
                f"store is {self.store_url.split('://')[0]}:// (a store of this user's own "
                "memory or files, which any of its processes may write)"
            )
        if restart not in POLICIES:
            raise ValueError(f"restart must be one of {POLICIES}, not {restart!r}")
        max_restarts = check_int("max_restarts", max_restarts, 0)
        if isinstance(target, Command):
            if args or kwargs:
                raise TypeError("a Command component takes no arguments")
            if shutil.which(target.argv[0]) is None and not os.path.exists(target.argv[0]):
                raise FileNotFoundError(
                    f"component command {target.argv[0]!r} not found (not on PATH)"
                )
            resources = resources or target.resources
        elif not callable(target):
            raise TypeError(f"start() needs a callable or a Command, got {target!r}")
        name = name or getattr(target, "name", None) or getattr(target, "__name__", "component")
        if name in self.components:
            raise ValueError(f"a component named {name!r} already exists in this workflow")
        from simai.launch.resources import as_resources

        component = Component(
            self, name, target, args, kwargs, as_resources(resources), restart, max_restarts
        )
        component.store_env = self._store_user(name, access)
        self.components[name] = component
        component._launch()
        return component
