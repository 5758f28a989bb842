"""Commands as real subprocesses: logs, exit codes, binding, walltime, and real MPI."""

import os
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from _procs import alive, eventually

from simai.launch import (
    Command,
    CommandError,
    CommandResult,
    LocalExecutor,
    TaskTimeoutError,
)

NCORES = len(os.sched_getaffinity(0))
# Open MPI refuses root and more ranks than cores without these; the tests set them on
# purpose: simai never does.
OMPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


def test_command_success_writes_logs(ex, tmp_path):
    cmd = Command(
        ["sh", "-c", 'echo "out $GREETING"; echo err >&2; pwd'],
        env={"GREETING": "hello"},
        cwd=tmp_path,
    )
    result = ex.submit_command(cmd).result(timeout=30)
    assert isinstance(result, CommandResult) and result.returncode == 0
    assert result.stdout.read_text().splitlines() == ["out hello", str(tmp_path)]
    assert result.stderr.read_text() == "err\n"
    assert result.stdout.parent == tmp_path / "logs"
    own = tmp_path / "mine.out"
    result = ex.submit_command(Command(["echo", "x"], stdout=own)).result(timeout=30)
    assert result.stdout == own and own.read_text() == "x\n"


def test_nonzero_exit_raises_command_error(ex):
    script = "for i in $(seq 1 50); do echo line $i >&2; done; exit 3"
    fut = ex.submit_command(Command(["sh", "-c", script], name="failing"))
    with pytest.raises(CommandError) as info:
        fut.result(timeout=30)
    err = info.value
    assert err.returncode == 3
    assert err.stderr_tail.splitlines()[-1] == "line 50"
    assert "line 1\n" not in err.stderr_tail  # only the last lines
    assert "'failing'" in str(err) and "status 3" in str(err)


def test_bad_commands_are_refused_early(ex, tmp_path):
    with pytest.raises(TypeError, match="not a shell string"):
        Command("echo hello")
    with pytest.raises(ValueError, match="at least the executable"):
        Command([])
    with pytest.raises(NotADirectoryError):
        Command(["echo"], cwd=tmp_path / "missing")
    with pytest.raises(ValueError, match="cpus_per_rank must be an int >= 0, not -1"):
        Command(["echo"], cpus_per_rank=-1)
    assert repr(Command(["true"], cpus_per_rank=0, huge_pages=False)) == (
        "Command(['true'], cpus_per_rank=0, huge_pages=False)"
    )
    with pytest.raises(TypeError, match="Command arguments must be str or paths, not 3"):
        Command(["echo", 3])
    with pytest.raises(ValueError, match="walltime must be a number of seconds > 0 or None"):
        Command(["echo"], walltime=-1)
    with pytest.raises(TypeError, match="walltime must be a number of seconds > 0 or None"):
        Command(["echo"], walltime="5")
    with pytest.raises(TypeError, match="env maps names to str or number values"):
        Command(["echo"], env={"A": [1]})
    with pytest.raises(FileNotFoundError, match="'no-such-program-xyz' not found on PATH"):
        ex.submit_command(Command(["no-such-program-xyz"]))
    with pytest.raises(FileNotFoundError, match="not found or not executable"):
        ex.submit_command(Command([str(tmp_path / "nope.sh")]))
    with pytest.raises(ValueError, match=f"asks for {NCORES + 1} cores"):
        ex.submit_command(Command(["echo"], ranks=NCORES + 1))
    with pytest.raises(TypeError, match="needs a Command"):
        ex.submit_command(["echo"])
    with pytest.raises(TypeError, match="takes no arguments or resources"):
        ex.submit(Command(["echo"]), "x")
    with pytest.raises(TypeError, match="takes no arguments or resources"):
        ex.submit(Command(["echo"]), resources={"cpus": 1})
    with pytest.raises(TypeError, match="needs a callable"):
        ex.submit(["echo"])


def test_submit_runs_a_command_as_submit_command_does(ex, tmp_path):
    from simai.launch import submit, use

    result = ex.submit(Command(["echo", "direct"], cwd=tmp_path)).result(timeout=30)
    assert isinstance(result, CommandResult) and result.stdout.read_text() == "direct\n"
    with use(ex):
        fut = submit(Command(["sh", "-c", "exit 4"], name="four"), retries=1)
        with pytest.raises(CommandError, match="status 4"):
            fut.result(timeout=30)
    assert fut.simai_task.attempt == 1  # type: ignore[attr-defined]


