"""One workflow, two executors: the local executor and Parsl (HTEX, LocalProvider, 2 workers)
give the same results and the same errors for tasks, dependencies, commands and retries."""

import os
import signal
import sys
import threading
from pathlib import Path

import psutil
import pytest

from simai.launch import (
    Command,
    CommandError,
    CommandResult,
    DependencyError,
    Executor,
    LocalExecutor,
    TaskTimeoutError,
    WorkerLostError,
    task,
)

pytest.importorskip("parsl")


def add(a, b):
    return a + b


@task
def mul(a, b):
    return a * b


def fail(message):
    raise ValueError(message)


def touch(path, value):
    Path(path).write_text(str(value))
    return value


def flaky(counter, succeed_on):
    """Fails until called for the ``succeed_on``-th time (counted in a file)."""
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls < succeed_on:
        raise RuntimeError(f"attempt {calls} fails")
    return calls


def sleep_long():
    import time

    time.sleep(60)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def _parsl_executor(run_dir):
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    from simai.launch.parsl import ParslExecutor

    htex = HighThroughputExecutor(
        label="htex",
        max_workers_per_node=2,
        cores_per_worker=1,
        address="127.0.0.1",
        heartbeat_period=1,  # a killed worker is noticed within a second
        provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
    )
    config = Config(executors=[htex], run_dir=str(run_dir), strategy_period=0.2, usage_tracking=0)
    return ParslExecutor(config=config, log_dir=run_dir / "logs")


@pytest.fixture(scope="module", params=["local", "parsl"])
def ex(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(f"{request.param}-run")
    if request.param == "local":
        executor: Executor = LocalExecutor(log_dir=run_dir / "logs")
    else:
        executor = _parsl_executor(run_dir)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    if request.param == "parsl":
        left = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or ())
            if str(run_dir) in cmdline or (
                "HTEX interchange" in cmdline and proc.ppid() == os.getpid()
            ):
                left.append(f"{proc.pid}: {cmdline[:100]}")
        assert not left, f"Parsl processes left after shutdown: {left}"


def test_dag_of_python_tasks(ex):
    a = ex.submit(add, 1, 2)
    b = mul.submit_to(ex, a, 10)
    c = ex.submit(add, a, b)
    d = ex.submit(sum, [a, b, c])
    assert (a.result(60), b.result(60), c.result(60), d.result(60)) == (3, 30, 33, 66)


def test_exception_type_and_message_travel(ex):
    with pytest.raises(ValueError, match="no good"):
        ex.submit(fail, "no good").result(60)


def test_failing_dependency_fails_dependents_without_running_them(ex, tmp_path):
    bad = ex.submit(fail, "first failure")
    marker = tmp_path / "ran"
    child = ex.submit(touch, marker, bad)
    grandchild = ex.submit(add, child, 1)
    for fut in (child, grandchild):
        err = fut.exception(60)
        assert isinstance(err, DependencyError)
        assert err.task_name == "fail" and "first failure" in str(err)
        assert isinstance(err.__cause__, ValueError)
    assert not marker.exists()


def test_command_writes_stdout_to_the_named_file(ex, tmp_path):
    out, err = tmp_path / "hello.out", tmp_path / "hello.err"
    cmd = Command(
        [sys.executable, "-c", "import os; print('hello', os.environ['GREETING'])"],
        env={"GREETING": "world"},
        stdout=out,
        stderr=err,
    )
    fut = ex.submit_command(cmd)
    result = fut.result(60)
    assert isinstance(result, CommandResult)
    assert result.returncode == 0 and result.stdout == out and result.stderr == err
    assert out.read_text() == "hello world\n"
    assert result.cpu_time > 0  # what it used travels back with it, into the task
    assert fut.simai_task.cpu_time == result.cpu_time


def test_command_failure_carries_returncode_and_stderr_tail(ex, tmp_path):
    code = "import sys\nfor i in range(30): print('line', i, file=sys.stderr)\nsys.exit(7)"
    cmd = Command([sys.executable, "-c", code], stderr=tmp_path / "bad.err", name="bad")
    err = ex.submit_command(cmd).exception(60)
    assert isinstance(err, CommandError)
    assert err.returncode == 7 and err.cpu_time > 0 and not err.oom
    assert err.stderr_tail.splitlines()[-1] == "line 29"
    assert "line 29" in str(err) and "'bad'" in str(err)


def test_retries_rerun_a_failing_task(ex, tmp_path):
    assert ex.submit(flaky, tmp_path / "ok", 3, retries=2).result(60) == 3
    with pytest.raises(RuntimeError, match="attempt 2 fails"):
        ex.submit(flaky, tmp_path / "short", 3, retries=1).result(60)
    assert (tmp_path / "short").read_text() == "2"


def test_retried_command_succeeds(ex, tmp_path):
    counter = tmp_path / "count"
    code = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "print(n)\n"
        "sys.exit(0 if n >= 2 else 1)"
    )
    result = ex.submit_command(Command([sys.executable, "-c", code]), retries=1).result(60)
    assert result.stdout.read_text() == "2\n"


def test_walltime_fails_with_task_timeout(ex):
    with pytest.raises(TaskTimeoutError, match="walltime of 0.5 s"):
        ex.submit(sleep_long, walltime=0.5).result(60)
    cmd = Command([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(TaskTimeoutError, match="walltime of 0.5 s"):
        ex.submit_command(cmd, walltime=0.5).result(60)


def test_killed_worker_fails_only_its_task(ex):
    with pytest.raises(WorkerLostError, match="task 'die'"):
        ex.submit(die).result(60)
    assert ex.submit(add, 2, 2).result(60) == 4


def test_impossible_requests_are_refused_at_submission(ex):
    with pytest.raises(ValueError, match="asks for 64 cores"):
        ex.submit(add, 1, 2, resources={"cpus": 64})
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        ex.submit_command(Command(["no-such-program-simai"]))
    with pytest.raises(TypeError, match="cannot send"):
        ex.submit(add, 1, threading.Lock())
