"""The model registry, the hot-swapping Surrogate and the served variant, against real
processes on the node-local store and a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
from _procs import children, no_new_children

import simai
from simai.models import Surrogate, SurrogateClient, serve
from simai.models import registry as reg
from simai.store import ENV_URL

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


@pytest.fixture(params=["local", "redis"])
def store_url(request):
    if request.param == "local":
        url = f"local://models-{uuid.uuid4().hex[:10]}"
        yield url
        simai.open_store(url).destroy()
    else:
        yield request.getfixturevalue("redis_store_url")


@pytest.fixture
def store(store_url):
    s = simai.open_store(store_url)
    yield s
    s.close()


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def constant(value: float) -> torch.nn.Module:
    """A model whose every output is `value`: shows which version answered."""
    m = torch.nn.Linear(1, 1)
    with torch.no_grad():
        m.weight.zero_()
        m.bias.fill_(value)
    return m


def python(code: str, url: str, *args: str) -> subprocess.Popen:
    """`code` in a fresh interpreter that finds the store through $SIMAI_STORE."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=dict(os.environ, **{ENV_URL: url}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return out


# --- the registry ---------------------------------------------------------------------------


def test_torch_module_round_trips_as_torchscript_with_metadata(store):
    model = mlp()
    v = reg.publish_model(store, "net", model, step=300, metrics={"loss": 0.25})
    assert v == 1
    version, meta = reg.latest_model(store, "net")
    assert version == 1 and meta["version"] == 1
    assert meta["format"] == "torchscript" and meta["step"] == 300
    assert meta["metrics"] == {"loss": 0.25}
    host, pid = meta["producer"].rsplit(":", 1)
    assert host == os.uname().nodename and int(pid) == os.getpid()
    loaded = reg.load_model(store, "net", trusted=True)
    assert isinstance(loaded, torch.jit.ScriptModule) and not loaded.training
    x = torch.linspace(-3, 3, 50)[:, None]
    torch.testing.assert_close(loaded(x), model(x))
    assert reg.publish_model(store, "net", mlp(), producer="trainer-7") == 2
    assert [m["version"] for m in reg.model_versions(store, "net")] == [1, 2]
    assert reg.latest_model(store, "net")[1]["producer"] == "trainer-7"
    torch.testing.assert_close(reg.load_model(store, "net", version=1, trusted=True)(x), model(x))


def test_state_dict_with_its_class_round_trips(store):
    model = torch.nn.Linear(3, 2)
    spec = (model.state_dict(), "torch.nn:Linear", {"in_features": 3, "out_features": 2})
    reg.publish_model(store, "lin", spec)
    assert reg.latest_model(store, "lin")[1]["format"] == "state_dict"
    loaded = reg.load_model(store, "lin", model_class=torch.nn.Linear)
    x = torch.randn(4, 3)
    torch.testing.assert_close(loaded(x), model(x))


def test_loading_never_runs_code_the_reader_did_not_choose(store, tmp_path):
    """Metadata planted by whoever can write the store names a class and its arguments; the
    reader names the class, and TorchScript needs trusted=True."""
    victim = tmp_path / "ran"
    reg.publish_model(store, "lin", (torch.nn.Linear(3, 2).state_dict(), "torch.nn:Linear",
                                     {"in_features": 3, "out_features": 2}))  # fmt: skip
    meta = store.get("models/lin/meta/0000000001")
    meta.update({"class": "os:system", "kwargs": {"command": f"touch {victim}"}})
    store.put("models/lin/meta/0000000001", meta)
    store.put("models/lin/latest", meta)
    with pytest.raises(TypeError, match="model_class=.*never imports a class the store names"):
        reg.load_model(store, "lin")
    with pytest.raises(TypeError):
        reg.load_model(store, "lin", model_class=torch.nn.Linear)  # Linear(command=...)
    with pytest.raises(TypeError, match="model_class"):
        Surrogate("lin", store).wait_for_model(timeout=5)
    assert not victim.exists()
    reg.publish_model(store, "script", mlp())
    with pytest.raises(PermissionError, match="trusted=True"):
        reg.load_model(store, "script")
    with pytest.raises(PermissionError, match="trusted=True"):
        Surrogate("script", store).wait_for_model(timeout=5)
    assert isinstance(reg.load_model(store, "script", trusted=True), torch.jit.ScriptModule)


