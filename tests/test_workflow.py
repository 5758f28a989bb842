"""Workflows with real processes: components, restarts, records, stop, resume after SIGKILL."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import simai
from simai.workflow import (
    ComponentFailed,
    Records,
    RunDirLocked,
    RunDirMismatch,
    Workflow,
    WorkflowOptions,
)


def shm_runs() -> set[str]:
    return set(glob.glob(f"/dev/shm/simai-{os.geteuid()}/run-*"))


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != "zombie"}


@pytest.fixture
def clean():
    """Every test leaves no process and no shared memory behind."""
    shm, procs = shm_runs(), descendants()
    yield
    deadline = time.monotonic() + 10
    while descendants() - procs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert descendants() - procs == set()
    assert shm_runs() - shm == set()


def simulation(n: int) -> None:
    store = simai.open_store()
    for i in range(n):
        store.append("samples", np.full(8, i, np.float32))
    store.close_stream("samples")


def trainer() -> None:
    store = simai.open_store()
    seen = [int(x[0]) for x in store.stream("samples", timeout=60)]
    store.put("seen", np.array(seen))
    print("trainer saw", len(seen), "samples", flush=True)


@simai.task
def square(x: int) -> int:
    return x * x


def test_components_stream_and_tasks_run_with_records(tmp_path, clean):
    with Workflow("coupled", run_dir=tmp_path / "run") as wf:
        assert os.environ["SIMAI_STORE"] == wf.store_url
        sim = wf.start(simulation, 200, resources=simai.Resources(cpus=1))
        train = wf.start(trainer)
        assert [f.result(timeout=60) for f in [square(i) for i in range(6)]] == [
            0,
            1,
            4,
            9,
            16,
            25,
        ]
        assert sim.wait(60) == "done" and train.wait(60) == "done"
        np.testing.assert_array_equal(wf.store().get("seen"), np.arange(200))
    assert "SIMAI_STORE" not in os.environ or os.environ["SIMAI_STORE"] != wf.store_url
    assert "trainer saw 200 samples" in (tmp_path / "run/logs/trainer.log").read_text()
    summary = Records(tmp_path / "run/records.db", readonly=True).summary()
    states = {c["name"]: c["state"] for c in summary["components"]}
    assert states == {"simulation": "done", "trainer": "done"}
    assert summary["tasks"].get("done") == 6


def crash_at_once() -> None:
    print("about to fail", flush=True)
    raise SystemExit(3)


def test_component_that_fails_is_restarted_then_reported_with_its_log(tmp_path, clean):
    with Workflow("restarts", run_dir=tmp_path / "run") as wf:
        comp = wf.start(crash_at_once, restart="on-failure", max_restarts=2)
        with pytest.raises(ComponentFailed, match="about to fail"):
            comp.wait(60)
        assert comp.restarts == 2 and comp.state == "failed"
    events = Records(tmp_path / "run/records.db", readonly=True).events(name="crash_at_once")
    kinds = [e["event"] for e in events]
    assert kinds.count("restarting") == 2 and kinds.count("restarted") == 2
    assert kinds[-1] == "failed"
    assert (tmp_path / "run/logs/crash_at_once.log").read_text().count("about to fail") == 3


def test_missing_component_command_is_refused_at_start(tmp_path, clean):
    with Workflow("missing", run_dir=tmp_path / "run") as wf:
        with pytest.raises(FileNotFoundError, match="no-such-simulator"):
            wf.start(simai.Command(["no-such-simulator", "--steps", "3"]))


def serve_until_stopped(marker: str) -> None:
    Path(marker).write_text("serving")
    try:
        while True:
            time.sleep(0.05)
    finally:
        Path(marker).write_text("cleaned up")


def test_stop_is_graceful_and_executable_components_work(tmp_path, clean):
    marker = tmp_path / "marker"
    with Workflow("stop", run_dir=tmp_path / "run") as wf:
        service = wf.start(serve_until_stopped, str(marker), name="service")
        echo = wf.start(simai.Command(["sh", "-c", "echo from an executable"]), name="echo")
        assert echo.wait(60) == "done"
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:  # it serves: stop it
            time.sleep(0.05)
        assert service.stop(grace=10) == "stopped"
    assert marker.read_text() == "cleaned up"
    assert "from an executable" in (tmp_path / "run/logs/echo.log").read_text()


def test_second_workflow_on_the_same_run_dir_is_refused(tmp_path, clean):
    with Workflow("first", run_dir=tmp_path / "run"):
        with pytest.raises(RunDirLocked, match="in use by pid"):
            with Workflow("first", run_dir=tmp_path / "run"):
                pass


def test_run_dir_of_another_workflow_is_refused(tmp_path, clean):
    with Workflow("one", run_dir=tmp_path / "run"):
        pass
    with pytest.raises(RunDirMismatch, match="belongs to workflow 'one'"):
        with Workflow("two", run_dir=tmp_path / "run", resume=True):
            pass


def test_options_are_checked_when_made_and_against_the_store():
    with pytest.raises(ValueError, match=r"store_cores must be an int >= 0, not -1"):
        WorkflowOptions(store_cores=-1)
    with pytest.raises(TypeError, match=r"store_shards must be an int >= 1, not '2'"):
        WorkflowOptions(store_shards="2")
    with pytest.raises(ValueError, match=r"heartbeat_timeout must be a number of seconds > 0"):
        WorkflowOptions(heartbeat_timeout=0)
    with pytest.raises(ValueError, match="layout must be one of"):
        WorkflowOptions(layout="spread")
    with pytest.raises(ValueError, match="needs layout='colocated'"):
        WorkflowOptions(layout="clustered", store_cores=1)
    with pytest.raises(TypeError, match=r"store_shards must be an int >= 1, not np.int64\(2\)"):
        WorkflowOptions(store_shards=np.int64(2))
    with pytest.raises(TypeError, match="store_bind must be a host address, not 1"):
        WorkflowOptions(store_bind=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="store_bind must be a host address, not ''"):
        WorkflowOptions(store_bind="")
    with pytest.raises(ValueError, match=r"heartbeat_timeout must be longer than heartbeat_in"):
        WorkflowOptions(heartbeat_interval=10, heartbeat_timeout=1)
    with pytest.raises(ValueError, match=r"longer than heartbeat_interval \(2 s\), not 2 s"):
        WorkflowOptions(heartbeat_interval=2, heartbeat_timeout=2)
    options = WorkflowOptions(store_shards=2, heartbeat_interval=1)
    assert type(options.heartbeat_interval) is float and options.heartbeat_interval == 1.0
    with pytest.raises(AttributeError):
        options.layout = "clustered"  # type: ignore[misc]
    with pytest.raises(ValueError, match="needs store='redis'"):
        Workflow("placed", options=WorkflowOptions(store_cores=1))
    with pytest.raises(ValueError, match="an address they reach"):
        Workflow("spread", store="redis", options=WorkflowOptions(layout="clustered"))
    with pytest.raises(TypeError, match="options must be a WorkflowOptions"):
        Workflow("loose", options={"store_cores": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"name": ".."}, ValueError, r"name must be a workflow name .*not '\.\.'"),
        ({"name": "."}, ValueError, r"not '\.'"),
        ({"name": ""}, ValueError, r"name must be a workflow name .*not ''"),
        ({"name": "a/b"}, ValueError, r"not 'a/b'"),
        ({"name": "a b"}, ValueError, r"not 'a b'"),
        ({"name": 3}, TypeError, r"name must be a workflow name .*not 3"),
        ({"name": "ok", "store": 3}, TypeError, r"store must be 'local'.*not 3"),
        ({"name": "ok", "resume": "yes"}, TypeError, r"resume must be True, False or None"),
        ({"name": "ok", "resume": 1}, TypeError, r"resume must be True, False or None, not 1"),
        ({"name": "ok", "memoize": None}, TypeError, r"memoize must be True or False, not None"),
        ({"name": "ok", "executor": "slurm"}, ValueError, r"unknown executor 'slurm'; known: "),
        ({"name": "ok", "executor": 3}, TypeError, r"executor must be an Executor or a name"),
    ],
)
def test_workflow_arguments_are_checked_before_anything_is_made(
    tmp_path, monkeypatch, kwargs, error, message
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        Workflow(**kwargs)
    assert list(tmp_path.iterdir()) == []  # no run directory, not even runs/


def test_workflow_names_of_letters_digits_dots_dashes_and_underscores_are_taken(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "run-2.b_c", ".hidden", "..x"):
        assert Workflow(name).name == name
    assert not (tmp_path / "runs").exists()


def test_run_script_runs_a_script_as_python_would(tmp_path, monkeypatch, capsys):
    from simai.workflow import run_script

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("SIMAI_RESUME", raising=False)
    (tmp_path / "run_script_helper.py").write_text("WHO = 'helper'\n")
    script = tmp_path / "wf.py"
    script.write_text(
        "import os, sys\nfrom run_script_helper import WHO\n"
        "print(__name__, WHO, sys.argv[1:], os.environ.get('SIMAI_RESUME'))\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    assert run_script(script, ["0"]) == 0
    assert run_script(str(script), ["3"], resume=True) == 3
    assert capsys.readouterr().out.splitlines() == [
        "__main__ helper ['0'] None",
        "__main__ helper ['3'] 1",
    ]
    with pytest.raises(FileNotFoundError, match="no workflow script"):
        run_script(tmp_path / "missing.py")


RESUMABLE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import numpy as np
    import simai

    RUN, MARKS = sys.argv[1], Path(sys.argv[2])

    @simai.task
    def step(i):
        (MARKS / f"{i}-{os.getpid()}-{time.time_ns()}").touch()
        simai.open_store().put(f"result/{i}", np.full(1000, i))
        if i == 5 and not (MARKS / "second-run").exists():
            time.sleep(600)  # the first run is killed here
        return i * 10

    with simai.Workflow("resumable", run_dir=RUN, store=sys.argv[3], keep_store=["result/"]):
        results = []
        for i in range(8):
            results.append(step(i).result())
            print("finished", i, flush=True)
        print("results", results, flush=True)
    """
)


