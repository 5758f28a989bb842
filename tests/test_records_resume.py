"""The records of a run SIGKILLed mid-run and resumed: rows per attempt, lost and recalled
tasks, counts that add up in `simai status` and the report's data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil

from simai.observe.queries import load
from simai.workflow import RunDir

SIMAI = str(Path(sys.executable).with_name("simai"))
CORES = 2  # the component's and one task's

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from simai import Workflow, WorkflowOptions

    RUN, GO, CORES = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

    def work(i):
        while i >= 6 and not GO.exists():  # in flight when the first attempt is killed
            time.sleep(0.02)
        return i * i

    def ticker():
        while not GO.exists():
            time.sleep(0.05)

    options = WorkflowOptions(executor_config={"cores": CORES})
    with Workflow("killed", store="file", run_dir=RUN, options=options) as wf:
        component = wf.start(ticker, name="ticker")
        futures = [wf.submit(work, i) for i in range(10)]
        assert [f.result(timeout=60) for f in futures[:6]] == [i * i for i in range(6)]
        if not GO.exists():
            while wf.task_counts()["running"] < 1:
                time.sleep(0.02)
            wf.poll_metrics()  # the rows of the tasks in flight are committed
            print("ready", flush=True)
            time.sleep(600)
        print("results", [f.result(timeout=60) for f in futures], flush=True)
        assert component.wait(60) == "done"
    """
)


def _peak(starts: list[float], ends: list[float], weights: list[float]) -> float:
    """The most ``weights`` in use at once over the intervals ``starts[i]..ends[i]``."""
    steps = sorted([(e, -w) for e, w in zip(ends, weights, strict=True)])
    steps += [(s, w) for s, w in zip(starts, weights, strict=True)]
    steps.sort(key=lambda x: (x[0], x[1]))  # an end before a start at the same time
    level = peak = 0.0
    for _, w in steps:
        level += w
        peak = max(peak, level)
    return peak


def test_a_sigkilled_and_resumed_run_counts_every_task_once_per_attempt(tmp_path: Path) -> None:
    script, run, go = tmp_path / "wf.py", tmp_path / "run", tmp_path / "go"
    script.write_text(SCRIPT)
    first = subprocess.Popen(
        [SIMAI, "run", str(script), str(run), str(go), str(CORES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == "ready\n"
        family = psutil.Process(first.pid).children(recursive=True)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        _, alive = psutil.wait_procs(family, timeout=60)  # its writer commits what it held
        assert not alive, [(p.pid, p.status(), p.cmdline()) for p in alive]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stdout.close()  # type: ignore[union-attr]
    go.touch()
    second = subprocess.run(
        [SIMAI, "run", "--resume", str(script), str(run), str(go), str(CORES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert "results [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in second.stdout

    out = subprocess.run(
        [SIMAI, "status", str(run), "--json"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    # attempt 1: 6 done, 1 running and 3 queued when killed; attempt 2: those 6 recalled
    # from the memo, the other 4 run
    assert status["tasks"] == {"done": 10, "recalled": 6, "lost": 4}
    assert status["task_names"] == {"work": {"done": 10, "recalled": 6, "lost": 4}}
    assert [(r["status"], r["tasks"]) for r in status["runs"]] == [
        ("interrupted", {"done": 6, "lost": 4}),
        ("done", {"done": 4, "recalled": 6}),
    ]
    assert status["queued"] == 0 and status["failures_total"] == 0
    assert status["runs"][0]["ended"] is not None
    assert {r["host"] for r in status["runs"]} == {socket.gethostname()}
    (ticker,) = status["components"]
    assert ticker["state"] == "done"
    assert status["events"]["component"] == {"started": 2, "lost": 1, "finished": 1}

    data = load(RunDir(run, create=False))
    tasks = data.tasks
    assert sorted(set(tasks.state.tolist())) == ["done", "lost", "recalled"]
    ran = np.isfinite(tasks.started)
    assert np.isfinite(tasks.ended).all() and int(ran.sum()) == 10 + 1  # + the one lost running
    (comp,) = data.components
    assert [how for _, _, how in comp.intervals] == ["lost", "finished"]
    starts = tasks.started[ran].tolist() + [a for a, _, _ in comp.intervals]
    ends = tasks.ended[ran].tolist() + [b for _, b, _ in comp.intervals]
    weights = tasks.cpus[ran].tolist() + [comp.cpus] * len(comp.intervals)
    assert _peak(starts, ends, weights) <= CORES
    lost = tasks.state == "lost"
    assert (tasks.ended[lost] <= data.runs[1]["started"]).all()
    assert time.time() - data.t1 < 120
