"""Executables run as tasks: argument lists (never shell strings), logs in files."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from simai.checks import check_int, check_seconds
from simai.launch.mpi import MpiLauncher, detect_launcher, launch_argv
from simai.launch.resources import Resources

__all__ = ["Command", "CommandError", "CommandResult"]


def _tail(path: Path | None, lines: int = 20, max_bytes: int = 16384) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


class CommandError(RuntimeError):
    """A command exited with a non-zero status.

    Its message names the command, its status (and the signal that killed it, or the
    kernel's out-of-memory killer with its peak memory) and the last lines of its stderr;
    ``stderr_tail`` holds those lines.

    Parameters
    ----------
    argv : list of str
        The argv it ran.
    returncode : int
        Its exit status (negative: killed by that signal).
    stdout : Path or None
        Its stdout log file.
    stderr : Path or None
        Its stderr log file.
    name : str or None
        Its name.
    cpu_time : float or None
        The CPU seconds (user + system) it used, those of what it waited for included.
    max_rss : int or None
        Its peak resident memory in bytes (see :class:`CommandResult`).
    oom : bool
        Whether the kernel's out-of-memory killer killed it.
    """

    cpu_time: float | None = None
    max_rss: int | None = None
    oom: bool = False

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stdout: Path | None = None,
        stderr: Path | None = None,
        name: str | None = None,
        *,
        cpu_time: float | None = None,
        max_rss: int | None = None,
        oom: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.stderr_tail = _tail(stderr)
        self.cpu_time, self.max_rss, self.oom = cpu_time, max_rss, oom
        what = f"command {name!r}" if name else "command"
        if oom:
            peak = "unknown" if max_rss is None else f"{max_rss / (1 << 20):.0f} MiB"
            msg = (
                f"{what} {self.argv!r} was killed by the kernel's out-of-memory killer "
                f"(peak memory {peak}; exit status {returncode})"
            )
        else:
            msg = f"{what} {self.argv!r} exited with status {returncode}"
        if returncode < 0 and not oom:
            import signal

            try:
                msg += f" (killed by {signal.Signals(-returncode).name})"
            except ValueError:
                pass
        if self.stderr_tail:
            msg += f"; last lines of {stderr}:\n{self.stderr_tail}"
        elif stderr is not None:
            msg += f"; stderr: {stderr} (empty)"
        super().__init__(msg)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_command_error, (self.__dict__, str(self)))


def _rebuild_command_error(state: dict[str, Any], message: str) -> CommandError:
    err = CommandError.__new__(CommandError)
    RuntimeError.__init__(err, message)
    err.__dict__.update(state)
    return err


@dataclass(frozen=True)
class CommandResult:
    """A finished command.

    Attributes
    ----------
    argv : list of str
        The argv actually run (with the MPI launcher in front, for an MPI run).
    returncode : int
        Its exit status (0).
    stdout : Path
        Its stdout log file.
    stderr : Path
        Its stderr log file.
    duration : float
        Seconds from its start to its end.
    cpu_time : float or None
        CPU seconds (user + system) of its process and of the processes it waited for, as
        the kernel reports them (None when not known).
    max_rss : int or None
        Its peak resident memory in bytes: the kernel's ``ru_maxrss`` of its process tree,
        or, where that cannot be told from the memory of the process that started it, the
        highest ``VmHWM`` read while it ran (see :class:`simai.launch.usage.Reaper`; None
        when not known).
    """

    argv: list[str]
    returncode: int
    stdout: Path
    stderr: Path
    duration: float
    cpu_time: float | None = None
    max_rss: int | None = None


class Command:
    """An executable to run as a task, optionally as ``ranks`` MPI ranks.

    Parameters
    ----------
    argv : list of str or paths
        The program and its arguments (``["prog", "--flag", "value"]``); a string is refused
        so nothing ever goes through a shell.
    ranks : int
        MPI ranks; ``ranks > 1`` launches through the MPI launcher.
    ranks_per_node : int or None
        Ranks placed on each node (default: as many as fit).
    cpus_per_rank : int
        Cores each rank needs; 0 for a program that mostly waits (see
        :class:`~simai.launch.Resources`).
    gpus_per_rank : int
        GPUs each rank needs.
    env : mapping or None
        Added to the inherited environment; a ``None`` value removes that variable.
    cwd : path or None
        Working directory (default: the executor's).
    stdout : path or None
        Where stdout goes (default: ``<name>-<id>.out`` in the executor's log directory).
    stderr : path or None
        Where stderr goes (default: ``<name>-<id>.err`` in the executor's log directory).
    hosts : list of str or None
        Hosts to place the ranks on (default: the executor's).
    name : str or None
        Name in logs and records (default: the executable's base name).
    mpi : bool or None
        Launch through MPI even for one rank (default: when ``ranks > 1``).
    launcher : MpiLauncher or None
        The MPI launcher (default: the one :func:`~simai.launch.mpi.detect_launcher` finds).
    walltime : float or None
        Seconds before the command is killed, when `submit_command` gives no walltime
        (default: no limit).
    huge_pages : bool
        False opts it out of huge pages for its large allocations (see
        :mod:`simai.launch.memory`).
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        ranks: int = 1,
        ranks_per_node: int | None = None,
        cpus_per_rank: int = 1,
        gpus_per_rank: int = 0,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdout: str | os.PathLike[str] | None = None,
        stderr: str | os.PathLike[str] | None = None,
        hosts: Sequence[str] | None = None,
        name: str | None = None,
        mpi: bool | None = None,
        launcher: MpiLauncher | None = None,
        walltime: float | None = None,
        huge_pages: bool = True,
    ) -> None:
        if isinstance(argv, str | bytes):
            raise TypeError(
                "Command takes a list of arguments, not a shell string: "
                f"use Command({str(argv).split()!r}) or shlex.split()"
            )
        for a in argv:
            if not isinstance(a, str | os.PathLike):
                raise TypeError(f"Command arguments must be str or paths, not {a!r}")
        argv = [os.fspath(a) for a in argv]
        if not argv or not argv[0]:
            raise ValueError("Command needs at least the executable in argv")
        for a in argv:
            if not isinstance(a, str):
                raise TypeError(f"Command arguments must be str or paths, not {a!r}")
        if hosts is not None:
            if isinstance(hosts, str):
                raise TypeError("hosts must be a list of host names, not a string")
            hosts = [str(h) for h in hosts]
            if not hosts:
                raise ValueError("hosts is empty")
        if env is not None and not isinstance(env, Mapping):
            raise TypeError(f"env must be a mapping, not {type(env).__name__}")
        for key, value in (env or {}).items():
            if not isinstance(key, str) or not (
                value is None or isinstance(value, str | int | float)
            ):
                raise TypeError(
                    f"env maps names to str or number values (None removes one), "
                    f"not {key!r}: {value!r}"
                )
        if cwd is not None and not Path(cwd).is_dir():
            raise NotADirectoryError(f"Command cwd {os.fspath(cwd)!r} is not a directory")
        check_int("cpus_per_rank", cpus_per_rank, 0)
        check_int("gpus_per_rank", gpus_per_rank, 0)
        self.argv: list[str] = argv
        self.resources = Resources(
            cpus=cpus_per_rank,
            gpus=gpus_per_rank,
            ranks=ranks,
            ranks_per_node=ranks_per_node,
            huge_pages=huge_pages,
        )
        self.hosts: list[str] | None = hosts
        self.env: dict[str, str | None] = dict(env or {})
        self.cwd = Path(cwd) if cwd is not None else None
        self.stdout = Path(stdout) if stdout is not None else None
        self.stderr = Path(stderr) if stderr is not None else None
        self.name = name or os.path.basename(argv[0])
        self.mpi = ranks > 1 if mpi is None else bool(mpi)
        self.launcher = launcher
        self.walltime = check_seconds("walltime", walltime, positive=True, optional=True)

    @property
    def ranks(self) -> int:
        return self.resources.ranks

    def __repr__(self) -> str:
        r = self.resources
        extra = f", ranks={self.ranks}" if self.ranks > 1 else ""
        extra += f", cpus_per_rank={r.cpus}" if r.cpus != 1 else ""
        extra += f", gpus_per_rank={r.gpus}" if r.gpus else ""
        extra += ", huge_pages=False" if not r.huge_pages else ""
        return f"Command({self.argv!r}{extra})"

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment the command runs with: ``base`` (default ``os.environ``) + env."""
        out = dict(os.environ if base is None else base)
        for key, value in self.env.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = str(value)
        return out

    def full_argv(self, env: Mapping[str, str] | None = None) -> list[str]:
        """The argv to execute, with the MPI launcher in front when this is an MPI run.

        Raises ``FileNotFoundError`` naming the executable (or launcher) that is missing.
        """
        env = self.environment() if env is None else env
        exe = self.argv[0]
        if os.sep in exe:
            base = self.cwd / exe if self.cwd is not None and not os.path.isabs(exe) else exe
            if not (os.path.isfile(base) and os.access(base, os.X_OK)):
                raise FileNotFoundError(f"executable {exe!r} not found or not executable")
        elif shutil.which(exe, path=env.get("PATH")) is None:
            raise FileNotFoundError(f"executable {exe!r} not found on PATH")
        if not self.mpi:
            return list(self.argv)
        launcher = self.launcher or detect_launcher(env)
        return launch_argv(
            launcher,
            self.argv,
            self.ranks,
            ranks_per_node=self.resources.ranks_per_node,
            cpus_per_rank=self.resources.cpus,
            gpus_per_rank=self.resources.gpus,
            hosts=self.hosts,
        )


@contextlib.contextmanager
def open_logs(stdout: Path, stderr: Path) -> Iterator[tuple[IO[bytes], IO[bytes] | int]]:
    """A command's (stdout, stderr) for Popen, opened for appending so a retried or restarted
    command keeps the output of earlier attempts; one file when both name the same path."""
    with open(stdout, "ab") as out:
        if Path(stderr) == Path(stdout):
            yield out, subprocess.STDOUT
        else:
            with open(stderr, "ab") as err:
                yield out, err
