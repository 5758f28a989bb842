"""A coupled workflow on many nodes' machinery: components placed by Parsl in a real Slurm
block, reaching the Redis store the workflow started, with tasks beside them."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import simai
from simai.workflow import Records, Workflow, WorkflowOptions

parsl = pytest.importorskip("parsl")


def producer(n: int) -> None:
    store = simai.open_store()
    store.put("where/producer", os.environ.get("SLURM_JOB_ID", "not in slurm"))
    print("producer on stdout", flush=True)
    print("producer on stderr", file=sys.stderr, flush=True)
    for i in range(n):
        store.append("samples", np.full(16, i, np.float32))
    store.close_stream("samples")


def consumer() -> None:
    store = simai.open_store()
    store.put("where/consumer", os.environ.get("SLURM_JOB_ID", "not in slurm"))
    total = sum(float(x[0]) for x in store.stream("samples", timeout=60))
    store.put("total", total)


@simai.task
def job_of_task() -> str:
    return os.environ.get("SLURM_JOB_ID", "not in slurm")


def test_components_in_a_slurm_block_stream_through_the_workflows_store(slurm_cluster, tmp_path):
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import SlurmProvider

    provider = SlurmProvider(
        partition=slurm_cluster.partition,
        nodes_per_block=1,
        init_blocks=1,
        min_blocks=0,
        max_blocks=1,
        walltime="00:05:00",
        exclusive=False,
        cores_per_node=4,
        launcher=SingleNodeLauncher(),
    )
    htex = HighThroughputExecutor(
        label="wf-slurm", max_workers_per_node=4, cores_per_worker=1, provider=provider
    )
    config = Config(
        executors=[htex], run_dir=str(tmp_path / "parsl"), strategy_period=0.5, usage_tracking=0
    )
    with Workflow(
        "on-slurm",
        run_dir=tmp_path / "run",
        store="redis",
        executor="parsl",
        options=WorkflowOptions(executor_config={"config": config, "log_dir": tmp_path / "logs"}),
    ) as wf:
        prod = wf.start(producer, 100)
        cons = wf.start(consumer)
        task_job = job_of_task().result(timeout=120)
        assert prod.wait(120) == "done" and cons.wait(120) == "done"
        store = wf.store()
        assert store.get("total") == sum(range(100))
        jobs = {store.get("where/producer"), store.get("where/consumer"), task_job}
    assert len(jobs) == 1 and jobs.pop().isdigit()
    log = (tmp_path / "run/logs/producer.log").read_text()
    assert "producer on stdout" in log and "producer on stderr" in log
    summary = Records(tmp_path / "run/records.db", readonly=True).summary()
    assert {c["name"]: c["state"] for c in summary["components"]} == {
        "producer": "done",
        "consumer": "done",
    }