@pytest.mark.parametrize(
    "store, victims", [("local", "workflow"), ("redis", "workflow"), ("local", "workflow+writer")]
)
def test_sigkilled_run_resumes_without_redoing_or_losing_anything(tmp_path, clean, store, victims):
    script = tmp_path / "wf.py"
    script.write_text(RESUMABLE)
    marks = tmp_path / "marks"
    marks.mkdir()
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, str(script), str(run), str(marks), store],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in first.stdout:
        if line.startswith("finished 4"):
            break
    deadline = time.monotonic() + 30
    while not any(m.name.startswith("5-") for m in marks.iterdir()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    if victims == "workflow+writer":  # the memo journals are then folded in on resume
        (writer,) = [
            p
            for p in psutil.Process(first.pid).children(recursive=True)
            if any("_recorder.py" in part for part in p.cmdline())
        ]
        writer.kill()
    os.kill(first.pid, signal.SIGKILL)  # workers and shards follow their parent's death
    first.wait()
    (marks / "second-run").touch()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "simai.cli",
            "run",
            "--resume",
            str(script),
            str(run),
            str(marks),
            store,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "results [0, 10, 20, 30, 40, 50, 60, 70]" in out.stdout
    runs_of = {i: len([m for m in marks.iterdir() if m.name.startswith(f"{i}-")]) for i in range(8)}
    assert runs_of == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1, 7: 1}
    with Workflow("resumable", run_dir=run, store=store, resume=True) as wf:
        s = wf.store()
        for i in range(8):
            np.testing.assert_array_equal(s.get(f"result/{i}"), np.full(1000, i))
    attempts = Records(run / "records.db", readonly=True).runs()
    assert [a["status"] for a in attempts][:2] == ["interrupted", "done"]


