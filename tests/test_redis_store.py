"""Redis-specific behaviour of the store, against real redis-server processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis

import simai
from simai.store import ENV_PASSWORD, ENV_URL
from simai.store.redis import RedisStore, parse_url
from simai.store.redis_server import PortInUseError, RedisServers, _pid_is_redis
from simai.store.resp import AuthenticationError, Connection

MiB = 1 << 20


def _raw(servers: RedisServers, shard: int) -> Connection:
    s = servers.shards[shard]
    return Connection(s.host, s.port, servers.password)


def _scan(conn: Connection, pattern: bytes) -> list[bytes]:
    cursor, out = b"0", []
    while True:
        cursor, found = conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        out += found
        if cursor == b"0":
            return out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _live(pids: list[int]) -> list[int]:
    return [p for p in pids if _pid_is_redis(p)]


# --- servers and the CLI ---------------------------------------------------------------


def _simai(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SIMAI_HOME=str(home))
    env.pop(ENV_PASSWORD, None)
    return subprocess.run(
        [sys.executable, "-m", "simai.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_start_status_stop_round_trip(tmp_path):
    home = tmp_path / "home"
    started = _simai("store", "start", "--shards", "2", "--port", "0", home=home)
    assert started.returncode == 0, started.stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
    )
    url, password = exports[ENV_URL], exports[ENV_PASSWORD]
    state_file = home / "store.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    pids = RedisServers.attach(__import__("json").loads(state_file.read_text())).pids
    try:
        assert len(_live(pids)) == 2
        for pid in pids:
            assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        with simai.open_store(url, password=password) as s:
            s.put("k", np.arange(4))
            assert s.get("k").tolist() == [0, 1, 2, 3]

        status = _simai("store", "status", home=home)
        assert status.returncode == 0 and status.stdout.count(" up") == 2, status.stdout

        again = _simai("store", "start", "--port", "0", home=home)
        assert again.returncode == 1
        assert "already running" in again.stderr and "simai store stop" in again.stderr

        stopped = _simai("store", "stop", home=home)
        assert stopped.returncode == 0, stopped.stderr
        assert _live(pids) == []
        assert not state_file.exists()
        assert _simai("store", "status", home=home).returncode == 1
    finally:
        for pid in _live(pids):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _busy_port_after_a_free_one():
    """Hold a listening port whose lower neighbour is free, so the first shard starts."""
    for _ in range(50):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            port = busy.getsockname()[1]
            with socket.socket() as below:
                try:
                    below.bind(("127.0.0.1", port - 1))
                except OSError:
                    continue
            busy.listen()
            yield port
            return
    raise RuntimeError("no port with a free lower neighbour")


def test_taken_port_is_reported_and_nothing_is_left_running(tmp_path):
    with _busy_port_after_a_free_one() as port:
        with pytest.raises(PortInUseError, match=f"port {port} .*already"):
            RedisServers(shards=2, port=port - 1)
        cli = _simai("store", "start", "--port", str(port), home=tmp_path)
        assert cli.returncode == 1
        assert f"port {port}" in cli.stderr and "already listening" in cli.stderr
        assert not (tmp_path / "store.json").exists()
    assert subprocess.run(["pgrep", "-f", f"redis-server.*:{port}"]).returncode == 1


def test_data_persists_across_restarts_with_persist_dir(tmp_path):
    with RedisServers(port=0, persist_dir=tmp_path) as first:
        password = first.password
        with RedisStore(first.url, password=password) as s:
            s.put("kept", np.arange(5.0))
    with RedisServers(port=0, persist_dir=tmp_path, password=password) as second:
        with RedisStore(second.url, password=password) as s:
            assert s.get("kept").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_dumps_and_logs_are_private_to_the_user(tmp_path):
    """The append-only files and logs hold what the password guards: 0700 folders, 0600 files."""
    persist, logs = tmp_path / "persist", tmp_path / "logs"
    with RedisServers(port=0, persist_dir=persist, log_dir=logs) as servers:
        with RedisStore(servers.url, password=servers.password) as s:
            s.put("kept", np.arange(5.0))
    for folder in (persist, logs):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    files = [p for p in (*persist.rglob("*"), *logs.rglob("*")) if p.is_file()]
    assert files and all(p.stat().st_mode & 0o077 == 0 for p in files), [
        (str(p), oct(p.stat().st_mode)) for p in files
    ]
    assert any("aof" in str(p) for p in files)


# --- authentication and reachability ---------------------------------------------------


def test_servers_require_a_password(redis_servers):
    shard = redis_servers.shards[0]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=shard.host, port=shard.port, retry=None).ping()
    with socket.create_connection((shard.host, shard.port), timeout=5) as raw:
        raw.sendall(b"GET anything\r\n")
        assert raw.recv(100).startswith(b"-NOAUTH")


def test_wrong_password_is_an_authentication_error(redis_url):
    with pytest.raises(AuthenticationError, match="authentication .*failed") as info:
        RedisStore(redis_url, password="not-the-password")
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, PermissionError)
    assert "not-the-password" not in str(info.value)


def test_missing_password_says_where_to_put_it(redis_url, monkeypatch):
    monkeypatch.delenv(ENV_PASSWORD)
    with pytest.raises(AuthenticationError, match=ENV_PASSWORD):
        RedisStore(redis_url)


def test_unreachable_server_names_the_url_without_its_password():
    port = _closed_port()
    with pytest.warns(UserWarning, match="password"):
        with pytest.raises(ConnectionError) as info:
            simai.open_store(f"redis://:hunter2secret@127.0.0.1:{port}")
    assert f"redis://127.0.0.1:{port}" in str(info.value)
    assert "hunter2secret" not in str(info.value)


def test_password_in_url_is_accepted_but_never_shown(redis_servers, monkeypatch):
    monkeypatch.delenv(ENV_PASSWORD)
    shard = redis_servers.shards[0]
    with pytest.warns(UserWarning):
        s = RedisStore(f"redis://:{redis_servers.password}@{shard.address}")
    with s:
        s.put("x", 1)
        assert redis_servers.password not in repr(s) + s.url
        assert s.get("x") == 1


@pytest.mark.parametrize(
    "url",
    ["redis://", "redis://host:port", "redis://h:1/0", "redis://h:99999", "rediss://h:1/x"],
)
def test_bad_urls_are_value_errors(url):
    with pytest.raises(ValueError):
        parse_url(url)


def test_url_parsing():
    assert parse_url("redis://a:1,b,[::1]:3") == ([("a", 1), ("b", 6379), ("::1", 3)], None, None)
    assert parse_url("redis://u:p@a:1") == ([("a", 1)], "u", "p")
    assert parse_url("rediss://a:1,b:2") == ([("a", 1), ("b", 2)], None, None)


# --- values --------------------------------------------------------------------------


def test_large_values_are_chunked_overwritten_and_deleted(redis_store_url, redis_servers):
    s = RedisStore(redis_store_url, chunk_size=MiB)
    conn = _raw(redis_servers, s.shard_of("big"))
    try:
        a = np.random.default_rng(0).random(450_000)  # 3.4 MiB: 4 chunks
        s.put("big", a)
        assert len(_scan(conn, b"simai:c:big\0*")) == 4
        np.testing.assert_array_equal(s.get("big"), a)
        b = np.arange(300_000, dtype=np.int64)  # 2.3 MiB: 3 chunks, replacing the 4
        s.put("big", b)
        assert len(_scan(conn, b"simai:c:big\0*")) == 3
        np.testing.assert_array_equal(s.get("big"), b)
        s.put("big", b"small")
        assert _scan(conn, b"simai:c:*") == []
        s.put("big", a)
        assert s.keys() == ["big"]
        assert s.delete("big") is True
        assert _scan(conn, b"simai:*") == []
        with pytest.raises(KeyError):
            s.get("big")
    finally:
        conn.close()
        s.close()


def test_large_stream_entries_are_chunked(redis_store_url, redis_servers):
    s = RedisStore(redis_store_url, chunk_size=MiB)
    try:
        parts = [np.full(200_000, i, dtype=np.float64) for i in range(3)]
        for p in parts:
            s.append("st", p)
        s.close_stream("st")
        for got, want in zip(s.stream("st"), parts, strict=True):
            np.testing.assert_array_equal(got, want)
        assert s.delete_stream("st") is True
        conn = _raw(redis_servers, s.shard_of("st"))
        assert _scan(conn, b"simai:*") == []
        conn.close()
    finally:
        s.close()


def test_readers_never_see_half_a_chunked_value(redis_store_url):
    writer = RedisStore(redis_store_url, chunk_size=256 * 1024)
    reader = RedisStore(redis_store_url, chunk_size=256 * 1024)
    values = [np.full(200_000, v, dtype=np.float64) for v in (1.0, 2.0)]
    writer.put("race", values[0])
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            writer.put("race", values[i % 2])
            i += 1

    t = threading.Thread(target=write)
    t.start()
    try:
        for _ in range(40):
            got = reader.get("race")
            assert got.shape == (200_000,) and got[0] in (1.0, 2.0) and np.all(got == got[0])
    finally:
        stop.set()
        t.join()
        writer.close()
        reader.close()


def test_small_and_chunked_writers_racing_leave_no_stray_chunks(redis_store_url, redis_servers):
    stores = [RedisStore(redis_store_url, chunk_size=64 * 1024) for _ in range(2)]
    big = np.ones(40_000)  # 5 chunks
    writers = [
        threading.Thread(target=lambda: [stores[0].put("mixed", b"small") for _ in range(40)]),
        threading.Thread(target=lambda: [stores[1].put("mixed", big) for _ in range(40)]),
    ]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    conn = _raw(redis_servers, stores[0].shard_of("mixed"))
    try:
        final = stores[0].get("mixed")
        expected = 0 if isinstance(final, bytes) else 5
        assert len(_scan(conn, b"simai:c:mixed\0*")) == expected
        stores[0].delete("mixed")
        assert _scan(conn, b"simai:*") == []
    finally:
        conn.close()
        for s in stores:
            s.close()


def test_store_objects_survive_a_fork(redis_store_url):
    import multiprocessing

    with RedisStore(redis_store_url) as s:
        s.put("before", 1)
        child = multiprocessing.get_context("fork").Process(
            target=lambda: s.put("from-child", s.get("before") + 1)
        )
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert s.get("from-child") == 2 and s.get("before") == 1


def test_servers_run_without_persistence_and_on_loopback(redis_servers):
    conn = _raw(redis_servers, 0)
    try:
        assert conn.command("CONFIG", "GET", "save") == [b"save", b""]
        assert conn.command("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
        assert conn.command("CONFIG", "GET", "bind")[1] == b"127.0.0.1"
    finally:
        conn.close()


def test_keys_are_spread_over_both_shards(redis_store_url, redis_servers):
    with RedisStore(redis_store_url) as s:
        names = [f"k/{i}" for i in range(64)]
        for n in names:
            s.put(n, b"v")
        s.append("one-stream", 1)
        counts = []
        for i in range(2):
            conn = _raw(redis_servers, i)
            counts.append(len(_scan(conn, b"simai:v:k/*")))
            assert conn.command("EXISTS", b"simai:s:one-stream") == (i == s.shard_of("one-stream"))
            conn.close()
        assert sum(counts) == 64 and min(counts) > 0
        assert s.keys("k/") == sorted(names)
        assert s.keys("one") == []


def test_glob_characters_in_prefixes_are_literal(redis_store_url):
    with RedisStore(redis_store_url) as s:
        for k in ["a*b", "a?c", "a[x]", "abc", "a\\d"]:
            s.put(k, 0)
        assert s.keys("a*") == ["a*b"]
        assert s.keys("a[") == ["a[x]"]
        assert s.keys("a\\") == ["a\\d"]


# --- waiting ---------------------------------------------------------------------------


def test_wait_blocks_on_a_subscription_and_wakes_on_a_put_from_another_process(
    redis_store_url, redis_servers
):
    s = RedisStore(redis_store_url)
    shard = s.shard_of("later")
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _capture(errors, s.wait, "later", 30))
    t.start()
    conn = _raw(redis_servers, shard)
    try:
        while b"cmd=subscribe" not in conn.command("CLIENT", "LIST") and t.is_alive():
            time.sleep(0.01)
        assert b"sub=1" in conn.command("CLIENT", "LIST")
        code = "import simai; simai.open_store().put('later', b'x')"
        env = dict(os.environ, **{ENV_URL: redis_store_url})
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
        t.join(30)
        assert not t.is_alive() and errors == []
    finally:
        conn.close()
        s.close()


def _capture(errors: list[BaseException], fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as e:
        errors.append(e)


@pytest.mark.timeout(30)
def test_a_killed_shard_is_a_connection_error_not_a_hang():
    with RedisServers(shards=2, port=0) as servers:
        s = RedisStore(servers.url, password=servers.password)
        victim = s.shard_of("here")
        other = next(k for k in (f"o{i}" for i in range(100)) if s.shard_of(k) != victim)
        never = next(k for k in (f"n{i}" for i in range(100)) if s.shard_of(k) == victim)
        s.put("here", 1)
        s.put(other, 2)
        errors: list[BaseException] = []
        waiter = threading.Thread(target=lambda: _capture(errors, s.wait, never, None))
        waiter.start()
        conn = Connection(
            servers.shards[victim].host, servers.shards[victim].port, servers.password
        )
        while b"cmd=subscribe" not in conn.command("CLIENT", "LIST"):
            time.sleep(0.01)
        conn.close()
        os.kill(servers.shards[victim].pid, signal.SIGKILL)
        waiter.join(20)
        assert not waiter.is_alive()
        assert isinstance(errors[0], ConnectionError)
        address = servers.shards[victim].address
        with pytest.raises(ConnectionError, match=address):
            s.get("here")
        with pytest.raises(ConnectionError, match=address):
            s.put("here", 3)
        assert s.get(other) == 2
        s.close()


def test_put_many_and_get_many_span_shards_and_chunked_values(redis_store_url):
    with RedisStore(redis_store_url, chunk_size=64 * 1024) as s:
        items = {f"m/{i}": np.full(10, i) for i in range(20)}
        items["m/big"] = np.arange(50_000.0)  # chunked
        s.put("m/0", np.arange(20_000.0))  # chunked, replaced by a small value below
        s.put_many(items)
        got = s.get_many(list(items))
        for (k, v), g in zip(items.items(), got, strict=True):
            np.testing.assert_array_equal(g, v, err_msg=k)
        assert {s.shard_of(k) for k in items} == {0, 1}
        with pytest.raises(KeyError, match="m/missing"):
            s.get_many(["m/1", "m/missing"])
        with pytest.raises(ValueError):
            s.put_many({"m/ok": 1, "": 2})
        assert not s.exists("m/ok")
