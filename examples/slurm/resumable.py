"""A workflow that outlives its batch job: tasks run one after another, each storing a result.

Run it as a chain of Slurm jobs; each job continues where the last one was cut off:

    simai submit --slurm --jobs 3 --time 1 --run-dir runs/resumable examples/slurm/resumable.py
    sbatch examples/slurm/resumable.sbatch        # the same, as a plain batch script

or by hand: `simai run examples/slurm/resumable.py`, Ctrl-C, then `simai run --resume ...`.
A finished task is recalled from the run's records instead of running again; every result
lands in the run's store under ``result/<i>``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import simai


@simai.task
def step(i: int, seconds: float, marks: str | None) -> int:
    """A stand-in for a simulation step: `seconds` of work, then a result in the store."""
    if marks:
        Path(marks, f"{i}-{os.getpid()}-{time.time_ns()}").touch()
    time.sleep(seconds)
    simai.open_store().put(f"result/{i}", np.full(1000, i, dtype=np.int64))
    return i * 10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/resumable", help="the run directory")
    p.add_argument("--tasks", type=int, default=20, help="number of tasks (20)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per task (5)")
    p.add_argument("--store", default="local", help="local, file or redis (local)")
    p.add_argument("--marks", default=None, help="touch <marks>/<i>-<pid>-<ns> as each starts")
    a = p.parse_args()
    # keep_store: the results outlive the run (a node-local store is otherwise kept only by
    # a run that did not complete, for its resume)
    with simai.Workflow("resumable", run_dir=a.run_dir, store=a.store, keep_store=["result/"]):
        results = []
        for i in range(a.tasks):
            results.append(step(i, a.seconds, a.marks).result())
            print(f"task {i} done at {time.time():.3f}", flush=True)
        print("results", results, flush=True)


if __name__ == "__main__":
    main()
