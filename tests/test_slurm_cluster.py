"""The test Slurm runs batch jobs and PMIx-wired OpenMPI jobs (what the launch tests rely on)."""

from __future__ import annotations

import sys
from pathlib import Path

ALLREDUCE = """\
from mpi4py import MPI

comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
print(f"rank={comm.Get_rank()} size={comm.Get_size()} sum={total}", flush=True)
"""

OPENMPI_AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def test_sbatch_wrap_runs_to_completion(slurm_cluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    submitted = slurm_cluster.run(
        "sbatch", "--parsable", f"--partition={slurm_cluster.partition}",
        f"--output={out}", "--wrap", "echo job=$SLURM_JOB_ID node=$SLURMD_NODENAME",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    assert slurm_cluster.wait_job(job_id) == ("COMPLETED", 0)
    assert out.read_text().split() == [f"job={job_id}", f"node={slurm_cluster.node}"]


def test_sbatch_reports_failing_job(slurm_cluster, tmp_path: Path) -> None:
    submitted = slurm_cluster.run(
        "sbatch", "--parsable", f"--output={tmp_path / 'job.out'}", "--wrap", "exit 3"
    )
    assert submitted.returncode == 0, submitted.stderr
    assert slurm_cluster.wait_job(submitted.stdout.strip()) == ("FAILED", 3)


def test_srun_pmix_mpi_allreduce_in_allocation(slurm_cluster, tmp_path: Path) -> None:
    script = tmp_path / "mpi_allreduce.py"
    script.write_text(ALLREDUCE)
    env = dict(slurm_cluster.env, **OPENMPI_AS_ROOT)
    done = slurm_cluster.run(
        "salloc", "--ntasks=2", f"--partition={slurm_cluster.partition}",
        "srun", "--mpi=pmix", sys.executable, str(script),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("rank="))
    assert lines == ["rank=0 size=2 sum=3", "rank=1 size=2 sum=3"]
