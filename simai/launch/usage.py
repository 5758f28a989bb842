"""What a task's processes used (CPU time, peak memory), and telling an out-of-memory kill
from any other SIGKILL.

A process the executor waits for is reaped with ``wait4``, which gives its CPU time (user +
system) and peak resident memory (``ru_maxrss``), both including the descendants it waited
for, as the kernel accounts them.

The kernel's out-of-memory killer sends SIGKILL, like anyone else may; what tells it apart is
the ``oom_kill`` counter of the memory cgroup the victim was in (cgroup v2 ``memory.events``,
cgroup v1 ``memory.oom_control``; the Linux kernel log is not readable by everyone, and
pressure files say nothing about who was killed). :class:`OomWatch` reads the counters of a
process's cgroups when it starts and again when it died of SIGKILL: a count that grew meanwhile
(and that no other death has claimed) names its death an out-of-memory kill. A process that
moved itself to another cgroup is found there only on cgroup v2 (a v1 hierarchy shows an exited
process in its root); on cgroup v1 such a kill stays a plain SIGKILL.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OomWatch",
    "Reaper",
    "Usage",
    "fmt_mib",
    "high_water",
    "oom_counter_files",
    "read_oom_kills",
    "spawn_floor",
    "wait_process",
]

#: bytes per unit of ``ru_maxrss``: kilobytes on Linux, bytes on macOS
RSS_UNIT = 1 if sys.platform == "darwin" else 1024
#: exit statuses of a process killed by SIGKILL: the signal itself, or a shell's 128 + 9 for
#: the child it ran
KILLED = frozenset((-signal.SIGKILL, 128 + signal.SIGKILL))


@dataclass(frozen=True)
class Usage:
    """What a process used: ``cpu_time`` (user + system seconds) and ``max_rss`` (peak
    resident memory, bytes); None when not known."""

    cpu_time: float | None = None
    max_rss: int | None = None


NO_USAGE = Usage()


def usage_of(ru: Any) -> Usage:
    """The :class:`Usage` of a ``resource.struct_rusage``."""
    return Usage(ru.ru_utime + ru.ru_stime, ru.ru_maxrss * RSS_UNIT)


def fmt_mib(nbytes: int | None) -> str:
    """``512 MiB`` (or ``unknown``): memory as error messages give it."""
    return "unknown" if nbytes is None else f"{nbytes / (1 << 20):.0f} MiB"


# --- cgroups ----------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space) decoded."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def _cgroup_mounts(mountinfo: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (root, mount point) of the cgroup v2 mounts and of the v1 memory ones."""
    v2, v1 = [], []
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            dash = fields.index("-")
            fstype, options = fields[dash + 1], fields[dash + 3]
        except (ValueError, IndexError):
            continue
        entry = (_unescape(fields[3]), _unescape(fields[4]))
        if fstype == "cgroup2":
            v2.append(entry)
        elif fstype == "cgroup" and "memory" in options.split(","):
            v1.append(entry)
    return v2, v1


def _under(mounts: list[tuple[str, str]], path: str, name: str) -> str | None:
    """The file ``name`` of cgroup ``path`` in the first of ``mounts`` that has it."""
    for root, point in mounts:
        if path == root or root == "/":
            rel = path if root == "/" else ""
        elif path.startswith(root.rstrip("/") + "/"):
            rel = path[len(root.rstrip("/")) :]
        else:
            continue
        candidate = os.path.join(point, rel.lstrip("/"), name)
        if os.path.isfile(candidate):
            return candidate
    return None