LONG_RUN = textwrap.dedent(
    """
    import sys, time
    import simai

    def service():
        while True:
            time.sleep(0.1)

    with simai.Workflow("long", run_dir=sys.argv[1], store=sys.argv[2]) as wf:
        wf.start(service)
        wf.start(simai.Command(["sleep", "300"]), name="sleeper")
        print("started", flush=True)
        time.sleep(300)
    """
)


def start_long_run(tmp_path, store="local"):
    script = tmp_path / "long.py"
    script.write_text(LONG_RUN)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run"), store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "started"
    return proc


def run_tree(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def long_run_tree(proc: subprocess.Popen) -> set[int]:
    """The processes of a started LONG_RUN: its store shard, runners and sleep, once its
    components (which start on their own) have started them."""
    deadline = time.monotonic() + 20
    while len(tree := run_tree(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(tree) >= 3, tree
    return tree


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "simai stop"])
def test_stopping_a_run_leaves_nothing_behind(tmp_path, clean, how, request):
    proc = start_long_run(tmp_path, store="redis")
    request.addfinalizer(proc.kill)
    tree = long_run_tree(proc)
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif how == "ctrl-c":
        proc.send_signal(signal.SIGINT)
    else:
        out = subprocess.run(
            [sys.executable, "-m", "simai.cli", "stop", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(tree) == set()
    attempts = Records(tmp_path / "run/records.db", readonly=True).runs()
    assert attempts[-1]["status"] == "interrupted"


def test_a_dead_store_shard_fails_the_run_clearly(tmp_path, clean, request):
    proc = start_long_run(tmp_path, store="redis")
    request.addfinalizer(proc.kill)
    shard = next(
        p for p in psutil.Process(proc.pid).children() if "redis-server" in " ".join(p.cmdline())
    )
    tree = long_run_tree(proc)
    shard.kill()
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert "redis-server shard of the run's store died" in proc.stderr.read()
    deadline = time.monotonic() + 10
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(tree) == set()


def where_am_i() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def test_colocated_layout_splits_cores_between_store_and_tasks(tmp_path, clean):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores")
    placed = WorkflowOptions(store_cores=1)
    with Workflow("placed", run_dir=tmp_path / "run", store="redis", options=placed) as wf:
        shard_pid = wf._servers.pids[0]
        assert sorted(os.sched_getaffinity(shard_pid)) == cores[:1]
        seen = {c for f in [wf.submit(where_am_i) for _ in range(4)] for c in f.result(60)}
        assert seen and seen.isdisjoint(cores[:1])
        wf.store().put("x", np.arange(3))


@pytest.mark.parametrize("args", [[], ["--store", "redis", "--store-cores", "1"]])
def test_readme_coupled_example_runs_in_both_layouts(tmp_path, clean, args):
    example = Path(__file__).resolve().parent.parent / "examples" / "coupled.py"
    out = subprocess.run(
        [sys.executable, str(example), "--steps", "100", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "trainer summary: {'samples': 6400, 'error': 0.0}" in out.stdout
    assert "consumed 6400 samples" in (tmp_path / "runs/coupled/logs/trainer.log").read_text()


def stalls_once(marker: str) -> None:
    """Freezes itself (SIGSTOP: no heartbeat, no exit) on its first run, finishes on the next."""
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGSTOP)
    print("second run finished", flush=True)


def test_a_component_whose_heartbeat_stops_is_killed_and_restarted(tmp_path, clean):
    marker = tmp_path / "stalled"
    with Workflow(
        "hb",
        run_dir=tmp_path / "run",
        options=WorkflowOptions(heartbeat_interval=0.2, heartbeat_timeout=2.0),
    ) as wf:
        comp = wf.start(stalls_once, str(marker), restart="on-failure", max_restarts=1)
        assert comp.wait(60) == "done"
        assert comp.restarts == 1
    events = Records(tmp_path / "run/records.db", readonly=True).events(name="stalls_once")
    details = [e["detail"] or "" for e in events]
    assert any("no heartbeat" in d for d in details)
    assert "second run finished" in (tmp_path / "run/logs/stalls_once.log").read_text()


def _kept(run: Path) -> list[str]:
    kept = run / "store" / "local"
    return sorted(p.name for p in kept.iterdir()) if kept.is_dir() else []


def test_what_a_node_local_store_keeps_is_explicit_and_cheap(tmp_path, clean):
    run = tmp_path / "run"
    with Workflow("keep", run_dir=run) as wf:  # completes: nothing kept
        wf.store().put("big/x", np.zeros(1 << 20))
    assert _kept(run) == []
    with pytest.raises(RuntimeError):  # does not complete: everything kept for the resume
        with Workflow("keep", run_dir=run) as wf:
            s = wf.store()
            s.put("big/x", np.ones(1 << 20))
            s.append("samples", np.arange(3))
            raise RuntimeError("the run fails")
    assert _kept(run) == ["data.mdb"]
    assert (run / "store" / "local" / "data.mdb").stat().st_size < 12 << 20  # live data only
    with Workflow("keep", run_dir=run, resume=True, keep_store=["results/"]) as wf:
        s = wf.store()
        np.testing.assert_array_equal(s.get("big/x"), np.ones(1 << 20))
        np.testing.assert_array_equal(next(s.stream("samples")), np.arange(3))
        s.put("results/best", {"loss": 0.5})
        s.create_stream("results/log", maxlen=4, policy="drop_oldest")
        s.append("results/log", 7)
    with Workflow("keep", run_dir=run, resume=True) as wf:
        s = wf.store()
        assert s.keys() == ["results/best"] and s.get("results/best") == {"loss": 0.5}
        assert s.stream_info("results/log")["maxlen"] == 4 and s.stream_len("samples") == 0
        assert next(s.stream("results/log")) == 7
    assert _kept(run) == []


def test_run_directories_are_private(tmp_path, clean):
    run = tmp_path / "run"
    with Workflow("private", run_dir=run):
        pass
    for d in (run, run / "logs", run / "store", run / "memo"):
        assert d.stat().st_mode & 0o777 == 0o700, d
    assert (run / "records.db").stat().st_mode & 0o077 == 0
    os.chmod(run, 0o777)
    with pytest.raises(PermissionError, match="can be written by other users"):
        with Workflow("private", run_dir=run, resume=True):
            pass
