"""Integrity and isolation on every backend: a damaged entry is a CorruptValueError, never data;
a store refuses directories and files that are not the user's own; no symlink is followed."""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import simai
from simai.store import CorruptValueError, StoreClosedError, codec
from simai.store.file import encode_name
from simai.store.local import INLINE_MAX, local_root
from simai.store.redis import RedisStore
from simai.store.resp import Connection


def _random(nbytes: int) -> np.ndarray:
    return np.frombuffer(secrets.token_bytes(nbytes), np.uint8).copy()


def _mapped_at(root: str, address: int) -> int:
    """The offset in the LMDB data file of `root` that this process maps at `address`."""
    data = os.path.join(root, "data.mdb")
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[-1] == data:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= address < hi:
                    return address - lo + int(fields[2], 16)
    raise AssertionError(f"{data} is not mapped at {address:#x}")


def _flip(url: str, key: str, part: str, offset: int, entry: bytes | None = None) -> None:
    """Flip one bit of the stored entry of `key` (or of the LMDB record `entry`): byte `offset`
    of its "header" or of its "payload"."""
    if url.startswith("local://"):
        s = simai.open_store(url)
        e = s._e
        k = entry or b"v" + key.encode()
        txn = e.env.begin(buffers=True)
        try:
            record = txn.get(k, db=e.values)
            head, _ = codec.parse_header(record)
            if part == "payload" and len(record) == head.offset:  # the payload lives apart
                record = txn.get(k, db=e.payloads)
            elif part == "payload":
                offset += head.offset
            address = np.frombuffer(record, np.uint8).ctypes.data + offset
        finally:
            txn.abort()
        path, at = os.path.join(s.root, "data.mdb"), _mapped_at(s.root, address)
    elif url.startswith("dragon://"):
        _flip_dragon(url, "v\0" + key, part, offset)
        return
    elif url.startswith("file://"):
        path = os.path.join(url[len("file://") :], "values", encode_name(key))
        with open(path, "rb") as f:
            head, _ = codec.parse_header(f.read(4096))
        at = offset + (head.offset if part == "payload" else 0)
    else:
        store = simai.open_store(url)
        assert isinstance(store, RedisStore)
        host, port = store._addrs[store.shard_of(key)]
        conn = Connection(host, port, os.environ["SIMAI_STORE_PASSWORD"])
        rkey = b"simai:v:" + key.encode()
        raw = bytes(conn.command("GET", rkey))
        at = offset + (codec.parse_header(raw)[0].offset if part == "payload" else 0)
        conn.command("SETRANGE", rkey, at, bytes([raw[at] ^ 0x10]))
        conn.close()
        store.close()
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0x10]), at)
    finally:
        os.close(fd)


