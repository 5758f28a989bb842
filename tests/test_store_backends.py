"""Node-local and filesystem backends: damaged files, unreachable directories, URL forms, views
across overwrites, memory reuse."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

import simai
from simai.store import CorruptValueError
from simai.store.file import decode_name, encode_name
from simai.store.local import LocalStore, local_root


@pytest.fixture
def fstore(tmp_path):
    s = simai.open_store(f"file://{tmp_path}/store")
    yield s
    s.close()


def damage(store, key, mutate):
    path = os.path.join(store.root, "values", encode_name(key))
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
@pytest.mark.parametrize("n", [100, 40_000], ids=["small", "large"])
def test_damaged_files_raise_and_other_data_is_intact(fstore, mutate, read, n):
    fstore.put("good", np.arange(n, dtype=np.float64))
    fstore.put("bad", np.arange(n, dtype=np.float64))
    damage(fstore, "bad", mutate)
    with pytest.raises(CorruptValueError):
        if read == "out":
            fstore.get("bad", out=np.empty(n, np.float64))
        else:
            fstore.get("bad", view=read == "view")
    np.testing.assert_array_equal(fstore.get("good"), np.arange(n, dtype=np.float64))
    fstore.put("bad", b"repaired")
    assert fstore.get("bad") == b"repaired"


def test_unreachable_directory_is_a_connection_error_naming_the_url():
    with pytest.raises(ConnectionError, match="file:///proc/nope/store"):
        simai.open_store("file:///proc/nope/store")


def test_bad_urls_are_refused():
    for url in ("nothing", "ftp://x", "local://a/b", "local://..", "file://"):
        with pytest.raises(ValueError):
            simai.open_store(url)


def test_local_url_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMAI_SHM_DIR", str(tmp_path))
    assert local_root("local://demo") == os.path.join(tmp_path, f"simai-{os.geteuid()}", "demo")
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
    s = simai.open_store()
    assert isinstance(s, LocalStore) and s.url == "local://default"


@pytest.fixture
def local_store():
    s = simai.open_store(f"local://t{uuid.uuid4().hex[:10]}")
    yield s
    s.destroy()


def test_large_view_survives_many_overwrites(local_store):
    n = 1 << 18  # 2 MiB of float64: pages LMDB recycles
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


def test_views_of_payloads_over_2_kib_are_16_byte_aligned(local_store):
    """A zero-copy view (Python's view=True, C's simai_view_get: the same bytes of the same
    mapping) of a payload over 2 KiB starts 16-byte aligned, whatever the key's length; a
    smaller one may start at any address, as the C header says."""
    small = set()
    for n in (1, 8, 100, 1000, 2040, 2049, 3000, 4096, 16 << 10, (16 << 10) + 8, 1 << 20):
        for key in ("k", "ke", "key", "keys", "k" * 17):
            local_store.put(key, np.arange(n, dtype=np.uint8))
            view = local_store.get(key, view=True)
            assert np.array_equal(view, np.arange(n, dtype=np.uint8))
            if n > 2048:
                assert view.ctypes.data % 16 == 0, (n, key, view.ctypes.data % 16)
            else:
                small.add(view.ctypes.data % 16)
            del view
    assert small - {0, 2, 4, 6, 8, 10, 12, 14}  # an odd address: byte-aligned, not 2


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


def test_save_and_restore_a_local_store(local_store, tmp_path):
    local_store.put("a/x", np.arange(5))
    local_store.put("b/y", b"other")
    local_store.create_stream("a/s", maxlen=3, policy="drop_oldest")
    for i in range(5):
        local_store.append("a/s", i)
    local_store.close_stream("a/s")
    saved = local_store.save(tmp_path / "all")
    assert 0 < saved < 1 << 20  # live data only, not the sparse map
    local_store.save(tmp_path / "part", ["a/"])
    with pytest.raises(FileExistsError, match="destroy it first"):
        LocalStore.restore(tmp_path / "all", local_store.url)
    with pytest.raises(ValueError, match="local://"):
        LocalStore.restore(tmp_path / "all", f"file://{tmp_path}/f")
    url = f"local://{tmp_path}/restored"
    back = LocalStore.restore(tmp_path / "part", url)
    assert back.keys() == ["a/x"] and back.stream_info("a/s")["dropped"] == 2
    assert list(back.stream("a/s")) == [2, 3, 4] and back.get("a/x").sum() == 10
    back.destroy()
    back = LocalStore.restore(tmp_path / "all", url)
    assert back.keys() == ["a/x", "b/y"]
    back.destroy()


def test_a_relative_file_url_names_one_store_for_every_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = simai.open_store("file://rel/store")
    assert s.url == f"file://{tmp_path}/rel/store"
    s.close()


def _used(store: LocalStore) -> int:
    """Bytes of the store's data file that LMDB uses (its pages up to the last one)."""
    return (store._e.env.info()["last_pgno"] + 1) * store._e.psize


def test_a_deleted_large_value_makes_room_at_once_while_readers_stay_open(local_store):
    """Another process that read the value keeps the store open; deleting the value makes its
    memory available to the next puts: the store stops growing."""
    import subprocess
    import sys

    big = np.ones(4 << 20, np.float64)  # 32 MiB
    local_store.put("big", big)
    reader = subprocess.Popen(
        [sys.executable, "-c", "import sys, simai; s = simai.open_store(sys.argv[1]);"
         "print(s.get('big').sum(), flush=True); sys.stdin.read()", local_store.url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert float(reader.stdout.readline()) == big.sum()
        sizes = []
        for i in range(12):
            assert local_store.delete("big")
            local_store.put("big", big * i)
            sizes.append(_used(local_store))
        # LMDB reuses a freed page once no snapshot can still see it: two transactions on
        assert sizes[3] == sizes[-1] <= sizes[0] + 2 * big.nbytes
    finally:
        reader.communicate("", timeout=30)


FILL = """
import errno, sys
import numpy as np
import simai
s = simai.open_store(sys.argv[1])
block = np.ones(1 << 17)  # 1 MiB
n = 0
try:
    while True:
        s.put(f"k{n}", block * n)
        n += 1
except OSError as e:
    assert e.errno == errno.ENOSPC and "is full" in str(e), e
assert n > 5, n
assert s.get("k1")[0] == 1.0 and s.get(f"k{n - 1}")[0] == n - 1  # what went in stays
for i in range(n):  # a full store can still delete
    assert s.delete(f"k{i}")
assert s.keys() == []
s.destroy()  # gives the memory back
t = simai.open_store(sys.argv[1])
t.put_many({f"k{i}": block for i in range(n // 2)})
print("filled", n)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_tmpfs_is_an_error_not_a_crash(tmp_path):
    import subprocess
    import sys

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)])
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = subprocess.run(
            [sys.executable, "-c", FILL, f"local://{small}/store"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr  # a SIGBUS would be -7
        assert out.stdout.startswith("filled")
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
