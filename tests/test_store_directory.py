"""Node-local and filesystem backends: damaged entries, unreachable directories, URL forms."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

import simai
from simai.store import CorruptValueError
from simai.store.directory import decode_name, encode_name
from simai.store.local import LocalStore, local_root


@pytest.fixture(params=["local", "file"])
def dstore(request, tmp_path):
    if request.param == "local":
        s = simai.open_store(f"local://t{uuid.uuid4().hex[:10]}")
        yield s
        s.destroy()
    else:
        yield simai.open_store(f"file://{tmp_path}/store")


def damage(store, key, mutate):
    path = store._path(key)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    with open(path, "wb") as f:
        f.write(mutate(data))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],
        lambda d: d[:40],
        lambda d: d[:10],
        lambda d: b"",
        lambda d: d + b"extra",
        lambda d: b"XXXX" + d[4:],
        lambda d: d[:20] + bytes([d[20] ^ 0xFF]) + d[21:],
    ],
    ids=["one-byte-short", "half-header", "tiny", "empty", "trailing", "magic", "shape-bit-flip"],
)
@pytest.mark.parametrize("read", ["copy", "view", "out"])
@pytest.mark.parametrize("n", [100, 40_000], ids=["small", "large"])  # large: a local block
def test_damaged_entries_raise_and_other_data_is_intact(dstore, mutate, read, n):
    dstore.put("good", np.arange(n, dtype=np.float64))
    dstore.put("bad", np.arange(n, dtype=np.float64))
    damage(dstore, "bad", mutate)
    with pytest.raises(CorruptValueError):
        if read == "out":
            dstore.get("bad", out=np.empty(n, np.float64))
        else:
            dstore.get("bad", view=read == "view")
    np.testing.assert_array_equal(dstore.get("good"), np.arange(n, dtype=np.float64))
    dstore.put("bad", b"repaired")
    assert dstore.get("bad") == b"repaired"


def test_unreachable_directory_is_a_connection_error_naming_the_url():
    with pytest.raises(ConnectionError, match="file:///proc/nope/store"):
        simai.open_store("file:///proc/nope/store")


def test_bad_urls_are_refused():
    for url in ("nothing", "ftp://x", "local://a/b", "file://"):
        with pytest.raises(ValueError):
            simai.open_store(url)


def test_local_url_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMAI_SHM_DIR", str(tmp_path))
    assert local_root("local://demo") == os.path.join(tmp_path, "simai-demo")
    assert local_root(f"local://{tmp_path}/x") == f"{tmp_path}/x"
    s = LocalStore(f"local://{tmp_path}/persist")
    s.put("k", 1)
    assert simai.open_store(f"local://{tmp_path}/persist").get("k") == 1


@pytest.mark.parametrize("key", ["plain", "a/b/c", "ü/é", ".dot", "%41", "sp ace", "é" * 100])
def test_file_names_round_trip(key):
    name = encode_name(key)
    assert "/" not in name and not name.startswith(".")
    if not name.startswith("~"):
        assert decode_name(name) == key


def test_default_store_is_node_local(monkeypatch, tmp_path):
    monkeypatch.delenv("SIMAI_STORE", raising=False)
    monkeypatch.setenv("SIMAI_SHM_DIR", str(tmp_path))
    s = simai.store()
    assert isinstance(s, LocalStore) and s.url == "local://default"


@pytest.fixture
def local_store():
    s = simai.open_store(f"local://t{uuid.uuid4().hex[:10]}")
    yield s
    s.destroy()


def test_large_view_survives_many_overwrites(local_store):
    n = 1 << 18  # 2 MiB of float64: recycled blocks
    local_store.put("big", np.full(n, -1.0))
    view = local_store.get("big", view=True)
    for i in range(20):
        local_store.put("big", np.full(n, float(i)))
        assert local_store.get("big")[0] == i
    assert np.all(view == -1.0)
    del view
    for i in range(5):
        local_store.put("big", np.full(n, float(i)))
    assert np.all(local_store.get("big") == 4.0)


def test_readers_never_see_a_mix_of_two_large_values(local_store):
    """A writer process overwrites one key with constant-filled arrays as fast as it can;
    readers (copying and zero-copy) must only ever see arrays whose elements all agree."""
    import subprocess
    import sys

    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np, simai\n"
            "s = simai.open_store(sys.argv[1])\n"
            "for i in range(400):\n"
            "    n = 1 << 17 if i % 3 else 1 << 16\n"
            "    s.put('hot', np.full(n, float(i)))\n"
            "s.put('done', 1)\n",
            local_store.url,
        ]
    )
    try:
        local_store.wait("hot", timeout=30)
        reads = 0
        while not local_store.exists("done"):
            a = local_store.get("hot")
            v = local_store.get("hot", view=True)
            assert a.min() == a.max()
            assert v.min() == v.max()
            reads += 1
        assert reads > 0
    finally:
        assert writer.wait(timeout=60) == 0
    leftovers = os.listdir(os.path.join(local_store.root, "tmp"))
    assert leftovers == []
