"""The store contract: every backend passes the same tests, against real processes and a real
redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import simai
from simai.store import ENV_URL

DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
]


@pytest.fixture
def store(store_url):
    s = simai.open_store(store_url)
    yield s
    s.close()


def run_python(code: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that finds the store through $SIMAI_STORE."""
    env = dict(os.environ, **{ENV_URL: url})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_arrays_of_every_numeric_dtype_round_trip(store, dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * a
    store.put("arr", a)
    b = store.get("arr")
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.float32(3.5),
        lambda: np.zeros((0,), np.float64),
        lambda: np.zeros((2, 0, 3), np.int32),
        lambda: np.arange(24.0).reshape(4, 6)[:, ::2],
        lambda: np.arange(24, dtype=np.int16).reshape(2, 3, 4).transpose(2, 0, 1),
        lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        lambda: np.arange(7, dtype=">i4"),
    ],
    ids=["scalar", "empty", "empty-3d", "strided", "transposed", "fortran", "big-endian"],
)
def test_arrays_of_any_shape_and_layout(store, make):
    a = make()
    store.put("x", a)
    b = store.get("x")
    assert b.shape == np.shape(a)
    np.testing.assert_array_equal(np.asarray(a), b)
    assert b.flags.c_contiguous


def test_get_returns_a_private_writable_copy(store):
    store.put("x", np.arange(5))
    b = store.get("x")
    b[0] = 99
    assert store.get("x")[0] == 0


def test_view_is_read_only_and_equal(store):
    a = np.arange(1000, dtype=np.float32)
    store.put("x", a)
    v = store.get("x", view=True)
    np.testing.assert_array_equal(v, a)
    with pytest.raises(ValueError):
        v[0] = 1


def test_view_stays_valid_after_overwrite_and_delete(store):
    store.put("x", np.full(4096, 1.0))
    v = store.get("x", view=True)
    store.put("x", np.full(4096, 2.0))
    store.delete("x")
    assert np.all(v == 1.0)


def test_bytes_and_json_metadata(store):
    store.put("b", b"\x00\x01raw")
    store.put("e", b"")
    meta = {"step": 3, "loss": 0.25, "tags": ["a", "b"], "nested": {"ok": True, "none": None}}
    store.put("m", meta)
    store.put("s", "text")
    store.put("n", 42)
    assert store.get("b") == b"\x00\x01raw"
    assert store.get("e") == b""
    assert store.get("m") == meta
    assert store.get("s") == "text"
    assert store.get("n") == 42


def test_large_value(store):
    a = np.random.default_rng(1).random(5_000_000).astype(np.float32)
    store.put("big", a)
    np.testing.assert_array_equal(store.get("big"), a)
    store.put("big", a[:10])
    np.testing.assert_array_equal(store.get("big"), a[:10])


def test_torch_tensors_are_accepted_and_returned_as_numpy(store):
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    store.put("t", t)
    out = store.get("t")
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, t.numpy())


def test_exists_delete_keys_and_mapping_access(store):
    store["ns/a"] = 1
    store["ns/b"] = 2
    store["other"] = 3
    assert store.exists("ns/a") and "ns/b" in store and "missing" not in store
    assert store.keys("ns/") == ["ns/a", "ns/b"]
    assert store.keys() == ["ns/a", "ns/b", "other"]
    assert store["ns/b"] == 2
    assert store.delete("ns/a") is True
    assert store.delete("ns/a") is False
    del store["other"]
    with pytest.raises(KeyError):
        del store["other"]
    assert store.keys() == ["ns/b"]


def test_unusual_keys(store):
    keys = ["ünïcødé/ключ/键", "with space", ".hidden", "a%2Fb", "x" * 1024, "é" * 512, "a/../b"]
    for i, k in enumerate(keys):
        store.put(k, i)
    for i, k in enumerate(keys):
        assert store.get(k) == i
    assert sorted(keys) == store.keys()
    assert store.keys("é") == ["é" * 512]


def test_put_many_and_get_many(store):
    store.put_many({f"k/{i}": np.full(3, i) for i in range(5)})
    got = store.get_many([f"k/{i}" for i in range(5)])
    assert [int(g[0]) for g in got] == list(range(5))


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 1025, "é" * 513, 3, b"bytes", None],
    ids=["empty", "long", "long-utf8", "int", "bytes", "none"],
)
def test_invalid_keys_are_refused_and_leave_data_intact(store, bad):
    store.put("keep", np.arange(3))
    for op in (
        lambda: store.put(bad, 1),
        lambda: store.get(bad),
        lambda: store.delete(bad),
        lambda: store.exists(bad),
        lambda: store.append(bad, 1),
    ):
        with pytest.raises(ValueError):
            op()
    np.testing.assert_array_equal(store.get("keep"), np.arange(3))


