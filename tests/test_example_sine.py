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
    [[], ["--store", "redis"], ["--executor", "parsl"]],
    ids=["local", "redis", "parsl"],
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
    summary = Records(run_dir / "records.db", readonly=True).summary()
    names = {c["name"] for c in summary["components"]}
    assert names == {"simulation-1", "simulation-2", "trainer", "evaluator"}
    assert all(c["state"] in ("done", "stopped") for c in summary["components"])
    assert no_new_children(before)
