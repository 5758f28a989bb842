"""The redis store across a network link, with TLS against plaintext, in one run.

Host A and host B are network namespaces joined by a veth pair (``scripts/netns.sh``; needs
root). Two stores run on host A, started with the documented command (``simai store start
--bind ADDR``, one with ``--tls``); a client on host B puts and gets float32 arrays over the
link. Rounds alternate the two stores, so both see the same machine; reported are medians
over rounds, and TLS / plaintext as ratios.

    sudo .venv/bin/python benchmarks/store_tls.py --out benchmarks/results/store-tls.md

Per round and store: the median put+get round trip of an 8 KiB value (``--ops`` of them after
a warm-up), and put and get GB/s (1e9 bytes/s) of 16 MiB and 64 MiB values (bytes moved /
time in the operations; every value read back is checked); and the CPU seconds per GB moved
that the client process and the redis-server shard spent in each large-value phase, with the
cap the shard's (one thread) puts on throughput, beside AES-128-GCM's own cost on one core
(`openssl speed`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NETNS = ROOT / "scripts" / "netns.sh"
SIMAI = (sys.executable, "-m", "simai.cli")
SIZES = {"16 MiB": (16 << 20, 6), "64 MiB": (64 << 20, 3)}

CLIENT = r"""
import json, os, sys, time
import numpy as np
import simai

