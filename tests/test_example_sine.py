"""examples/sine end to end: simulations stream samples, a trainer publishes versions, an
evaluator calls them through a Surrogate, until the grid MSE is below 1e-3."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import children, no_new_children

from simai.workflow import Records

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "sine" / "sine.py"

pytest.importorskip("torch")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "options",
    [[], ["--store", "redis"], ["--executor", "parsl", "--quiet"]],
    ids=["local", "redis", "parsl-quiet"],
)
def test_sine_reaches_its_error_target(tmp_path, options):
    if "parsl" in options:
        pytest.importorskip("parsl")
    before = children()
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--budget", "45", "--run-dir", str(run_dir), *options],
        capture_output=True,
        text=True,
        timeout=55,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    progress = re.findall(r"version +(\d+) +step +(\d+) .* grid MSE (\S+)", out)
    assert progress, out
    final = re.search(r"final MSE (\S+) \(version (\d+)\): target 1e-03 reached in", out)
    assert final is not None, out
    assert float(final.group(1)) < 1e-3
    assert float(final.group(1)) == pytest.approx(min(float(m) for _, _, m in progress), rel=0.02)
    assert f"simai status {run_dir}" in out
    records = Records(run_dir / "records.db", readonly=True)
    summary = records.summary()
    names = {c["name"] for c in summary["components"]}
    assert names == {"simulation-1", "simulation-2", "trainer", "evaluator"}
    assert all(c["state"] in ("done", "stopped") for c in summary["components"])
    mse = [(m["step"], m["value"], m["source"]) for m in records.metrics("grid_mse")]
    assert any(v == pytest.approx(float(final.group(1)), rel=1e-3) for _, v, _ in mse)
    assert {s for _, _, s in mse} == {"evaluator"}
    losses = records.metrics("train_loss")
    assert losses and {m["source"] for m in losses} == {"trainer"}
    assert [m["step"] for m in losses] == sorted(m["step"] for m in losses)
    shown = [ln for ln in proc.stderr.splitlines() if ln.startswith("[simai sine")]
    if "--quiet" in options:
        assert shown == [], proc.stderr
    else:  # not a terminal: plain progress lines, the last one after the run
        assert shown and "grid_mse=" in shown[-1] and "trainer" in shown[-1], proc.stderr
    assert no_new_children(before)