def oom_counter_files(cgroups: str, mountinfo: str, exited: bool = False) -> tuple[str, ...]:
    """The files holding the ``oom_kill`` counters of the memory cgroups named in
    ``cgroups`` (the text of a ``/proc/PID/cgroup``), found through ``mountinfo`` (that of
    ``/proc/self/mountinfo``): cgroup v1 ``memory.oom_control`` first, then v2
    ``memory.events``. ``exited``: the text is that of a process that has exited, whose v1
    paths are not its own (the kernel shows ``/``)."""
    v2, v1 = _cgroup_mounts(mountinfo)
    first, second = [], []
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[2].endswith(" (deleted)"):
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            found = _under(v2, path, "memory.events")
            if found:
                second.append(found)
        elif "memory" in controllers.split(",") and not exited:
            found = _under(v1, path, "memory.oom_control")
            if found:
                first.append(found)
    return tuple(first + second)


def read_oom_kills(path: str) -> int | None:
    """The ``oom_kill`` count in a ``memory.events`` or ``memory.oom_control`` file, or
    None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(b"oom_kill "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


_mountinfo: tuple[float, str] | None = None


def _mounts_text() -> str:
    """``/proc/self/mountinfo``, read again at most every few seconds."""
    global _mountinfo
    now = time.monotonic()
    if _mountinfo is None or now - _mountinfo[0] > 5.0:
        try:
            with open("/proc/self/mountinfo") as fh:
                _mountinfo = (now, fh.read())
        except OSError:
            _mountinfo = (now, "")
    return _mountinfo[1]


def process_oom_files(pid: int, exited: bool = False) -> tuple[str, ...]:
    """The ``oom_kill`` counter files of process ``pid``'s memory cgroups (``()`` where
    there is none, or not on Linux)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            text = fh.read()
    except OSError:
        return ()
    return oom_counter_files(text, _mounts_text(), exited=exited)


class OomWatch:
    """Tells whether a process that died of SIGKILL was killed by the out-of-memory killer:
    :meth:`before` when it starts, :meth:`claim` when it died. One per process (module
    :data:`oom_watch`): each kill the counters show is claimed by one death only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed: dict[str, int] = {}

    def before(self, pid: int) -> dict[str, int]:
        """The counters of ``pid``'s cgroups now (call it as the process starts)."""
        out = {}
        for path in process_oom_files(pid):
            count = read_oom_kills(path)
            if count is not None:
                out[path] = count
        return out

    def after(self, pid: int) -> tuple[str, ...]:
        """The counter files of the cgroups of ``pid``, a process that has exited and is not
        reaped yet (cgroup v2 only, see :func:`oom_counter_files`)."""
        return process_oom_files(pid, exited=True)

    def claim(self, before: dict[str, int], after: Iterable[str] = ()) -> bool:
        """Whether a counter of the cgroups in ``before`` (or, counted from 0, of the ones
        in ``after`` it was not in at the start) grew by a kill that no other death
        claimed; that kill is then this one's."""
        paths = dict.fromkeys(before)
        paths.update(dict.fromkeys(after))
        if not paths:
            return False
        for attempt in range(3):  # the killer counts its kill just after it signals it
            for path in paths:
                now = read_oom_kills(path)
                if now is None:
                    continue
                with self._lock:
                    floor = max(before.get(path, 0), self._claimed.get(path, 0))
                    if now > floor:
                        self._claimed[path] = floor + 1
                        return True
            if attempt < 2:
                time.sleep(0.01)
        return False


#: the watch of this process
oom_watch = OomWatch()


# --- waiting ---------------------------------------------------------------------------------

#: seconds between readings of a waited process's peak memory, at most (see :class:`Reaper`)
SAMPLE = 0.25


def _status_kb(pid: int | str, field: bytes) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            text = fh.read()
        at = text.index(field) + len(field)
        return int(text[at : text.index(b"kB", at)]) * 1024
    except (OSError, ValueError):
        return None


def high_water(pid: int | str = "self") -> int | None:
    """The peak resident memory (``VmHWM``) of a live process, in bytes, or None."""
    return _status_kb(pid, b"VmHWM:")


#: what :func:`spawn_floor` adds to this process's resident memory for a fork: memory that
#: another thread may touch between the reading and the fork
_FORK_MARGIN = 8 << 20


