"""examples/wave runs end to end, small, in both modes and on two stores, with real processes."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "wave" / "wave.py"
SIMS, GRID, STEPS, EPOCHS = 4, 64, 10, 1

pytest.importorskip("torch")


def run_wave(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    run_dir = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = [sys.executable, str(SCRIPT), "--num-sims", str(SIMS), "--grid-size", str(GRID)]
    argv += ["--epochs", str(EPOCHS), "--run-dir", str(run_dir), *extra]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((run_dir / "wave-report.json").read_text()), proc.stdout


def check(report: dict, out: str, mode: str, store: str) -> None:
    assert (report["mode"], report["store"]) == (mode, store)
    pairs = SIMS * STEPS
    assert report["pairs_stored"] == pairs
    assert report["bytes"] == pairs * 2 * GRID * GRID * 4
    sims = report["simulations"]
    assert sims["pairs"] == pairs
    assert sims["run_s"] > 0 and sims["put_s"] > 0
    trainers = report["trainers"]["per_kernel"]
    assert [t["kernel"] for t in trainers] == [3, 5, 7]
    for t in trainers:
        assert t["pairs_per_epoch"] == [pairs] * EPOCHS
        assert len(t["losses"]) == EPOCHS
        assert all(math.isfinite(x) and x >= 0 for x in t["losses"])
        assert t["data_s"] > 0 and t["run_s"] > 0
    assert f"{SIMS} simulations x {STEPS} pairs of {GRID}x{GRID}" in out
    assert "| simulations |" in out and "| trainers |" in out
    for t in trainers:
        assert f"| {t['kernel']} | {EPOCHS} | {pairs} |" in out


def check_store_gone(url: str) -> None:
    """The workflow stopped its store: no shared memory left, no redis-server listening."""
    if url.startswith("local://"):
        assert not os.path.exists(url.removeprefix("local://"))
    else:
        host, port = url.removeprefix("redis://").split(",")[0].rsplit(":", 1)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()


@pytest.mark.parametrize("mode", ["staged", "online"])
def test_wave_local_store(tmp_path, mode):
    report, out = run_wave(tmp_path, "--mode", mode)
    check(report, out, mode, "local")
    check_store_gone(report["store_url"])
    kept = [p.name for p in (tmp_path / "run" / "store").rglob("*") if "wave" in p.name]
    assert kept == [], "the pairs were not deleted from the store"


def test_wave_online_redis_store(tmp_path):
    report, out = run_wave(tmp_path, "--mode", "online", "--store", "redis")
    check(report, out, "online", "redis")
    check_store_gone(report["store_url"])
    logs = (tmp_path / "run" / "logs").glob("trainer-k*.log")
    assert sorted(p.name for p in logs) == [f"trainer-k{k}.log" for k in (3, 5, 7)]


def test_wave_rejects_bad_options(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--num-sims", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--num-sims" in proc.stderr and "positive" in proc.stderr
