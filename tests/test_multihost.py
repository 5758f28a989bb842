"""A component on one host joins a run whose Redis store runs on another host.

Host A and host B are network namespaces joined by a veth pair (tests/_netns.py). The store is
started on host A with the documented command, `simai store start --bind ADDR`; the component
runs on host B and finds the store only through SIMAI_STORE and SIMAI_STORE_PASSWORD in its
environment, as a component on another machine would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _netns import SCRIPT, NetnsHost, NetnsHosts

SIMAI = (sys.executable, "-m", "simai.cli")

CLIENT = r"""
import json, sys
import numpy as np
import simai
from simai.store import AuthenticationError

mode, data = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
try:
    s = simai.open_store()
except AuthenticationError as e:
    print(json.dumps({"error": "AuthenticationError", "message": str(e)}))
    sys.exit(3)
except ConnectionError as e:
    print(json.dumps({"error": "ConnectionError", "message": str(e)}))
    sys.exit(4)
if mode == "produce":
    with np.load(data) as f:
        s.put("field", f["field"])
        s.put("labels", f["labels"])
        n = int(f["n"])
        for i in range(n):
            s.append("samples", f[f"sample_{i}"])
    s.close_stream("samples")
    print(json.dumps({"url": s.url, "appended": n}))
elif mode == "consume":
    s.wait("field", timeout=20)
    s.wait("labels", timeout=20)
    out = {"field": s.get("field"), "labels": s.get("labels")}
    for i, x in enumerate(s.stream("samples", timeout=20)):
        out[f"sample_{i}"] = x
    np.savez(data, **out)
    print(json.dumps({"url": s.url, "received": len(out) - 2}))
elif mode == "roundtrip":
    s.put("probe", np.arange(5))
    print(json.dumps({"url": s.url, "ok": bool((s.get("probe") == np.arange(5)).all())}))
"""


@dataclass(frozen=True)
class RemoteStore:
    """A store started on one host by `simai store start`: what its clients need."""

    url: str
    password: str
    pids: list[int]


def _client_env(url: str, password: str | None) -> dict[str, str]:
    """This environment without any store settings, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMAI_STORE")}
    env["SIMAI_STORE"] = url
    if password is not None:
        env["SIMAI_STORE_PASSWORD"] = password
    return env


def _client(host: NetnsHost, mode: str, data: str, env: dict[str, str]) -> list[str]:
    """Command line of a client on `host`; the password travels only in `env`."""
    cmd = host.command(sys.executable, "-c", CLIENT, mode, data)
    secret = env.get("SIMAI_STORE_PASSWORD")
    assert secret is None or not any(secret in arg for arg in cmd)
    return cmd


