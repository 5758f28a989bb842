"""A steering run stopped mid-way (SIGTERM, Ctrl-C, SIGKILL) resumes where it left off."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest

import simai
from simai.steer import Steering, SteeringOptions
from simai.store.local import local_root
from simai.workflow import Records
from simai.workflow.workflow import local_run_url

GRID = [round(float(x), 4) for x in np.linspace(0.0, 1.0, 501)]
BUDGET = 30
TESTS = str(Path(__file__).parent)


def simulate_marked(marks: str, x: float) -> float:
    """Leaves a mark per simulation started, so the test counts how often each ran."""
    Path(marks, f"{round(x * 10000)}-{os.getpid()}-{uuid.uuid4().hex[:8]}").touch()
    time.sleep(0.1)
    return -((x - 0.7) ** 2)


def fit(data: list[tuple[float, float]]) -> np.ndarray:
    return np.polyfit([d[0] for d in data], [d[1] for d in data], 2)


def predict(model: np.ndarray, xs: list[float]) -> np.ndarray:
    return np.polyval(model, np.asarray(xs))


SCRIPT = textwrap.dedent(
    """
    import functools, json, sys
    sys.path.insert(0, sys.argv[1])
    import simai
    from simai.steer import Steering, SteeringOptions
    from test_steer_resume import BUDGET, GRID, fit, predict, simulate_marked

    run, marks, resume = sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    with simai.Workflow("steer-resume", run_dir=run, resume=resume) as wf:
        steering = Steering(
            GRID, functools.partial(simulate_marked, marks), fit, predict, "greedy",
            SteeringOptions(budget=BUDGET, initial=6, batch_size=4), workflow=wf,
        )
        for r in steering:
            print("result", r.index, r.ok, flush=True)
        rows = wf.store().stream("steer/steer/results", timeout=10)
        print("streamed", *[next(rows)["index"] for _ in steering.results], flush=True)
        print("stats", json.dumps(steering.stats), flush=True)
    """
)


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != "zombie"}


@pytest.fixture
def clean(tmp_path):
    """No process and no shared memory of this test's run outlives the test."""
    procs = descendants()
    shm = local_root(local_run_url(tmp_path / "run"))
    yield
    deadline = time.monotonic() + 10
    while descendants() - procs and time.monotonic() < deadline:
        time.sleep(0.05)
    left = os.path.exists(shm)
    shutil.rmtree(shm, ignore_errors=True)
    assert descendants() - procs == set()
    assert not left


def read_results(run: Path) -> list[dict]:
    path = run / "steer" / "steer" / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def runs_of(marks: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for mark in marks.iterdir():
        index = round(int(mark.name.split("-")[0]) / 20)  # x * 10000 back to a grid index
        counts[index] = counts.get(index, 0) + 1
    return counts


@pytest.mark.parametrize(
    ("how", "after"),
    [("sigterm", 12), ("ctrl-c", 3), ("sigkill", 20)],
)
def test_a_stopped_run_resumes_without_losing_or_redoing_results(tmp_path, clean, how, after):
    script = tmp_path / "steer_run.py"
    script.write_text(SCRIPT)
    run, marks = tmp_path / "run", tmp_path / "marks"
    marks.mkdir()
    argv = [sys.executable, str(script), TESTS, str(run), str(marks)]
    first = subprocess.Popen([*argv, "0"], stdout=subprocess.PIPE, text=True)
    try:
        seen = 0
        for line in first.stdout:  # type: ignore[union-attr]
            seen += line.startswith("result ")
            if seen == after:
                break
        assert seen == after
        sig = {"sigterm": signal.SIGTERM, "ctrl-c": signal.SIGINT, "sigkill": signal.SIGKILL}
        first.send_signal(sig[how])
        first.wait(timeout=60)
    finally:
        first.kill()
        first.wait()
    assert first.returncode != 0
    before = read_results(run)
    assert len(before) >= after
    ok_before = [r for r in before if r["ok"]]
    assert len(ok_before) < BUDGET
    state = json.loads((run / "steer" / "steer" / "state.json").read_text())
    done_before = {r["index"] for r in before}
    if how != "sigkill":  # SIGKILL may land between a result's line and the state's update
        assert not done_before & {f["index"] for f in state["in_flight"]}

    second = subprocess.run([*argv, "1"], capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    after_rows = read_results(run)
    assert after_rows[: len(before)] == before  # nothing lost, nothing rewritten
    indices = [r["index"] for r in after_rows]
    assert len(indices) == len(set(indices))  # no candidate simulated twice
    assert sum(r["ok"] for r in after_rows) == BUDGET  # the budget counts across both runs
    handed = [ln.split()[1] for ln in second.stdout.splitlines() if ln.startswith("result ")]
    # only results that ended in the resumed process are yielded: none is logged twice
    assert handed == [str(r["index"]) for r in after_rows[len(before) :]]
    # the store's results stream holds every result once, in order, across both runs
    streamed = next(ln for ln in second.stdout.splitlines() if ln.startswith("streamed"))
    assert streamed.split()[1:] == [str(r["index"]) for r in after_rows]
    counts = runs_of(marks)
    assert all(counts[i] == 1 for i in done_before)  # finished ones were not run again
    stats = json.loads(second.stdout.splitlines()[-1].removeprefix("stats "))
    assert stats["simulations_done"] == BUDGET
    assert stats["resumed_results"] == len(before)
    if how != "sigkill":
        attempts = Records(run / "records.db", readonly=True).runs()
        assert [a["status"] for a in attempts] == ["interrupted", "done"]


def test_a_state_of_another_format_is_refused_on_resume(tmp_path, clean):
    def start(resume: bool) -> None:
        with simai.Workflow("steer-format", run_dir=tmp_path / "run", resume=resume) as wf:
            Steering(
                GRID, fit, fit, predict, options=SteeringOptions(budget=10, initial=5), workflow=wf
            ).close()

    start(False)
    path = tmp_path / "run" / "steer" / "steer" / "state.json"
    state = json.loads(path.read_text())
    assert state["format"] == 1
    path.write_text(json.dumps({**state, "format": 99}))
    with pytest.raises(ValueError, match=r"state of format 99, but this version of simai reads"):
        start(True)