def test_metadata_the_store_refuses_takes_no_version_number(store):
    reg.publish_model(store, "m", b"onnx 1")
    with pytest.raises(ValueError, match="metrics hold NaN"):
        reg.publish_model(store, "m", b"onnx 2", metrics={"loss": float("nan")})
    assert reg.publish_model(store, "m", b"onnx 2") == 2


def test_onnx_bytes_are_stored_and_returned_as_bytes(store):
    blob = bytes(range(256)) * 100
    v = reg.publish_model(store, "onnx-net", blob, step=1)
    assert reg.latest_model(store, "onnx-net")[1]["format"] == "onnx"
    assert reg.load_model(store, "onnx-net", v) == blob


def test_unscriptable_module_needs_an_example_and_is_traced_with_it(store):
    class VarArgs(torch.nn.Module):
        def forward(self, *xs):
            return xs[0] * 2

    with pytest.raises(TypeError, match="example="):
        reg.publish_model(store, "va", VarArgs())
    assert store.keys("models/") == []
    reg.publish_model(store, "va", VarArgs(), example=torch.ones(2, 1))
    torch.testing.assert_close(
        reg.load_model(store, "va", trusted=True)(torch.ones(3, 1)), torch.full((3, 1), 2.0)
    )


def test_only_the_newest_keep_versions_are_kept(store):
    for i in range(7):
        reg.publish_model(store, "p", f"model {i}".encode(), keep=3)
    assert [m["version"] for m in reg.model_versions(store, "p")] == [5, 6, 7]
    assert len(store.keys("models/p/data/")) == 3
    assert reg.load_model(store, "p", 5) == b"model 4"
    with pytest.raises(KeyError, match="no version 2"):
        reg.load_model(store, "p", 2)


def test_bad_input_is_refused_naming_the_problem(store):
    with pytest.raises(ValueError, match="must not contain '/'"):
        reg.publish_model(store, "a/b", b"x")
    with pytest.raises(ValueError, match="non-empty"):
        reg.publish_model(store, "", b"x")
    with pytest.raises(ValueError, match="keep must be"):
        reg.publish_model(store, "n", b"x", keep=0)
    with pytest.raises(TypeError, match="metrics must be JSON"):
        reg.publish_model(store, "n", b"x", metrics={"t": object()})
    with pytest.raises(TypeError, match="not list"):
        reg.publish_model(store, "n", [1, 2])
    with pytest.raises(ValueError, match="module:Class"):
        reg.publish_model(store, "n", ({}, "NoColon"))
    with pytest.raises(ValueError, match="empty"):
        reg.publish_model(store, "n", b"")
    with pytest.raises(KeyError, match="no model 'n'"):
        reg.latest_model(store, "n")
    with pytest.raises(ValueError, match="version must be"):
        reg.load_model(store, "n", 0)
    assert store.keys("models/") == [] and reg.model_versions(store, "n") == []


def test_metrics_take_numpy_scalars_and_0d_tensors(store):
    loss = torch.tensor(0.25)
    reg.publish_model(store, "m", b"onnx", metrics={"loss": loss, "mse": np.float32(0.5)})
    assert reg.latest_model(store, "m")[1]["metrics"] == {"loss": 0.25, "mse": 0.5}
    with pytest.raises(TypeError, match="metrics must be a dict"):
        reg.publish_model(store, "m", b"onnx", metrics=[0.1])


def test_the_registry_works_on_every_backend(store):
    model = mlp()
    assert reg.publish_model(store, "net", model, step=1) == 1
    assert reg.latest_model(store, "net")[0] == 1
    assert [m["step"] for m in reg.model_versions(store, "net")] == [1]
    x = torch.ones(2, 1)
    torch.testing.assert_close(reg.load_model(store, "net", trusted=True)(x), model(x))