def _flip_dragon(url: str, ddict_key: str, part: str, offset: int) -> None:
    """Flip one bit of DDict entry `ddict_key` (header, payload and, for a large one, its
    checksum last, in the chunks DragonStore writes), writing the damaged bytes back in the
    same chunks."""
    s = simai.open_store(url)
    chunks = s._get(ddict_key)
    raw = bytearray(b"".join(chunks))
    at = offset + (codec.parse_header(raw)[0].offset if part == "payload" else 0)
    raw[at] ^= 0x10
    cuts = np.cumsum([0] + [len(c) for c in chunks])
    s._put(ddict_key, *(bytes(raw[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)))
    s.close()


@pytest.mark.parametrize(
    "nbytes", [4096, 3 * INLINE_MAX, codec.PARALLEL_MIN], ids=["inline", "apart", "sealed"]
)
@pytest.mark.parametrize("where", ["payload-start", "payload", "shape", "dtype"])
def test_a_flipped_byte_is_a_corrupt_value_error_on_every_read(store_url, nbytes, where):
    s = simai.open_store(store_url)
    a = _random(nbytes)
    s.put("good", np.arange(10))
    s.put("bad", a)
    offset = {"payload-start": 0, "payload": 777, "shape": 24, "dtype": 9}[where]
    _flip(store_url, "bad", "payload" if where.startswith("payload") else "header", offset)
    out = np.empty_like(a)
    for read in (
        lambda: s.get("bad"),
        lambda: s.get("bad", view=True),
        lambda: s.get("bad", out=out),
        lambda: s.get_many(["good", "bad"]),
    ):
        with pytest.raises(CorruptValueError, match="key 'bad' in "):
            read()
    np.testing.assert_array_equal(s.get("good"), np.arange(10))
    s.put("bad", a)  # a new value replaces the damaged one
    np.testing.assert_array_equal(s.get("bad"), a)
    s.close()


def test_damaged_bytes_and_json_are_corrupt_value_errors(store_url):
    s = simai.open_store(store_url)
    s.put("meta", {"marker": "abc", "step": 3})
    s.put("raw", b"the bytes")
    _flip(store_url, "meta", "payload", 2)
    _flip(store_url, "raw", "payload", 5)
    with pytest.raises(CorruptValueError):
        s.get("meta")
    with pytest.raises(CorruptValueError):
        s.get("raw")
    s.close()


def test_a_damaged_stream_entry_is_a_corrupt_value_error(store_url):
    s = simai.open_store(store_url)
    s.append("st", np.zeros(3))
    s.append("st", _random(2048))
    if store_url.startswith("redis://"):
        host, port = s._addrs[s.shard_of("st")]
        conn = Connection(host, port, os.environ["SIMAI_STORE_PASSWORD"])
        raw = bytearray(conn.command("LINDEX", b"simai:s:st", 1))
        raw[100] ^= 1
        conn.command("LSET", b"simai:s:st", 1, bytes(raw))
        conn.close()
    elif store_url.startswith("file://"):
        path = os.path.join(store_url[len("file://") :], "streams", "st", f"{1:012d}")
        with open(path, "r+b") as f:
            raw = f.read()
            f.seek(100)
            f.write(bytes([raw[100] ^ 1]))
    elif store_url.startswith("dragon://"):
        _flip_dragon(store_url, "e\0st\0" + "1", "payload", 100)
    else:
        _flip(store_url, "", "payload", 9, entry=b"est\0" + (1).to_bytes(8, "big"))
    reader = s.stream("st")
    np.testing.assert_array_equal(next(reader), np.zeros(3))
    with pytest.raises(CorruptValueError, match="stream 'st' entry 1"):
        next(reader)
    s.close()


def test_the_header_says_version_2_and_checks_its_payload():
    header, payload = codec.encode(np.arange(3, dtype=np.int16))
    assert header[:5] == b"SMAI\x02" and len(header) == 64
    entry = bytearray(header + bytes(payload))
    assert list(codec.decode(bytes(entry))) == [0, 1, 2]
    entry[64] ^= 1
    with pytest.raises(CorruptValueError, match="checksum"):
        codec.decode(bytes(entry))
    with pytest.raises(CorruptValueError, match="truncated"):
        codec.decode(bytes(entry[:-1]))


# --- ownership and symlinks ------------------------------------------------------------------


OTHER_UID = 65534  # nobody


@pytest.fixture
def shm(tmp_path, monkeypatch):
    """A private stand-in for /dev/shm: $SIMAI_SHM_DIR, world-writable and sticky like it."""
    base = tmp_path / "shm"
    base.mkdir()
    os.chmod(base, 0o1777)
    monkeypatch.setenv("SIMAI_SHM_DIR", str(base))
    return base


def _as_other_user(path):
    os.chown(path, OTHER_UID, OTHER_UID)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making another user's files needs root")


@needs_root
def test_a_directory_another_user_made_is_refused(shm):
    planted = shm / f"simai-{os.geteuid()}"
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)
    _as_other_user(planted)
    with pytest.raises(PermissionError, match=r"belongs to .*uid 65534"):
        simai.open_store("local://x")
    with pytest.raises(PermissionError, match="belongs to"):
        simai.open_store(f"file://{planted}")


