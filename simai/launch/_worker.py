"""Warm worker process of the local executor; run as a script, imports nothing of simai.

Protocol over one socket (fd in argv[1]), each frame an 8-byte little-endian length and a
pickle. Parent to worker: ``("init", sys_path)``, then ``("run", [(task_id, payload, cores,
env, memo_ident), ...])`` batches, or ``("exit",)``. Worker to parent, one frame per task in
order: ``(task_id, ok, value_or_exception, traceback_text, seconds)``; for a task that
succeeded and came with a ``memo_ident``, ``(task_id, True, None, None, seconds, memo_key,
result_pickle)`` instead: the workflow's memo key (sha256 of the pickled function identity
and arguments, taken before the call, see ``simai.workflow.memo.memo_key``; None for
arguments that are not plain data) and the result's pickle, which the workflow keeps as
is, both computed here rather than in the executor's busy process.
"""

import hashlib
import os
import pickle
import socket
import struct
import sys
import time
import traceback

_HEADER = struct.Struct("<Q")


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


def _memo_key(ident, args, kwargs):
    """Must match ``simai.workflow.memo.memo_key`` byte for byte; None when unhashable or
    not :func:`_plain`."""
    if not (_plain(args) and _plain(kwargs)):
        return None
    what = ("function", ident, args, sorted(kwargs.items()) if kwargs else [])
    try:
        blob = pickle.dumps(what, protocol=5)
    except Exception:  # noqa: BLE001
        try:
            import cloudpickle

            blob = cloudpickle.dumps(what)
        except Exception:  # noqa: BLE001
            return None
    return hashlib.sha256(blob).hexdigest()


def _encode_error(task_id, exc, seconds):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data = _dumps((task_id, False, exc, tb, seconds))
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - the exception cannot travel: send its text instead
        substitute = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        return pickle.dumps((task_id, False, substitute, tb, seconds), protocol=5)


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
    pack = _HEADER.pack
    ready = pickle.dumps(("ready",), protocol=5)
    send(pack(len(ready)) + ready)  # a task's walltime starts now, not when it was sent
    while True:
        data = reader.frame()
        if data is None:
            return
        msg = pickle.loads(data)
        if msg[0] != "run":
            return
        for task_id, payload, cores, env, ident in msg[1]:
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
                key = None if ident is None else _memo_key(ident, args, kwargs)  # before the
                result = fn(*args, **kwargs)  # task can change its arguments in place
                seconds = time.perf_counter() - start
                try:
                    if ident is None:
                        out = _dumps((task_id, True, result, None, seconds))
                    else:
                        kept = _dumps(result)
                        out = _dumps((task_id, True, None, None, seconds, key, kept))
                except Exception as exc:  # noqa: BLE001
                    err = TypeError(f"cannot send the result back to the executor: {exc}")
                    out = _encode_error(task_id, err, seconds)
            except BaseException as exc:  # noqa: BLE001 - every failure goes to the future
                out = _encode_error(task_id, exc, time.perf_counter() - start)
            send(pack(len(out)) + out)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass


if __name__ == "__main__":
    main()
