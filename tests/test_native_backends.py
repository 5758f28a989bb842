"""The C client on the file:// and redis:// backends, against the Python client.

The same test programs as tests/test_native_store.py (native/tests/check.c), plus a small probe
compiled here for what those do not call (keys, exists, delete, stream state, bounded
appends), run as real processes on a file store and on the session's two real redis-server
shards (password from $SIMAI_STORE_PASSWORD, as simai starts them): what one language wrote,
the other reads equal; damage is SIMAI_ERR_CORRUPT; a wrong password is an error with a clear
message.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _native import DTYPES, JSON, LONG, SHAPES, _fixture, _pattern, _run
from test_native_store import _PY_HAMMER, _hammer_value

import simai
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
    src = tmp_path_factory.mktemp("probe") / "probe.c"
    src.write_text(PROBE)
    exe = src.with_suffix("")
    prefix = native.prefix
    _run(native.cc, "-std=c11", "-Wall", "-Wextra", src, "-o", exe, f"-I{prefix}/include",
         f"-L{prefix}/lib", "-lsimai", f"-Wl,-rpath,{prefix}/lib")  # fmt: skip
    return exe


@pytest.fixture(params=["file", "redis"])
def url(request) -> str:
    """A fresh store of each backend that local://'s tests (test_native_store.py) leave out."""
    return request.getfixturevalue(f"{request.param}_store_url")


@pytest.fixture
def store(url):
    s = simai.open_store(url)
    yield s
    s.close()


# --- values and streams cross the language boundary both ways -------------------------------


def test_c_writes_python_reads(native, store) -> None:
    _run(native.check, "write", store.url)
    for d, dt in enumerate(DTYPES):
        for i, shape in enumerate(SHAPES):
            got = store.get(f"c/arr/{dt}/{i}")
            assert (got.dtype.str, got.shape) == (dt, shape)
            assert got.tobytes() == _fixture(d, i).tobytes(), (dt, shape)
    assert store.get("c/bytes") == _pattern(1000, 1).tobytes()
    assert store.get("c/bytes-big") == _pattern(100000, 1).tobytes()
    assert store.get("c/empty") == b""
    assert store.get("c/json") == JSON
    assert store.get("c/" + LONG) == b"long"
    assert "c/" + LONG in store.keys("c/long/")
    values = list(store.stream("c/stream", timeout=1))
    assert [v.tolist() for v in values] == [[i, i + 0.5, -i] for i in range(5)]


@pytest.mark.parametrize("chunk", [None, 1000], ids=["whole", "chunked"])
def test_python_writes_c_reads(native, probe, url, chunk) -> None:
    if chunk and not url.startswith("redis"):
        pytest.skip("only the redis backend cuts values into chunks")
    store = RedisStore(url, chunk_size=chunk) if chunk else simai.open_store(url)
    for d, dt in enumerate(DTYPES):
        for i in range(len(SHAPES)):
            store.put(f"p/arr/{dt}/{i}", _fixture(d, i))
    store.put("p/bytes-big", _pattern(100000, 1).tobytes())
    store.put("p/json", JSON)
    store.put("p/" + LONG, b"long")
    for i in range(5):
        store.append("p/stream", np.array([i, i + 0.5, -i]))
    store.close_stream("p/stream")
    store.close()
    assert _run(native.check, "read", url).strip() == "ok"
    assert _run(probe, "shape", url, "p/arr/<f8/6").split() == ["1", "<f8", "40000", "100", "50"]
    assert _run(probe, "shape", url, "p/json").split() == ["2", "48"]  # JSON, 48 bytes
    assert _run(probe, "shape", url, "p/none").startswith("SIMAI_ERR_NOT_FOUND")


def test_keys_exists_delete_from_c(native, probe, store) -> None:
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
    assert _run(native.check, "errors", store.url).strip() == "ok"
    assert store.get("e/kept").tolist() == [[1, 2], [3, 4]]


# --- streams: bounds declared in Python, appended to from C ----------------------------------


def test_c_appends_to_a_drop_oldest_stream(native, probe, store) -> None:
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
    store.create_stream("full", maxlen=2, policy="block")
    out = _run(probe, "append", store.url, "full", "3").split("\n")
    assert out[:2] == ["0", "1"]
    assert out[2].startswith("SIMAI_ERR_TIMEOUT stream 'full' stayed full")
    assert store.stream_len("full") == 2
    reader = store.stream("full", group="g", timeout=1)
    assert next(reader).tolist() == [0.0]  # the group's reading makes room
    next(reader)
    assert _run(probe, "append", store.url, "full", "1").strip() == "2"


@pytest.mark.parametrize("url", ["local", "file", "redis"], indirect=True)
def test_c_group_reader_paces_a_python_producer(native, probe, store) -> None:
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
    # a drop_oldest stream: what was trimmed before the group got to it is skipped
    store.create_stream("lossy", maxlen=2, policy="drop_oldest")
    for i in range(5):
        store.append("lossy", np.array([float(i)]))
    store.close_stream("lossy")
    out = _run(probe, "group", store.url, "lossy", "g").splitlines()
    assert out[:2] == ["3 3", "4 4"] and out[2].startswith("SIMAI_ERR_ENDED")
    reader = store.stream("lossy", group="g", timeout=1)  # Python resumes where C stopped
    assert list(reader) == [] and reader.index == 5


