"""The native clients (native/: C library, C++ header, Fortran module) against the Python store.

The session builds and installs the library once with CMake, then builds the test programs in
native/tests/ as a user's project would (find_package(simai)). Each test runs real processes
on one node-local store: whatever one language writes, the other reads equal; damage is an
error code in C, never data; waits wake across languages; C and Python writers share a store
at the same time without corrupting it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from _native import DTYPES, JSON, LONG, NATIVE, SHAPES, _fixture, _pattern, _run

import simai
from simai.store import CorruptValueError
from simai.store.local import local_root


@pytest.fixture
def store(local_store_url):
    s = simai.open_store(local_store_url)
    yield s
    s.close()


# --- values cross the language boundary both ways ------------------------------------------


def test_c_writes_python_reads(native, store) -> None:
    _run(native.check, "write", store.url)
    for d, dt in enumerate(DTYPES):
        for i, shape in enumerate(SHAPES):
            got = store.get(f"c/arr/{dt}/{i}")
            assert (got.dtype.str, got.shape) == (dt, shape)
            assert got.tobytes() == _fixture(d, i).tobytes(), (dt, shape)
            view = store.get(f"c/arr/{dt}/{i}", view=True)
            assert view.tobytes() == got.tobytes()
    assert store.get("c/bytes") == _pattern(1000, 1).tobytes()
    assert store.get("c/bytes-big") == _pattern(100000, 1).tobytes()
    assert store.get("c/empty") == b""
    assert store.get("c/json") == JSON
    assert store.get("c/" + LONG) == b"long"
    assert "c/" + LONG in store.keys("c/long/")
    values = list(store.stream("c/stream", timeout=1))
    assert [v.tolist() for v in values] == [[i, i + 0.5, -i] for i in range(5)]


def test_python_writes_c_reads(native, store) -> None:
    for d, dt in enumerate(DTYPES):
        for i in range(len(SHAPES)):
            store.put(f"p/arr/{dt}/{i}", _fixture(d, i))
    store.put("p/bytes-big", _pattern(100000, 1).tobytes())
    store.put("p/json", JSON)
    store.put("p/" + LONG, b"long")
    for i in range(5):
        store.append("p/stream", np.array([i, i + 0.5, -i]))
    store.close_stream("p/stream")
    assert _run(native.check, "read", store.url).strip() == "ok"


def test_bad_calls_from_c_are_codes_and_leave_data_intact(native, store) -> None:
    assert _run(native.check, "errors", store.url).strip() == "ok"
    assert store.get("e/kept").tolist() == [[1, 2], [3, 4]]


def test_c_opens_what_python_opens_and_refuses_what_it_refuses(
    native, tmp_path, monkeypatch
) -> None:
    def opened(url: str, env: dict | None = None) -> str:
        return _run(native.check, "open", url, env=env).split()[0]

    assert opened("local://a/b") == "SIMAI_ERR_INVALID"
    assert opened("local://..") == "SIMAI_ERR_INVALID"
    assert opened("nothing") == "SIMAI_ERR_INVALID"
    assert opened("rediss://127.0.0.1:1") == "SIMAI_ERR_UNSUPPORTED"  # TLS: not yet
    public = tmp_path / "public"
    public.mkdir(mode=0o777)
    public.chmod(0o777)
    assert opened(f"local://{public}") == "SIMAI_ERR_PERMISSION"
    with pytest.raises(PermissionError):
        simai.open_store(f"local://{public}")
    # local://NAME lives in $SIMAI_SHM_DIR/simai-UID/NAME, for C as for Python
    env = dict(os.environ, SIMAI_SHM_DIR=str(tmp_path / "shm"))
    _run(native.check, "put", "local://named", "k", "from C", env=env)
    monkeypatch.setenv("SIMAI_SHM_DIR", str(tmp_path / "shm"))
    assert local_root("local://named") == str(tmp_path / "shm" / f"simai-{os.geteuid()}" / "named")
    s = simai.open_store("local://named")
    assert s.get("k") == b"from C"
    s.destroy()


# --- integrity ---------------------------------------------------------------------------------


def _damage(store, key: str, offset: int) -> None:
    """Flip a bit of byte `offset` of the stored entry of `key` (header, then payload, as one
    run of bytes even when the payload lives apart)."""
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


@pytest.mark.parametrize("n", [100, 100_000], ids=["inline", "apart"])
@pytest.mark.parametrize("where", ["payload", "shape", "dtype"])
def test_damaged_value_is_an_error_in_c_never_data(native, store, n, where) -> None:
    store.put("x", np.arange(n, dtype=np.float64))
    _damage(store, "x", {"payload": 64 + 8 * (n - 1), "shape": 24, "dtype": 9}[where])
    with pytest.raises(CorruptValueError):
        store.get("x")
    out = _run(native.check, "get", store.url, "x")
    assert "get SIMAI_ERR_CORRUPT key 'x' in" in out
    assert "view SIMAI_ERR_CORRUPT" in out
    assert "damaged data was delivered" not in out


# --- waiting across languages ------------------------------------------------------------------


def test_c_wait_wakes_when_python_puts(native, store) -> None:
    waiter = subprocess.Popen(
        [native.check, "wait", store.url, "ready", "10"], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    store.put("ready", b"1")
    out, _ = waiter.communicate(timeout=10)
    code, seconds = out.split()[:2]
    assert code == "SIMAI_OK"
    # woken by the futex, not by the 1 s re-check every waiter also makes
    assert float(seconds) < 0.9, out


def test_c_wait_times_out_cleanly(native, store) -> None:
    out = _run(native.check, "wait", store.url, "never", "0.3")
    code, seconds = out.split()[:2]
    assert code == "SIMAI_ERR_TIMEOUT"
    assert 0.25 < float(seconds) < 1.0
    assert "did not appear within 0.3 s" in out


def test_python_wait_wakes_when_c_puts(native, store) -> None:
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
    assert took and took[0] < 0.8, took  # C bumped the sequence and woke the futex
    assert store.get("from-c") == b"hello"


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
    n_c, n_py = 4000, 1500
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
    switches = sum(a[0] != b[0] for a, b in zip(seen, seen[1:], strict=False))
    assert switches > 10, "the writers did not overlap"
    for ident in (1, 2):
        mine = [i for who, i in seen if who == ident]
        assert mine == sorted(mine)
    # the pages LMDB uses stayed allocated ahead of it (a full /dev/shm is an error, not SIGBUS)
    e = store._e
    used = (e.env.info()["last_pgno"] + 1) * e.psize
    assert os.stat(os.path.join(store.root, "data.mdb")).st_blocks * 512 >= used


# --- C++, Fortran, and finding the library ---------------------------------------------------


def test_cpp_header(native, store) -> None:
    store.put("p/cpp", np.array([[0.5, 1.5], [2.5, 3.5]], np.float32))
    out = _run(native.cpp, store.url)
    assert out.splitlines()[-1] == "ok"
    assert "missing 2 SIMAI_ERR_NOT_FOUND: key 'cpp/missing' not found" in out
    assert store.get("cpp/field").tolist() == [[1, 2, 3], [4, 5, 6]]


def test_fortran_arrays_keep_their_shape_both_ways(native, store) -> None:
    if native.fortran is None:
        pytest.skip("no Fortran compiler: apt-get install gfortran")
    assert _run(native.fortran, "write", store.url).strip() == "ok"
    a = store.get("f/a")  # real(8) a(3,4), a(i,j) = 10*i + j
    assert (a.dtype.str, a.shape) == ("<f8", (3, 4))
    assert all(a[i, j] == 10 * (i + 1) + (j + 1) for i in range(3) for j in range(4))
    b = store.get("f/b")  # integer(4) b(2,3,4), b(i,j,k) = 100*i + 10*j + k
    assert (b.dtype.str, b.shape) == ("<i4", (2, 3, 4))
    i, j, k = np.indices(b.shape)
    np.testing.assert_array_equal(b, 100 * (i + 1) + 10 * (j + 1) + (k + 1))
    assert store.get("f/c").dtype.str == "<f4"
    d = store.get("f/d")
    assert (d.dtype.str, d.shape) == ("<i8", (2, 3, 1, 2))
    assert d[1, 2, 0, 1] == 12 * 10**12  # d(2,3,1,2): column-major element 12
    assert store.get("f/json") == {"from": "fortran"}
    assert not store.exists("f/bad")
    values = list(itertools.islice(store.stream("f/stream", timeout=1), 2))
    assert [v.tolist() for v in values] == [a.tolist(), (2 * a).tolist()]

    store.put("pf/a", np.arange(12).reshape(3, 4) * 1.5)
    store.put("pf/b", np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    store.put("pf/c", np.arange(5, dtype=np.float32) / 2)
    store.put("pf/d", np.arange(12, dtype=np.int64).reshape(2, 3, 1, 2))
    store.put("pf/json", {"from": "python"})
    assert _run(native.fortran, "read", store.url).strip() == "ok"


def test_simai_native_prints_the_flags_that_build_a_program(native, store, tmp_path) -> None:
    def simai_native(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "simai.cli", "native", "--prefix", str(native.prefix), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    flags = simai_native("--cflags", "--libs")
    assert flags.returncode == 0, flags.stderr
    assert f"-I{native.prefix}/include" in flags.stdout.split()
    exe = tmp_path / "via-simai-native"
    _run(native.cc, NATIVE / "tests" / "pkgconfig.c", "-o", exe, *flags.stdout.split())
    assert _run(exe, store.url).startswith("ok 0.1.0")
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
    assert "cmake -S native" in nothing.stderr


def test_pkg_config_finds_it(native, store, tmp_path) -> None:
    if shutil.which("pkg-config") is None:
        pytest.skip("no pkg-config: apt-get install pkg-config")
    env = dict(os.environ, PKG_CONFIG_PATH=str(native.prefix / "lib" / "pkgconfig"))
    flags = _run("pkg-config", "--cflags", "--libs", "simai", env=env).split()
    exe = tmp_path / "pc"
    _run(native.cc, NATIVE / "tests" / "pkgconfig.c", "-o", exe, *flags)
    assert _run(exe, store.url).startswith("ok 0.1.0")
    assert store.get("pc/x") == b"found"
