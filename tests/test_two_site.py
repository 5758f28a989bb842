"""A coupled run across two sites: the simulation and the store on host A, a trainer and an
inference component on host B, everything over TLS with a store user per component.

Hosts A and B are network namespaces joined by a veth pair (tests/_netns.py). The store is
started on A with the documented commands (`simai store start --tls --bind ADDR`, then
`simai store user add` for each component); each process finds the store, its own user and
secret and the TLS files only in its environment, as on two real machines. Proven: the data
crosses the link and arrives whole; each component is held to its prefixes; from B, a client
with a certificate of another CA, a component using another's secret, and a plaintext client
are each refused.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _netns import NetnsHost, NetnsHosts

from simai.store.tls import ENV_TLS_CERT, ENV_TLS_KEY, make_certificates

pytestmark = pytest.mark.timeout(240)
SIMAI = (sys.executable, "-m", "simai.cli")
N, SIZE = 4, 1 << 18  # samples of 1 MiB (float32)

PROGRAM = r"""
import json, sys
import numpy as np
import simai

role = sys.argv[1]
out = {}
try:
    s = simai.open_store()
except (ConnectionError, OSError, ValueError) as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
    sys.exit(3)

def attempt(fn):
    try:
        fn()
        return "ok"
    except PermissionError as e:
        return "PermissionError: " + str(e)

N, SIZE = int(sys.argv[2]), int(sys.argv[3])
if role == "simulation":
    for i in range(N):
        s.append("samples/field", np.full(SIZE, i, dtype=np.float32))
    s.close_stream("samples/field")
    out["steal model"] = attempt(lambda: s.put("models/wave/latest", b"forged"))
elif role == "trainer":
    total = 0.0
    for i, x in enumerate(s.stream("samples/field", group="trainer", timeout=60)):
        total += float(x.mean())
        s.put(f"models/wave/v{i + 1}", np.array([total / (i + 1)]))
        s.put("models/wave/latest", np.array([i + 1]))
    out["seen"] = i + 1
    out["overwrite sample"] = attempt(lambda: s.append("samples/field2", b"x"))
    s.put("models/wave/done", b"1")
elif role == "inference":
    s.wait("models/wave/done", timeout=60)
    version = int(s.get("models/wave/latest")[0])
    model = float(s.get(f"models/wave/v{version}")[0])
    s.put("predictions/out", np.array([version, model]))
    out["read samples"] = attempt(lambda: s.get("samples/field"))
    out["write model"] = attempt(lambda: s.put("models/wave/v9", b"x"))
elif role == "ping":
    s.put("predictions/ping", b"1")
out["url"] = s.url
print(json.dumps(out))
"""


def _exports(text: str) -> dict[str, str]:
    return dict(shlex.split(line)[1].split("=", 1) for line in text.splitlines() if line)


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMAI_")}
    env["SIMAI_HOME"] = str(home)
    return env


def _start(host: NetnsHost, role: str, env: dict[str, str]) -> subprocess.Popen[str]:
    secret = env.get("SIMAI_STORE_PASSWORD", "")
    cmd = host.command(sys.executable, "-c", PROGRAM, role, str(N), str(SIZE))
    assert not secret or not any(secret in arg for arg in cmd)  # secrets only in the env
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> tuple[int, dict]:
    out, err = proc.communicate(timeout=120)
    lines = out.strip().splitlines()
    assert lines, f"printed nothing:\n{err}"
    return proc.returncode, json.loads(lines[-1])


def test_two_sites_over_tls_with_a_user_per_component(
    netns_hosts: NetnsHosts, tmp_path: Path
) -> None:
    a, b = netns_hosts.a, netns_hosts.b
    home = tmp_path / "home"
    admin = _base_env(home)
    started = a.run(*SIMAI, "store", "start", "--port", "0", "--bind", a.address, "--tls",
                    env=admin)  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        store = _exports(started.stdout)
        assert store["SIMAI_STORE"].startswith(f"rediss://{a.address}:")
        users = {}
        for role, access in [
            ("simulation", ["--write", "samples/"]),
            ("trainer", ["--read", "samples/", "--write", "models/wave/"]),
            ("inference", ["--read", "models/wave/", "--write", "predictions/"]),
        ]:
            added = a.run(*SIMAI, "store", "user", "add", role, *access, env=admin)
            assert added.returncode == 0, added.stderr
            users[role] = dict(admin, **_exports(added.stdout))
        link_before = b.received_bytes()
        trainer = _start(b, "trainer", users["trainer"])
        inference = _start(b, "inference", users["inference"])
        simulation = _start(a, "simulation", users["simulation"])
        procs = {"simulation": simulation, "trainer": trainer, "inference": inference}
        results = {name: _result(p) for name, p in procs.items()}
        crossed = b.received_bytes() - link_before
        for name, (rc, reply) in results.items():
            assert rc == 0, (name, reply)
        sim, tr, inf = (results[k][1] for k in ("simulation", "trainer", "inference"))
        assert tr["seen"] == N
        assert crossed > N * SIZE * 4 // 2, crossed  # the samples went to B over the link
        assert sim["steal model"].startswith("PermissionError: store user 'simulation' may not")
        assert "'samples/field2'" in tr["overwrite sample"]
        assert "'samples/field'" in inf["read samples"] and "'models/wave/v9'" in inf["write model"]

        check = a.run(
            sys.executable, "-c",
            "import simai; s = simai.open_store(); print(s.get('predictions/out').tolist())",
            env=dict(admin, **store),
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout) == [N, (N - 1) / 2]  # the mean of the sample means

        # from B: another CA's certificate, another component's secret, no TLS: refused
        other = make_certificates(tmp_path / "other-ca", [b.address])
        forged = dict(users["inference"], **{ENV_TLS_CERT: str(other.client.cert),
                                             ENV_TLS_KEY: str(other.client.key)})  # fmt: skip
        rc, reply = _result(_start(b, "ping", forged))
        assert rc == 3 and "refused this client's certificate" in reply["message"], reply
        stolen = dict(
            users["trainer"], SIMAI_STORE_PASSWORD=users["inference"]["SIMAI_STORE_PASSWORD"]
        )
        rc, reply = _result(_start(b, "ping", stolen))
        assert rc == 3 and "WRONGPASS" in reply["message"], reply
        assert users["inference"]["SIMAI_STORE_PASSWORD"] not in reply["message"]
        plain = dict(
            users["inference"], SIMAI_STORE=store["SIMAI_STORE"].replace("rediss", "redis")
        )
        rc, reply = _result(_start(b, "ping", plain))
        assert rc == 3 and "rediss://" in reply["message"], reply

        removed = a.run(*SIMAI, "store", "user", "remove", "inference", env=admin)
        assert removed.returncode == 0, removed.stderr
        rc, reply = _result(_start(b, "ping", users["inference"]))
        assert rc == 3 and "WRONGPASS" in reply["message"], reply
    finally:
        stopped = a.run(*SIMAI, "store", "stop", env=admin)
    assert stopped.returncode == 0, stopped.stderr
    assert not (home / "redis" / "tls").exists()  # the store's certificates go with it
