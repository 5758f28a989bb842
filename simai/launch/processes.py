"""Running a command's process and killing process trees: a task's walltime, an error or a
shutdown leaves nothing running."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simai.launch.command import Command, CommandError, CommandResult, open_logs
from simai.launch.executor import TaskTimeoutError
from simai.launch.usage import KILLED, Reaper, oom_watch, spawn_floor


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[ppid].append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s process group (it leads a session) and every descendant."""
    try:
        victims = _descendants(pid)
    except OSError:
        victims = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for victim in [pid, *victims]:
        try:
            os.kill(victim, signal.SIGKILL)
        except OSError:
            pass


def run_command(
    cmd: Command,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout: Path,
    stderr: Path,
    walltime: float | None,
    label: str,
    popen: Callable[..., subprocess.Popen] = subprocess.Popen,
    popen_forks: bool = False,
) -> CommandResult:
    """Run `argv` (built from `cmd`) in a session of its own, its output appended to the log
    files; kill its process tree when it exits, passes `walltime`, or the wait is interrupted.

    `popen` starts the process (an executor passes one that also registers it, so a shutdown
    can kill it; ``popen_forks``: one that forks, as Popen with a ``preexec_fn`` does, not
    vforks, see :func:`~simai.launch.usage.spawn_floor`). The result is a CommandResult, or
    CommandError / TaskTimeoutError; each carries the command's CPU time and peak memory
    (``cpu_time``, ``max_rss``), and a CommandError tells an out-of-memory kill (``oom``,
    see :class:`~simai.launch.usage.OomWatch`).
    """
    start = time.monotonic()
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "cwd": cmd.cwd,
        "env": dict(env),
        "start_new_session": True,
        "close_fds": True,
    }
    before = oom_watch.before(os.getpid())  # the cgroups it starts in: ours
    floor = spawn_floor(popen_forks)  # its ru_maxrss starts from our memory (see Reaper)
    with open_logs(stdout, stderr) as (out, err):
        proc = popen(list(argv), stdout=out, stderr=err, **options)
    reaper = Reaper(proc, floor)
    try:
        returncode, usage, after = reaper.wait(walltime)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        _, usage, _ = reaper.wait()
        error = TaskTimeoutError(
            f"{label} ran past its walltime of {walltime:g} s; its process tree was killed "
            f"(command {list(argv)!r})"
        )
        error.cpu_time, error.max_rss = usage.cpu_time, usage.max_rss  # type: ignore[attr-defined]
        raise error from None
    except BaseException:
        kill_tree(proc.pid)
        proc.wait()
        raise
    kill_tree(proc.pid)  # leftovers in its session
    if returncode != 0:
        raise CommandError(
            argv,
            returncode,
            Path(stdout),
            Path(stderr),
            name=cmd.name,
            cpu_time=usage.cpu_time,
            max_rss=usage.max_rss,
            oom=returncode in KILLED and oom_watch.claim(before, after),
        )
    return CommandResult(
        argv=list(argv),
        returncode=returncode,
        stdout=Path(stdout),
        stderr=Path(stderr),
        duration=time.monotonic() - start,
        cpu_time=usage.cpu_time,
        max_rss=usage.max_rss,
    )
