"""The native clients over TLS (rediss://) and as per-component store users, against real
redis-server shards that speak only TLS and enforce Redis ACLs.

The C library verifies each shard's certificate against $SIMAI_STORE_TLS_CA and the address it
dialled, and presents the client certificate of $SIMAI_STORE_TLS_CERT / $SIMAI_STORE_TLS_KEY, as
simai/store/tls.py does. What is proven, with real processes: every dtype and shape, bytes, JSON
and a stream round trip both ways between C and Python over TLS; a C wait that Python wakes, and
a C stream reader Python feeds; a C++ round trip; a client certificate of another CA, a server
certificate for another address, and missing TLS variables are clear error codes; a C client
logged in as an ACL user limited to ``samples/`` gets SIMAI_ERR_PERMISSION naming the key, the
operation and the component outside it, and the data stays intact; a wrong secret is an
authentication error.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from _native import DTYPES, JSON, LONG, SHAPES, _fixture, _pattern, _run

from simai.store import ENV_PASSWORD
from simai.store.access import ENV_USER, StoreAccess
from simai.store.redis import RedisStore
from simai.store.redis_server import RedisServers
from simai.store.tls import ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY, TLSFiles, make_certificates

pytestmark = pytest.mark.timeout(180)

PROBE = r"""
#include <stdio.h>
#include <string.h>
#include <simai.h>

