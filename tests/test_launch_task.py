"""@task functions, the current executor, and use()."""

import concurrent.futures as cf
import os
import subprocess
import sys
import textwrap
import time

import pytest
from _procs import children, no_new_children

import simai.launch as launch
from simai.launch import Command, LocalExecutor, TaskTimeoutError, task

NCORES = len(os.sched_getaffinity(0))


@task
def square(x):
    return x * x


@task(cpus=NCORES, retries=2)
def wide(marker):
    count = len(open(marker).read()) if os.path.exists(marker) else 0
    if count < 1:
        with open(marker, "a") as fh:
            fh.write("x")
        raise RuntimeError("first attempt fails")
    return sorted(os.sched_getaffinity(0))


@task(walltime=0.5)
def too_slow():

    time.sleep(30)


@task(gpus=1)
def on_gpu():
    return os.environ["CUDA_VISIBLE_DEVICES"]


@pytest.fixture
def ex(tmp_path):
    before = children()
    executor = LocalExecutor(log_dir=tmp_path)
    try:
        with launch.use(executor) as current:
            assert current is executor
            yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    assert no_new_children(before)


def test_calls_return_futures_on_the_current_executor(ex):
    assert launch.current_executor() is ex
    futures = [square(i) for i in range(10)]
    assert all(isinstance(f, cf.Future) for f in futures)
    assert sorted(f.result(30) for f in cf.as_completed(futures)) == [i * i for i in range(10)]
    assert square(square(3)).result(30) == 81  # a future as argument
    assert square.fn(4) == 16  # the plain function still runs inline


def test_decorator_resources_retries_walltime(ex, tmp_path):
    assert wide(str(tmp_path / "m")).result(30) == sorted(os.sched_getaffinity(0))
    with pytest.raises(TaskTimeoutError, match="'too_slow'.*walltime of 0.5 s"):
        too_slow().result(30)


def test_decorator_validates_at_definition():
    with pytest.raises(ValueError, match="cpus must be an int >= 0"):
        task(cpus=-1)
    with pytest.raises(ValueError, match="walltime must be"):
        task(walltime=0)
    with pytest.raises(TypeError, match="needs a function"):
        task(3)


def test_gpu_request_too_large_fails_at_call(ex):
    with pytest.raises(ValueError, match="asks for 1 GPUs but this LocalExecutor has 0"):
        on_gpu()
    with LocalExecutor(gpus=1) as gpu_ex:
        assert on_gpu.submit_to(gpu_ex).result(30) == "0"


def test_use_by_name_and_submit_helper(tmp_path):
    with launch.use("local", cores=1, log_dir=tmp_path) as ex:
        assert isinstance(ex, LocalExecutor) and ex.cores == (sorted(os.sched_getaffinity(0))[0],)
        assert launch.submit(Command(["echo", "hi"])).result(30).stdout.read_text() == "hi\n"
        assert launch.submit(pow, 2, 5).result(30) == 32
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(pow, 2, 5)
    with pytest.raises(ValueError, match="unknown executor"):
        with launch.use("mystery"):
            pass


SCRIPT = textwrap.dedent(
    """
    import os, time
    import simai.launch as launch

    @launch.task(cpus=1)
    def simulate(period):
        return period * 2, sorted(os.sched_getaffinity(0))

    @launch.task
    def combine(results):
        return sum(r[0] for r in results)

    if __name__ == "__main__":
        start = time.perf_counter()
        runs = [simulate(p) for p in range(4)]
        print("first", runs[0].result()[0], time.perf_counter() - start)
        print("total", combine(runs).result())
        print("cores", sorted({tuple(r.result()[1]) for r in runs}))
    """
)


def test_default_executor_in_a_script(tmp_path):
    """Functions defined in __main__ travel by value; the default executor ends at exit."""
    script = tmp_path / "wf.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("first 0 ")
    assert lines[1] == "total 12"
    seen = eval(lines[2][len("cores ") :])  # each task was pinned to one allowed core
    assert seen and all(len(c) == 1 and c[0] in os.sched_getaffinity(0) for c in seen)


def test_readme_tasks_example_runs(tmp_path):
    """examples/tasks.py is the README's launching example: it must run as shown."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "tasks.py"
    out = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "total period 3.5" in out.stdout
    assert "hello from a command" in out.stdout
    assert "exit code 3" in out.stdout
