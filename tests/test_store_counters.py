"""Store operation counting: every backend counts each operation's values and bytes per key
prefix, and each process reports its own counts under its component's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

import simai
from simai.store import codec, counters


@pytest.fixture(params=["local", "file", "redis"])
def store(request, tmp_path):
    kind = request.param
    if kind == "local":
        url = f"local://t{uuid.uuid4().hex[:10]}"
    elif kind == "file":
        url = f"file://{tmp_path}/s"
    else:
        url = request.getfixturevalue("redis_store_url")
    s = simai.open_store(url)
    counters.reset()
    try:
        yield s
    finally:
        counters.configure(enabled=True, depth=1)
        if kind == "local":
            s.destroy()
        s.close()


def size(value) -> int:
    header, payload = codec.encode(value)
    return len(header) + payload.nbytes


def table(rows) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r["op"], r["prefix"]): (r["ops"], r["bytes"]) for r in rows}


def test_every_operation_counts_its_values_and_bytes(store):
    small = np.arange(1000, dtype=np.float32)
    large = np.ones((2, 256, 256), dtype=np.float32)  # 512 KiB: the node-local block path
    meta = {"step": 3}
    store.put("a/small", small)
    store.put("a/large", large)
    store.put("b", meta)
    store.get("a/small")
    store.get("a/large")
    store.get("a/large", view=True)
    store.get("a/large", out=np.empty_like(large))
    store.append("s/1", small)
    store.append("s/1", b"xyz")
    store.close_stream("s/1")
    assert len(list(store.stream("s/1"))) == 2
    store.put_many({"m/1": small, "m/2": meta})
    store.get_many(["m/1", "m/2", "b"])
    store.delete("a/small")
    store.delete("missing/key")

    rows = counters.snapshot()
    assert all(r["component"] == os.environ.get("SIMAI_COMPONENT", "") for r in rows)
    s, lg, m, x = size(small), size(large), size(meta), size(b"xyz")
    assert table(rows) == {
        ("put", "a"): (2, s + lg),
        ("put", "b"): (1, m),
        ("get", "a"): (4, s + 3 * lg),
        ("append", "s"): (2, s + x),
        ("stream", "s"): (2, s + x),
        ("put_many", "m"): (2, s + m),
        ("get_many", "m"): (2, s + m),
        ("get_many", "b"): (1, m),
        ("delete", "a"): (1, 0),
        ("delete", "missing"): (1, 0),
    }


def test_failed_operations_do_not_count(store):
    with pytest.raises(KeyError):
        store.get("a/missing")
    with pytest.raises(TypeError):
        store.put("a/x", object())
    with pytest.raises(KeyError):
        store.get_many(["a/missing"])
    assert counters.snapshot() == []


def test_snapshot_reset_and_turning_counting_off(store):
    store.put("a/1", b"12")
    assert table(counters.snapshot(reset=True)) == {("put", "a"): (1, size(b"12"))}
    assert counters.snapshot() == []
    counters.configure(enabled=False)
    store.put("a/1", b"12")
    store.get("a/1")
    assert counters.snapshot() == []
    counters.configure(enabled=True)
    store.get("a/1")
    assert table(counters.snapshot()) == {("get", "a"): (1, size(b"12"))}


def test_prefix_depth_and_the_bound_on_prefixes(store, monkeypatch):
    counters.configure(depth=2)
    for key in ("run/sim1/step1", "run/sim1/step2", "run/sim2/step1", "run/x", "flat"):
        store.put(key, b"")
    assert table(counters.snapshot(reset=True)) == {
        ("put", "run/sim1"): (2, 2 * size(b"")),
        ("put", "run/sim2"): (1, size(b"")),
        ("put", "run/x"): (1, size(b"")),
        ("put", "flat"): (1, size(b"")),
    }
    counters.configure(depth=1)
    monkeypatch.setattr(counters, "MAX_PREFIXES", 2)
    for i in range(5):
        store.put(f"p{i}/k", b"")
    assert table(counters.snapshot()) == {
        ("put", "p0"): (1, size(b"")),
        ("put", "p1"): (1, size(b"")),
        ("put", counters.OTHER): (3, 3 * size(b"")),
    }
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        counters.configure(depth=0)


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


COUNT_AND_REPORT = """
    import json
    import numpy as np
    import simai
    from simai.store import counters
    s = simai.open_store()
    for i in range(3):
        s.put(f"wave/{i}", np.zeros(10, np.float64))
    print(json.dumps(counters.snapshot()))
"""


def test_each_process_counts_under_its_component(tmp_path):
    url = f"file://{tmp_path}/s"
    out = run_python(COUNT_AND_REPORT, {"SIMAI_STORE": url, "SIMAI_COMPONENT": "sim"})
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows == [
        {
            "component": "sim",
            "op": "put",
            "prefix": "wave",
            "ops": 3,
            "bytes": 3 * size(np.zeros(10, np.float64)),
        }
    ]
    off = run_python(COUNT_AND_REPORT, {"SIMAI_STORE": url, "SIMAI_STORE_COUNTERS": "0"})
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout) == []


def test_a_bad_depth_in_the_environment_is_a_clear_error():
    out = run_python("import simai.store", {"SIMAI_STORE_COUNTER_DEPTH": "two"})
    assert out.returncode != 0
    assert "SIMAI_STORE_COUNTER_DEPTH must be a positive integer, not 'two'" in out.stderr


def test_a_forked_child_starts_from_zero(tmp_path):
    s = simai.open_store(f"file://{tmp_path}/s")
    counters.reset()
    s.put("a/1", b"x")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its counts after one put of its own
        try:
            s.put("b/1", b"x")
            os.write(w, json.dumps(counters.snapshot()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = json.loads(f.read())
    os.waitpid(pid, 0)
    assert table(child) == {("put", "b"): (1, size(b"x"))}
    assert table(counters.snapshot()) == {("put", "a"): (1, size(b"x"))}
