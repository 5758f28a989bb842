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
) -> CommandResult:
    """Run `argv` (built from `cmd`) in a session of its own, its output appended to the log
    files; kill its process tree when it exits, passes `walltime`, or the wait is interrupted.

    `popen` starts the process (an executor passes one that also registers it, so a shutdown
    can kill it); the result is a CommandResult, or CommandError / TaskTimeoutError.
    """
    start = time.monotonic()
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "cwd": cmd.cwd,
        "env": dict(env),
        "start_new_session": True,
        "close_fds": True,
    }
    with open_logs(stdout, stderr) as (out, err):
        proc = popen(list(argv), stdout=out, stderr=err, **options)
    try:
        returncode = proc.wait(timeout=walltime)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()
        raise TaskTimeoutError(
            f"{label} ran past its walltime of {walltime:g} s; its process tree was killed "
            f"(command {list(argv)!r})"
        ) from None
    except BaseException:
        kill_tree(proc.pid)
        proc.wait()
        raise
    kill_tree(proc.pid)  # leftovers in its session
    if returncode != 0:
        raise CommandError(argv, returncode, Path(stdout), Path(stderr), name=cmd.name)
    return CommandResult(
        argv=list(argv),
        returncode=returncode,
        stdout=Path(stdout),
        stderr=Path(stderr),
        duration=time.monotonic() - start,
    )