def test_missing_key_is_a_key_error(store):
    with pytest.raises(KeyError):
        store.get("nope")
    with pytest.raises(KeyError):
        store["nope"]


def test_unsupported_values_are_type_errors_and_leave_data_intact(store):
    store.put("x", np.arange(3))
    with pytest.raises(TypeError, match="object"):
        store.put("x", np.array([1, "a"], dtype=object))
    with pytest.raises(TypeError, match="allow_pickle"):
        store.put("x", {1, 2, 3})
    with pytest.raises(TypeError):
        store.put("x", np.array(["ab", "cd"]))
    np.testing.assert_array_equal(store.get("x"), np.arange(3))


def test_pickle_needs_an_explicit_opt_in(store_url):
    trusting = simai.open_store(store_url, allow_pickle=True)
    trusting.put("obj", {1, 2, 3})
    assert trusting.get("obj") == {1, 2, 3}
    cautious = simai.open_store(store_url)
    with pytest.raises(TypeError, match="allow_pickle"):
        cautious.get("obj")
    trusting.close()
    cautious.close()


def test_wait_times_out(store):
    with pytest.raises(TimeoutError, match="never"):
        store.wait("never", timeout=0.2)


def test_wait_wakes_when_another_process_puts(store, store_url):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time, simai; time.sleep(0.5); simai.open_store().put('ready', b'go')",
        ],
        env=dict(os.environ, **{ENV_URL: store_url}),
    )
    try:
        store.wait("ready", timeout=30)
        assert store.get("ready") == b"go"
    finally:
        proc.wait(timeout=30)


def test_handoff_through_the_environment(store, store_url):
    run_python(
        """
        import numpy as np, simai
        s = simai.open_store()
        s.put("from/child", np.arange(10, dtype=np.float32) * 2)
        """,
        store_url,
    )
    np.testing.assert_array_equal(store.get("from/child"), np.arange(10, dtype=np.float32) * 2)


def test_stream_is_ordered_resumable_and_has_many_consumers(store):
    for i in range(10):
        assert store.append("samples", np.full(4, i)) == i
    store.close_stream("samples")
    assert store.stream_len("samples") == 10
    first = [int(v[0]) for v in store.stream("samples")]
    second = [int(v[0]) for v in store.stream("samples")]
    resumed = [int(v[0]) for v in store.stream("samples", start=7)]
    assert first == second == list(range(10))
    assert resumed == [7, 8, 9]


def test_stream_waits_for_values_and_times_out(store):
    store.append("s", 1)
    it = store.stream("s", timeout=0.3)
    assert next(it) == 1
    with pytest.raises(TimeoutError):
        next(it)


def test_closed_stream_refuses_appends(store):
    store.append("s", 1)
    store.close_stream("s")
    with pytest.raises(ValueError, match="closed"):
        store.append("s", 2)
    assert list(store.stream("s")) == [1]


def test_stream_from_concurrent_producer_processes_loses_nothing(store, store_url):
    code = """
        import sys, numpy as np, simai
        s = simai.open_store()
        pid = int(sys.argv[1])
        for i in range(50):
            s.append("mixed", np.array([pid, i]))
    """
    env = dict(os.environ, **{ENV_URL: store_url})
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(p)], env=env)
        for p in range(3)
    ]
    seen = []
    for value in store.stream("mixed", timeout=60):
        seen.append(tuple(int(x) for x in value))
        if len(seen) == 150:
            break
    for p in procs:
        assert p.wait(timeout=60) == 0
    assert store.stream_len("mixed") == 150
    for p in range(3):
        assert [i for q, i in seen if q == p] == list(range(50))


def test_delete_stream(store):
    store.append("gone", 1)
    assert store.delete_stream("gone") is True
    assert store.delete_stream("gone") is False
    assert store.stream_len("gone") == 0