def _run_client(
    host: NetnsHost, mode: str, env: dict[str, str], data: str = ""
) -> tuple[int, dict]:
    done = subprocess.run(
        _client(host, mode, data, env), env=env, capture_output=True, text=True, timeout=60
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"client {mode} on {host.name} printed nothing:\n{done.stderr}"
    return done.returncode, json.loads(lines[-1])


def _redis_servers_among(pids: list[int]) -> list[str]:
    """`pgrep -a redis-server` lines for those of `pids` that still run.

    A shard that exited but that init has not reaped yet shows as `[redis-server] <defunct>`:
    it runs no more, so it is not counted.
    """
    found = subprocess.run(["pgrep", "-a", "redis-server"], capture_output=True, text=True)
    return [
        line
        for line in found.stdout.splitlines()
        if line and int(line.split()[0]) in pids and not line.endswith("<defunct>")
    ]


@contextlib.contextmanager
def store_on(host: NetnsHost, home: Path, bind: str | None) -> Iterator[RemoteStore]:
    """Run `simai store start` on `host`; `simai store stop` there at exit, checking no shard
    is left. A shard that survives is killed by signal (never reached over the network from
    this namespace, where the hosts' addresses do not exist)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMAI_")}
    env["SIMAI_HOME"] = str(home)
    args = ["store", "start", "--shards", "1", "--port", "0"]
    if bind is not None:
        args += ["--bind", bind]
    started = host.run(*SIMAI, *args, env=env)
    assert started.returncode == 0, f"simai store start on {host.name} failed:\n{started.stderr}"
    pids: list[int] = []
    try:
        state = json.loads((home / "store.json").read_text())
        pids = [shard["pid"] for shard in state["shards"]]
        exports = dict(
            shlex.split(line)[1].split("=", 1) for line in started.stdout.splitlines() if line
        )
        yield RemoteStore(exports["SIMAI_STORE"], exports["SIMAI_STORE_PASSWORD"], pids)
    finally:
        stopped = host.run(*SIMAI, "store", "stop", env=env)
        left = _redis_servers_among(pids)
        for line in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
    assert stopped.returncode == 0, f"simai store stop on {host.name} failed:\n{stopped.stderr}"
    assert left == [], f"redis-server left running after simai store stop: {left}"
    assert not (home / "store.json").exists()


def test_component_on_host_b_streams_to_store_on_host_a(
    netns_hosts: NetnsHosts, tmp_path: Path
) -> None:
    a, b = netns_hosts.a, netns_hosts.b
    rng = np.random.default_rng(7)
    sent = {
        "field": rng.standard_normal((512, 1024)),
        "labels": np.arange(-500, 500, dtype=np.int32),
        "n": np.array(4),
    }
    for i in range(4):
        sent[f"sample_{i}"] = rng.standard_normal((i + 1, 3, 64)).astype(np.float32)
    sent["sample_3"] = rng.integers(0, 255, size=3 << 20, dtype=np.uint8)
    np.savez(tmp_path / "sent.npz", **sent)

    with store_on(a, tmp_path / "home", bind=a.address) as remote:
        assert remote.url == f"redis://{a.address}:{remote.url.rsplit(':', 1)[1]}"
        env = _client_env(remote.url, remote.password)
        received_file = str(tmp_path / "received.npz")
        a_received = a.received_bytes()
        consumer = subprocess.Popen(
            _client(a, "consume", received_file, env),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            rc, produced = _run_client(b, "produce", env, str(tmp_path / "sent.npz"))
            assert rc == 0, produced
            out, err = consumer.communicate(timeout=30)
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.communicate()
        a_received = a.received_bytes() - a_received
    assert produced == {"url": remote.url, "appended": 4}
    payload = sum(v.nbytes for k, v in sent.items() if k != "n")
    assert a_received > payload, f"{a.name} received {a_received} bytes on its link"
    assert consumer.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"url": remote.url, "received": 4}
    with np.load(received_file) as got:
        assert sorted(got.files) == sorted(k for k in sent if k != "n")
        for key in got.files:
            assert got[key].dtype == sent[key].dtype, key
            np.testing.assert_array_equal(got[key], sent[key], err_msg=key)


def test_wrong_or_missing_password_from_host_b_is_refused(
    netns_hosts: NetnsHosts, tmp_path: Path
) -> None:
    a, b = netns_hosts.a, netns_hosts.b
    with store_on(a, tmp_path / "home", bind=a.address) as remote:
        wrong = "not-the-" + remote.password[:8]
        rc, reply = _run_client(b, "roundtrip", _client_env(remote.url, wrong))
        assert rc == 3, reply
        assert reply["error"] == "AuthenticationError"
        assert remote.url in reply["message"] and wrong not in reply["message"]

        rc, reply = _run_client(b, "roundtrip", _client_env(remote.url, None))
        assert rc == 3, reply
        assert "set SIMAI_STORE_PASSWORD" in reply["message"]

        rc, reply = _run_client(b, "roundtrip", _client_env(remote.url, remote.password))
        assert (rc, reply) == (0, {"url": remote.url, "ok": True})


def test_store_bound_to_loopback_is_unreachable_from_host_b(
    netns_hosts: NetnsHosts, tmp_path: Path
) -> None:
    a, b = netns_hosts.a, netns_hosts.b
    with store_on(a, tmp_path / "home", bind=None) as remote:
        port = remote.url.rsplit(":", 1)[1]
        assert remote.url == f"redis://127.0.0.1:{port}"
        rc, reply = _run_client(a, "roundtrip", _client_env(remote.url, remote.password))
        assert (rc, reply) == (0, {"url": remote.url, "ok": True})

        for url in (f"redis://{a.address}:{port}", remote.url):
            rc, reply = _run_client(b, "roundtrip", _client_env(url, remote.password))
            assert rc == 4, reply
            assert reply["error"] == "ConnectionError"
            assert "refused" in reply["message"].lower(), reply


@pytest.mark.parametrize("command", ["bogus", ""])
def test_netns_script_rejects_unknown_commands(command: str) -> None:
    done = subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True)
    assert done.returncode == 1
    assert "usage:" in done.stderr