PUBLISHER = """
    import json, sys
    import simai
    from simai.models import registry
    store = simai.open_store()
    store.wait("go", timeout=30)
    tag = sys.argv[1]
    versions = [registry.publish_model(store, "shared", f"{tag} {i}".encode(), keep=1000)
                for i in range(int(sys.argv[2]))]
    print(json.dumps(versions))
"""


def test_concurrent_publishers_get_distinct_increasing_versions(store, store_url):
    n = 25
    before = children()
    procs = [python(PUBLISHER, store_url, tag, str(n)) for tag in ("A", "B")]
    store.put("go", b"1")
    got = {tag: json.loads(finish(p)) for tag, p in zip("AB", procs, strict=True)}
    assert no_new_children(before)
    for versions in got.values():
        assert versions == sorted(versions) and len(versions) == n
    assert sorted(got["A"] + got["B"]) == list(range(1, 2 * n + 1))
    assert reg.latest_model(store, "shared")[0] == 2 * n
    for tag, versions in got.items():
        for i, v in enumerate(versions):
            assert reg.load_model(store, "shared", v) == f"{tag} {i}".encode()


# --- Surrogate: in-process inference with hot reload ------------------------------------------

SWAPPER = """
    import time
    import torch
    import simai
    from simai.models import registry
    torch.set_num_threads(1)
    store = simai.open_store()
    for v in range(1, {versions} + 1):
        m = torch.nn.Linear(1, 1)
        with torch.no_grad():
            m.weight.zero_()
            m.bias.fill_(float(v))
        assert registry.publish_model(store, "hot", m, step=v, keep=2) == v
        if v == 1:
            store.wait("caller-ready", timeout=60)
        time.sleep(0.05)
    store.put("publisher-done", b"1")
"""


def test_surrogate_swaps_versions_mid_run_and_no_call_fails(store, store_url):
    versions = 12
    before = children()
    proc = python(SWAPPER.format(versions=versions), store_url)
    try:
        s = Surrogate("hot", store, poll=0.0, trusted=True)
        assert s.wait_for_model(timeout=60) == 1
        store.put("caller-ready", b"1")
        x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
        seen = []
        while True:
            done = store.exists("publisher-done")
            y = s(x)  # every call must succeed, mid-swap or not
            assert isinstance(y, np.ndarray) and y.shape == (32, 1)
            np.testing.assert_array_equal(y, np.full((32, 1), float(s.version), np.float32))
            if not seen or seen[-1] != s.version:
                seen.append(s.version)
            if done and s.version == versions:
                break
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert no_new_children(before)
    assert seen == sorted(seen) and seen[0] == 1 and seen[-1] == versions
    assert len(seen) >= 3, f"the surrogate should have swapped mid-run, saw {seen}"


def test_surrogate_takes_numpy_or_torch_and_polls_at_most_every_poll_seconds(store):
    s = Surrogate("c", store, poll=3600, trusted=True)
    with pytest.raises(LookupError, match="wait_for_model"):
        s(np.zeros((2, 1), np.float32))
    with pytest.raises(TimeoutError):
        s.wait_for_model(timeout=0.1)
    reg.publish_model(store, "c", constant(1.0))
    assert s.wait_for_model(timeout=5) == 1
    y = s(np.zeros((5, 1)))  # float64 in: cast to the model's float32
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.ones((5, 1), np.float32))
    t = s(torch.zeros(4, 1))
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.ones(4, 1))
    reg.publish_model(store, "c", constant(2.0))
    assert s(np.zeros((1, 1)))[0, 0] == 1.0 and s.version == 1  # not checked again yet
    assert s.refresh() and s(np.zeros((1, 1)))[0, 0] == 2.0 and s.version == 2
    y, v = s.call(np.zeros((3, 1)))
    assert v == 2 and y.shape == (3, 1)


