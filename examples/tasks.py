"""Tasks and commands as futures on the local executor: a small DAG, pinned to cores.

python examples/tasks.py
"""

import os
import sys
from concurrent.futures import as_completed

import simai


@simai.task(cpus=1, retries=1, walltime=60)
def simulate(period: float) -> dict:
    return {"period": period, "cores": sorted(os.sched_getaffinity(0))}


@simai.task
def summarize(runs: list) -> float:
    return sum(r["period"] for r in runs)


if __name__ == "__main__":
    with simai.LocalExecutor(log_dir="runs/tasks-logs") as ex, simai.launch.use(ex):
        runs = [simulate(p) for p in (0.5, 1.0, 2.0)]  # futures: these run concurrently
        for fut in as_completed(runs):
            print("simulated", fut.result())
        print("total period", summarize(runs).result())  # futures as arguments: a DAG
        echo = ex.submit_command(simai.Command(["echo", "hello from a command"]))
        print(echo.result().stdout.read_text().strip(), "->", echo.result().stdout)
        try:
            ex.submit_command(simai.Command([sys.executable, "-c", "exit(3)"])).result()
        except simai.CommandError as e:
            print("a failing command raises CommandError, exit code", e.returncode)
