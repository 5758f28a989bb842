"""The Parsl executor: its default config, resource mapping, cleanup on shutdown, exit and
signals, and real Slurm blocks (SlurmProvider) running tasks and an srun-launched MPI command."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from simai.launch import Command, get_executor

parsl = pytest.importorskip("parsl")

from parsl.config import Config  # noqa: E402
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor  # noqa: E402

from simai.launch.parsl import ParslExecutor  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
# Open MPI refuses to run as root without these; the test sets them, simai never does.
OMPI_AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
ALLREDUCE = (
    "from mpi4py import MPI\n"
    "comm = MPI.COMM_WORLD\n"
    "totals = comm.gather(comm.allreduce(comm.rank + 1))\n"
    "if comm.rank == 0:\n"
    "    print(comm.size, *totals, flush=True)\n"
)


def whoami():
    import os

    return os.environ.get("SLURM_JOB_ID"), os.environ.get("PARSL_WORKER_RANK"), os.getpid()


def add(a, b):
    return a + b


def parsl_processes(run_dir, parent: int | None = None) -> list[str]:
    """Processes of a Parsl run: those naming its run dir, and ``parent``'s interchange."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or ())
            if str(run_dir) in cmdline or (
                parent is not None and "HTEX interchange" in cmdline and proc.ppid() == parent
            ):
                found.append(f"{proc.pid}: {cmdline[:120]}")
        except psutil.Error:
            continue
    return found


def gone(run_dir, parent: int | None = None, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := parsl_processes(run_dir, parent)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# -- the default configuration ------------------------------------------------------------


def test_default_config_runs_tasks_and_cleans_up():
    ex = get_executor("parsl", workers=2)
    run_dir = ex.config.run_dir
    try:
        htex = ex.config.executors[0]
        assert isinstance(htex, HighThroughputExecutor) and htex.max_workers_per_node == 2
        assert ex.config.strategy_period == 0.5
        assert VENV_BIN in htex.provider.worker_init
        assert VENV_BIN in os.environ["PATH"].split(os.pathsep)
        futures = [ex.submit(whoami) for _ in range(20)]
        results = [f.result(60) for f in futures]
        assert {r[0] for r in results} == {None}  # not in a Slurm job
        assert {r[1] for r in results} <= {"0", "1"}
        assert os.getpid() not in {r[2] for r in results}
        assert parsl_processes(run_dir)  # the worker pool runs until shutdown
        # resources are checked against what one worker has, before anything runs
        with pytest.raises(ValueError, match="cores_per_worker=1; build"):
            ex.submit(add, 1, 2, resources={"cpus": 2})
        with pytest.raises(ValueError, match="asks for 1 GPUs but each worker.*has 0"):
            ex.submit(add, 1, 2, resources={"gpus": 1})
        with pytest.raises(ValueError, match="nodes_per_block=1"):
            ex.submit_command(Command([sys.executable, "-V"], ranks=4, ranks_per_node=2))
    finally:
        ex.shutdown()
    assert gone(run_dir, os.getpid()) == []
    assert not Path(run_dir).exists()  # the temporary run dir is removed
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(add, 1, 2)


def meet(directory: str, me: int, count: int, timeout: float = 60.0) -> int:
    """Check in, then wait until `count` tasks have: they only all get there if run at once."""
    import os
    import time

    open(os.path.join(directory, str(me)), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(directory)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(directory))} of {count} tasks ran at once")
        time.sleep(0.05)
    return os.getpid()


def test_more_workers_than_cores_all_start(tmp_path):
    """workers > cores (components that mostly wait): Parsl's pool would cap its workers at
    the cores, and work needing all of them at once (examples/wave online: three trainers
    on two cores) waited forever; default_config sets PARSL_CORES so that all start."""
    count = len(os.sched_getaffinity(0)) + 2
    with ParslExecutor(workers=count) as ex:
        assert f"PARSL_CORES={count}" in ex.config.executors[0].provider.worker_init
        futures = [ex.submit(meet, str(tmp_path), i, count) for i in range(count)]
        pids = [f.result(120) for f in futures]
    assert len(set(pids)) == count


def test_mpi_command_through_mpiexec_outside_slurm(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE)
    env = dict(OMPI_AS_ROOT, OMPI_MCA_rmaps_base_oversubscribe="1")
    with ParslExecutor(workers=1, log_dir=tmp_path / "logs") as ex:
        cmd = Command([sys.executable, str(script)], ranks=2, env=env, cwd=tmp_path)
        result = ex.submit_command(cmd).result(120)
    assert os.path.basename(result.argv[0]) == "mpiexec" and result.argv[1:3] == ["-n", "2"]
    assert result.stdout.read_text() == "2 3 3\n"


