"""Run a workflow as a chain of Slurm batch jobs, each continuing where the last one stopped.

`submit_chain` writes one batch script and submits it `jobs` times, each job depending on the
previous one with ``--dependency=afterany``: when a job reaches its time limit, Slurm sends
SIGTERM to its processes (and SIGKILL ``KillWait`` seconds later); the workflow unwinds (its
components stop, its node-local store is saved into the run directory, the attempt is recorded
as ``interrupted``), and the next job starts ``simai run --resume`` on the same script, which
recalls the finished tasks instead of running them again. A job that finds the run complete
exits at once, so spare jobs at the end of a chain cost seconds.

The chain's files live in ``<run_dir>/slurm/<chain>/`` when the run directory is given, or
``./runs/slurm/<chain>/`` otherwise: ``job.sh`` (the batch script), ``jobs`` (the job ids,
one a line), ``job-<id>.out`` (each job's output) and ``complete`` (written by the job that
finished the run).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from simai.checks import check_int
from simai.store.private import private_dir
from simai.workflow.records import Records
from simai.workflow.rundir import RECORDS
from simai.workflow.script import run_script, script_path

COMPLETE = "complete"
JOBS = "jobs"
SCRIPT = "job.sh"
INTERRUPTED_EXIT = 130
_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$")


def chain_root(run_dir: str | os.PathLike[str] | None) -> Path:
    """Where chains are kept: ``<run_dir>/slurm`` or ``./runs/slurm``."""
    return (Path(run_dir) if run_dir is not None else Path("runs")).absolute() / "slurm"


def batch_script(
    chain: Path, script: Path, args: Sequence[str], run_dir: Path | None, cwd: Path
) -> str:
    """The batch script: ``exec`` the job runner so that Slurm's SIGTERM lands on Python."""
    runner = [sys.executable, "-m", "simai.workflow.slurm", "job", "--chain", str(chain)]
    if run_dir is not None:
        runner += ["--run-dir", str(run_dir)]
    runner += ["--", str(script), *args]
    return (
        "#!/bin/bash\n"
        "# Written by simai.workflow.slurm.submit_chain: one job of a resumable chain.\n"
        f"cd {shlex.quote(str(cwd))} || exit 1\n"
        f"exec {shlex.join(runner)}\n"
    )


