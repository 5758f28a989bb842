"""LocalExecutor with real worker processes: futures, dependencies, binding, failures."""

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from _procs import alive, eventually

from simai.launch import (
    DependencyError,
    Executor,
    LocalExecutor,
    Resources,
    TaskTimeoutError,
    WorkerLostError,
    get_executor,
)

NCORES = len(os.sched_getaffinity(0))


# -- task functions (module level so workers import them) ------------------------------


def add(a, b):
    return a + b


def total(values):
    return sum(values)


def total_dict(mapping):
    return sum(mapping.values())


def boom(message):
    raise ValueError(message)


def touch_and_return(path, value):
    Path(path).touch()
    return value


def binding():
    return sorted(os.sched_getaffinity(0)), os.environ.get("CUDA_VISIBLE_DEVICES")


def rendezvous(folder, me, expected, timeout=20.0):
    """Wait until ``expected`` tasks are running at once; report what this one saw."""
    folder = Path(folder)
    (folder / f"here-{me}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("here-*"))) < expected:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
    return (
        sorted(os.sched_getaffinity(0)),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        os.environ.get("ZE_AFFINITY_MASK"),
    )


def interval(log, seconds):
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    with open(log, "a") as fh:
        fh.write(f"{start} {end} {gpu} {sorted(os.sched_getaffinity(0))}\n")
    return gpu


def die(sig, _after=None):
    os.kill(os.getpid(), sig)
    time.sleep(5)


def abort():
    os.abort()


def segfault():
    import ctypes

    ctypes.string_at(0)


def die_once(marker):
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "second attempt"


def fail_until(marker, times):
    count = len(Path(marker).read_text()) if os.path.exists(marker) else 0
    if count < times:
        with open(marker, "a") as fh:
            fh.write("x")
        raise RuntimeError(f"attempt {count + 1} fails")
    return count + 1


def spawn_and_hang(pidfile):
    child = subprocess.Popen(["sleep", "60"])
    Path(pidfile).write_text(str(child.pid))
    time.sleep(60)


def my_pid():
    return os.getpid()


def sleep(seconds):
    time.sleep(seconds)
    return seconds


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object refuses to be pickled")


# -- futures ---------------------------------------------------------------------------


def test_results_are_real_futures(ex):
    futures = [ex.submit(add, i, i) for i in range(20)]
    assert all(isinstance(f, cf.Future) for f in futures)
    done = {f.result() for f in cf.as_completed(futures, timeout=30)}
    assert done == {2 * i for i in range(20)}
    finished, pending = cf.wait(futures, timeout=30)
    assert len(finished) == 20 and not pending
    seen = []
    event = threading.Event()
    f = ex.submit(add, 40, 2)
    f.add_done_callback(lambda fut: (seen.append(fut.result()), event.set()))
    assert event.wait(30) and seen == [42]


def test_exception_travels_with_remote_traceback(ex):
    with pytest.raises(ValueError, match="bad value") as info:
        ex.submit(boom, "bad value").result(timeout=30)
    assert "in boom" in str(info.value.__cause__)


def test_lambdas_and_closures_run(ex):
    k = 5
    assert ex.submit(lambda x: x * k, 3).result(timeout=30) == 15


def test_many_tasks_in_batches(ex):
    futures = [ex.submit(add, i, 1) for i in range(3000)]
    assert [f.result(timeout=60) for f in futures] == [i + 1 for i in range(3000)]


def test_large_arguments_and_results(ex):
    blob = os.urandom(1 << 20) * 40
    assert ex.submit(len, blob).result(timeout=60) == len(blob)
    assert ex.submit(bytes, 30 << 20).result(timeout=60) == bytes(30 << 20)


class LocalError(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def raise_odd_exception():
    raise LocalError(1, 2)


def test_exception_that_cannot_be_rebuilt_still_reports(ex):
    with pytest.raises(RuntimeError, match="LocalError: 1/2"):
        ex.submit(raise_odd_exception).result(timeout=30)


# -- dependencies ----------------------------------------------------------------------


def test_futures_as_arguments_are_awaited(ex):
    a = ex.submit(sleep, 0.2)
    b = ex.submit(add, a, 1)
    c = ex.submit(total, [a, b, 3])
    d = ex.submit(total_dict, {"x": c, "y": 1})
    e = ex.submit(add, a, b=d)
    results = (b.result(30), c.result(30), d.result(30), e.result(30))
    assert results == pytest.approx((1.2, 4.4, 5.4, 5.6))


def test_failed_dependency_names_the_first_failure(ex, tmp_path):
    bad = ex.submit(boom, "simulation diverged")
    middle = ex.submit(add, bad, 1)
    marker = tmp_path / "ran"
    last = ex.submit(touch_and_return, marker, middle)
    for fut in (middle, last):
        with pytest.raises(DependencyError) as info:
            fut.result(timeout=30)
        err = info.value
        assert f"task 'boom' (id {bad.simai_task.id}) failed" in str(err)
        assert "simulation diverged" in str(err)
        assert err.task_name == "boom" and isinstance(err.__cause__, ValueError)
    assert not marker.exists()


def test_cancelled_dependency(ex):
    first = cf.Future()
    dependent = ex.submit(add, first, 1)
    first.cancel()
    with pytest.raises(DependencyError, match="cancelled"):
        dependent.result(timeout=30)


def test_foreign_future_dependency(ex):
    with cf.ThreadPoolExecutor(1) as pool:
        outside = pool.submit(lambda: 41)
        assert ex.submit(add, outside, 1).result(timeout=30) == 42


# -- resources and binding, checked from inside the tasks --------------------------------


def test_concurrent_tasks_get_disjoint_cores(tmp_path):
    with LocalExecutor() as ex:
        futures = [ex.submit(rendezvous, tmp_path, i, NCORES) for i in range(NCORES)]
        seen = [f.result(timeout=60) for f in futures]
    assert None not in seen, "tasks did not run at the same time"
    cores = [tuple(s[0]) for s in seen]
    assert all(len(c) == 1 for c in cores)
    assert len(set(cores)) == NCORES


def test_cores_override_and_multi_core_tasks(tmp_path):
    last = sorted(os.sched_getaffinity(0))[-1]
    with LocalExecutor(cores=[last]) as ex:
        assert ex.submit(binding).result(timeout=30) == ([last], None)
        with pytest.raises(ValueError, match="asks for 2 cores but this LocalExecutor has 1"):
            ex.submit(binding, resources=Resources(cpus=2))
    with LocalExecutor() as ex:
        both = ex.submit(binding, resources={"cpus": NCORES}).result(timeout=30)
        assert both[0] == sorted(os.sched_getaffinity(0))


def test_one_core_runs_one_task_at_a_time(tmp_path):
    log = tmp_path / "log"
    with LocalExecutor(cores=1) as ex:
        cf.wait([ex.submit(interval, log, 0.1) for _ in range(3)], timeout=60)
    spans = sorted(tuple(map(float, line.split()[:2])) for line in log.read_text().splitlines())
    assert len(spans) == 3
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))


