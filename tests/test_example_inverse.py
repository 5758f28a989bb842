"""examples/inverse end to end: an ensemble streams fields, a trainer fits the surrogate
online, a steering loop searches for the misfit's minimum; the hidden source is recovered."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import children, no_new_children

from simai.workflow import Records

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "inverse" / "inverse.py"
BUDGET = 40
# on a 0.01 grid the best candidate is within 0.005 of the truth in each parameter (seeds
# 0-5 gave at most 0.0054 with 5% noise): 0.02 leaves a margin for noise and the grid
TOLERANCE = 0.02

pytest.importorskip("torch")


@pytest.mark.timeout(180)
def test_inverse_recovers_the_hidden_source(tmp_path):
    before = children()
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--run-dir", str(run_dir), "--quiet"],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    result = json.loads((run_dir / "inverse-result.json").read_text())
    truth, found, error = result["truth"], result["recovered"], result["error"]
    for key in ("period", "position"):
        assert error[key] == pytest.approx(abs(found[key] - truth[key]))
        assert error[key] < TOLERANCE, out
    # the answer is a simulated candidate of the grid, not the truth leaking through
    assert (found["period"], found["position"]) != (truth["period"], truth["position"])
    assert round(found["period"] * 100, 6) % 1 == 0 and round(found["position"] * 100, 6) % 1 == 0
    # its misfit is near the truth's own (the noise), far below a wrong basin's (0.1 and up)
    assert found["misfit"] < 4 * result["truth_misfit"] < 0.05
    line = re.search(
        r"recovered period (\S+) \(truth (\S+), error (\S+)\), position (\S+) \(truth (\S+), "
        r"error (\S+)\)",
        out,
    )
    assert line is not None, out
    assert float(line.group(1)) == pytest.approx(found["period"], abs=1e-3)
    assert float(line.group(3)) == pytest.approx(error["period"], abs=1e-4)
    assert float(line.group(6)) == pytest.approx(error["position"], abs=1e-4)
    assert f"simai status {run_dir}" in out

    # the loop ran its budget; the surrogate picked most candidates and was retrained
    assert result["steered_simulations"] == BUDGET
    assert result["retrains"] >= 1
    assert result["model_picks"] >= BUDGET // 2
    # every simulation's field went into the stream: the ensemble's and the loop's
    assert result["samples_streamed"] == result["ensemble_simulations"] + BUDGET
    assert result["surrogate"]["version"] >= 3  # published online, at least up to --warm-steps
    for key in ("period", "position"):  # the surrogate alone lands near the truth too
        assert abs(result["surrogate"][key] - truth[key]) < 2 * TOLERANCE

    records = Records(run_dir / "records.db", readonly=True)
    summary = records.summary()
    states = {c["name"]: c["state"] for c in summary["components"]}
    assert states == {"trainer": "done", "member-0": "done", "member-1": "done"}
    best = [m["value"] for m in records.metrics("best_misfit")]
    assert best and best == sorted(best, reverse=True)
    assert best[-1] == pytest.approx(found["misfit"])
    assert len(records.metrics("misfit")) == BUDGET
    losses = records.metrics("train_loss")
    assert losses and {m["source"] for m in losses} == {"trainer"}
    for key in ("period", "position"):
        (logged,) = records.metrics(f"{key}_error")
        assert logged["value"] == pytest.approx(error[key])
    saved = (run_dir / "steer" / "inverse" / "results.jsonl").read_text().splitlines()
    assert len(saved) == BUDGET
    assert no_new_children(before)


def test_inverse_rejects_bad_options(tmp_path):
    for argv, word in ((["--budget", "0"], "--budget"), (["--noise", "1.5"], "--noise")):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, cwd=tmp_path
        )
        assert proc.returncode == 2 and word in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