def test_commands_are_bound_to_their_cores_and_gpus(tmp_path):
    folder = tmp_path / "meet"
    folder.mkdir()
    # Each command waits until all have started, then reports its own binding.
    script = textwrap.dedent(
        f"""
        touch {folder}/$$
        i=0
        while [ $(ls {folder} | wc -l) -lt {NCORES} ] && [ $i -lt 2000 ]; do
            sleep 0.01; i=$((i+1))
        done
        grep Cpus_allowed_list /proc/self/status
        echo "gpu=$CUDA_VISIBLE_DEVICES ze=$ZE_AFFINITY_MASK"
        """
    )
    with LocalExecutor(gpus=NCORES, log_dir=tmp_path / "logs") as ex:
        futures = [
            ex.submit_command(Command(["sh", "-c", script], gpus_per_rank=1)) for _ in range(NCORES)
        ]
        outputs = [f.result(timeout=60).stdout.read_text().split() for f in futures]
    cores = {out[1] for out in outputs}
    gpus = {out[2] for out in outputs}
    assert len(cores) == NCORES and len(gpus) == NCORES
    assert all(out[2][len("gpu=") :] == out[3][len("ze=") :] for out in outputs)


def test_walltime_kills_the_command_group(ex, tmp_path):
    pidfile = tmp_path / "pid"
    cmd = Command(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], name="hanger")
    fut = ex.submit_command(cmd, walltime=0.5)
    with pytest.raises(TaskTimeoutError, match=r"task 'hanger' \(id \d+\) ran past its walltime"):
        fut.result(timeout=30)
    assert eventually(lambda: not alive(int(pidfile.read_text())))


def test_retries_rerun_commands(ex, tmp_path):
    marker = tmp_path / "marker"
    script = f"if [ -e {marker} ]; then echo second; else touch {marker}; exit 1; fi"
    result = ex.submit_command(Command(["sh", "-c", script]), retries=1).result(timeout=30)
    assert result.stdout.read_text() == "second\n"


def test_shutdown_kills_running_commands(tmp_path):
    ex = LocalExecutor(log_dir=tmp_path)
    fut = ex.submit_command(Command(["sleep", "60"]))

    def sleepers():
        found = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.name() == "sleep":
                    found.append(proc)
            except psutil.NoSuchProcess:
                pass
        return found

    assert eventually(sleepers, timeout=30)
    running = sleepers()
    ex.terminate()
    assert eventually(lambda: not any(alive(p.pid) for p in running))
    assert fut.exception(timeout=30) is not None


def test_mpi_allreduce_through_mpiexec(ex, tmp_path):
    script = tmp_path / "allreduce.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from mpi4py import MPI
            comm = MPI.COMM_WORLD
            totals = comm.gather(comm.allreduce(comm.rank + 1))
            if comm.rank == 0:
                print(comm.size, *totals, flush=True)
            """
        )
    )
    cmd = Command([sys.executable, str(script)], ranks=2, env=OMPI_ENV)
    result = ex.submit_command(cmd).result(timeout=120)
    assert "mpiexec" in Path(result.argv[0]).name and result.argv[1:3] == ["-n", "2"]
    assert result.stdout.read_text() == "2 3 3\n"  # 2 ranks, each saw 1 + 2


SRUN_SCRIPT = textwrap.dedent(
    """
    import sys
    from simai.launch import Command, LocalExecutor

    env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    with LocalExecutor(log_dir=sys.argv[2]) as ex:
        cmd = Command([sys.executable, sys.argv[1]], ranks=2, env=env)
        result = ex.submit_command(cmd).result(timeout=120)
    print(" ".join(result.argv[:4]))
    print(result.stdout.read_text(), end="")
    """
)


def test_mpi_allreduce_through_srun_in_an_allocation(slurm_cluster, tmp_path):
    mpi_script = tmp_path / "allreduce.py"
    mpi_script.write_text(
        "from mpi4py import MPI\n"
        "comm = MPI.COMM_WORLD\n"
        "totals = comm.gather(comm.allreduce(comm.rank + 1))\n"
        "if comm.rank == 0:\n"
        "    print(comm.size, *totals, flush=True)\n"
    )
    driver = tmp_path / "driver.py"
    driver.write_text(SRUN_SCRIPT)
    done = slurm_cluster.run(
        "salloc", "--ntasks=2", f"--partition={slurm_cluster.partition}",
        sys.executable, str(driver), str(mpi_script), str(tmp_path / "logs"),
        timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    launched, output = done.stdout.splitlines()[-2:]
    assert launched.split()[0].endswith("srun")
    assert launched.split()[1:4] == ["--mpi=pmix", "-n", "2"]
    assert output == "2 3 3"
