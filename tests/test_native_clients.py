"""The native clients (native/: C library, C++ header, Fortran module) against the Python store,
on every backend: node-local (local://), filesystem (file://) and the session's two real
redis-server shards (redis://, password from $SIMAI_STORE_PASSWORD, as simai starts them).

The session builds and installs the library once with CMake, then builds the test programs in
native/tests/ as a user's project would (find_package(simai)); a small probe compiled here calls
what those do not (keys, exists, delete, stream state, bounded appends). Each test runs real
processes on a fresh store: whatever one language writes, the other reads equal; damage is an
error code in C, never data; waits wake across languages; C and Python writers share a store at
the same time without corrupting it. Most tests run on every backend (`store_url`); those that
hold for one backend only say so in their name's section and docstring.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _native import DTYPES, JSON, LONG, NATIVE, SHAPES, _fixture, _pattern, _run

import simai
from simai.store import CorruptValueError
from simai.store.local import local_root
from simai.store.redis import RedisStore
from simai.store.resp import Connection

PROBE = r"""
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <simai.h>

/* probe CMD URL NAME [N]: print what the C client sees, or the code and message it got */
int main(int argc, char **argv)
{
    simai_store *s;
    int rc = simai_open_url(argv[2], &s);
    if (!rc && !strcmp(argv[1], "keys")) {
        char **keys;
        size_t n;
        if (!(rc = simai_keys(s, argv[3], &keys, &n))) {
            for (size_t i = 0; i < n; i++)
                printf("%s\n", keys[i]);
            simai_free_keys(keys, n);
        }
    } else if (!rc && !strcmp(argv[1], "delete")) {
        int existed, exists;
        if (!(rc = simai_delete(s, argv[3], &existed)) && !(rc = simai_exists(s, argv[3], &exists)))
            printf("%d %d\n", existed, exists);
    } else if (!rc && !strcmp(argv[1], "append")) {
        for (int i = 0; i < atoi(argv[4]) && !rc; i++) {
            double v = i;
            uint64_t shape[1] = {1};
            int64_t index;
            if (!(rc = simai_append_array(s, argv[3], SIMAI_DTYPE_F64, 1, shape, &v, 0, 0.2,
                                          &index)))
                printf("%" PRId64 "\n", index);
        }
    } else if (!rc && !strcmp(argv[1], "group")) {
        int64_t i;
        double v;
        rc = simai_group_position(s, argv[3], argv[4], &i);
        while (!rc && !(rc = simai_group_get(s, argv[3], argv[4], &i, 10, &v, sizeof v, NULL)))
            printf("%" PRId64 " %g\n", i++, v);
    } else if (!rc && !strcmp(argv[1], "shape")) {
        simai_info info;
        if (!(rc = simai_info_get(s, argv[3], &info))) {
            printf("%d %s %" PRIu64, info.kind, info.dtype, info.nbytes);
            for (int i = 0; i < info.ndim; i++)
                printf(" %" PRIu64, info.shape[i]);
            printf("\n");
        }
    } else if (!rc && !strcmp(argv[1], "info")) {
        simai_stream_state st;
        if (!(rc = simai_stream_info(s, argv[3], &st)))
            printf("%" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %d %d\n", st.length,
                   st.start, st.dropped, st.maxlen, st.policy, st.closed);
    } else if (!rc && !strcmp(argv[1], "view")) {
        simai_view *view;
        const void *data;
        simai_info info;
        if (!(rc = simai_stream_view(s, argv[3], atoi(argv[4]), 5, &view, &data, &info))) {
            printf("%" PRIu64 " %g\n", info.nbytes, ((const double *)data)[0]);
            simai_view_release(view);
        }
    }
    if (rc)
        printf("%s %s\n", simai_code_name(rc), simai_last_error());
    simai_close(s);
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(native, tmp_path_factory) -> Path:
    """PROBE, built against the installed library as a user's program would be."""
    src = tmp_path_factory.mktemp("probe") / "probe.c"
    src.write_text(PROBE)
    exe = src.with_suffix("")
    prefix = native.prefix
    _run(native.cc, "-std=c11", "-Wall", "-Wextra", src, "-o", exe, f"-I{prefix}/include",
         f"-L{prefix}/lib", "-lsimai", f"-Wl,-rpath,{prefix}/lib")  # fmt: skip
    return exe


@pytest.fixture
def store(store_url):
    """The Python client on a fresh store of each backend in turn (conftest's `store_url`)."""
    s = simai.open_store(store_url)
    yield s
    s.close()


def _backend(store) -> str:
    return store.url.split(":", 1)[0]


def _put_fixtures(store) -> None:
    """The values check.c's `read` expects before its stream."""
    for d, dt in enumerate(DTYPES):
        for i in range(len(SHAPES)):
            store.put(f"p/arr/{dt}/{i}", _fixture(d, i))
    store.put("p/bytes-big", _pattern(100000, 1).tobytes())
    store.put("p/json", JSON)
    store.put("p/" + LONG, b"long")


# --- values cross the language boundary both ways ------------------------------------------


def test_c_writes_python_reads(native, store) -> None:
    """Every dtype and shape, bytes, JSON, a long key and a stream written by C read equal."""
    _run(native.check, "write", store.url)
    for d, dt in enumerate(DTYPES):
        for i, shape in enumerate(SHAPES):
            got = store.get(f"c/arr/{dt}/{i}")
            assert (got.dtype.str, got.shape) == (dt, shape)
            assert got.tobytes() == _fixture(d, i).tobytes(), (dt, shape)
            view = store.get(f"c/arr/{dt}/{i}", view=True)  # zero-copy on local://
            assert view.tobytes() == got.tobytes()
    assert store.get("c/bytes") == _pattern(1000, 1).tobytes()
    assert store.get("c/bytes-big") == _pattern(100000, 1).tobytes()
    assert store.get("c/empty") == b""
    assert store.get("c/json") == JSON
    assert store.get("c/" + LONG) == b"long"
    assert "c/" + LONG in store.keys("c/long/")
    values = list(store.stream("c/stream", timeout=1))
    assert [v.tolist() for v in values] == [[i, i + 0.5, -i] for i in range(5)]


@pytest.mark.parametrize(
    "store_url, chunk",
    [("local", None), ("file", None), ("redis", None), ("redis", 1000)],
    ids=["local", "file", "redis", "redis-chunked"],
    indirect=["store_url"],
)
def test_python_writes_c_reads(native, probe, store_url, chunk) -> None:
    """What Python writes, C reads equal; on redis also when Python cut the values into
    chunks. C's simai_info_get sees the kind, dtype, size and shape Python stored."""
    store = RedisStore(store_url, chunk_size=chunk) if chunk else simai.open_store(store_url)
    _put_fixtures(store)
    for i in range(5):
        store.append("p/stream", np.array([i, i + 0.5, -i]))
    store.close_stream("p/stream")
    store.close()
    url = store_url
    assert _run(native.check, "read", url).strip() == "ok"
    assert _run(probe, "shape", url, "p/arr/<f8/6").split() == ["1", "<f8", "40000", "100", "50"]
    assert _run(probe, "shape", url, "p/json").split() == ["2", "48"]  # JSON, 48 bytes
    assert _run(probe, "shape", url, "p/none").startswith("SIMAI_ERR_NOT_FOUND")


def test_c_reader_sees_every_value_python_appends(native, store) -> None:
    """A C reader waiting on each entry of a stream gets every one Python appends meanwhile."""
    _put_fixtures(store)
    reader = subprocess.Popen([native.check, "read", store.url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    for i in range(5):  # while the reader waits for each entry
        time.sleep(0.05)
        store.append("p/stream", np.array([i, i + 0.5, -i]))
    store.close_stream("p/stream")
    out, err = reader.communicate(timeout=20)
    assert out.strip() == "ok", err


def test_keys_exists_delete_from_c(native, probe, store) -> None:
    """C lists keys by prefix (not pattern), deletes, and sees what it deleted gone."""
    for k in ("a/1", "a/2", "a/x y", "b/1", "a/" + LONG):
        store.put(k, b"v")
    assert _run(probe, "keys", store.url, "a/").split("\n")[:-1] == sorted(
        ["a/1", "a/2", "a/x y", "a/" + LONG]
    )
    assert _run(probe, "keys", store.url, "a/*").strip() == ""  # a prefix, not a pattern
    assert _run(probe, "delete", store.url, "a/2").split() == ["1", "0"]
    assert _run(probe, "delete", store.url, "a/2").split() == ["0", "0"]
    assert not store.exists("a/2") and store.exists("a/1")


def test_bad_calls_from_c_are_codes_and_leave_data_intact(native, store) -> None:
    """Bad arguments are error codes in C, and the data already stored is untouched."""
    assert _run(native.check, "errors", store.url).strip() == "ok"
    assert store.get("e/kept").tolist() == [[1, 2], [3, 4]]


# --- C++ and Fortran ---------------------------------------------------------------------------


def test_cpp_header(native, store) -> None:
    """The C++ header reads what Python put, writes what Python reads, and throws codes."""
    store.put("p/cpp", np.array([[0.5, 1.5], [2.5, 3.5]], np.float32))
    out = _run(native.cpp, store.url)
    assert out.splitlines()[-1] == "ok"
    assert "missing 2 SIMAI_ERR_NOT_FOUND: key 'cpp/missing' not found" in out
    assert store.get("cpp/field").tolist() == [[1, 2, 3], [4, 5, 6]]


# check.f90's fixture: each kind's numpy type and scale, each rank's shape (see its header)
FORTRAN_KINDS = {"r4": ("<f4", 0.25), "r8": ("<f8", 1.5), "i4": ("<i4", -1), "i8": ("<i8", 10**12)}
FORTRAN_SHAPES = {1: (5,), 2: (3, 4), 3: (2, 3, 4), 4: (2, 3, 1, 2)}


def _fortran_fixture(kind: str, rank: int, written: bool) -> np.ndarray:
    """check.f90's array of `kind` and `rank` as Python must see it: written by Fortran, a[i, j]
    holds its 1-based indices as digits (a(2,3) = 23); for Fortran to read, np.arange."""
    dtype, scale = FORTRAN_KINDS[kind]
    shape = FORTRAN_SHAPES[rank]
    if written:
        x = sum((idx + 1) * 10 ** (rank - 1 - d) for d, idx in enumerate(np.indices(shape)))
    else:
        x = np.arange(int(np.prod(shape))).reshape(shape)
    return (x * scale).astype(dtype)


def test_fortran_arrays_keep_their_shape_both_ways(native, store) -> None:
    """real(4), real(8), integer(4), integer(8) arrays of rank 1 to 4 cross both ways with
    Fortran's shape and indexing: a(i, j) is a[i-1, j-1] in Python, not its transpose.

    Fortran opens the store from its URL to write, and from $SIMAI_STORE (with the password
    from $SIMAI_STORE_PASSWORD) to read, as a simulation that simai starts finds it."""
    if native.fortran is None:
        pytest.skip("no Fortran compiler: apt-get install gfortran")
    assert _run(native.fortran, "write", store.url).strip() == "ok"
    for kind, rank in itertools.product(FORTRAN_KINDS, FORTRAN_SHAPES):
        got, want = store.get(f"f/{kind}/{rank}"), _fortran_fixture(kind, rank, written=True)
        assert (got.dtype.str, got.shape) == (want.dtype.str, want.shape), (kind, rank)
        np.testing.assert_array_equal(got, want, err_msg=f"f/{kind}/{rank}")
    assert store.get("f/r8/2")[1, 2] == 23 * 1.5  # a(2,3)
    assert store.get("f/i8/4")[1, 2, 0, 1] == 2312 * 10**12  # beyond 32 bits
    assert store.get("f/json") == {"from": "fortran"}
    assert not store.exists("f/bad")  # refused: not JSON
    assert not store.exists("f/gone")  # put, then deleted from Fortran
    a = store.get("f/r8/2")
    values = list(itertools.islice(store.stream("f/stream", timeout=1), 2))
    assert [v.tolist() for v in values] == [a.tolist(), (2 * a).tolist()]

    for kind, rank in itertools.product(FORTRAN_KINDS, FORTRAN_SHAPES):
        store.put(f"pf/{kind}/{rank}", _fortran_fixture(kind, rank, written=False))
    store.put("pf/json", {"from": "python"})
    env = dict(os.environ, SIMAI_STORE=store.url)
    assert _run(native.fortran, "read", env=env).strip() == "ok"


# --- waiting across languages ------------------------------------------------------------------


def test_c_wait_wakes_when_python_puts(native, store) -> None:
    """A C wait returns SIMAI_OK when Python puts the key; on local:// at once (the futex),
    not at the 1 s re-check every waiter also makes."""
    waiter = subprocess.Popen(
        [native.check, "wait", store.url, "ready", "10"], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    store.put("ready", b"1")
    out, _ = waiter.communicate(timeout=15)
    code, seconds = out.split()[:2]
    assert code == "SIMAI_OK"
    if _backend(store) == "local":
        assert float(seconds) < 0.9, out


def test_c_wait_times_out_cleanly(native, store) -> None:
    """A C wait for a key that never comes is SIMAI_ERR_TIMEOUT with a message, not early."""
    out = _run(native.check, "wait", store.url, "never", "0.3")
    code, seconds = out.split()[:2]
    assert code == "SIMAI_ERR_TIMEOUT"
    assert float(seconds) > 0.25
    assert "did not appear within 0.3 s" in out
    if _backend(store) == "local":
        assert float(seconds) < 1.0


def test_python_wait_wakes_when_c_puts(native, store) -> None:
    """A Python wait returns when C puts the key; on local:// at once (C bumped the sequence
    and woke the futex)."""
    took: list[float] = []

    def wait() -> None:
        start = time.monotonic()
        store.wait("from-c", timeout=10)
        took.append(time.monotonic() - start)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    _run(native.check, "put", store.url, "from-c", "hello")
    waiter.join(10)
    assert took, "the wait did not return"
    if _backend(store) == "local":
        assert took[0] < 0.8, took
    assert store.get("from-c") == b"hello"


# --- streams: bounds declared in Python, appended to and read from C -------------------------


def test_c_appends_to_a_drop_oldest_stream(native, probe, store) -> None:
    """C's appends to a bounded drop_oldest stream trim the oldest; C sees the trim."""
    store.create_stream("b", maxlen=3, policy="drop_oldest")
    assert _run(probe, "append", store.url, "b", "5").split() == ["0", "1", "2", "3", "4"]
    info = store.stream_info("b")
    assert (info["length"], info["start"], info["dropped"]) == (5, 2, 2)
    kept = itertools.islice(store.stream("b", start=2), 3)
    assert [v.tolist() for v in kept] == [[2.0], [3.0], [4.0]]
    assert _run(probe, "info", store.url, "b").split() == ["5", "2", "2", "3", "2", "0"]
    assert _run(probe, "view", store.url, "b", "4").split() == ["8", "4"]
    assert _run(probe, "view", store.url, "b", "0").startswith("SIMAI_ERR_TRIMMED")


def test_c_append_to_a_full_block_stream_times_out(native, probe, store) -> None:
    """C's append to a full block stream times out with a message, until a group reads."""
    store.create_stream("full", maxlen=2, policy="block")
    out = _run(probe, "append", store.url, "full", "3").split("\n")
    assert out[:2] == ["0", "1"]
    assert out[2].startswith("SIMAI_ERR_TIMEOUT stream 'full' stayed full")
    assert store.stream_len("full") == 2
    reader = store.stream("full", group="g", timeout=1)
    assert next(reader).tolist() == [0.0]  # the group's reading makes room
    next(reader)
    assert _run(probe, "append", store.url, "full", "1").strip() == "2"


def test_c_group_reader_paces_a_python_producer(native, probe, store) -> None:
    """A C consumer group holds back a Python producer on a block stream, skips what a
    drop_oldest stream trimmed, and Python's reader of the group resumes where C stopped."""
    store.create_stream("paced", maxlen=2, policy="block")

    def produce() -> None:
        for i in range(6):  # blocks while the group has 2 values it did not acknowledge
            store.append("paced", np.array([float(i)]), timeout=20)
        store.close_stream("paced")

    producer = threading.Thread(target=produce)
    producer.start()
    out = _run(probe, "group", store.url, "paced", "g").splitlines()
    producer.join(20)
    assert out == [f"{i} {i}" for i in range(6)] + [out[-1]]
    assert out[-1].startswith("SIMAI_ERR_ENDED")
    assert store.stream_info("paced")["groups"] == {"g": 6}
    store.create_stream("lossy", maxlen=2, policy="drop_oldest")
    for i in range(5):
        store.append("lossy", np.array([float(i)]))
    store.close_stream("lossy")
    out = _run(probe, "group", store.url, "lossy", "g").splitlines()
    assert out[:2] == ["3 3", "4 4"] and out[2].startswith("SIMAI_ERR_ENDED")
    reader = store.stream("lossy", group="g", timeout=1)
    assert list(reader) == [] and reader.index == 5


# --- C and Python writers on one store at the same time ------------------------------------

_PY_HAMMER = """
import sys, numpy as np, simai
url, ident, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = simai.open_store(url)
s.wait("go", timeout=30)
for i in range(n):
    v = ident * 1e6 + i + np.arange([16, 3000, 1, 5000][i % 4]) * 1e-3
    s.put(f"w{ident}/{i}", v)
    s.put(f"shared/{i % 10}", v)
    if i % 7 == 3:
        assert s.delete(f"w{ident}/{i - 1}")
    if i % 5 == 0:
        s.append("shared-stream", v, timeout=10)
"""


def _hammer_value(ident: int, i: int) -> np.ndarray:
    return ident * 1e6 + i + np.arange([16, 3000, 1, 5000][i % 4]) * 1e-3


def test_c_and_python_write_one_store_at_the_same_time(native, store) -> None:
    """A C and a Python writer put, delete and append on one store at once: every value is
    whole and one writer's, read equal from both sides, and every acknowledged append is
    read once, each writer's in order. local:// gets the long run (its writers share LMDB)."""
    n_c, n_py = (4000, 1500) if _backend(store) == "local" else (400, 200)
    procs = [
        subprocess.Popen([native.check, "hammer", store.url, "1", str(n_c)]),
        subprocess.Popen([sys.executable, "-c", _PY_HAMMER, store.url, "2", str(n_py)]),
    ]
    time.sleep(0.5)  # both are waiting: start them at once
    store.put("go", b"")
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    # every value verified from both sides
    _run(native.check, "verify", store.url, "1", str(n_c))
    _run(native.check, "verify", store.url, "2", str(n_py))
    for ident, n in ((1, n_c), (2, n_py)):
        for i in range(n):
            key = f"w{ident}/{i}"
            if i % 7 == 2 and i + 1 < n:
                assert not store.exists(key)
            else:
                np.testing.assert_array_equal(store.get(key), _hammer_value(ident, i))
    for j in range(10):  # whole values, each one a writer's
        v = store.get(f"shared/{j}")
        ident, i = int(v[0] // 1e6), int(round(v[0] % 1e6))
        assert i % 10 == j
        np.testing.assert_array_equal(v, _hammer_value(ident, i))
    # every acknowledged append read once, each producer's in order
    appended = [(1, i) for i in range(0, n_c, 5)] + [(2, i) for i in range(0, n_py, 5)]
    store.close_stream("shared-stream")
    seen = []
    for v in store.stream("shared-stream", timeout=5):
        ident, i = int(v[0] // 1e6), int(round(v[0] % 1e6))
        np.testing.assert_array_equal(v, _hammer_value(ident, i))
        seen.append((ident, i))
    assert sorted(seen) == sorted(appended)
    for ident in (1, 2):
        mine = [i for who, i in seen if who == ident]
        assert mine == sorted(mine)
    if _backend(store) == "local":
        switches = sum(a[0] != b[0] for a, b in zip(seen, seen[1:], strict=False))
        assert switches > 10, "the writers did not overlap"
        # the pages LMDB uses stayed allocated ahead of it (a full /dev/shm is an error, not SIGBUS)
        e = store._e
        used = (e.env.info()["last_pgno"] + 1) * e.psize
        assert os.stat(os.path.join(store.root, "data.mdb")).st_blocks * 512 >= used


# --- integrity: where each backend keeps an entry's bytes differs ----------------------------


def _damage(store, key: str, offset: int) -> None:
    """Flip a bit of byte `offset` of the stored entry of `key` (header, then payload, as one
    run of bytes), where the store's backend keeps it."""
    backend = _backend(store)
    if backend == "local":  # LMDB: the record, and the payload apart when it is large
        e = store._e
        k = b"v" + key.encode()
        with e.env.begin(write=True) as txn:
            record = bytearray(txn.get(k, db=e.values))
            if offset < len(record):
                record[offset] ^= 0x10
                txn.put(k, bytes(record), db=e.values)
            else:
                payload = bytearray(txn.get(k, db=e.payloads))
                payload[offset - len(record)] ^= 0x10
                txn.put(k, bytes(payload), db=e.payloads)
    elif backend == "redis":  # one string on the key's shard
        host, port = store._addrs[store.shard_of(key)]
        conn = Connection(host, port, os.environ["SIMAI_STORE_PASSWORD"])
        try:
            entry = bytearray(conn.command("GET", b"simai:v:" + key.encode()))
            entry[offset] ^= 0x10
            conn.command("SET", b"simai:v:" + key.encode(), bytes(entry))
        finally:
            conn.close()
    else:  # one file
        path = Path(store.root) / "values" / key
        entry = bytearray(path.read_bytes())
        entry[offset] ^= 0x10
        path.write_bytes(entry)


@pytest.mark.parametrize("n", [100, 100_000], ids=["small", "large"])
@pytest.mark.parametrize("where", ["payload", "shape", "dtype"])
def test_damaged_value_is_an_error_in_c_never_data(native, store, n, where) -> None:
    """A flipped bit in a value's payload, shape or dtype is SIMAI_ERR_CORRUPT from C's get
    and view (and CorruptValueError in Python), never the damaged data. On local:// the large
    value's payload lives apart from its header."""
    store.put("x", np.arange(n, dtype=np.float64))
    _damage(store, "x", {"payload": 64 + 8 * (n - 1), "shape": 24, "dtype": 9}[where])
    with pytest.raises(CorruptValueError):
        store.get("x")
    out = _run(native.check, "get", store.url, "x")
    assert "get SIMAI_ERR_CORRUPT key 'x' in" in out
    assert "view SIMAI_ERR_CORRUPT" in out
    assert "damaged data was delivered" not in out


# --- opening: local:// names, redis passwords and servers, bad URLs --------------------------


def test_local_c_opens_what_python_opens_and_refuses_what_it_refuses(native, tmp_path) -> None:
    """local:// only: C refuses the names and directories Python refuses, with the same
    error, and finds local://NAME under $SIMAI_SHM_DIR where Python does."""

    def opened(url: str, env: dict | None = None) -> str:
        return _run(native.check, "open", url, env=env).split()[0]

    assert opened("local://a/b") == "SIMAI_ERR_INVALID"
    assert opened("local://..") == "SIMAI_ERR_INVALID"
    assert opened("nothing") == "SIMAI_ERR_INVALID"
    assert opened("rediss://127.0.0.1:1") == "SIMAI_ERR_INVALID"  # no $SIMAI_STORE_TLS_* files
    public = tmp_path / "public"
    public.mkdir(mode=0o777)
    public.chmod(0o777)
    assert opened(f"local://{public}") == "SIMAI_ERR_PERMISSION"
    with pytest.raises(PermissionError):
        simai.open_store(f"local://{public}")
    readable = tmp_path / "project"  # others may read it: refused, and its mode left alone
    readable.mkdir()
    readable.chmod(0o755)
    assert opened(f"local://{readable}") == "SIMAI_ERR_PERMISSION"
    assert opened(f"file://{readable}") == "SIMAI_ERR_PERMISSION"
    assert readable.stat().st_mode & 0o7777 == 0o755 and not list(readable.iterdir())
    # local://NAME lives in $SIMAI_SHM_DIR/simai-UID/NAME, for C as for Python
    shm = tmp_path / "shm"
    _run(native.check, "put", "local://named", "k", "from C",
         env=dict(os.environ, SIMAI_SHM_DIR=str(shm)))  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIMAI_SHM_DIR", str(shm))
        assert local_root("local://named") == str(shm / f"simai-{os.geteuid()}" / "named")
        s = simai.open_store("local://named")
        assert s.get("k") == b"from C"
        s.destroy()


def test_redis_wrong_or_missing_password_is_a_clear_error(native, redis_url) -> None:
    """redis:// only: a wrong or missing password is SIMAI_ERR_PERMISSION saying which, never
    echoing the password; the right one opens, from the environment or the URL."""
    env = dict(os.environ)
    env.pop("SIMAI_STORE_PASSWORD")

    def opened(password: str | None) -> str:
        env = dict(os.environ)
        env.pop("SIMAI_STORE_PASSWORD")
        if password is not None:
            env["SIMAI_STORE_PASSWORD"] = password
        return _run(native.check, "open", redis_url, env=env)

    wrong = opened("not-the-password")
    assert wrong.startswith("SIMAI_ERR_PERMISSION redis store")
    assert "authentication to redis://" in wrong and "failed: WRONGPASS" in wrong
    assert "not-the-password" not in wrong
    missing = opened(None)
    assert missing.startswith("SIMAI_ERR_PERMISSION")
    assert "no password given: set SIMAI_STORE_PASSWORD" in missing
    assert opened(os.environ["SIMAI_STORE_PASSWORD"]).startswith("SIMAI_OK")
    # in the URL too, as Python accepts it (discouraged: URLs end up in logs)
    with_password = redis_url.replace("://", f"://:{os.environ['SIMAI_STORE_PASSWORD']}@")
    assert _run(native.check, "open", with_password, env=env).startswith("SIMAI_OK")


def test_redis_dead_server_and_bad_urls_are_errors(native) -> None:
    """redis:// and file://: no server is SIMAI_ERR_IO saying so; malformed URLs are
    SIMAI_ERR_INVALID."""

    def opened(url: str) -> str:
        return _run(native.check, "open", url)

    dead = opened("redis://127.0.0.1:1")
    assert dead.startswith("SIMAI_ERR_IO redis store redis://127.0.0.1:1: cannot connect")
    assert opened("redis://127.0.0.1:1/db").startswith("SIMAI_ERR_INVALID")
    assert opened("redis://127.0.0.1:99999").startswith("SIMAI_ERR_INVALID")
    assert opened("file://").startswith("SIMAI_ERR_INVALID")


# --- finding the library (on a local:// store) -----------------------------------------------


def test_simai_native_prints_the_flags_that_build_a_program(
    native, local_store_url, tmp_path
) -> None:
    """`simai native` prints the flags that build and link a C program against the installed
    library, and says how to install it where there is none."""

    def simai_native(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "simai.cli", "native", "--prefix", str(native.prefix), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    flags = simai_native("--cflags", "--libs")
    assert flags.returncode == 0, flags.stderr
    assert f"-I{native.prefix}/include" in flags.stdout.split()
    exe = tmp_path / "via-simai-native"
    _run(native.cc, NATIVE / "tests" / "pkgconfig.c", "-o", exe, *flags.stdout.split())
    assert _run(exe, local_store_url).startswith("ok 0.1.0")
    assert simai_native("--prefix-path").stdout.strip() == str(native.prefix)
    if native.fortran is not None:
        assert "-lsimai_fortran" in simai_native("--fflags").stdout.split()
    nothing = subprocess.run(
        [sys.executable, "-m", "simai.cli", "native", "--cflags", "--prefix", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nothing.returncode == 1
    assert "libsimai is not installed under" in nothing.stderr
    assert f"cmake -S native -B build/native -DCMAKE_INSTALL_PREFIX={tmp_path} && " in (
        nothing.stderr
    )


FORTRAN_ONLY_CMAKE = """cmake_minimum_required(VERSION 3.18)
project(fortran_only LANGUAGES Fortran)
find_package(simai 0.1 REQUIRED COMPONENTS fortran)
add_executable(fortran_only main.f90)
target_link_libraries(fortran_only PRIVATE simai::fortran)
"""

FORTRAN_ONLY_MAIN = """program fortran_only
  use simai
  implicit none
  type(simai_store) :: store
  character(len=256) :: url
  real(8) :: u(3, 4)
  integer :: i, j, stat
  call get_command_argument(1, url)
  call simai_open(store, trim(url), stat)
  if (stat /= SIMAI_OK) stop 1
  do j = 1, 4
    do i = 1, 3
      u(i, j) = 10 * i + j
    end do
  end do
  call simai_put(store, 'fortran-only/u', u, stat=stat)
  call simai_close(store)
  print '(a,i0)', 'put: ', stat
end program fortran_only
"""


def test_a_fortran_only_cmake_project_finds_it(native, local_store_url, tmp_path) -> None:
    """A CMake project of Fortran alone (no C enabled) finds simai::fortran, builds, and puts
    an array Python reads with its Fortran shape."""
    if native.fortran is None:
        pytest.skip("no Fortran compiler: apt-get install gfortran")
    src, build = tmp_path / "src", tmp_path / "build"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(FORTRAN_ONLY_CMAKE)
    (src / "main.f90").write_text(FORTRAN_ONLY_MAIN)
    _run("cmake", "-S", src, "-B", build, f"-DCMAKE_PREFIX_PATH={native.prefix}", timeout=120)
    _run("cmake", "--build", build, timeout=120)
    assert _run(build / "fortran_only", local_store_url) == "put: 0\n"
    s = simai.open_store(local_store_url)
    u = s.get("fortran-only/u")
    s.close()
    assert u.shape == (3, 4) and u[2, 3] == 34 and u[0, 1] == 12


def test_pkg_config_finds_it(native, local_store_url, tmp_path) -> None:
    """pkg-config's flags for simai build a program that opens a store and writes to it."""
    if shutil.which("pkg-config") is None:
        pytest.skip("no pkg-config: apt-get install pkg-config")
    env = dict(os.environ, PKG_CONFIG_PATH=str(native.prefix / "lib" / "pkgconfig"))
    flags = _run("pkg-config", "--cflags", "--libs", "simai", env=env).split()
    exe = tmp_path / "pc"
    _run(native.cc, NATIVE / "tests" / "pkgconfig.c", "-o", exe, *flags)
    assert _run(exe, local_store_url).startswith("ok 0.1.0")
    s = simai.open_store(local_store_url)
    assert s.get("pc/x") == b"found"
    s.close()