@pytest.mark.parametrize("n", [1000, 300_000], ids=["small", "large"])
def test_get_into_a_preallocated_array(store, n):
    a = np.random.default_rng(2).random(n).astype(np.float32).reshape(-1, 10)
    store.put("x", a)
    out = np.empty_like(a)
    assert store.get("x", out=out) is out
    np.testing.assert_array_equal(out, a)
    with pytest.raises(ValueError, match="float64"):
        store.get("x", out=np.empty(a.shape, np.float64))
    with pytest.raises(ValueError, match="view=True or out="):
        store.get("x", view=True, out=out)
    store.put("m", {"not": "an array"})
    with pytest.raises(TypeError, match="out="):
        store.get("m", out=out)
    with pytest.raises(KeyError):
        store.get("missing", out=out)


# --- bounded streams -------------------------------------------------------------------


def test_drop_oldest_keeps_the_newest_values_and_counts_the_drops(store):
    store.create_stream("s", maxlen=5, policy="drop_oldest")
    store.create_stream("s", maxlen=5, policy="drop_oldest")  # same bounds: nothing happens
    assert [store.append("s", i) for i in range(12)] == list(range(12))
    info = store.stream_info("s")
    assert info == {
        "length": 12,
        "start": 7,
        "maxlen": 5,
        "policy": "drop_oldest",
        "dropped": 7,
        "closed": False,
        "groups": {},
    }
    assert store.stream_len("s") == 12
    store.close_stream("s")
    reader = store.stream("s", start=0)
    assert list(reader) == [7, 8, 9, 10, 11]
    assert (reader.skipped, reader.index) == (7, 12)
    assert list(store.stream("s", start=9)) == [9, 10, 11]


def test_drop_oldest_counts_only_values_the_slowest_group_had_not_acknowledged(store):
    store.create_stream("s", maxlen=3, policy="drop_oldest")
    reader = store.stream("s", group="trainer", timeout=0.2)
    for i in range(3):
        store.append("s", i)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(TimeoutError):
        next(reader)  # asking for the next value acknowledges 0..2
    assert store.stream_info("s")["groups"] == {"trainer": 3}
    for i in range(3, 9):
        store.append("s", i)
    info = store.stream_info("s")
    assert (info["start"], info["dropped"]) == (6, 3)  # 3, 4 and 5 were never read
    assert [next(reader) for _ in range(3)] == [6, 7, 8]
    assert reader.skipped == 3


def test_block_policy_times_out_and_appends_nothing(store):
    store.create_stream("s", maxlen=2, policy="block")
    store.append("s", 0)
    store.append("s", 1)
    with pytest.raises(TimeoutError, match="full"):
        store.append("s", 2, timeout=0.2)
    info = store.stream_info("s")
    assert (info["length"], info["start"], info["dropped"]) == (2, 0, 0)
    reader = store.stream("s", group="trainer", timeout=5)
    assert next(reader) == 0
    with pytest.raises(TimeoutError):
        store.append("s", 2, timeout=0.1)  # value 0 is not acknowledged until 1 is asked for
    assert next(reader) == 1
    assert store.append("s", 2, timeout=5) == 2
    assert store.stream_info("s")["start"] == 1  # 0 was acknowledged by every group: trimmed
    assert next(reader) == 2


