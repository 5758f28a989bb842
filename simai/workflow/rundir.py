"""The run directory: where one workflow run keeps its configuration, logs, records and store.

Layout of ``runs/<name>/`` (the Workflow picks the path; :class:`RunDir` takes it)::

    config.json     the run's configuration (workflow name, identity, store URL, executor,
                    created time, simai version); written atomically
    run.lock        flock-ed by the live workflow process; holds its pid and host
    records.db      the records database (:class:`simai.workflow.Records`)
    memo/           the local executor's workers' memo journals, folded into records.db
                    when the run ends or resumes (the files folded in are then removed)
    logs/<n>.log    one log per component or task, names sanitised (:meth:`RunDir.log_path`)
    store/          a persistent place for the run's node-local store

The lock is an exclusive ``flock`` on ``run.lock``: the kernel drops it when the holding
process dies, SIGKILL included, so a killed run never leaves a stale lock behind. It is
released when every descriptor of it is closed: the descriptor is close-on-exec, so
subprocesses do not inherit it, but a bare ``os.fork()`` child of the workflow process
would hold it until it exits. ``flock`` works on local disks and on NFS (Linux emulates it
with POSIX locks); Lustre needs the ``flock`` mount option.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from simai._version import __version__
from simai.store.private import private_dir

CONFIG = "config.json"
LOCK = "run.lock"
RECORDS = "records.db"
LOGS = "logs"
STORE = "store"
MEMO = "memo"
DEFAULT_ROOT = "runs"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 100


class RunDirError(Exception):
    """A run directory cannot be used as asked."""


class RunDirMismatch(RunDirError, ValueError):
    """The run directory was created by another workflow (a different identity)."""


class RunDirLocked(RunDirError, RuntimeError):
    """Another live process holds the run directory's lock."""

    def __init__(self, message: str, pid: int | None = None, host: str | None = None):
        super().__init__(message)
        self.pid = pid
        self.host = host


def log_stem(name: str) -> str:
    """The file stem for a component's or task's log: readable, unique, filesystem-safe.

    Names made only of ``[A-Za-z0-9._-]`` (and not starting with a dot) are kept as they
    are; any other name is sanitised and suffixed with a short hash of the original, so
    that ``"sim/0"`` and ``"sim_0"`` do not share a file.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a log name must be a non-empty string, not {name!r}")
    stem = _UNSAFE.sub("_", name).lstrip(".")[:_MAX_STEM]
    if stem == name:
        return stem
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{stem or 'log'}-{digest}"


class RunDir:
    """A run directory at ``path`` (see the module docstring for its layout).

    ``create=True`` makes the directory and its ``logs/``, ``store/`` and ``memo/`` folders if
    missing; ``create=False`` requires an existing run directory (``FileNotFoundError``
    otherwise), as ``simai status`` does.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True):
        self.path = Path(path).expanduser().absolute()
        self._lock_fd: int | None = None
        if create:
            if self.path.exists() and not self.path.is_dir():
                raise RunDirError(f"run directory {self.path} exists and is not a directory")
            for sub in (self.path, self.logs_dir, self.store_dir, self.memo_dir):
                private_dir(sub)
        elif not self.exists(self.path):
            raise FileNotFoundError(
                f"{self.path} is not a run directory (no {CONFIG} or {RECORDS} in it)"
            )

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` looks like a run directory (has a config or a records db)."""
        p = Path(path)
        return p.is_dir() and ((p / CONFIG).is_file() or (p / RECORDS).is_file())

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- paths -------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def records_path(self) -> Path:
        return self.path / RECORDS

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS

    @property
    def store_dir(self) -> Path:
        return self.path / STORE

    @property
    def memo_dir(self) -> Path:
        return self.path / MEMO

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK

    def log_path(self, name: str) -> Path:
        """``logs/<stem>.log`` for a component or task name (see :func:`log_stem`)."""
        return self.logs_dir / f"{log_stem(name)}.log"

    def _log_names(self) -> list[str]:
        """The stems of the logs present, sorted."""
        if not self.logs_dir.is_dir():
            return []
        return sorted(p.stem for p in self.logs_dir.glob("*.log"))

    def find_log(self, name: str) -> Path:
        """The log of ``name`` (a component/task name or a log stem), or a ``KeyError``
        naming the logs there are."""
        for path in (self.log_path(name), self.logs_dir / f"{name}.log"):
            if path.is_file() and path.parent == self.logs_dir:
                return path
        names = self._log_names()
        listing = ", ".join(names) if names else "none yet"
        raise KeyError(f"no log named {name!r} in {self.logs_dir}; logs there: {listing}")

    # --- configuration -----------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The stored configuration, ``{}`` for a new run directory."""
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError as e:
            raise RunDirError(f"{self.config_path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{self.config_path} does not hold a JSON object")
        return data

    def write_config(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``config.json`` (atomic replace) and return the result.

        The first write also records ``created`` (epoch seconds) and ``simai_version``.
        Values must be JSON-serialisable.
        """
        data = self.config()
        if not data:
            data = {"created": time.time(), "simai_version": __version__}
        data.update(fields)
        text = json.dumps(data, indent=1, sort_keys=True)
        tmp = self.config_path.with_name(f".{CONFIG}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.config_path)
        return data

    def _check_identity(self, identity: str) -> None:
        """Refuse a run directory created by another workflow.

        Passes when the directory has no recorded identity yet (a new run) or the same one;
        raises :class:`RunDirMismatch` naming both workflows otherwise.
        """
        config = self.config()
        recorded = config.get("identity")
        if recorded is None or recorded == identity:
            return
        who = config.get("workflow", "another workflow")
        raise RunDirMismatch(
            f"run directory {self.path} belongs to workflow {who!r} (identity {recorded!r}), "
            f"not to this one (identity {identity!r}); pick another run directory or "
            "remove this one to start afresh"
        )

    # --- lock ----------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the run directory's exclusive lock for this process's lifetime.

        Raises :class:`RunDirLocked` naming the holder's pid and host when another process
        (or another :class:`RunDir` object in this one) holds it. Idempotent on the object
        that holds it. Released by :meth:`unlock`, :meth:`close` or the process's death.
        """
        if self._lock_fd is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        for tries in range(20):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            pid, host = self._read_holder()
            if pid is None and tries < 19:
                time.sleep(0.01)  # a holder() probe, or a holder that has not written its pid
                continue
            os.close(fd)
            who = f"pid {pid}" if pid else "another process"
            if host:
                who += f" on {host}"
            raise RunDirLocked(
                f"run directory {self.path} is in use by {who} (lock {self.lock_path}); "
                "wait for that run to end, stop it, or use another run directory",
                pid=pid,
                host=host,
            )
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock if this object holds it."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)

    close = unlock

    def holder(self) -> dict[str, Any] | None:
        """``{"pid", "host", "time"}`` of the live process holding the lock, or ``None``.

        Probes the lock without keeping it, so it tells a live run from a killed one.
        """
        if self._lock_fd is not None:
            return {"pid": os.getpid(), "host": socket.gethostname(), "time": None}
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid, host = self._read_holder()
            return {"pid": pid, "host": host, "time": None}
        finally:
            os.close(fd)
        return None

    def _read_holder(self) -> tuple[int | None, str | None]:
        try:
            info = json.loads(self.lock_path.read_text() or "{}")
            return info.get("pid"), info.get("host")
        except (OSError, ValueError):
            return None, None

    def __enter__(self) -> RunDir:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def __del__(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)