def test_bad_configurations_are_refused():
    with pytest.raises(TypeError, match="parsl.config.Config"):
        ParslExecutor(config={"executors": []})
    no_htex = Config(executors=[ThreadPoolExecutor(label="threads")])
    with pytest.raises(ValueError, match=r"no HighThroughputExecutor at all.*threads"):
        ParslExecutor(config=no_htex)
    one = Config(executors=[HighThroughputExecutor(label="htex")])
    with pytest.raises(ValueError, match="labelled 'gpu'"):
        ParslExecutor(config=one, label="gpu")
    with pytest.raises(TypeError, match="only apply when no config"):
        ParslExecutor(config=one, workers=3)
    with pytest.raises(ValueError, match="workers must be"):
        ParslExecutor(workers=0)


# -- no orphans: exit without shutdown, SIGTERM, Ctrl-C --------------------------------------

DRIVER = textwrap.dedent(
    """
    import signal, sys, time
    from simai.launch.parsl import ParslExecutor

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it

    def double(x):
        return 2 * x

    ex = ParslExecutor(workers=1)
    print(ex.config.run_dir, ex.submit(double, 21).result(60), flush=True)
    if sys.argv[1] == "exit":
        sys.stdin.readline()  # then exit without shutdown()
    elif sys.argv[1] == "interchange-killed":
        ex._htex.interchange_proc.kill()
        time.sleep(2)  # the job-status poller (every 0.5 s) now waits for the dead interchange
        ex.terminate()
        print("terminated", flush=True)
    else:
        time.sleep(120)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigterm", "sigint", "sigint-group", "interchange-killed"])
def test_no_processes_left_after_exit_or_signal(tmp_path, how):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # no venv bin on PATH: the executor must find interchange.py and the worker pool itself
    env = dict(os.environ, PATH="/usr/bin:/bin", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(driver), how], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    run_dir = None
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        run_dir, answer = line.split()
        assert answer == "42"
        assert parsl_processes(run_dir, proc.pid)
        if how == "exit":
            proc.stdin.write("\n")
            proc.stdin.flush()
        elif how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        elif how == "sigint":
            proc.send_signal(signal.SIGINT)
        elif how == "sigint-group":  # a terminal's Ctrl-C: the whole foreground process group
            os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(60)
        expected = {"exit": 0, "sigterm": -signal.SIGTERM, "sigint": 1, "sigint-group": 1}
        assert returncode == expected.get(how, 0), proc.stderr.read()
        if how == "interchange-killed":
            assert proc.stdout.readline() == "terminated\n"
            assert "interchange of HTEX 'htex' died before shutdown" in proc.stderr.read()
        assert gone(run_dir) == []
        assert not Path(run_dir).exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if run_dir is not None:  # after a failure: no strays from this test either way
            for pid in (int(found.split(":")[0]) for found in parsl_processes(run_dir)):
                with contextlib.suppress(ProcessLookupError):
                    group = os.getpgid(pid)
                    if group != os.getpgrp():
                        os.killpg(group, signal.SIGKILL)
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(run_dir, ignore_errors=True)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


# -- real Slurm -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_parsl(slurm_cluster, tmp_path_factory):
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import SlurmProvider

    run_dir = tmp_path_factory.mktemp("parsl-slurm-run")
    provider = SlurmProvider(
        partition=slurm_cluster.partition,
        nodes_per_block=1,
        init_blocks=1,
        min_blocks=0,
        max_blocks=1,
        walltime="00:05:00",
        exclusive=False,
        cores_per_node=2,
        launcher=SingleNodeLauncher(),
    )
    htex = HighThroughputExecutor(
        label="slurm", max_workers_per_node=2, cores_per_worker=1, provider=provider
    )
    config = Config(executors=[htex], run_dir=str(run_dir), strategy_period=0.5, usage_tracking=0)
    ex = ParslExecutor(config=config, log_dir=run_dir / "logs")
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        assert gone(run_dir, os.getpid()) == []
        deadline = time.monotonic() + 30
        while (jobs := slurm_cluster.run("squeue", "-h", "-o", "%i %j").stdout.strip()) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert not jobs, f"Slurm jobs left after shutdown: {jobs}"


def test_tasks_run_inside_a_slurm_block(slurm_parsl, slurm_cluster):
    assert VENV_BIN in slurm_parsl.config.executors[0].provider.worker_init
    results = [f.result(120) for f in [slurm_parsl.submit(whoami) for _ in range(6)]]
    job_ids = {r[0] for r in results}
    assert len(job_ids) == 1 and None not in job_ids
    (job_id,) = job_ids
    shown = slurm_cluster.run("scontrol", "-o", "show", "job", job_id).stdout
    assert "JobName=parsl.slurm.block-0" in shown and "JobState=RUNNING" in shown
    assert slurm_parsl.submit(add, 40, 2).result(60) == 42


def test_mpi_command_through_srun_inside_the_block(slurm_parsl, tmp_path):
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE)
    cmd = Command([sys.executable, "allreduce.py"], ranks=2, env=OMPI_AS_ROOT, cwd=tmp_path)
    result = slurm_parsl.submit_command(cmd).result(120)
    assert os.path.basename(result.argv[0]) == "srun"
    assert result.argv[1:4] == ["--mpi=pmix", "-n", "2"]
    assert result.stdout.read_text() == "2 3 3\n"
