"""Streams declared, deleted and read in consumer groups from C, C++ and Fortran, and stores
destroyed from C, against what Python sees, on each backend.

The programs are native/tests/streams.c, streams.cpp and streams.f90, built by the session's
`native` fixture (tests/_native.py). Each prints every call's outcome ("name: CODE ..."), so a
test reads what the native side saw and then checks with Python what it left in the store.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import simai
from simai.store.base import StoreClosedError


def _program(native, name: str) -> Path:
    path = native.check.parent / name
    if not path.exists():
        pytest.skip(f"{name} was not built (no compiler for it)")
    return path


def _run(native, name: str, *args: object, timeout: float = 60) -> dict[str, str]:
    """Run a test program; its "name: outcome" lines as a dict (a repeated name: the last)."""
    done = subprocess.run(
        [str(_program(native, name)), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    assert done.returncode == 0, f"{name} {args} failed:\n{done.stdout}\n{done.stderr}"
    return _parse(done.stdout)


def _parse(out: str) -> dict[str, str]:
    lines = [line.partition(": ") for line in out.splitlines() if ": " in line]
    return {name: rest for name, _, rest in lines}


def _code(outcome: str) -> str:
    return outcome.split()[0] if outcome else ""


def _read(s, name: str, start: int, count: int) -> list:
    """Entries start .. start + count - 1 of a stream, read by Python."""
    return list(itertools.islice(s.stream(name, start=start, timeout=5), count))


def _entries(out: str) -> list[list[int]]:
    """The "entry: INDEX V..." lines as [index, values...]."""
    return [
        [round(float(v)) for v in line.split()[1:]]
        for line in out.splitlines()
        if line.startswith("entry:")
    ]


# --- declaring: bounds set on one side hold on the other ------------------------------------


def test_bounds_declared_in_c_hold_for_python(native, store_url):
    assert _code(_run(native, "streams_check", store_url, "create", "d", 3, "drop_oldest")
                 ["create"]) == "SIMAI_OK"  # fmt: skip
    assert _code(_run(native, "streams_check", store_url, "create", "b", 2, "block")
                 ["create"]) == "SIMAI_OK"  # fmt: skip
    s = simai.open_store(store_url)
    try:
        for i in range(5):
            assert s.append("d", np.array([i, i], float)) == i
        info = s.stream_info("d")
        assert (info["maxlen"], info["policy"]) == (3, "drop_oldest")
        assert (info["length"], info["start"], info["dropped"]) == (5, 2, 2)
        assert [v[0] for v in _read(s, "d", 2, 3)] == [2, 3, 4]
        s.append("b", b"0")
        s.append("b", b"1")
        with pytest.raises(TimeoutError):  # full, and no group read anything
            s.append("b", b"2", timeout=0.2)
        assert s.stream_info("b")["length"] == 2
        s.create_stream("d", 3, "drop_oldest")  # the same bounds: nothing happens
        with pytest.raises(ValueError, match="maxlen=3"):
            s.create_stream("d", 4, "drop_oldest")
    finally:
        s.close()


def test_bounds_declared_in_python_hold_for_c(native, store_url):
    s = simai.open_store(store_url)
    try:
        s.create_stream("b", 2, "block")
        s.create_stream("d", 2, "drop_oldest")
        out = subprocess.run(
            [str(native.check.parent / "streams_check"), store_url, "append", "b", "3", "0.3"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        assert out.count("append: SIMAI_OK") == 2
        assert "append: SIMAI_ERR_TIMEOUT" in out  # the third waits for a group, then gives up
        assert s.stream_info("b")["length"] == 2
        _run(native, "streams_check", store_url, "append", "d", 4, 1)
        info = s.stream_info("d")
        assert (info["length"], info["start"], info["dropped"]) == (4, 2, 2)
        assert [v[0] for v in _read(s, "d", 2, 2)] == [2, 3]
        got = _run(native, "streams_check", store_url, "create", "d", 2, "drop_oldest")
        assert _code(got["create"]) == "SIMAI_OK"  # the same bounds again
        got = _run(native, "streams_check", store_url, "create", "d", 2, "block")
        assert _code(got["create"]) == "SIMAI_ERR_INVALID"
        assert "policy='drop_oldest'" in got["create"]
    finally:
        s.close()


def test_bounds_refused_for_a_stream_with_values(native, store_url):
    s = simai.open_store(store_url)
    try:
        s.append("plain", b"x")
        got = _run(native, "streams_check", store_url, "create", "plain", 4, "block")
        assert _code(got["create"]) == "SIMAI_ERR_INVALID"
        assert "already holds 1 values appended without bounds" in got["create"]
        assert s.stream_info("plain")["maxlen"] is None
        got = _run(native, "streams_check", store_url, "create", "plain", 0, "block")
        assert _code(got["create"]) == "SIMAI_OK"  # unbounded: what it is
    finally:
        s.close()


def test_bad_input_is_refused_and_changes_nothing(native, store_url):
    s = simai.open_store(store_url)
    try:
        s.create_stream("s", 3, "drop_oldest")
        for i in range(5):
            s.append("s", np.array([i, i], float))
        before = s.stream_info("s")
        got = _run(native, "streams_check", store_url, "bad", "s")
        for name, message in [
            ("policy", 'policy must be "block" or "drop_oldest", not "drop_newest"'),
            ("negative", "maxlen must be >= 1 (or 0: unbounded), not -1"),
            ("rebound", "already declared with maxlen=3, policy='drop_oldest'"),
            ("repolicy", "not maxlen=3, policy='block'"),
            ("unbounded", "bounded to maxlen=3; it cannot be declared unbounded"),
            ("null", "stream name must not be NULL"),
            ("empty", "stream name must not be empty"),
        ]:
            assert _code(got[name]) == "SIMAI_ERR_INVALID", (name, got[name])
            assert message in got[name]
        # a read into the wrong dtype or shape leaves the entry to read again
        assert _code(got["type"]) == "SIMAI_ERR_TYPE" and "<f4 (2,)" in got["type"]
        assert _code(got["shape"]) == "SIMAI_ERR_TYPE" and "<f8 (3,)" in got["shape"]
        assert _code(got["right"]) == "SIMAI_OK" and got["typed"] == "2 2"
        after = s.stream_info("s")
        after["groups"].pop("typed")
        assert after == before
        assert [v[0] for v in _read(s, "s", 2, 3)] == [2, 3, 4]
    finally:
        s.close()


# --- deleting -------------------------------------------------------------------------------


def test_stream_deleted_in_c_is_gone_for_python(native, store_url):
    s = simai.open_store(store_url)
    try:
        s.create_stream("s", 4, "block")
        for i in range(3):
            s.append("s", np.full(1000, i, float))  # entries of 8 kB
        next(s.stream("s", group="g", timeout=5))
        s.close_stream("s")
        s.put("s", b"a value of the same name")
        got = _run(native, "streams_check", store_url, "delete", "s")
        assert _code(got["delete"]) == "SIMAI_OK" and got["existed"] == "1"
        assert got["state"] == "length=0 start=0 dropped=0 maxlen=0 policy=0 closed=0"
    finally:
        s.close()
    s = simai.open_store(store_url)  # a new client: no bounds cached from before
    try:
        info = s.stream_info("s")
        assert (info["length"], info["maxlen"], info["closed"], info["groups"]) == (
            0, None, False, {})  # fmt: skip
        assert s.get("s") == b"a value of the same name"  # values are another namespace
        assert s.append("s", b"new") == 0  # neither closed nor bounded any more
        assert _read(s, "s", 0, 1) == [b"new"]
    finally:
        s.close()
    got = _run(native, "streams_check", store_url, "delete", "never")
    assert _code(got["delete"]) == "SIMAI_OK" and got["existed"] == "0"


def test_stream_deleted_in_python_is_gone_for_c(native, store_url):
    s = simai.open_store(store_url)
    try:
        s.create_stream("s", 5, "drop_oldest")
        s.append("s", b"x")
        assert s.delete_stream("s")
    finally:
        s.close()
    got = _run(native, "streams_check", store_url, "info", "s")
    assert got["state"] == "length=0 start=0 dropped=0 maxlen=0 policy=0 closed=0"


# --- destroy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "file"])
def test_destroy_from_c_removes_the_store(native, backend, request):
    url = request.getfixturevalue(f"{backend}_store_url")
    s = simai.open_store(url)
    s.put("k", np.arange(3))
    s.append("s", b"x")
    root = Path(getattr(s, "root", ""))
    assert root.is_dir()
    got = _run(native, "streams_check", url, "destroy")
    assert _code(got["destroy"]) == "SIMAI_OK"
    for name in ("exists", "put", "again"):  # the handle that destroyed it
        assert _code(got[name]) == "SIMAI_ERR_CLOSED" and "was destroyed" in got[name]
    assert not root.exists()
    with pytest.raises(StoreClosedError, match="was destroyed"):  # a client that had it open
        s.get("k")
    s.close()
    fresh = simai.open_store(url)  # the URL again: a new, empty store
    try:
        assert fresh.keys() == [] and fresh.stream_info("s")["length"] == 0
    finally:
        fresh.close()


def test_destroy_from_cpp(native, local_store_url):
    simai.open_store(local_store_url).put("k", b"v")
    got = _run(native, "streams_cpp", local_store_url, "destroy")
    assert _code(got["destroy"]) == "SIMAI_OK"
    assert _code(got["exists"]) == "SIMAI_ERR_CLOSED"


def test_destroy_is_unsupported_on_redis(native, redis_store_url):
    s = simai.open_store(redis_store_url)
    try:
        s.put("kept", b"v")
        got = _run(native, "streams_check", redis_store_url, "destroy")
        assert _code(got["destroy"]) == "SIMAI_ERR_UNSUPPORTED"
        assert "Redis stores have no destroy" in got["destroy"]
        assert _code(got["exists"]) == "SIMAI_OK"  # the handle still works
        assert s.get("kept") == b"v"
    finally:
        s.close()


# --- consumer groups from C++ and Fortran ------------------------------------------------------


def test_group_readers_get_every_entry_once(native, store_url):
    """C++, Fortran and C readers, each its own group, read a stream a Python producer fills
    while they read; a "block" bound of 4 makes the producer wait for the slowest."""
    n = 40
    fortran = native.check.parent / "streams_fortran"
    s = simai.open_store(store_url)
    try:
        s.create_stream("s", 4, "block")
        groups = ["cpp", "c"] + (["fortran"] if fortran.exists() else [])
        for g in groups:  # registered before the first append: nothing is trimmed unread
            s.stream("s", group=g)
        readers = {
            "cpp": [native.check.parent / "streams_cpp", store_url, "read", "s", "cpp", 30],
            "c": [native.check.parent / "streams_check", store_url, "group", "s", "c", 30],
        }
        if fortran.exists():
            readers["fortran"] = [fortran, store_url, "read", "s", "fortran", "f8"]
        procs = {
            g: subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, text=True)
            for g, cmd in readers.items()
        }
        want = [np.arange(6, dtype=float).reshape(2, 3) + 10 * i for i in range(n)]

        def produce() -> None:
            with simai.open_store(store_url) as p:
                for a in want:
                    p.append("s", a, timeout=60)
                p.close_stream("s")

        producer = threading.Thread(target=produce)
        producer.start()
        outs = {g: p.communicate(timeout=120)[0] for g, p in procs.items()}
        producer.join(60)
        assert not producer.is_alive()
        for g, p in procs.items():
            assert p.returncode == 0, (g, outs[g])
        rows = [[i, *map(round, a.ravel())] for i, a in enumerate(want)]
        assert _entries(outs["cpp"]) == rows  # in order, each once, Python's values
        assert [e[:2] for e in _entries(outs["c"])] == [[i, 10 * i] for i in range(n)]
        assert _parse(outs["cpp"])["position"] == str(n)  # asked for n: all acknowledged
        if "fortran" in outs:
            assert _entries(outs["fortran"]) == rows  # a(2, 3) indexed as Python's (2, 3)
            assert _parse(outs["fortran"])["end"].startswith("12 ")  # SIMAI_ERR_ENDED
        info = s.stream_info("s")
        assert info["length"] == n and info["dropped"] == 0
        assert info["groups"] == {g: n for g in groups}  # each asked for entry n: acknowledged
    finally:
        s.close()


def test_fortran_group_reads_integer_arrays(native, store_url):
    fortran = _program(native, "streams_fortran")
    s = simai.open_store(store_url)
    try:
        for i in range(5):
            s.append("ints", np.arange(6, dtype=np.int32) * (i + 1))
        s.close_stream("ints")
        out = subprocess.run(
            [str(fortran), store_url, "read", "ints", "f", "i4"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        assert _entries(out) == [[i, *range(0, 6 * (i + 1), i + 1)] for i in range(5)]
        assert s.stream_info("ints")["groups"] == {"f": 5}
        again = subprocess.run(  # a restarted reader resumes at the group's position
            [str(fortran), store_url, "read", "ints", "f", "i4"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        assert _entries(again) == []
    finally:
        s.close()


def test_cpp_and_fortran_declare_delete_and_refuse(native, store_url):
    got = _run(native, "streams_cpp", store_url, "admin", "c")
    assert [_code(got[k]) for k in ("create", "same", "other", "policy", "negative")] == [
        "SIMAI_OK", "SIMAI_OK", "SIMAI_ERR_INVALID", "SIMAI_ERR_INVALID", "SIMAI_ERR_INVALID"
    ]  # fmt: skip
    assert 'not "sometimes"' in got["policy"]
    assert got["state"] == "length=3 start=1 dropped=1"  # drop_oldest, maxlen 2
    assert _code(got["type"]) == "SIMAI_ERR_TYPE" and "holds <f8, not <f4" in got["type"]
    assert _code(got["typed"]) == "SIMAI_OK" and got["typed index"] == "1"  # 0 was trimmed
    assert (got["deleted"], got["deleted again"]) == ("1", "0")

    fortran = native.check.parent / "streams_fortran"
    if not fortran.exists():
        pytest.skip("no Fortran compiler")
    got = _run(native, "streams_fortran", store_url, "admin", "f")
    assert [got[k] for k in ("create", "same", "other", "policy", "negative")] == [
        "0", "0", "1", "1", "1"
    ]  # fmt: skip
    assert got["type"] == "5"  # SIMAI_ERR_TYPE: real(4) for a real(8) entry
    assert got["typed"] == "0 0 1 3 5 2 4 6"  # stat, index, then a(1, :), a(2, :)
    assert (got["close"], got["ended"]) == ("0", "12")  # SIMAI_ERR_ENDED after the close
    assert (got["delete"], got["again"]) == ("0 T", "0 F")
    s = simai.open_store(store_url)
    try:
        assert s.stream_info("f")["length"] == 0 and s.stream_info("c")["length"] == 0
    finally:
        s.close()
