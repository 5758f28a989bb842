"""Warm worker process of the local executor; run as a script, imports nothing of simai but
``memokey.py`` beside it, loaded by its path.

Protocol over one socket (fd in argv[1]), each frame an 8-byte little-endian length and a
pickle. Parent to worker: ``("init", sys_path)``, then ``("run", [(task_id, payload, cores,
env, memo), ...], journal_dir)`` batches, or ``("exit",)``. Worker to parent, in task order:
a frame ``(task_id, ok, value_or_exception, traceback_text, seconds, cpu, rss)`` for each
task, or one ``([(seconds, kept, result_pickle, cpu, rss), ...],)`` for consecutive results
with a memo (below). The frames of quick tasks (under ``QUICK`` seconds) of one batch are sent
together, when the batch ends or before the next task once the first of them waited ``HOLD``
seconds: a batch of tiny tasks then costs one send, not one per task.

``cpu`` is the task's CPU time (user + system seconds of this process from the end of the
task before, its arguments' unpickling included, plus those of the processes it waited for),
``rss`` its peak resident memory in bytes: this process's high-water mark (``VmHWM``), reset
(``/proc/self/clear_refs``) after each task longer than ``SLOW`` seconds, or that of a process
it waited for when that is higher; a quicker task costs one ``getrusage`` and gets what was
resident when the mark was last reset (see ``_Meter.task``). Where the mark cannot be reset
(not Linux) ``rss`` is the process's peak so far, an upper bound.

``memo`` is None, or ``(name, memo_key)`` for a task whose result the workflow memoizes:
this process keeps the memo itself, off the executor's busy process. It takes the key as
given or computes it before the call (``simai.launch.memokey.function_key``; not for
arguments that are not plain data), except for arguments that are all numbers, strings,
bytes, booleans or None: those it journals as they are, ``(None, name, result_pickle,
function_ident, args, sorted_kwargs)``, and the records writer computes their key
(``memokey.atom_key``) when it folds the journal in, off the run's busy cores. For the
results it sends together it appends one record, ``marshal.dumps((finished, [(key, name,
result_pickle) or that, ...]))`` (body length and CRC-32 as ``<II``, then the body), to its
own journal file in ``journal_dir``, *before*
it sends them, so that no result seen is lost by a kill; the records writer folds the
journals into the memo table (``simai/workflow/_recorder.py``). ``kept`` is False when
there was no key or the journal could not be written, and the workflow keeps the memo
itself.
"""

import importlib.util
import marshal
import os
import pickle
import resource
import socket
import struct
import sys
import time
import traceback
import zlib

_HEADER = struct.Struct("<Q")
_JOURNAL_RECORD = struct.Struct("<II")  # as _recorder.JOURNAL_RECORD reads it
#: a task quicker than this (seconds) may have its result held for the next ones ...
QUICK = 50e-6
#: ... for this long at most (unless the next task runs longer: it is not known in advance)
HOLD = 200e-6
#: after a task longer than this (seconds) the memory high-water mark is reset (cheap beside
#: the task), so that a task that freed memory leaves no stale peak to the next ones
SLOW = 1e-3
#: ... and at least this often (seconds) among quick tasks
RECHECK = 0.1
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # of ru_maxrss: kB on Linux