def test_oversubscription_shares_a_core(tmp_path):
    core = sorted(os.sched_getaffinity(0))[0]
    with LocalExecutor(cores=[core], oversubscribe=2) as ex:
        seen = [f.result(60) for f in [ex.submit(rendezvous, tmp_path, i, 2) for i in range(2)]]
    assert seen[0] is not None and seen[1] is not None
    assert seen[0][0] == seen[1][0] == [core]


def test_gpus_from_configuration(tmp_path):
    with LocalExecutor(gpus=2) as ex:
        futures = [ex.submit(rendezvous, tmp_path, i, 2, resources={"gpus": 1}) for i in range(2)]
        seen = [f.result(timeout=60) for f in futures]
        assert ex.submit(binding).result(timeout=30)[1] == ""  # no GPU asked: none visible
        with pytest.raises(ValueError, match="asks for 3 GPUs but this LocalExecutor has 2"):
            ex.submit(binding, resources={"gpus": 3})
    assert sorted(s[1] for s in seen) == ["0", "1"]
    assert [s[1] for s in seen] == [s[2] for s in seen]  # ZE_AFFINITY_MASK matches


def test_gpus_from_environment_never_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    log = tmp_path / "log"
    with LocalExecutor() as ex:
        assert ex.gpus == ("3", "5")
        futures = [ex.submit(interval, log, 0.1, resources={"gpus": 2}) for _ in range(3)]
        assert {f.result(timeout=60) for f in futures} == {"3,5"}
    spans: dict[str, list] = {}
    for line in log.read_text().splitlines():
        start, end, gpu = line.split()[:3]
        spans.setdefault(gpu, []).append((float(start), float(end)))
    for gpu_spans in spans.values():
        gpu_spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(gpu_spans, gpu_spans[1:], strict=False))