def submit_chain(
    script: str | os.PathLike[str],
    args: Sequence[str] = (),
    jobs: int = 2,
    time: str = "0:30",
    partition: str | None = None,
    sbatch_args: Sequence[str] = (),
    run_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Submit `jobs` Slurm jobs that run ``simai run --resume SCRIPT ARGS`` one after another.

    Each job waits for the previous one to end (``afterany``: a time limit is no failure of the
    chain) and resumes the run; the first job to finish it writes ``complete`` and the later
    ones exit at once. A job whose run fails (an error, not a time limit or a stop) cancels the
    jobs after it. `run_dir` is the workflow's run directory when the script sets one: the
    chain's files go there and a job also treats the run as complete when its last attempt is
    ``done``. `time` is sbatch's ``--time`` (Slurm rounds it up to whole minutes); `env`
    replaces the environment the jobs get (default: this process's). Returns the job ids.
    """
    script_file = script_path(script)
    jobs = check_int("jobs", jobs, 1)
    if not isinstance(time, str) or not _TIME.match(time):
        raise ValueError(
            f"time must be a Slurm --time value (MM, MM:SS, HH:MM:SS, D-HH[:MM]), not {time!r}"
        )
    if isinstance(sbatch_args, str):
        raise TypeError("sbatch_args must be a sequence of arguments, not one string")
    environ = dict(os.environ if env is None else env)
    sbatch = shutil.which("sbatch", path=environ.get("PATH"))
    if sbatch is None:
        raise FileNotFoundError("sbatch not found on PATH: is this a Slurm login node?")
    run_path = Path(run_dir).absolute() if run_dir is not None else None
    if run_path is not None:  # the run directory, private as the workflow makes it
        private_dir(run_path)
    chain = _new_chain_dir(chain_root(run_path), script_file.stem)
    job_sh = chain / SCRIPT
    job_sh.write_text(batch_script(chain, script_file, list(args), run_path, Path.cwd()))
    job_sh.chmod(0o755)
    ids: list[str] = []
    try:
        for n in range(jobs):
            cmd = [
                sbatch,
                "--parsable",
                f"--job-name=simai-{script_file.stem}",
                f"--time={time}",
                f"--output={chain}/job-%j.out",
            ]
            if partition:
                cmd.append(f"--partition={partition}")
            if ids:
                cmd.append(f"--dependency=afterany:{ids[-1]}")
            cmd += [*sbatch_args, str(job_sh)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(
                    f"sbatch failed for job {n + 1} of {jobs} (exit {out.returncode}): "
                    f"{out.stderr.strip() or out.stdout.strip()}"
                )
            ids.append(out.stdout.strip().split(";")[0])
            with open(chain / JOBS, "a") as f:
                f.write(ids[-1] + "\n")
    except BaseException:
        _cancel(ids, environ)
        raise
    return ids


def _new_chain_dir(root: Path, stem: str) -> Path:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot make a new chain directory under {root}")


def _cancel(ids: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    scancel = shutil.which("scancel", path=(env or os.environ).get("PATH"))
    if ids and scancel:
        subprocess.run([scancel, *ids], capture_output=True, env=env, timeout=60)


def run_complete(chain: Path, run_dir: Path | None) -> bool:
    """Whether a job of the chain finished the run, or the run's last attempt is ``done``."""
    if (chain / COMPLETE).exists():
        return True
    if run_dir is None or not (run_dir / RECORDS).is_file():
        return False
    records = Records(run_dir / RECORDS, readonly=True)
    try:
        attempts = records.runs()
    finally:
        records.close()
    return bool(attempts) and attempts[-1]["status"] == "done"


def run_job(chain: Path, run_dir: Path | None, script: str, args: Sequence[str]) -> int:
    """One job of a chain: skip a complete run, else resume it in this process."""
    job = os.environ.get("SLURM_JOB_ID", "?")
    if run_complete(chain, run_dir):
        print(f"simai: job {job}: the run is already complete, nothing to do", flush=True)
        return 0
    print(f"simai: job {job}: resuming {script} at {time.time():.3f}", flush=True)
    try:
        rc = run_script(script, args, resume=True)
    except KeyboardInterrupt:  # a time limit or a stop: the next job goes on
        rc = INTERRUPTED_EXIT
    except BaseException:
        _cancel_later(chain, job)
        raise
    print(f"simai: job {job}: the script exited {rc} at {time.time():.3f}", flush=True)
    if rc == 0:
        (chain / COMPLETE).write_text(f"{job}\n")
    elif rc != INTERRUPTED_EXIT:
        _cancel_later(chain, job)
    return rc


def _cancel_later(chain: Path, job: str) -> None:
    """The run failed: cancel the chain's jobs after this one, which would only fail again."""
    ids = (chain / JOBS).read_text().split() if (chain / JOBS).exists() else []
    later = ids[ids.index(job) + 1 :] if job in ids else []
    if later:
        print(f"simai: job {job}: the run failed; cancelling jobs {' '.join(later)}", flush=True)
        _cancel(later)


# --- command line ------------------------------------------------------------------------


def _job_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simai.workflow.slurm")
    sub = p.add_subparsers(dest="command", required=True)
    job = sub.add_parser("job", help="run one job of a chain (used by the batch script)")
    job.add_argument("--chain", required=True)
    job.add_argument("--run-dir", default=None)
    job.add_argument("script")
    job.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    run_dir = Path(a.run_dir) if a.run_dir else None
    return run_job(Path(a.chain), run_dir, a.script, args)


if __name__ == "__main__":
    sys.exit(_job_main())
