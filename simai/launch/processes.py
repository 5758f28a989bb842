"""Killing a process tree: a task's walltime or a shutdown leaves nothing running."""

from __future__ import annotations

import collections
import os
import signal


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