ops, sizes, server = int(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
out = {}
cpu = {}


def server_cpu():
    fields = open(f"/proc/{server}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(what, nbytes, work):
    c, s, t = time.process_time(), server_cpu(), time.perf_counter()
    got = work()
    t, c, s = time.perf_counter() - t, time.process_time() - c, server_cpu() - s
    out[what] = nbytes / t / 1e9
    cpu[what] = {"client": c * 1e9 / nbytes, "server": s * 1e9 / nbytes}
    return got

with simai.open_store() as s:
    small = np.arange(2048, dtype=np.float32)
    for _ in range(50):
        s.put("lat", small); s.get("lat")
    times = []
    for i in range(ops):
        t = time.perf_counter()
        s.put("lat", small)
        got = s.get("lat")
        times.append(time.perf_counter() - t)
    assert np.array_equal(got, small)
    times.sort()
    out["8 KiB round trip"] = times[len(times) // 2]
    for name, (size, n) in sizes.items():
        values = [np.full(size // 4, i, dtype=np.float32) for i in range(n)]
        s.put(f"big/warm", values[0]); s.get("big/warm")
        timed(f"{name} put", n * size, lambda: [s.put(f"big/{i}", v) for i, v in enumerate(values)])
        got = timed(f"{name} get", n * size, lambda: [s.get(f"big/{i}") for i in range(n)])
        for i, g in enumerate(got):
            assert g.shape == values[i].shape and g[0] == i and g[-1] == i
        for i in range(n):
            s.delete(f"big/{i}")
print(json.dumps({"speed": out, "cpu": cpu}))
"""


def _netns(command: str) -> str:
    done = subprocess.run(["bash", str(NETNS), command], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"scripts/netns.sh {command} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def _exports(text: str) -> dict[str, str]:
    return dict(shlex.split(line)[1].split("=", 1) for line in text.splitlines() if line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds over both stores (5)")
    parser.add_argument("--ops", type=int, default=500, help="8 KiB round trips per round")
    parser.add_argument("--out", default=None, help="write the report here too (markdown)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("needs root, for the two network namespaces (scripts/netns.sh)")
    began = time.time()
    already = subprocess.run(["bash", str(NETNS), "status"], capture_output=True).returncode == 0
    hosts = {}
    for line in _netns("up").splitlines():
        name, cidr, *_ = line.split()
        hosts[name] = cidr.split("/")[0]
    (ns_a, addr_a), (ns_b, _) = sorted(hosts.items())
    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict[str, Any]]] = {"plaintext": [], "TLS": []}
    with tempfile.TemporaryDirectory(prefix="simai-bench-tls-") as tmp:
        envs: dict[str, dict[str, str]] = {}
        pids: dict[str, str] = {}
        try:
            for kind in runs:
                home = Path(tmp, kind)
                env = {k: v for k, v in os.environ.items() if not k.startswith("SIMAI_")}
                env["SIMAI_HOME"] = str(home)
                cmd = [*SIMAI, "store", "start", "--port", "0", "--bind", addr_a]
                cmd += ["--tls"] if kind == "TLS" else []
                done = subprocess.run(_in(ns_a, *cmd), env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"simai store start failed: {done.stderr}")
                envs[kind] = dict(env, **_exports(done.stdout))
                status = subprocess.run([*SIMAI, "store", "status"], env=envs[kind],
                                        capture_output=True, text=True)  # fmt: skip
                found = re.search(r" pid (\d+) ", status.stdout)
                if found is None:
                    sys.exit(f"simai store status named no pid:\n{status.stdout}{status.stderr}")
                pids[kind] = found.group(1)
            for r in range(args.rounds):
                for kind, env in envs.items():
                    client = _in(ns_b, sys.executable, "-c", CLIENT, str(args.ops),
                                 json.dumps(SIZES), pids[kind])  # fmt: skip
                    done = subprocess.run(client, env=env, capture_output=True, text=True)
                    if done.returncode != 0:
                        sys.exit(f"the {kind} client failed:\n{done.stderr}")
                    runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for env in envs.values():
                subprocess.run(_in(ns_a, *SIMAI, "store", "stop"), env=env, capture_output=True)
            if not already:
                _netns("down")
    load.append(os.getloadavg()[0])
    report = _report(runs, args, addr_a, time.time() - began, load, _aes_speed())
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


def _aes_speed() -> float | None:
    """One core's AES-128-GCM speed in GB/s on 16 KiB blocks (a full TLS record), from
    `openssl speed`: what the cipher alone costs, apart from the servers that use it."""
    cmd = ["openssl", "speed", "-seconds", "2", "-bytes", "16384", "-evp", "aes-128-gcm"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return float(done.stdout.strip().splitlines()[-1].split()[-1].rstrip("k")) * 1e3 / 1e9
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def _report(runs, args, addr: str, seconds: float, load: list[float], aes: float | None) -> str:
    med = {
        kind: {k: statistics.median(r["speed"][k] for r in rs) for k in rs[0]["speed"]}
        for kind, rs in runs.items()
    }
    cpu = {
        kind: {
            (k, side): statistics.median(r["cpu"][k][side] for r in rs)
            for k in rs[0]["cpu"]
            for side in ("client", "server")
        }
        for kind, rs in runs.items()
    }
    lines = [
        "# Redis store over a network link: TLS against plaintext",
        "",
        f"- command: `sudo .venv/bin/python benchmarks/store_tls.py --rounds {args.rounds} "
        f"--ops {args.ops}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, total {seconds:.0f} s",
        f"- machine: {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}; load average {load[0]:.2f} at start, {load[1]:.2f} at end",
        f"- link: a veth pair between two network namespaces (store on host A at {addr}, "
        "client on host B), one redis-server shard per store started by `simai store start "
        "--bind ADDR [--tls]`, password (and with TLS, the run's CA and client certificate) "
        "from the environment",
        f"- {args.rounds} rounds alternating the two stores; medians over rounds",
        "",
        "| measure | plaintext | TLS | TLS / plaintext |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key in med["plaintext"]:
        p, t = med["plaintext"][key], med["TLS"][key]
        if key.endswith("round trip"):
            lines.append(f"| {key} (µs) | {p * 1e6:.0f} | {t * 1e6:.0f} | {t / p:.2f}× the time |")
        else:
            lines.append(f"| {key} (GB/s) | {p:.2f} | {t:.2f} | {t / p:.2f} |")
    ratios = [med["TLS"][k] / med["plaintext"][k] for k in med["TLS"] if "MiB" in k]
    cost = 1 - min(ratios)
    lines += [
        "",
        f"Large values: TLS keeps {min(ratios):.2f}–{max(ratios):.2f} of plaintext throughput "
        f"(costs at most {cost:.0%}; target: at most 30%, "
        f"{'met' if cost <= 0.30 else 'NOT met'}).",
        "",
        "## Where the time goes: CPU seconds per GB moved",
        "",
        "CPU time of the client process and of the redis-server shard during each large-value "
        "phase, per GB moved (medians over rounds). Both share the machine's "
        f"{os.cpu_count()} cores.",
        "",
        "| measure | client, plaintext | client, TLS | server, plaintext | server, TLS | "
        "TLS adds (client + server) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    caps = []
    for key in med["plaintext"]:
        if "MiB" not in key:
            continue
        c = [cpu[kind][key, side] for side in ("client", "server") for kind in ("plaintext", "TLS")]
        lines.append(
            f"| {key} | {c[0]:.2f} | {c[1]:.2f} | {c[2]:.2f} | {c[3]:.2f} | "
            f"{c[1] - c[0] + c[3] - c[2]:.2f} |"
        )
        cap = 1 / c[3]  # the TLS shard's CPU seconds per GB
        caps.append(f"{key} {cap:.2f} GB/s ({cap / med['plaintext'][key]:.2f} of plaintext)")
    lines += [
        "",
        "redis-server runs on one thread, so its CPU per GB caps the TLS throughput whatever the "
        "client does: " + "; ".join(caps) + ".",
    ]
    if aes:
        lines += [
            "",
            f"AES-128-GCM alone, one core, 16 KiB records (`openssl speed`): {aes:.2f} GB/s, "
            f"{1 / aes:.2f} CPU s per GB for the side that encrypts and as much for the side "
            "that decrypts.",
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