def spawn_floor(forks: bool) -> int | None:
    """The lowest ``ru_maxrss`` a process started now can show, in bytes (see
    :class:`Reaper`): after a ``fork`` (``Popen`` with a ``preexec_fn``), the memory this
    process has now (its copy was resident), after a ``vfork`` (``Popen``'s way without a
    ``preexec_fn``), this process's peak. None where not known (not Linux)."""
    if not forks:
        return high_water()
    rss = _status_kb("self", b"VmRSS:")
    return None if rss is None else rss + _FORK_MARGIN


class Reaper:
    """Waits for a child process and reaps it with ``wait4`` (see :meth:`wait`).

    ``floor``: the lowest ``ru_maxrss`` the process can show (:func:`spawn_floor` when it
    was started). The kernel's ``ru_maxrss`` of a process is never below the memory of the
    process that started it (at exec it keeps the mark of the memory it replaced: a copy
    of its starter's after a fork, its starter's own after a vfork), so a peak up to
    ``floor`` is not the process's own: it is then the highest ``VmHWM`` read while it
    ran (after 5 ms, then at doubling intervals up to ``SAMPLE`` seconds; each wait adds
    to what earlier ones saw), or None when it ended before the first reading.
    """

    def __init__(self, proc: subprocess.Popen, floor: int | None = None) -> None:
        self.proc, self.floor = proc, floor
        self.sampled, self.interval = 0, 0.005

    def _sample(self) -> None:
        if self.floor is not None:
            self.sampled = max(self.sampled, high_water(self.proc.pid) or 0)
            self.interval = min(self.interval * 2, SAMPLE)

    def wait(self, timeout: float | None = None) -> tuple[int, Usage, tuple[str, ...]]:
        """Wait up to ``timeout`` seconds for the process to exit
        (``subprocess.TimeoutExpired`` after that) and reap it: its exit status (as
        ``Popen.returncode`` gives it, and set there), its :class:`Usage`, and the
        out-of-memory counter files of the cgroups it ended in (cgroup v2; see
        :meth:`OomWatch.after`)."""
        proc = self.proc
        if proc.returncode is not None:
            return proc.returncode, NO_USAGE, ()
        pid = proc.pid
        after: tuple[str, ...] = ()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is not None:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if self.floor is not None:
                        left = self.interval if left is None else min(self.interval, left)
                    if poller.poll(None if left is None else int(left * 1000) + 1):
                        break
                    self._sample()
                    if deadline is not None and time.monotonic() >= deadline:
                        raise subprocess.TimeoutExpired(proc.args, timeout)  # type: ignore[arg-type]
            finally:
                os.close(pidfd)
            after = oom_watch.after(pid)  # a zombie: its cgroup still shows (v2)
            try:
                _, status, ru = os.wait4(pid, 0)
            except ChildProcessError:  # someone else reaped it
                return proc.wait(), NO_USAGE, after
        else:
            delay, next_sample = 0.0005, time.monotonic() + self.interval
            while True:
                try:
                    done, status, ru = os.wait4(pid, os.WNOHANG)
                except ChildProcessError:
                    return proc.wait(), NO_USAGE, ()
                if done:
                    break
                now = time.monotonic()
                if now >= next_sample:
                    self._sample()
                    next_sample = now + self.interval
                if deadline is not None and now >= deadline:
                    self._sample()
                    raise subprocess.TimeoutExpired(proc.args, timeout)  # type: ignore[arg-type]
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        usage = usage_of(ru)
        floor = self.floor
        if floor is not None and usage.max_rss is not None and usage.max_rss <= floor:
            usage = Usage(usage.cpu_time, self.sampled or None)
        return proc.returncode, usage, after


def wait_process(
    proc: subprocess.Popen, timeout: float | None = None, floor: int | None = None
) -> tuple[int, Usage, tuple[str, ...]]:
    """``Reaper(proc, floor).wait(timeout)``."""
    return Reaper(proc, floor).wait(timeout)
