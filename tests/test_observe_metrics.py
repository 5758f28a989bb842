"""simai.log_metric from real task, component and workflow processes, through a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from _procs import children, no_new_children

import simai
from simai.workflow import Records, Workflow, metrics


@pytest.fixture
def no_orphans():
    before = children()
    yield
    assert no_new_children(before)


def trainer(steps: int) -> None:
    for i in range(steps):
        simai.log_metric("loss", 1.0 / (i + 1), step=i)


def scored(x: int) -> int:
    simai.log_metric("score", x * 2, step=x)
    return os.getpid()


def test_metrics_from_tasks_components_and_the_workflow(tmp_path: Path, no_orphans) -> None:
    run = tmp_path / "run"
    with Workflow("metrics", run_dir=run) as wf:
        component = wf.start(trainer, 5, name="trainer")
        pids = {wf.submit(scored, i).result() for i in range(4)}
        assert component.wait(60) == "done"
        simai.log_metric("version", 3, step=7)
    rows = Records(run / "records.db", readonly=True).metrics()
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    assert [(r["step"], r["value"]) for r in by_name["loss"]] == [
        (i, 1.0 / (i + 1)) for i in range(5)
    ]
    assert {r["source"] for r in by_name["loss"]} == {"trainer"}
    assert sorted((r["step"], r["value"]) for r in by_name["score"]) == [
        (i, 2.0 * i) for i in range(4)
    ]
    sources = {r["source"] for r in by_name["score"]}
    assert sources == {f"{os.uname().nodename}:{pid}" for pid in pids}
    assert os.getpid() not in pids
    assert [(r["step"], r["value"], r["source"]) for r in by_name["version"]] == [
        (7, 3.0, "workflow")
    ]


KILLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import simai

    def component(marker):
        for i in range(3):
            simai.log_metric("loss", 10.0 - i, step=i)
        Path(marker).touch()
        time.sleep(600)

    with simai.Workflow("killed", run_dir=sys.argv[1]) as wf:
        wf.start(component, sys.argv[2], name="learner")
        time.sleep(600)  # killed here
    """
)


def test_metrics_logged_before_a_sigkill_are_kept_once(tmp_path: Path, no_orphans) -> None:
    script, run, marker = tmp_path / "wf.py", tmp_path / "run", tmp_path / "logged"
    script.write_text(KILLED)
    proc = subprocess.Popen([sys.executable, str(script), str(run), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the workflow ended before it was killed"
            assert time.monotonic() < deadline, "the component never logged its metrics"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    for _ in range(100):
        try:
            assert metrics.ingest(run) == 3  # the lock is free once the process is gone
            break
        except simai.workflow.RunDirLocked:
            time.sleep(0.1)

    def loss() -> list[tuple]:
        rows = Records(run / "records.db", readonly=True).metrics("loss")
        return [(r["step"], r["value"], r["source"]) for r in rows]

    assert loss() == [(i, 10.0 - i, "learner") for i in range(3)]
    assert metrics.ingest(run) == 0  # read once: nothing new, nothing twice
    with Workflow("killed", run_dir=run, resume=True):
        pass
    assert loss() == [(i, 10.0 - i, "learner") for i in range(3)]


def test_outside_a_run_it_warns_once_and_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(metrics.ENV_RUN_DIR, raising=False)
    monkeypatch.setattr(metrics, "_warned", False)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(RuntimeWarning, match="outside a workflow run"):
        simai.log_metric("loss", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simai.log_metric("loss", 2.0, step=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_metrics_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        simai.log_metric("", 1.0)
    with pytest.raises(TypeError, match="metric 'loss': value must be a number"):
        simai.log_metric("loss", "high")
    with pytest.raises(TypeError, match="metric 'loss': step must be an int"):
        simai.log_metric("loss", 1.0, step=1.5)
    with pytest.raises(TypeError, match="step must be an int"):
        simai.log_metric("loss", 1.0, step=True)


def writer() -> None:
    simai.open_store().put("data/x", np.zeros(1000))


def reader() -> int:
    simai.open_store().get("data/x")
    return os.getpid()


def test_store_counters_of_every_process_reach_the_records(tmp_path: Path, no_orphans) -> None:
    run = tmp_path / "run"
    with Workflow("counted", run_dir=run) as wf:
        assert wf.start(writer, name="writer").wait(60) == "done"
        task_pid = wf.submit(reader).result()
        wf.store().get("data/x")
    with Records(run / "records.db", readonly=True) as ro:
        rows = ro.store_counters_since(0)
    latest = {
        (pid, component, op): (ops, size)
        for _, _, pid, component, op, prefix, ops, size in rows
        if prefix == "data"
    }
    nbytes = 8000 + 64  # the array and its header
    assert latest[(task_pid, "", "get")] == (1, nbytes)
    assert latest[(os.getpid(), "", "get")][1] >= nbytes
    puts = [v for (pid, comp, op), v in latest.items() if comp == "writer" and op == "put"]
    assert puts == [(1, nbytes)]