# -- failures: walltime, lost workers, retries --------------------------------------------


def test_walltime_kills_the_process_tree(ex, tmp_path):
    pidfile = tmp_path / "child.pid"
    fut = ex.submit(spawn_and_hang, pidfile, walltime=5.0)  # room for a worker start under load
    with pytest.raises(
        TaskTimeoutError, match=r"task 'spawn_and_hang' \(id \d+\).*walltime of 5 s"
    ):
        fut.result(timeout=30)
    assert eventually(lambda: not alive(int(pidfile.read_text())))
    assert ex.submit(add, 1, 1).result(timeout=30) == 2


def test_walltime_starts_when_the_worker_is_ready(tmp_path, monkeypatch):
    """A fresh worker that takes longer to start than the walltime does not eat into it."""
    (tmp_path / "sitecustomize.py").write_text("import time\ntime.sleep(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with LocalExecutor(cores=1) as slow_start:
        assert slow_start.submit(sleep, 0.5, walltime=2.0).result(timeout=60) == 0.5


@pytest.mark.parametrize(
    "how, signame",
    [((die, signal.SIGKILL), "SIGKILL"), ((abort,), "SIGABRT"), ((segfault,), "SIGSEGV")],
)
def test_worker_death_fails_that_task_only(ex, how, signame):
    others = [ex.submit(sleep, 0.05) for _ in range(4)]
    fut = ex.submit(*how)
    with pytest.raises(WorkerLostError, match=f"task '{how[0].__name__}'.*{signame}"):
        fut.result(timeout=30)
    assert [f.result(timeout=30) for f in others] == [0.05] * 4
    assert ex.submit(add, 2, 2).result(timeout=30) == 4


def test_a_worker_killed_among_quick_tasks_blames_the_task_that_killed_it():
    """A worker holds the results of quick tasks for a moment and sends them together: when
    one of a batch kills it, the others are not blamed (they run again, one at a time)."""
    with LocalExecutor(cores=1) as one:
        assert [f.result(30) for f in [one.submit(add, i, 0) for i in range(300)]] == list(
            range(300)
        )  # the executor now knows these tasks are quick, and batches them
        gate = one.submit(sleep, 0.2)  # all of them become ready at once, when it ends
        before = [one.submit(add, i, gate) for i in range(20)]
        killer = one.submit(die, signal.SIGKILL, gate)
        after = [one.submit(add, i, gate) for i in range(60)]
        with pytest.raises(WorkerLostError, match="task 'die'.*SIGKILL"):
            killer.result(timeout=60)
        expected = [i + 0.2 for i in range(20)] + [i + 0.2 for i in range(60)]
        assert [f.result(30) for f in before + after] == expected


def test_retries(ex, tmp_path):
    assert ex.submit(die_once, tmp_path / "m1", retries=1).result(30) == "second attempt"
    assert ex.submit(fail_until, tmp_path / "m2", 2, retries=2).result(30) == 3
    with pytest.raises(RuntimeError, match="attempt 2 fails"):
        ex.submit(fail_until, tmp_path / "m3", 5, retries=1).result(30)


# -- bad input at submission ---------------------------------------------------------------


def test_bad_input_is_refused_at_submission(ex):
    with pytest.raises(TypeError, match="needs a callable"):
        ex.submit(42)
    with pytest.raises(TypeError, match="cannot send the function or its arguments"):
        ex.submit(add, Unpicklable(), 1)
    with pytest.raises(ValueError, match="cpus must be an int >= 0"):
        ex.submit(add, 1, 2, resources={"cpus": -1})
    with pytest.raises(ValueError, match="walltime must be"):
        ex.submit(add, 1, 2, walltime=-1)
    with pytest.raises(ValueError, match="retries must be"):
        ex.submit(add, 1, 2, retries=-1)
    with pytest.raises(ValueError, match="one node"):
        ex.submit(add, 1, 2, resources=Resources(ranks=2, ranks_per_node=1))


def test_get_executor():
    with pytest.raises(ValueError, match="unknown executor 'nope'; known: local, parsl"):
        get_executor("nope")
    ex = get_executor("local", cores=1)
    try:
        assert isinstance(ex, LocalExecutor) and isinstance(ex, Executor)
        assert get_executor(ex) is ex
        assert ex.submit(add, 1, 2).result(timeout=30) == 3
    finally:
        ex.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(add, 1, 2)


def test_constructor_rejects_bad_configuration():
    with pytest.raises(ValueError, match="not all usable"):
        LocalExecutor(cores=[9999])
    with pytest.raises(ValueError, match="gpus must be an int >= 0"):
        LocalExecutor(gpus=-1)
    with pytest.raises(ValueError, match="oversubscribe"):
        LocalExecutor(oversubscribe=0)
    with pytest.raises(ValueError, match="prestart must be"):
        LocalExecutor(prestart=-1)


# -- shutdown, cancellation and no orphans -----------------------------------------------


def test_shutdown_cancels_queued_and_stops_workers(tmp_path):
    ex = LocalExecutor(cores=1)
    running = ex.submit(sleep, 0.5)
    queued = [ex.submit(sleep, 5) for _ in range(3)]
    deadline = time.monotonic() + 30
    while not running.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = [p.pid for p in psutil.Process().children()]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result() == 0.5
    assert all(f.cancelled() for f in queued)
    assert eventually(lambda: not any(alive(pid) for pid in pids))


SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from simai.launch import LocalExecutor, Command

    def hang(pidfile):
        child = subprocess.Popen(["sleep", "60"])
        with open(pidfile, "w") as fh:
            fh.write(f"{os.getpid()} {child.pid}")
        time.sleep(60)

    if __name__ == "__main__":
        mode, folder = sys.argv[1], sys.argv[2]
        ex = LocalExecutor(log_dir=folder)
        fut = ex.submit(hang, os.path.join(folder, "task.pid"))
        cmd = ex.submit_command(Command(["sleep", "60"], name="sleeper"))
        pidfile = os.path.join(folder, "task.pid")
        while not os.path.exists(pidfile) or not os.path.getsize(pidfile):
            time.sleep(0.01)
        print("ready", flush=True)
        if mode == "exit":
            sys.stdin.readline()  # the test has counted the processes
            sys.exit(0)
        with ex:
            fut.result()
    """
)


@pytest.mark.parametrize("mode", ["exit", "sigint"])
def test_no_orphans_at_exit_or_ctrl_c(tmp_path, mode):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        # workers, the hanging task's child, the command
        assert eventually(lambda: len(psutil.Process(proc.pid).children(recursive=True)) >= 4)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        if mode == "sigint":
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
        else:
            proc.stdin.write("exit\n")
            proc.stdin.flush()
        proc.wait(timeout=30)
        gone, alive_ = psutil.wait_procs(descendants, timeout=10)
        assert not alive_, f"orphans left: {alive_}"
        task_pid, child_pid = map(int, (tmp_path / "task.pid").read_text().split())
        assert eventually(lambda: not alive(task_pid) and not alive(child_pid))
    finally:
        proc.kill()
        proc.wait()


def test_map_like_concurrent_futures(ex):
    assert list(ex.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="third"):
        list(ex.map(boom, ["third"]))