/* probe CMD URL NAME [TEXT]: what the C client got, as "CODE message" (or the value read) */
int main(int argc, char **argv)
{
    simai_store *s = NULL;
    char buf[256];
    size_t n = 0;
    int rc = argc < 4 ? SIMAI_ERR_INVALID : simai_open_url(argv[2], &s);
    if (!rc && !strcmp(argv[1], "put") && argc == 5)
        rc = simai_put_bytes(s, argv[3], argv[4], strlen(argv[4]));
    else if (!rc && !strcmp(argv[1], "append") && argc == 5)
        rc = simai_append_bytes(s, argv[3], argv[4], strlen(argv[4]), 1.0, NULL);
    else if (!rc && !strcmp(argv[1], "delete"))
        rc = simai_delete(s, argv[3], NULL);
    else if (!rc && !strcmp(argv[1], "wait"))
        rc = simai_wait(s, argv[3], 1.0);
    else if (!rc && !strcmp(argv[1], "get") && !(rc = simai_get_bytes(s, argv[3], buf,
                                                                       sizeof buf - 1, &n)))
        printf("%.*s\n", (int)n, buf);
    if (!rc && !strcmp(argv[1], "group")) { /* a consumer group's reader, until the end */
        int64_t i;
        rc = simai_group_position(s, argv[3], "c", &i);
        while (!rc && !(rc = simai_group_get(s, argv[3], "c", &i, 10, buf, sizeof buf - 1, NULL)))
            i++;
        printf("%lld\n", (long long)i);
        rc = rc == SIMAI_ERR_ENDED ? SIMAI_OK : rc;
    }
    printf("%s %s\n", simai_code_name(rc), rc ? simai_last_error() : "");
    simai_close(s);
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(native, tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("tls-probe") / "probe.c"
    src.write_text(PROBE)
    exe = src.with_suffix("")
    prefix = native.prefix
    flags = [f"-I{prefix}/include", f"-L{prefix}/lib", "-lsimai", f"-Wl,-rpath,{prefix}/lib"]
    _run(native.cc, "-std=c11", "-Wall", "-Wextra", "-Werror", src, "-o", exe, *flags)
    return exe


@pytest.fixture(scope="module")
def tls_servers(tmp_path_factory):
    with RedisServers(shards=2, tls=True, log_dir=tmp_path_factory.mktemp("tls-log")) as servers:
        yield servers


def _env(servers, tls: TLSFiles | None = None, **more: str) -> dict[str, str]:
    """The environment a component of this run gets: the password and the TLS files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMAI_STORE")}
    env[ENV_PASSWORD] = servers.password
    env.update((tls or servers.tls).env())
    env.update(more)
    return env


@pytest.fixture
def store(tls_servers):
    s = RedisStore(tls_servers.url, password=tls_servers.password, tls=tls_servers.tls)
    yield s
    for key in s.keys():
        s.delete(key)
    for name in ("c/stream", "p/stream", "samples/stream"):
        s.delete_stream(name)
    s.close()


def test_c_writes_python_reads_over_tls(native, store, tls_servers) -> None:
    """Every dtype and shape, bytes, JSON and a stream C writes over rediss:// read equal in
    Python."""
    assert store.url.startswith("rediss://")
    assert _run(native.check, "write", store.url, env=_env(tls_servers)).strip() == "ok"
    for d, dt in enumerate(DTYPES):
        for i, shape in enumerate(SHAPES):
            got = store.get(f"c/arr/{dt}/{i}")
            assert (got.dtype.str, got.shape) == (dt, shape)
            assert got.tobytes() == _fixture(d, i).tobytes(), (dt, shape)
    assert store.get("c/bytes-big") == _pattern(100000, 1).tobytes()
    assert store.get("c/json") == JSON
    assert store.get("c/" + LONG) == b"long"
    values = list(store.stream("c/stream", timeout=1))
    assert [v.tolist() for v in values] == [[i, i + 0.5, -i] for i in range(5)]


@pytest.mark.parametrize("chunk", [None, 1000], ids=["whole", "chunked"])
def test_python_writes_c_reads_over_tls_while_c_waits(native, store, tls_servers, chunk) -> None:
    """C reads what Python writes (also cut into chunks), each stream entry as Python appends it
    while the C reader waits on the TLS subscription."""
    writer = RedisStore(store.url, password=tls_servers.password, tls=tls_servers.tls,
                        chunk_size=chunk) if chunk else store  # fmt: skip
    for d, dt in enumerate(DTYPES):
        for i in range(len(SHAPES)):
            writer.put(f"p/arr/{dt}/{i}", _fixture(d, i))
    writer.put("p/bytes-big", _pattern(100000, 1).tobytes())
    writer.put("p/json", JSON)
    writer.put("p/" + LONG, b"long")
    reader = subprocess.Popen([native.check, "read", store.url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(tls_servers))  # fmt: skip
    for i in range(5):  # while the reader waits for each entry
        time.sleep(0.05)
        writer.append("p/stream", np.array([i, i + 0.5, -i]))
    writer.close_stream("p/stream")
    out, err = reader.communicate(timeout=30)
    assert out.strip() == "ok", err
    if chunk:
        writer.close()


def test_c_wait_over_tls_wakes_when_python_puts(native, store, tls_servers) -> None:
    waiter = subprocess.Popen([native.check, "wait", store.url, "ready", "10"],
                              stdout=subprocess.PIPE, text=True, env=_env(tls_servers))  # fmt: skip
    time.sleep(0.5)
    store.put("ready", b"1")
    out, _ = waiter.communicate(timeout=15)
    code, seconds = out.split()[:2]
    assert code == "SIMAI_OK" and float(seconds) < 5, out


def test_cpp_round_trip_over_tls(native, store, tls_servers) -> None:
    store.put("p/cpp", np.array([[0.5, 1.5], [2.5, 3.5]], np.float32))
    out = _run(native.cpp, store.url, env=_env(tls_servers))
    assert out.splitlines()[-1] == "ok"
    assert store.get("cpp/field").tolist() == [[1, 2, 3], [4, 5, 6]]


# --- refusals: certificates, addresses, missing files ------------------------------------------


def test_a_client_certificate_of_another_ca_is_refused(probe, tls_servers, tmp_path) -> None:
    other = make_certificates(tmp_path / "other", ["127.0.0.1"])
    # trusts the server (the run's CA) but shows a certificate another CA signed
    stranger = TLSFiles(tls_servers.tls.ca, other.client.cert, other.client.key)
    out = _run(probe, "put", tls_servers.url, "k", "v", env=_env(tls_servers, stranger))
    assert out.startswith("SIMAI_ERR_PERMISSION"), out
    assert "refused this client's certificate" in out
    # trusts another CA: the run's server cannot prove who it is
    out = _run(probe, "put", tls_servers.url, "k", "v", env=_env(tls_servers, other.client))
    assert out.startswith("SIMAI_ERR_PERMISSION"), out
    assert "did not prove who it is" in out and "SIMAI_STORE_TLS_CA" in out


def test_a_server_certificate_for_another_address_is_refused(probe, tmp_path) -> None:
    """The server's certificate must name the address dialled: an IP address, or a name."""
    files = make_certificates(tmp_path / "only-127.0.0.1", ["127.0.0.1"])
    with RedisServers(tls=files, bind="127.0.0.1 127.0.0.2", log_dir=tmp_path / "log") as one:
        port = one.shards[0].port
        env = _env(one)
        assert _run(probe, "put", f"rediss://127.0.0.1:{port}", "k", "v", env=env).startswith(
            "SIMAI_OK"
        )
        for host, why in (("127.0.0.2", "IP address mismatch"), ("localhost", "hostname mismatch")):
            out = _run(probe, "put", f"rediss://{host}:{port}", "k", "v", env=env)
            assert out.startswith("SIMAI_ERR_PERMISSION"), out
            assert "did not prove who it is" in out and why in out, out
        # a plaintext client of a TLS-only server is told why
        out = _run(probe, "put", f"redis://127.0.0.1:{port}", "k", "v", env=env)
        assert out.startswith("SIMAI_ERR_IO") and "rediss://" in out, out


def test_missing_or_unreadable_tls_files_are_clear_errors(probe, tls_servers, tmp_path) -> None:
    url = tls_servers.url
    env = _env(tls_servers)
    for name in (ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY):
        env.pop(name)
    out = _run(probe, "put", url, "k", "v", env=env)
    assert out.startswith("SIMAI_ERR_INVALID") and "SIMAI_STORE_TLS_CA" in out, out
    env[ENV_TLS_CA] = str(tls_servers.tls.ca)
    out = _run(probe, "put", url, "k", "v", env=env)
    assert "SIMAI_STORE_TLS_CERT, SIMAI_STORE_TLS_KEY not set" in out, out
    env[ENV_TLS_CERT] = str(tls_servers.tls.cert)
    env[ENV_TLS_KEY] = str(tmp_path / "nonexistent.key")
    out = _run(probe, "put", url, "k", "v", env=env)
    assert out.startswith("SIMAI_ERR_INVALID"), out
    assert f"SIMAI_STORE_TLS_KEY={tmp_path / 'nonexistent.key'}" in out and "No such file" in out
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    env[ENV_TLS_KEY] = str(garbage)
    out = _run(probe, "put", url, "k", "v", env=env)
    assert out.startswith("SIMAI_ERR_INVALID") and "SIMAI_STORE_TLS_KEY" in out, out


# --- store users: a component limited to samples/ ---------------------------------------------


@pytest.fixture
def sampler(store, tls_servers):
    """An ACL user that may write samples/ only, and its secret."""
    store.set_user("simai-c-sampler", "sampler-secret-1234", StoreAccess(write=("samples/",)))
    yield "simai-c-sampler", "sampler-secret-1234"
    store.delete_user("simai-c-sampler")


def test_c_as_a_store_user_is_refused_outside_its_prefixes(probe, store, tls_servers,
                                                           sampler) -> None:  # fmt: skip
    user, secret = sampler
    store.put("models/m", b"model")
    store.append("samples/stream", b"s0")
    store.close_stream("samples/stream")
    env = _env(tls_servers, **{ENV_USER: user, ENV_PASSWORD: secret,
                               "SIMAI_COMPONENT": "sampler"})  # fmt: skip
    url = tls_servers.url

    def c(*args: str) -> str:
        return _run(probe, args[0], url, *args[1:], env=env).splitlines()

    assert c("put", "samples/0", "from C") == ["SIMAI_OK "]
    assert c("get", "samples/0") == ["from C", "SIMAI_OK "]
    assert c("group", "samples/stream") == ["1", "SIMAI_OK "]
    for args, op, key in [(("put", "models/m", "overwritten"), "write", "models/m"),
                          (("get", "models/m"), "read", "models/m"),
                          (("delete", "models/m"), "delete", "models/m"),
                          (("append", "models/s", "x"), "append to", "models/s"),
                          (("wait", "models/late"), "wait for", "models/late")]:  # fmt: skip
        out = c(*args)[-1]
        who = f"component 'sampler' (store user '{user}')"
        assert out.startswith(f"SIMAI_ERR_PERMISSION {who} may not {op} '{key}' in "
                              f"rediss://{user}@"), out  # fmt: skip
    assert store.get("models/m") == b"model"  # refused writes left it intact
    assert not store.exists("models/s") and store.get("samples/0") == b"from C"
    # the user in the URL instead of the environment
    env.pop(ENV_USER)
    out = _run(probe, "put", url.replace("://", f"://{user}@"), "models/m", "x", env=env)
    assert out.startswith("SIMAI_ERR_PERMISSION") and f"store user '{user}'" in out, out


def test_c_store_user_with_a_wrong_secret_fails_to_authenticate(probe, tls_servers,
                                                                sampler) -> None:  # fmt: skip
    user, _ = sampler
    env = _env(tls_servers, **{ENV_USER: user, ENV_PASSWORD: "not-the-secret"})
    out = _run(probe, "put", tls_servers.url, "samples/x", "v", env=env)
    assert out.startswith("SIMAI_ERR_PERMISSION") and "WRONGPASS" in out, out
    assert "not-the-secret" not in out