def _load_memokey():
    """``simai/launch/memokey.py``, by its path: importing it as part of simai would import
    all of simai into every worker."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "memokey.py")
    spec = importlib.util.spec_from_file_location("simai_memokey", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_memokey = _load_memokey()
atom_items, function_ident = _memokey.atom_items, _memokey.function_ident


def _set_parent_death_signal() -> None:
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort: EOF on the socket also ends the worker
        pass


def _dumps(obj):
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:  # noqa: BLE001
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=5)


_ATOMS = frozenset((type(None), bool, int, float, str, bytes))
_PLAIN_ITEMS = 256  # values looked at, at most: bigger arguments get their key in the parent


def _plain(values):
    """Whether these arguments pickle to the same bytes as the parent's copy did (plain
    numbers, strings, bytes and small lists, tuples and dicts of them), so that their memo
    key can be computed here. Anything else (arrays, sets, objects) gets its key in the
    parent, from the original: its pickle need not survive a round trip byte for byte."""
    if type(values) is tuple:  # the common case first: a few numbers and strings
        for value in values:
            if type(value) not in _ATOMS:
                break
        else:
            return True
    budget = _PLAIN_ITEMS
    stack = [values]
    while stack:
        value = stack.pop()
        budget -= 1
        if budget < 0:
            return False
        kind = type(value)
        if kind in _ATOMS:
            continue
        if kind is tuple or kind is list:
            stack.extend(value)
        elif kind is dict:
            stack.extend(value.keys())
            stack.extend(value.values())
        else:
            return False
    return True


def _memo_key(fn, args, kwargs):
    """The memo key of the call, or None when its arguments are not :func:`_plain`."""
    if not (_plain(args) and (not kwargs or _plain(kwargs))):
        return None
    return _memokey.function_key(fn, args, kwargs)


def _encode_error(task_id, exc, seconds, cpu, rss):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data = _dumps((task_id, False, exc, tb, seconds, cpu, rss))
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - the exception cannot travel: send its text instead
        substitute = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        return pickle.dumps((task_id, False, substitute, tb, seconds, cpu, rss), protocol=5)


def _open(path, flags):
    try:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


class _Meter:
    """Each task's CPU time and peak memory (see the module's docstring)."""

    def __init__(self):
        try:
            self.page = os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            self.page = 4096
        self.clear_refs = _open("/proc/self/clear_refs", os.O_WRONLY)
        self.status = _open("/proc/self/status", os.O_RDONLY)
        self.statm = _open("/proc/self/statm", os.O_RDONLY)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children_cpu = usage.ru_utime + usage.ru_stime
        self.children_rss = usage.ru_maxrss
        self.cpu = 0.0
        self.resident = 0  # bytes resident at the last check
        self.checked = 0.0  # when that was (perf_counter)
        self.check()

    def check(self):
        """Reset the high-water mark and note what is resident now."""
        if self.clear_refs is not None:
            try:
                os.write(self.clear_refs, b"5")  # VmHWM := VmRSS
            except OSError:
                os.close(self.clear_refs)
                self.clear_refs = None
        resident = None
        if self.statm is not None:
            try:
                resident = int(os.pread(self.statm, 128, 0).split()[1]) * self.page
            except (OSError, ValueError, IndexError):
                pass
        if resident is None:
            resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT
        self.resident = resident
        self.checked = time.perf_counter()

    def high_water(self):
        """The peak resident memory since the last check, in bytes: ``VmHWM`` (the
        process's peak where it cannot be reset), else ``ru_maxrss``."""
        if self.status is not None:
            try:
                text = os.pread(self.status, 8192, 0)
                at = text.index(b"VmHWM:") + 6
                return int(text[at : text.index(b"kB", at)]) * 1024
            except (OSError, ValueError):
                pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT

    def start(self):
        """Before the first task of a batch (between batches the worker only waits)."""
        self.cpu = time.process_time()

    def task(self, seconds):
        """``(cpu, rss)`` of the task that just ended.

        A quick task (under ``SLOW`` seconds) costs one ``process_time()``: its peak is what
        was resident at the last check (it had no time to touch more than a few MB). After a
        longer one (or ``RECHECK`` seconds of quick ones) the high-water mark is read and
        reset, and the CPU time of the processes it waited for is added. ``ru_maxrss`` would
        not do: it is never below the peak of the process that started this one (the kernel
        keeps the mark of the memory an exec replaced), so only ``VmHWM`` tells a small
        task's peak."""
        cpu = time.process_time()
        spent = cpu - self.cpu
        self.cpu = cpu
        if seconds < SLOW and time.perf_counter() - self.checked < RECHECK:
            return spent, self.resident
        peak = self.high_water()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        children = usage.ru_utime + usage.ru_stime
        if children != self.children_cpu:  # processes it waited for
            spent += children - self.children_cpu
            self.children_cpu = children
        if usage.ru_maxrss > self.children_rss:
            self.children_rss = usage.ru_maxrss
            peak = max(peak, usage.ru_maxrss * _RSS_UNIT)
        self.check()
        return spent, peak


def _journal_record(memos):
    """One journal record of ``(key, name, result_pickle)`` memos."""
    body = marshal.dumps((time.time(), memos))
    return _JOURNAL_RECORD.pack(len(body), zlib.crc32(body)) + body


class _Results:
    """The frames of a batch not sent yet, and the memos that go to the journal first."""

    def __init__(self, send):
        self.send = send
        self.frames = []  # frames, and (seconds, result_pickle, has_memo, cpu, rss) of results
        # with a memo, whose frame says whether the journal kept them
        self.memos = []
        self.since = 0.0
        self.journals = {}  # this worker's journal file in each directory, once used

    def add(self, item, memo=None):
        if not self.frames:
            self.since = time.perf_counter()
        self.frames.append(item)
        if memo is not None:
            self.memos.append(memo)

    def flush(self, directory):
        """Append the memos to the journal (one record), then send the frames (those of
        consecutive results with a memo as one)."""
        kept = bool(self.memos) and self._write(directory, _journal_record(self.memos))
        out, group = [], []
        for item in self.frames:
            if type(item) is tuple:
                seconds, blob, has_memo, cpu, rss = item
                group.append((seconds, kept and has_memo, blob, cpu, rss))
                continue
            if group:
                out.append(_dumps((group,)))
                group = []
            out.append(item)
        if group:
            out.append(_dumps((group,)))
        self.frames, self.memos = [], []
        self.send(b"".join(_HEADER.pack(len(frame)) + frame for frame in out))

    def _write(self, directory, data):
        try:
            fd = self.journals.get(directory)
            if fd is None:
                path = os.path.join(directory, f"{os.getpid()}-{os.urandom(4).hex()}.memo")
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                fd = self.journals[directory] = os.open(path, flags, 0o600)
            if os.write(fd, data) == len(data):
                return True
        except OSError:
            pass
        fd = self.journals.pop(directory, None)  # a record cut short ends the reading of
        if fd is not None:  # its file: later ones go to a new file
            os.close(fd)
        return False


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def frame(self):
        while True:
            if len(self.buf) >= 8:
                (size,) = _HEADER.unpack_from(self.buf)
                if len(self.buf) >= 8 + size:
                    data = bytes(self.buf[8 : 8 + size])
                    del self.buf[: 8 + size]
                    return data
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buf += chunk


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.set_inheritable(False)
    sock.setblocking(True)
    _set_parent_death_signal()
    reader = _Reader(sock)
    first = reader.frame()
    if first is None:
        return
    kind, path = pickle.loads(first)
    sys.path[:] = path
    pinning = hasattr(os, "sched_setaffinity")
    cur_cores = os.sched_getaffinity(0) if pinning else None
    base_env = {}
    cur_env = None
    send = sock.sendall
    functions = {}
    results = _Results(send)
    pack = _HEADER.pack
    meter = _Meter()
    measure = meter.task
    ready = pickle.dumps(("ready",), protocol=5)
    send(pack(len(ready)) + ready)  # a task's walltime starts now, not when it was sent
    while True:
        data = reader.frame()
        if data is None:
            return
        msg = pickle.loads(data)
        if msg[0] != "run":
            return
        journal, seconds = msg[2], 0.0
        meter.start()
        for task_id, payload, cores, env, memo in msg[1]:
            if results.frames and (seconds > QUICK or time.perf_counter() - results.since > HOLD):
                results.flush(journal)
            if pinning and cores is not None and cores != cur_cores:
                os.sched_setaffinity(0, cores)
                cur_cores = cores
            if env != cur_env:
                for key in set(base_env) | set(env or ()):
                    base_env.setdefault(key, os.environ.get(key))
                    value = (env or {}).get(key, base_env[key])
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                cur_env = env
            start = time.perf_counter()
            try:
                fn, args, kwargs = pickle.loads(payload)
                if isinstance(fn, bytes):
                    fn = functions.get(fn) or functions.setdefault(fn, pickle.loads(fn))
                    if len(functions) > 256:
                        functions.clear()
                fn = getattr(fn, "__simai_function__", fn)
                if memo is not None:  # the key before the call: a task can change its
                    name, key = memo  # arguments in place
                    call = None
                    if key is None:
                        items = atom_items(args, kwargs)
                        if items is None:
                            key = _memo_key(fn, args, kwargs)
                        else:  # immutable: journaled as they are, hashed by the writer
                            call = (function_ident(fn), args, items)
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - every failure goes to the future
                seconds = time.perf_counter() - start
                cpu, rss = measure(seconds)
                results.add(_encode_error(task_id, exc, seconds, cpu, rss))
                continue
            seconds = time.perf_counter() - start
            cpu, rss = measure(seconds)
            try:
                if memo is None:
                    results.add(_dumps((task_id, True, result, None, seconds, cpu, rss)))
                else:
                    blob = _dumps(result)
                    if key is not None:
                        memo = (key, name, blob)
                    else:
                        memo = None if call is None else (None, name, blob, *call)
                    results.add((seconds, blob, memo is not None, cpu, rss), memo)
            except Exception as exc:  # noqa: BLE001
                err = TypeError(f"cannot send the result back to the executor: {exc}")
                results.add(_encode_error(task_id, err, seconds, cpu, rss))
            except BaseException as exc:  # noqa: BLE001 - goes to the future too
                results.add(_encode_error(task_id, exc, seconds, cpu, rss))
        if results.frames:
            results.flush(journal)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass


if __name__ == "__main__":
    main()
