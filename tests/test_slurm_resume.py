"""A workflow outlives its batch job on a real Slurm: the first job of a chain is cut by its
time limit, the second resumes the run and finishes it, a third finds nothing left to do."""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from simai.cli import build_parser
from simai.store.local import local_root
from simai.workflow import Records, Workflow
from simai.workflow.slurm import COMPLETE, submit_chain
from simai.workflow.workflow import local_run_url

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "slurm" / "resumable.py"
TASKS, SECONDS = 20, 5.0  # 100 s of work: more than a 1-minute job can do (cut at 60-90 s)


def job_fields(cluster, job_id: str) -> dict[str, str]:
    shown = cluster.run("scontrol", "-o", "show", "job", job_id).stdout
    return dict(item.partition("=")[::2] for item in shown.split())


@pytest.mark.timeout(400)
def test_a_run_cut_by_its_time_limit_is_finished_by_the_next_job(slurm_cluster, tmp_path):
    run, marks = tmp_path / "run", tmp_path / "marks"
    marks.mkdir()
    args = ["--run-dir", str(run), "--marks", str(marks)]
    args += ["--tasks", str(TASKS), "--seconds", str(SECONDS)]
    t0 = time.monotonic()
    ids = submit_chain(
        EXAMPLE,
        args,
        jobs=3,
        time="1",  # Slurm's smallest limit: it rounds --time up to whole minutes
        partition=slurm_cluster.partition,
        run_dir=run,
        env=slurm_cluster.env,
    )
    try:
        first = slurm_cluster.wait_job(ids[0], timeout=180)
        job1 = job_fields(slurm_cluster, ids[0])
        second = slurm_cluster.wait_job(ids[1], timeout=180)
        third = slurm_cluster.wait_job(ids[2], timeout=60)
    finally:
        slurm_cluster.run("scancel", *ids)
    print(
        f"chain of 3 jobs took {time.monotonic() - t0:.1f} s; job 1 ran {job1.get('RunTime')} "
        f"({job1.get('StartTime')} to {job1.get('EndTime')}), limit {job1.get('TimeLimit')}",
        file=sys.stderr,
    )
    (chain,) = (run / "slurm").iterdir()
    out = {i: (chain / f"job-{i}.out").read_text() for i in ids}
    assert first[0] == "TIMEOUT", out[ids[0]]
    assert second == ("COMPLETED", 0), out[ids[1]]
    assert third == ("COMPLETED", 0), out[ids[2]]
    assert (chain / COMPLETE).read_text().strip() == ids[1]
    assert "already complete, nothing to do" in out[ids[2]]

    done_in_job1 = [int(i) for i in re.findall(r"^task (\d+) done", out[ids[0]], re.M)]
    assert done_in_job1 == list(range(len(done_in_job1))) and 0 < len(done_in_job1) < TASKS
    assert f"results {[i * 10 for i in range(TASKS)]}" in out[ids[1]]

    records = Records(run / "records.db", readonly=True)
    try:
        assert [a["status"] for a in records.runs()] == ["interrupted", "done"]
    finally:
        records.close()

    runs_of = Counter(int(m.name.split("-")[0]) for m in marks.iterdir())
    assert set(runs_of) == set(range(TASKS))
    assert all(runs_of[i] == 1 for i in done_in_job1), runs_of  # finished: never run again
    twice = [i for i, n in runs_of.items() if n > 1]
    assert len(twice) <= 1 and all(runs_of[i] == 2 for i in twice), runs_of  # the one cut

    with Workflow("resumable", run_dir=run, store="local", resume=True) as wf:
        store = wf.store()
        for i in range(TASKS):
            np.testing.assert_array_equal(store.get(f"result/{i}"), np.full(1000, i))
    shm = local_root(local_run_url(run))
    assert not os.path.exists(shm)  # no job of the chain left the run's store behind