def test_a_directory_others_can_write_is_refused(shm, tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    for url in (f"local://{open_dir}", f"file://{open_dir}"):
        with pytest.raises(PermissionError, match="can be written by other users"):
            simai.open_store(url)


def test_a_symlink_in_place_of_the_store_is_refused(shm, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (shm / f"simai-{os.geteuid()}").symlink_to(target)
    with pytest.raises(PermissionError, match="symlink"):
        simai.open_store("local://x")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(PermissionError, match="symlink"):
        simai.open_store(f"file://{link}")


def test_a_planted_file_in_a_local_store_is_refused(shm):
    s = simai.open_store("local://x")
    root = s.root
    s.destroy()
    os.mkdir(root, 0o700)
    os.symlink("/etc/passwd", os.path.join(root, "data.mdb"))
    with pytest.raises(PermissionError, match="not a regular file"):
        simai.open_store("local://x")


def test_the_file_store_follows_no_symlink(tmp_path):
    s = simai.open_store(f"file://{tmp_path}/store")
    s.append("st", 1)
    victim = tmp_path / "victim"
    os.symlink(victim, tmp_path / "store" / "streams" / "st" / "closed")
    s.close_stream("st")
    assert not victim.exists()
    os.symlink("/etc/hostname", tmp_path / "store" / "values" / "k")
    with pytest.raises(OSError):
        s.get("k")
    s.close()


def test_a_store_in_a_directory_anyone_can_swap_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # writable by all, not sticky: another user could replace the store
    for url in (f"local://{shared}/s", f"file://{shared}/s"):
        with pytest.raises(PermissionError, match="not sticky"):
            simai.open_store(url)
    os.chmod(shared, 0o1777)  # sticky, as /tmp and /dev/shm are
    simai.open_store(f"file://{shared}/f").close()
    simai.open_store(f"local://{shared}/l").destroy()


def test_a_directory_others_can_read_is_refused_and_left_as_it_was(tmp_path):
    """simai makes the directories it creates 0700 and never chmods one it did not make (it
    could be a shared project directory, a home, or /)."""
    shared = tmp_path / "project"
    shared.mkdir()
    os.chmod(shared, 0o755)
    urls = [f"local://{shared}", f"file://{shared}"]
    if importlib.util.find_spec("adios2") is not None:
        urls.append(f"adios2://{shared}?engine=BP5")
    for url in urls:
        with pytest.raises(PermissionError, match=r"can be read by other users \(mode 0755\)"):
            simai.open_store(url)
        assert os.stat(shared).st_mode & 0o7777 == 0o755, url
    assert os.listdir(shared) == []
    with pytest.raises(PermissionError, match="chmod 700"), simai.Workflow("w", run_dir=shared):
        pass
    assert os.stat(shared).st_mode & 0o7777 == 0o755


def test_stores_are_private_to_the_user(shm, tmp_path):
    local = simai.open_store("local://x")
    local.put("k", np.arange(3))
    for path in (os.path.dirname(local.root), local.root):
        assert os.stat(path).st_mode & 0o777 == 0o700
    for name in os.listdir(local.root):
        assert os.stat(os.path.join(local.root, name)).st_mode & 0o077 == 0, name
    local.destroy()
    file = simai.open_store(f"file://{tmp_path}/fs")
    file.put("k", np.arange(3))
    assert os.stat(tmp_path / "fs").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "fs" / "values" / "k").st_mode & 0o077 == 0
    file.close()


# --- closed and destroyed stores, bad input --------------------------------------------------


def test_a_closed_store_says_so(store_url):
    s = simai.open_store(store_url)
    s.put("k", 1)
    s.close()
    for op in (
        lambda: s.get("k"),
        lambda: s.put("k", 2),
        lambda: s.keys(),
        lambda: s.append("s", 1),
    ):
        with pytest.raises(StoreClosedError, match="closed"):
            op()
    again = simai.open_store(store_url)
    assert again.get("k") == 1
    again.close()


@pytest.mark.parametrize("kind", ["local", "file"])
def test_a_destroyed_store_says_so_in_every_process(kind, request):
    url = request.getfixturevalue(f"{kind}_store_url")
    s = simai.open_store(url)
    s.put("k", np.arange(3))
    other = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import simai
            from simai.store import StoreClosedError
            s = simai.open_store()
            print(s.get("k").sum(), flush=True)
            try:
                s.wait("never", timeout=60)
            except StoreClosedError as e:
                print("closed:", e, flush=True)
            """)],
        env=dict(os.environ, SIMAI_STORE=url),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert other.stdout.readline().strip() == "3"
    survivor = simai.open_store(url)
    view = survivor.get("k", view=True)
    s.destroy()
    out, _ = other.communicate(timeout=60)
    assert "destroyed" in out
    for _ in range(2):  # and keeps saying why
        with pytest.raises(StoreClosedError, match="was destroyed"):
            survivor.get("k")
        with pytest.raises(StoreClosedError, match="was destroyed"):
            survivor.put("k", 1)
    if kind == "local":
        np.testing.assert_array_equal(view, np.arange(3))  # a view outlives its store
        assert not os.path.exists(local_root(url))


def test_bad_metadata_and_timeouts_are_clear_errors(store_url):
    s = simai.open_store(store_url)
    s.put("keep", {"a": 1})
    with pytest.raises(
        ValueError, match='key 1 is not a str, and would come back as the string "1"'
    ):
        s.put("keep", {1: "a"})
    with pytest.raises(ValueError, match="key None is not a str"):
        s.put("keep", [{"ok": {"fine": 1}}, ({None: 2},)])
    for bad in (float("nan"), [1.0, float("inf")], {"x": -float("inf")}):
        with pytest.raises(ValueError, match="NaN and Infinity"):
            s.put("keep", bad)
    with pytest.raises(TypeError, match="datetime"):
        s.put("keep", np.array(["2026-12-06"], dtype="datetime64[D]"))
    with pytest.raises(TypeError, match=r"int64 is not JSON serializable.*int\(\) or float\(\)"):
        s.put("keep", {"a": np.int64(3)})
    assert s.get("keep") == {"a": 1}
    for op in (
        lambda t: s.wait("nope", timeout=t),
        lambda t: next(s.stream("st", timeout=t)),
        lambda t: s.append("st", 1, timeout=t),
    ):
        with pytest.raises(
            TypeError, match="timeout must be a number of seconds >= 0 or None, not '5'"
        ):
            op("5")
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            op(-1)
    with pytest.raises(TimeoutError, match=r"within 0\.1 s"):
        s.wait("nope", timeout=0.1)
    s.close()
