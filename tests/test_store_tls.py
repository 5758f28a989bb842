"""The redis store over TLS (``rediss://``), with real redis-server shards that speak only TLS.

Each run's shards get a CA of their own; a client proves itself with a certificate that CA
signed, and checks the server's certificate names the address it dialled. What is proven:
data round trips over TLS (small, large and chunked values, streams, waits); no plaintext port
is open; a client with another CA's certificate, a server certificate for another address, a
plaintext client, or missing TLS files each fail with a clear error; the key files are 0600;
`simai store start --tls` and a workflow's TLS store hand the files to clients in the
environment, never on a command line.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import simai
from simai.store import ENV_PASSWORD, ENV_URL
from simai.store.redis import RedisStore
from simai.store.redis_server import RedisServers, _pid_is_redis
from simai.store.resp import Connection
from simai.store.tls import (
    ENV_TLS_CA,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    TLSFiles,
    make_certificates,
)
from simai.workflow import WorkflowOptions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tls_servers(tmp_path_factory):
    with RedisServers(shards=2, tls=True, log_dir=tmp_path_factory.mktemp("tls-log")) as servers:
        yield servers


@pytest.fixture
def tls_store(tls_servers):
    s = RedisStore(tls_servers.url, password=tls_servers.password, tls=tls_servers.tls)
    yield s
    for key in s.keys():
        s.delete(key)
    s.close()


def test_files_are_private_and_the_url_says_tls(tls_servers) -> None:
    assert tls_servers.url.startswith("rediss://")
    files = tls_servers.certificates
    assert files is not None
    folder = files.server.key.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in (*vars(files.server).values(), *vars(files.client).values()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for pid in tls_servers.pids:  # the configuration went on stdin, not the command line
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert tls_servers.password.encode() not in cmdline and b"tls" not in cmdline


def test_values_streams_and_waits_round_trip_over_tls(tls_store) -> None:
    big = np.random.default_rng(1).standard_normal(3_000_000)  # 24 MB
    tls_store.put("big", big)
    tls_store.put("small", {"a": 1})
    assert np.array_equal(tls_store.get("big"), big)
    assert tls_store.get("small") == {"a": 1}
    chunked = RedisStore(
        tls_store.url, password=tls_store._password, tls=tls_store.tls, chunk_size=1 << 20
    )
    chunked.put("chunked", big[:500_000])
    assert np.array_equal(tls_store.get("chunked"), big[:500_000])
    chunked.close()

    def later() -> None:
        time.sleep(0.3)
        tls_store.put("late", b"here")
        for i in range(3):
            tls_store.append("s", np.full(4, i))
        tls_store.close_stream("s")

    thread = threading.Thread(target=later)
    thread.start()
    assert tls_store.wait("late", timeout=10) is None
    assert [v.tolist() for v in tls_store.stream("s", timeout=10)] == [[i] * 4 for i in range(3)]
    thread.join()


def test_no_plaintext_port_and_a_plaintext_client_is_told_why(tls_servers) -> None:
    host, port = "127.0.0.1", tls_servers.shards[0].port
    with pytest.raises(ConnectionError, match="TLS"):
        RedisStore(tls_servers.url.replace("rediss://", "redis://"), password=tls_servers.password)
    with pytest.raises((ConnectionError, OSError)):
        Connection(host, port, tls_servers.password, connect_timeout=2).command("PING")


def test_a_client_certificate_of_another_ca_is_refused(tls_servers, tmp_path) -> None:
    other = make_certificates(tmp_path / "other", ["127.0.0.1"])
    run_ca = tls_servers.tls.ca
    # trusts the server (the run's CA) but shows a certificate another CA signed
    stranger = TLSFiles(run_ca, other.client.cert, other.client.key)
    with pytest.raises(ConnectionError, match="refused this client's certificate"):
        RedisStore(tls_servers.url, password=tls_servers.password, tls=stranger)
    # trusts another CA: the run's server cannot prove who it is
    with pytest.raises(ConnectionError, match="did not prove who it is"):
        RedisStore(tls_servers.url, password=tls_servers.password, tls=other.client)


def test_a_server_certificate_for_another_address_is_refused(tmp_path) -> None:
    files = make_certificates(tmp_path / "elsewhere", ["storage.example.org", "10.9.9.9"])
    before = _redis_pids()
    with pytest.raises(ConnectionError, match="did not prove who it is.*127.0.0.1"):
        RedisServers(tls=files, log_dir=tmp_path / "log")  # its own first client refuses it
    assert _redis_pids() == before  # and the shard it started is stopped


def _redis_pids() -> set[int]:
    found = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    return {int(p) for p in found.stdout.split() if _pid_is_redis(int(p))}


def test_missing_or_partial_tls_files_are_clear_errors(tls_servers, monkeypatch) -> None:
    for name in (ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="SIMAI_STORE_TLS_CA"):
        RedisStore(tls_servers.url, password=tls_servers.password)
    monkeypatch.setenv(ENV_TLS_CA, str(tls_servers.tls.ca))
    with pytest.raises(ValueError, match="SIMAI_STORE_TLS_CERT, SIMAI_STORE_TLS_KEY is not set"):
        RedisStore(tls_servers.url, password=tls_servers.password)
    monkeypatch.setenv(ENV_TLS_CERT, "/nonexistent/client.crt")
    monkeypatch.setenv(ENV_TLS_KEY, "/nonexistent/client.key")
    with pytest.raises(ValueError, match="cannot load the TLS files"):
        RedisStore(tls_servers.url, password=tls_servers.password)
    with pytest.raises(ValueError, match="tls= is for rediss://"):
        RedisStore("redis://127.0.0.1:1", tls=tls_servers.tls)


def _simai(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMAI_STORE")}
    env["SIMAI_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "simai.cli", *args], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


CLIENT = """
import numpy as np, simai
with simai.open_store() as s:
    s.put("from-shell", np.arange(3))
    print(s.url, s.get("from-shell").tolist())