def test_the_example_sbatch_script_runs_and_later_jobs_find_the_run_complete(
    slurm_cluster, tmp_path
):
    env = dict(slurm_cluster.env, RUN=str(tmp_path / "run"), PYTHON=sys.executable)
    ids: list[str] = []
    for _ in range(2):
        submitted = slurm_cluster.run(
            "sbatch",
            "--parsable",
            f"--output={tmp_path}/job-%j.out",
            *([f"--dependency=afterany:{ids[-1]}"] if ids else []),
            str(EXAMPLE.with_suffix(".sbatch")),
            "--tasks=3",
            "--seconds=0.1",
            env=env,
            cwd=EXAMPLE.parent.parent.parent,
        )
        assert submitted.returncode == 0, submitted.stderr
        ids.append(submitted.stdout.strip())
    try:
        states = [slurm_cluster.wait_job(i, timeout=90) for i in ids]
    finally:
        slurm_cluster.run("scancel", *ids)
    out = [(tmp_path / f"job-{i}.out").read_text() for i in ids]
    assert states == [("COMPLETED", 0), ("COMPLETED", 0)], out
    assert "results [0, 10, 20]" in out[0]
    assert "already complete: nothing to do" in out[1]
    records = Records(tmp_path / "run" / "records.db", readonly=True)
    try:
        assert [a["status"] for a in records.runs()] == ["done"]
    finally:
        records.close()


FAILING = """
import simai

with simai.Workflow("failing", run_dir="run"):
    raise RuntimeError("the workflow script is broken")
"""


def test_a_failed_run_cancels_the_rest_of_its_chain(slurm_cluster, tmp_path, monkeypatch):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    monkeypatch.chdir(tmp_path)
    ids = submit_chain(script, jobs=3, time="1", run_dir="run", env=slurm_cluster.env)
    try:
        states = [slurm_cluster.wait_job(i, timeout=90) for i in ids]
    finally:
        slurm_cluster.run("scancel", *ids)
    (chain,) = (tmp_path / "run" / "slurm").iterdir()
    out = (chain / f"job-{ids[0]}.out").read_text()
    assert states[0] == ("FAILED", 1), out
    assert "the workflow script is broken" in out
    assert f"cancelling jobs {ids[1]} {ids[2]}" in out
    assert [s for s, _ in states[1:]] == ["CANCELLED", "CANCELLED"]
    assert not (chain / f"job-{ids[1]}.out").exists()  # never started


def test_bad_chains_are_refused_with_a_clear_error(slurm_cluster, tmp_path):
    script = tmp_path / "wf.py"
    script.write_text("pass\n")
    with pytest.raises(FileNotFoundError, match="no workflow script"):
        submit_chain(tmp_path / "missing.py", env=slurm_cluster.env)
    with pytest.raises(ValueError, match="jobs must be an int >= 1"):
        submit_chain(script, jobs=0, env=slurm_cluster.env)
    with pytest.raises(ValueError, match="Slurm --time value"):
        submit_chain(script, time="ten minutes", env=slurm_cluster.env)
    with pytest.raises(FileNotFoundError, match="sbatch not found"):
        submit_chain(script, env=dict(slurm_cluster.env, PATH=str(tmp_path)))
    with pytest.raises(RuntimeError, match="sbatch failed for job 1 of 2.*partition"):
        submit_chain(script, partition="nosuch", run_dir=tmp_path / "r", env=slurm_cluster.env)


def test_simai_submit_command_line(slurm_cluster, tmp_path, monkeypatch, capsys):
    parser = build_parser()
    run = tmp_path / "run"
    argv = ["submit", "--slurm", "--jobs", "2", "--time", "2", "--run-dir", str(run)]
    argv += [f"--partition={slurm_cluster.partition}", "--sbatch-arg=--job-name=cli-chain"]
    argv += [str(EXAMPLE), "--run-dir", str(run), "--tasks", "2", "--seconds", "0.1"]
    args = parser.parse_args(argv)
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    assert args.func(args) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 2
    try:
        states = [slurm_cluster.wait_job(i, timeout=90) for i in ids]
        names = [job_fields(slurm_cluster, i)["JobName"] for i in ids]
    finally:
        slurm_cluster.run("scancel", *ids)
    (chain,) = (run / "slurm").iterdir()
    out = [(chain / f"job-{i}.out").read_text() for i in ids]
    assert states == [("COMPLETED", 0), ("COMPLETED", 0)], out
    assert names == ["cli-chain", "cli-chain"]
    assert "results [0, 10]" in out[0]
    assert (chain / COMPLETE).read_text().strip() == ids[0]
    assert "already complete, nothing to do" in out[1]
    with pytest.raises(SystemExit):
        parser.parse_args(["submit", str(EXAMPLE)])  # --slurm is required
    assert "--slurm" in capsys.readouterr().err