def test_block_producer_is_released_by_a_consumer_group_in_another_process(store, store_url):
    store.create_stream("samples", maxlen=3, policy="block")
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import simai
                s = simai.open_store()
                s.create_stream("samples", maxlen=3, policy="block")
                got = [int(v) for v in s.stream("samples", group="trainer", timeout=60)]
                s.put("got", got)
                """
            ),
        ],
        env=dict(os.environ, **{ENV_URL: store_url}),
    )
    try:
        for i in range(30):
            assert store.append("samples", i, timeout=60) == i
            info = store.stream_info("samples")
            acked = info["groups"].get("trainer", 0)
            assert info["length"] - acked <= 3
            assert info["length"] - info["start"] <= 3
        store.close_stream("samples")
        assert consumer.wait(timeout=60) == 0
    finally:
        consumer.kill()
        consumer.wait()
    assert store.get("got") == list(range(30))
    assert store.stream_info("samples")["dropped"] == 0


@pytest.mark.parametrize("policy", ["block", "drop_oldest"])
def test_bounded_stream_from_concurrent_producer_processes(store, store_url, policy):
    store.create_stream("mixed", maxlen=4, policy=policy)
    code = """
        import sys, numpy as np, simai
        s = simai.open_store()
        pid = int(sys.argv[1])
        for i in range(30):
            s.append("mixed", np.array([pid, i]), timeout=60)
    """
    env = dict(os.environ, **{ENV_URL: store_url})
    reader = store.stream("mixed", group="trainer", timeout=60) if policy == "block" else None
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(p)], env=env)
        for p in range(3)
    ]
    try:
        seen = [tuple(int(x) for x in next(reader)) for _ in range(90)] if reader else []
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            p.kill()
            p.wait()
    info = store.stream_info("mixed")
    assert info["length"] == 90
    if policy == "block":
        assert info["dropped"] == 0
        for p in range(3):
            assert [i for q, i in seen if q == p] == list(range(30))
    else:
        assert (info["start"], info["dropped"]) == (86, 86)
        store.close_stream("mixed")
        kept = [tuple(int(x) for x in v) for v in store.stream("mixed")]
        assert len(set(kept)) == 4


def test_replay_window_of_the_last_n_values(store):
    for i in range(10):
        store.append("u", i)
    store.close_stream("u")
    assert list(store.stream("u", last=3)) == [7, 8, 9]
    assert list(store.stream("u", last=50)) == list(range(10))
    assert list(store.stream("u", last=0)) == []
    store.create_stream("b", maxlen=4, policy="drop_oldest")
    for i in range(10):
        store.append("b", np.full(3, i))
    live = store.stream("b", last=0, timeout=0.2)
    with pytest.raises(TimeoutError):
        next(live)
    store.append("b", np.full(3, 10))
    assert int(next(live)[0]) == 10
    store.close_stream("b")
    assert [int(v[0]) for v in store.stream("b", last=100)] == [7, 8, 9, 10]


def test_a_group_resumes_where_it_left_off(store):
    for i in range(10):
        store.append("s", i)
    store.close_stream("s")
    first = store.stream("s", group="trainer")
    assert [next(first) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert store.stream_info("s")["groups"] == {"trainer": 4}  # 4 is not acknowledged yet
    assert list(store.stream("s", group="trainer")) == [4, 5, 6, 7, 8, 9]
    assert store.stream_info("s")["groups"] == {"trainer": 10}
    assert list(store.stream("s", group="trainer", start=8)) == [8, 9]
    assert list(store.stream("s", group="other")) == list(range(10))


def test_large_values_in_a_bounded_stream(store):
    store.create_stream("big", maxlen=2, policy="drop_oldest")
    arrays = [np.full(300_000, i, np.float32) for i in range(5)]
    for a in arrays:
        store.append("big", a)
    store.close_stream("big")
    got = list(store.stream("big"))
    assert len(got) == 2
    for g, a in zip(got, arrays[3:], strict=True):
        np.testing.assert_array_equal(g, a)


def test_closing_a_full_stream_releases_its_blocked_producer(store, store_url):
    store.create_stream("s", maxlen=1, policy="block")
    store.append("s", 0)
    closer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time, simai; time.sleep(0.3); simai.open_store().close_stream('s')",
        ],
        env=dict(os.environ, **{ENV_URL: store_url}),
    )
    try:
        with pytest.raises(ValueError, match="closed"):
            store.append("s", 1, timeout=60)
    finally:
        closer.wait(timeout=60)
    assert list(store.stream("s")) == [0]


def test_stream_bounds_are_checked(store):
    store.create_stream("s", maxlen=3, policy="block")
    with pytest.raises(ValueError, match="maxlen=3, policy='block'"):
        store.create_stream("s", maxlen=4, policy="block")
    with pytest.raises(ValueError, match="maxlen=3"):
        store.create_stream("s", maxlen=3, policy="drop_oldest")
    with pytest.raises(ValueError, match="unbounded"):
        store.create_stream("s")
    with pytest.raises(ValueError, match="policy"):
        store.create_stream("t", maxlen=3, policy="drop_newest")
    for bad in (0, -1):
        with pytest.raises(ValueError, match="maxlen must be an int >= 1 or None"):
            store.create_stream("t", maxlen=bad)
    for bad in (2.5, "3", True):
        with pytest.raises(TypeError, match="maxlen must be an int >= 1 or None"):
            store.create_stream("t", maxlen=bad)
    store.append("u", 1)
    store.create_stream("u")  # unbounded, as it is
    with pytest.raises(ValueError, match="before the first append"):
        store.create_stream("u", maxlen=3)
    with pytest.raises(ValueError, match="start= or last="):
        store.stream("s", start=0, last=1)
    with pytest.raises(ValueError, match="last"):
        store.stream("s", last=-1)
    with pytest.raises(ValueError, match="group name"):
        store.stream("s", group="")
    assert store.delete_stream("s") is True
    store.create_stream("s", maxlen=4, policy="drop_oldest")  # a fresh stream, fresh bounds
    assert store.stream_info("s")["maxlen"] == 4