"""


def test_cli_store_start_tls_exports_what_a_shell_needs(tmp_path) -> None:
    home = tmp_path / "home"
    refused = _simai("store", "start", "--tls-host", "x", home=home)
    assert refused.returncode != 0 and "needs --tls" in refused.stderr
    started = _simai("store", "start", "--port", "0", "--tls", "--tls-host", "node7", home=home)
    assert started.returncode == 0, started.stderr
    state = json.loads((home / "store.json").read_text())
    pids = [s["pid"] for s in state["shards"]]
    try:
        exports = dict(shlex.split(line)[1].split("=", 1) for line in started.stdout.splitlines())
        assert exports[ENV_URL].startswith("rediss://")
        assert {ENV_PASSWORD, ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY} <= set(exports)
        shell = f'eval "$({shlex.quote(sys.executable)} -m simai.cli store env)"; '
        shell += f"{shlex.quote(sys.executable)} -c {shlex.quote(CLIENT)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIMAI_STORE")}
        env["SIMAI_HOME"] = str(home)
        done = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[0].startswith("rediss://")
        assert done.stdout.strip().endswith("[0, 1, 2]")
        cert = Path(exports[ENV_TLS_CERT]).parent / "server.crt"
        from cryptography import x509

        sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        assert "node7" in sans.value.get_values_for_type(x509.DNSName)
        stopped = _simai("store", "stop", home=home)
        assert stopped.returncode == 0, stopped.stderr
        assert not [p for p in pids if _pid_is_redis(p)]
    finally:
        for pid in pids:
            if _pid_is_redis(pid):
                os.kill(pid, signal.SIGKILL)


def _task_round_trip(x: int) -> tuple[str, int]:
    with simai.open_store() as s:
        s.put(f"task/{x}", np.array([x]))
        return s.url.split("://")[0], int(s.get(f"task/{x}")[0])


def test_workflow_with_a_tls_store_hands_its_tasks_the_files(tmp_path) -> None:
    options = WorkflowOptions(store_tls=True)
    with simai.Workflow("tls", store="redis", run_dir=tmp_path / "run", options=options) as wf:
        assert wf.store_url.startswith("rediss://")
        assert wf.submit(_task_round_trip, 5).result(timeout=60) == ("rediss", 5)
        with wf.store() as s:
            assert s.get("task/5").tolist() == [5]
        tls_dir = Path(os.environ[ENV_TLS_CA]).parent
        assert tls_dir.is_dir()
    assert ENV_TLS_CA not in os.environ  # the run's environment is undone at its end
    assert not tls_dir.exists()  # the run's certificates go with its shards
    with pytest.raises(ValueError, match="store_tls .* needs store='redis'"):
        simai.Workflow("x", store="local", options=options)


def test_cli_store_start_with_your_own_certificates(tmp_path) -> None:
    home, own = tmp_path / "home", tmp_path / "own"
    make_certificates(own, ["127.0.0.1"])
    (own / "client.key").chmod(0o644)
    refused = _simai("store", "start", "--port", "0", "--tls-dir", str(own), home=home)
    assert refused.returncode != 0 and "chmod 600" in refused.stderr
    (own / "client.key").chmod(0o600)
    started = _simai("store", "start", "--port", "0", "--tls-dir", str(own), home=home)
    assert started.returncode == 0, started.stderr
    exports = dict(shlex.split(line)[1].split("=", 1) for line in started.stdout.splitlines())
    assert exports[ENV_TLS_CA] == str(own / "ca.crt")
    assert exports[ENV_TLS_CERT] == str(own / "client.crt")
    files = TLSFiles(own / "ca.crt", own / "client.crt", own / "client.key")
    with RedisStore(exports[ENV_URL], password=exports[ENV_PASSWORD], tls=files) as s:
        s.put("mine", b"1")
    assert _simai("store", "stop", home=home).returncode == 0
    assert sorted(p.name for p in own.iterdir()) == [  # yours: kept at stop
        "ca.crt", "client.crt", "client.key", "server.crt", "server.key"]  # fmt: skip