def test_c_reader_sees_every_value_python_appends(native, store) -> None:
    for d, dt in enumerate(DTYPES):  # the values check.c reads before the stream
        for i in range(len(SHAPES)):
            store.put(f"p/arr/{dt}/{i}", _fixture(d, i))
    store.put("p/bytes-big", _pattern(100000, 1).tobytes())
    store.put("p/json", JSON)
    store.put("p/" + LONG, b"long")
    reader = subprocess.Popen([native.check, "read", store.url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    for i in range(5):  # while the reader waits for each entry
        time.sleep(0.05)
        store.append("p/stream", np.array([i, i + 0.5, -i]))
    store.close_stream("p/stream")
    out, err = reader.communicate(timeout=20)
    assert out.strip() == "ok", err


def test_c_and_python_write_one_store_at_the_same_time(native, store) -> None:
    n_c, n_py = 400, 200
    procs = [
        subprocess.Popen([native.check, "hammer", store.url, "1", str(n_c)]),
        subprocess.Popen([sys.executable, "-c", _PY_HAMMER, store.url, "2", str(n_py)]),
    ]
    time.sleep(0.5)  # both are waiting: start them at once
    store.put("go", b"")
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    _run(native.check, "verify", store.url, "2", str(n_py))  # C reads what Python wrote
    for i in range(n_c):  # and the other way round
        if not (i % 7 == 2 and i + 1 < n_c):
            np.testing.assert_array_equal(store.get(f"w1/{i}"), _hammer_value(1, i))
    store.close_stream("shared-stream")
    seen = [(int(v[0] // 1e6), int(round(v[0] % 1e6))) for v in store.stream("shared-stream")]
    appended = [(1, i) for i in range(0, n_c, 5)] + [(2, i) for i in range(0, n_py, 5)]
    assert sorted(seen) == sorted(appended)  # every acknowledged append, once
    for ident in (1, 2):
        mine = [i for who, i in seen if who == ident]
        assert mine == sorted(mine)


# --- waiting ---------------------------------------------------------------------------------


def test_c_wait_wakes_when_python_puts(native, store) -> None:
    waiter = subprocess.Popen(
        [native.check, "wait", store.url, "ready", "10"], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.3)
    store.put("ready", b"1")
    out, _ = waiter.communicate(timeout=15)
    assert out.split()[0] == "SIMAI_OK"


def test_c_wait_times_out_cleanly(native, store) -> None:
    out = _run(native.check, "wait", store.url, "never", "0.2")
    assert out.split()[0] == "SIMAI_ERR_TIMEOUT"
    assert "did not appear within 0.2 s" in out


# --- integrity -------------------------------------------------------------------------------


def _damage(store, key: str, offset: int) -> None:
    """Flip a bit of byte `offset` of the stored entry of `key`."""
    if isinstance(store, RedisStore):
        host, port = store._addrs[store.shard_of(key)]
        conn = Connection(host, port, os.environ["SIMAI_STORE_PASSWORD"])
        entry = bytearray(conn.command("GET", b"simai:v:" + key.encode()))
        entry[offset] ^= 0x10
        conn.command("SET", b"simai:v:" + key.encode(), bytes(entry))
        conn.close()
    else:
        path = Path(store.root) / "values" / key
        entry = bytearray(path.read_bytes())
        entry[offset] ^= 0x10
        path.write_bytes(entry)


@pytest.mark.parametrize("where", ["payload", "shape", "dtype"])
def test_damaged_value_is_an_error_in_c_never_data(native, store, where) -> None:
    store.put("x", np.arange(1000, dtype=np.float64))
    _damage(store, "x", {"payload": 64 + 8 * 999, "shape": 24, "dtype": 9}[where])
    out = _run(native.check, "get", store.url, "x")
    assert "get SIMAI_ERR_CORRUPT key 'x' in" in out
    assert "view SIMAI_ERR_CORRUPT" in out
    assert "damaged data was delivered" not in out


# --- opening: passwords and servers --------------------------------------------------------


def test_wrong_or_missing_password_is_a_clear_error(native, redis_url) -> None:
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


def test_dead_server_and_bad_urls_are_errors(native) -> None:
    def opened(url: str) -> str:
        return _run(native.check, "open", url)

    dead = opened("redis://127.0.0.1:1")
    assert dead.startswith("SIMAI_ERR_IO redis store redis://127.0.0.1:1: cannot connect")
    assert opened("redis://127.0.0.1:1/db").startswith("SIMAI_ERR_INVALID")
    assert opened("redis://127.0.0.1:99999").startswith("SIMAI_ERR_INVALID")
    assert opened("file://").startswith("SIMAI_ERR_INVALID")