def test_surrogate_splits_large_batches(store):
    model = mlp()
    reg.publish_model(store, "big", model)
    x = np.linspace(-3, 3, 1000, dtype=np.float32)[:, None]
    whole = Surrogate("big", store, trusted=True)(x)
    pieces = Surrogate("big", store, max_batch=64, trusted=True)(x)
    np.testing.assert_allclose(pieces, whole, rtol=1e-6)
    np.testing.assert_allclose(whole, model(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="max_batch"):
        Surrogate("big", store, max_batch=0)
    with pytest.raises(ValueError, match="poll"):
        Surrogate("big", store, poll=-1)


def test_surrogate_runs_onnx_versions_with_onnxruntime(store):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import io
    import warnings

    model, buf = mlp(), io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(4, 1),),
            buf,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    reg.publish_model(store, "ox", buf.getvalue())
    s = Surrogate("ox", store)
    x = np.linspace(-3, 3, 100)[:, None]  # float64: cast to the graph's float32 input
    want = model(torch.from_numpy(x).float()).detach()
    np.testing.assert_allclose(s(x), want.numpy(), rtol=1e-5, atol=1e-6)
    t = s(torch.from_numpy(x).float())
    assert isinstance(t, torch.Tensor)
    torch.testing.assert_close(t, want, rtol=1e-5, atol=1e-6)


def test_surrogate_keeps_its_model_when_a_new_version_cannot_load(store):
    reg.publish_model(store, "k", constant(3.0))
    s = Surrogate("k", store, poll=0.0, trusted=True)
    assert s.wait_for_model(5) == 1
    reg.publish_model(store, "k", b"not an onnx model")  # needs onnxruntime, or is invalid
    with pytest.warns(RuntimeWarning, match="keeping version 1"):
        y = s(np.zeros((2, 1), np.float32))
    assert s.version == 1 and float(y[0, 0]) == 3.0


# --- the served variant -----------------------------------------------------------------------

SERVER = """
    import simai
    from simai.models import serve
    print(serve("srv", requests="inference", poll=0.0, timeout=60, trusted=True))
"""


def test_served_surrogate_answers_through_the_store(store, store_url):
    before = children()
    reg.publish_model(store, "srv", constant(1.0))
    proc = python(SERVER, store_url)
    try:
        client = SurrogateClient("srv", store, requests="inference", timeout=60)
        y = client(np.zeros((8, 1), np.float32))
        assert client.version == 1
        np.testing.assert_array_equal(y, np.ones((8, 1), np.float32))
        reg.publish_model(store, "srv", constant(2.0))
        y = client(np.zeros((3, 1), np.float32))
        assert client.version == 2 and float(y[0, 0]) == 2.0
        with pytest.raises(RuntimeError, match="failed"):
            client(np.zeros((3, 5), np.float32))  # wrong width for Linear(1, 1)
        other = SurrogateClient("other", store, requests="inference", timeout=60)
        with pytest.raises(RuntimeError, match="runs model 'srv'"):
            other(np.zeros((1, 1), np.float32))
        assert store.keys("inference/") == []  # the client cleans up after each call
        store.close_stream("inference")
        assert finish(proc).strip() == "4"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert no_new_children(before)


def test_served_in_process_ends_with_its_stream_and_skips_abandoned_requests(store):
    reg.publish_model(store, "s2", constant(5.0))
    store.append("req", {"id": "gone", "model": "s2"})  # its client gave up: no input
    store.put("req/in/r1", np.zeros((2, 1), np.float32))
    store.append("req", {"id": "r1", "model": "s2"})
    store.close_stream("req")
    assert serve("s2", store, requests="req", poll=0.0, timeout=10, trusted=True) == 1
    assert store.get("req/done/r1") == {"version": 1}
    np.testing.assert_array_equal(store.get("req/out/r1"), np.full((2, 1), 5.0, np.float32))
    client = SurrogateClient("s2", store, requests="nobody", timeout=0.2)
    with pytest.raises(TimeoutError, match="is `serve` running"):
        client(np.zeros((1, 1), np.float32))
