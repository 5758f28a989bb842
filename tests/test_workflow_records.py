"""The run directory and the records database: real processes, real SIGKILLs, the real CLI."""

from __future__ import annotations

import json
import marshal
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

import simai
from simai import cli
from simai.launch import task as simai_task
from simai.workflow import (
    Records,
    RecordsClosed,
    RunDir,
    RunDirLocked,
    RunDirMismatch,
    WorkflowOptions,
    log_stem,
)

SIMAI = str(Path(sys.executable).with_name("simai"))


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.02)
    return False


def _rows(attempt: int, host: str, rows: list[tuple]) -> bytes:
    """A TASK item's rows, as Records.tasks sends them to the writer."""
    return marshal.dumps((attempt, host, rows))


def _memo_keys(records: Records) -> set[str]:
    """Every memo key committed to the records (read with sqlite3 itself)."""
    with sqlite3.connect(f"{records.path.absolute().as_uri()}?mode=ro", uri=True) as db:
        return {key for (key,) in db.execute("SELECT key FROM memo")}


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen]]:
    """Subprocesses a test starts; killed and reaped at the end whatever happens."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()


# --- records --------------------------------------------------------------------------------


def test_records_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "records.db"
    with Records(db) as r:
        assert r.start_run() == 1
        r.event("component", "sim", "started", worker=11, resources={"cpus": 2})
        r.event("component", "trainer", "started", worker=12)
        r.event("component", "trainer", "failed", detail="RuntimeError: diverged")
        r.event("component", "trainer", "restarting")
        r.event("component", "trainer", "restarted", worker=13)
        for i in range(5):
            r.event("task", "simulate", "submitted", i, resources={"cpus": 1})
            r.event("task", "simulate", "started", i, worker=i % 2, host="node7")
        for i in range(3):
            r.event("task", "simulate", "finished", i)
        r.event("task", "simulate", "failed", 3, detail="ValueError: bad period")
        r.event("task", "simulate", "retried", 4, detail="WorkerLostError: killed")
        r.event("task", "analyse", "submitted", "a")
        r.event("task", "quick", "submitted", "q", at=100.0)
        r.event("task", "quick", "finished", "q", at=102.5, started=101.0, worker=7)
        r.log_metric("loss", 0.25, step=3, source="trainer")
        r.end_run("failed")
        assert r.start_run() == 2
        r.event("task", "simulate", "started", 4, worker=1)
        r.event("task", "simulate", "finished", 4)
        r.flush()
        s = r.summary()

    assert [(a["attempt"], a["status"]) for a in s["runs"]] == [(1, "failed"), (2, "running")]
    # each attempt has its rows; what attempt 1 left unended is lost when attempt 2 starts
    assert s["tasks"] == {"done": 5, "failed": 1, "lost": 2}
    assert [a["tasks"] for a in s["runs"]] == [{"done": 4, "failed": 1, "lost": 2}, {"done": 1}]
    assert s["task_names"] == {
        "simulate": {"done": 4, "failed": 1, "lost": 1},
        "analyse": {"lost": 1},
        "quick": {"done": 1},
    }
    comps = {c["name"]: c for c in s["components"]}
    assert comps["sim"]["state"] == "lost" and comps["sim"]["restarts"] == 0
    assert comps["trainer"]["state"] == "lost" and comps["trainer"]["restarts"] == 1
    assert comps["trainer"]["worker"] == "13"
    assert s["failures_total"] == 1
    assert s["failures"][0]["item_id"] == "3" and "bad period" in s["failures"][0]["detail"]
    assert s["events"]["component"]["restarting"] == 1
    assert s["events"]["task"] == {"failed": 1, "retried": 1}

    ro = Records(db, readonly=True)
    rows = {(t["attempt"], t["name"], t["item_id"]): t for t in ro.tasks_table()}
    lost, t4 = rows[(1, "simulate", "4")], rows[(2, "simulate", "4")]
    assert (lost["state"], lost["retries"], lost["worker"]) == ("lost", 1, "0")
    assert lost["host"] == "node7" and json.loads(lost["resources"]) == {"cpus": 1}
    assert lost["submitted"] <= lost["ended"] == s["runs"][0]["ended"]
    assert (t4["state"], t4["retries"], t4["worker"]) == ("done", 0, "1")
    assert t4["started"] <= t4["ended"]
    assert rows[(1, "analyse", "a")]["state"] == "lost"
    assert rows[(1, "simulate", "3")]["detail"] == "ValueError: bad period"
    q = rows[(1, "quick", "q")]
    assert (q["submitted"], q["started"], q["ended"], q["worker"]) == (100.0, 101.0, 102.5, "7")
    assert [e["event"] for e in ro.events(name="trainer")] == [
        "started",
        "failed",
        "restarting",
        "restarted",
        "lost",
    ]
    assert [e["event"] for e in ro.events(kind="task", item_id=4)] == ["retried"]
    assert [(m["name"], m["value"], m["step"]) for m in ro.metrics()] == [("loss", 0.25, 3)]
    assert len(ro.tasks_table(state="done")) == 5
    with pytest.raises(RecordsClosed, match="read-only"):
        ro.event("task", "x", "submitted", 1)
    ro.close()


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with Records(tmp_path / "r.db") as r:
        with pytest.raises(ValueError, match="unknown record kind 'job'"):
            r.event("job", "x", "started")
        with pytest.raises(ValueError, match="'begun'"):
            r.event("task", "x", "begun", 1)
        with pytest.raises(ValueError, match="needs an item_id"):
            r.event("task", "x", "started")
    with pytest.raises(RecordsClosed, match="closed"):
        r.event("component", "x", "started")
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="not a simai records database"):
        Records(tmp_path / "junk.db", readonly=True)
    with pytest.raises(FileNotFoundError, match="no records database"):
        Records(tmp_path / "missing.db", readonly=True)


def _set_user_version(path: Path, version: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={version}")


def test_a_database_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    from simai.workflow.records import SCHEMA_VERSION

    path = tmp_path / "r.db"
    with Records(path) as r:
        r.start_run()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with Records(path) as r:  # its own version: opened again, for writing and reading
        assert r.start_run() == 2
    with Records(path, readonly=True) as ro:
        assert len(ro.runs()) == 2
    clear = rf"{path} was made by another simai version .*start a fresh run or use that version"
    for version in (SCHEMA_VERSION + 1, 2, 0):  # newer, older, made before versions were kept
        _set_user_version(path, version)
        for readonly in (False, True):
            with pytest.raises(ValueError, match=clear):
                Records(path, readonly=readonly)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    for readonly in (False, True):
        with pytest.raises(ValueError, match="not a simai records database"):
            Records(other, readonly=readonly)

    rd = RunDir(tmp_path / "runs" / "old")
    rd.write_config(workflow="old", identity="old")
    with Records(rd.records_path) as r:
        r.start_run()
    _set_user_version(rd.records_path, SCHEMA_VERSION + 1)
    for command in ("status", "report"):
        out = _simai(command, "old", cwd=tmp_path)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "made by another simai version" in out.stderr, out.stderr


def test_batched_writes_are_committed_by_close(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    r = Records(db, interval=3600, batch=10**9)
    r.start_run()
    for i in range(2000):
        r.event("task", "t", "submitted", i)
        r.event("task", "t", "finished", i)
    ro = Records(db, readonly=True)
    assert ro.summary()["tasks"] == {}
    r.close()
    assert ro.summary()["tasks"] == {"done": 2000}
    ro.close()


def test_memo_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    blob = pickle.dumps(np.arange(12, dtype=np.float32).reshape(3, 4))
    with Records(db) as r, Records(db, readonly=True) as reader:
        r._memo_put_many([("k-array", "simulate", blob)])
        hit = reader._memo_get("k-array")  # durable: visible to another connection at once
        assert hit is not None and hit.name == "simulate" and hit.status == "done"
        assert hit.result == blob
        r._memo_put_many([("k-bytes", "f", b"\x00\x01")], durable=False)
        r.flush()
        assert reader._memo_get("k-bytes").result == b"\x00\x01"
        assert reader._memo_get("missing") is None
        assert _memo_keys(reader) == {"k-array", "k-bytes"}
        with pytest.raises(TypeError, match="kept as bytes"):
            r._memo_put_many([("k-ok", "f", b"1"), ("k-obj", "f", {1, 2})])  # type: ignore[list-item]
        r.flush()
        assert _memo_keys(reader) == {"k-array", "k-bytes"}  # none of a bad batch is kept


def test_on_durable_runs_after_the_commit(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    seen: list[tuple[str, object]] = []
    done = threading.Event()
    with Records(db, interval=0.2) as r, Records(db, readonly=True) as reader:

        def durable(error: BaseException | None) -> None:
            hit = reader._memo_get("k")
            seen.append((threading.current_thread().name, error, hit and hit.result))
            done.set()

        r._memo_put_many([("k", "f", b"[1, 2]")], on_durable=durable)
        assert done.wait(10)
    assert seen == [("simai-records", None, b"[1, 2]")]


def test_writer_process_death_is_reported(tmp_path: Path) -> None:
    r = Records(tmp_path / "r.db")
    errors: list[BaseException | None] = []
    r.event("component", "sim", "started")
    r.flush()
    os.kill(r._proc.pid, signal.SIGKILL)
    r.event("component", "sim", "finished")
    r._after_commit(errors.append)
    with pytest.raises(RecordsClosed, match="writer process exited with status -9"):
        r.flush()
    assert len(errors) == 1 and isinstance(errors[0], RecordsClosed)
    with pytest.raises(RecordsClosed, match="failed"):
        r.event("component", "sim", "stopped")
    with pytest.raises(RecordsClosed, match="failed"):
        r.close()
    with Records(tmp_path / "r.db", readonly=True) as ro:
        assert [e["event"] for e in ro.events()] == ["started"]


def test_two_writer_processes_share_a_database(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    a, b = Records(db, interval=0.001), Records(db, interval=0.001)
    try:
        assert a._proc.pid != b._proc.pid
        for i in range(3000):
            a.event("task", "a", "finished", i)
            b.event("task", "b", "finished", i)
    finally:
        a.close()
        b.close()
    with Records(db, readonly=True) as ro:
        assert ro.summary()["task_names"] == {"a": {"done": 3000}, "b": {"done": 3000}}


_WRITER = """
    import sys
    from simai.workflow import Records
    r = Records(sys.argv[1], interval=0.005)
    r.start_run()
    print("recorder", r._proc.pid, flush=True)
    i = 0
    while True:
        r.event("task", "t", "submitted", i)
        r.event("task", "t", "started", i, worker=i % 4)
        r.event("task", "t", "finished", i)
        if i % 50 == 49:
            r.event("component", "sim", "restarting")
            r._memo_put_many([(f"m{i}", "t", str(i).encode())])  # durable: committed on return
            print("memo", i, flush=True)
        i += 1
"""


@pytest.mark.parametrize("victims", ["process", "process+recorder"])
def test_sigkill_mid_write_leaves_a_consistent_prefix(
    tmp_path: Path, children: list[subprocess.Popen], victims: str
) -> None:
    db = tmp_path / "records.db"
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), str(db)], stdout=subprocess.PIPE, text=True
    )
    children.append(p)
    recorder = int(p.stdout.readline().split()[1])
    last_memo = -1
    while last_memo < 500:
        line = p.stdout.readline()
        assert line.startswith("memo"), f"writer stopped: {line!r}"
        last_memo = int(line.split()[1])
    os.kill(p.pid, signal.SIGKILL)
    if victims == "process+recorder":
        os.kill(recorder, signal.SIGKILL)
    p.wait()
    assert _wait_gone(recorder), "the records writer process outlived its workflow"

    with Records(db, readonly=True) as ro:
        s = ro.summary()
        rows = ro.tasks_table()
        ids = sorted(int(t["item_id"]) for t in rows)
        assert ids == list(range(len(ids))), "committed tasks are not a prefix"
        assert len(ids) > last_memo
        states = {int(t["item_id"]): t["state"] for t in rows}
        assert all(states[i] == "done" for i in ids[:-1])
        assert ro._memo_get(f"m{last_memo}").result == str(last_memo).encode()
        assert s["tasks"]["done"] >= last_memo + 1
        assert s["components"][0]["restarts"] >= (last_memo + 1) // 50
        assert ro.runs()[0]["status"] == "running"
    with Records(db) as again:
        assert again.start_run() == 2
        assert [r["status"] for r in again.runs()] == ["interrupted", "running"]


def test_a_task_row_is_one_write_and_unended_tasks_show_within_the_hold(tmp_path: Path) -> None:
    db = tmp_path / "records.db"
    with Records(db, hold=0.2) as r, Records(db, readonly=True) as ro:
        r.start_run()
        r.event("task", "short", "submitted", 1, resources={"cpus": 1}, at=10.0)
        r.event("task", "short", "started", 1, worker=3, at=11.0)
        r.event("task", "short", "finished", 1, at=12.0)
        r.event("task", "long", "submitted", 2, at=10.0)
        committed = threading.Event()
        r._after_commit(lambda error: committed.set())
        assert committed.wait(30)
        (short,) = ro.tasks_table(name="short")  # ended: written with its frame
        assert (short["state"], short["submitted"], short["started"], short["ended"]) == (
            "done",
            10.0,
            11.0,
            12.0,
        )
        assert (short["worker"], json.loads(short["resources"])) == ("3", {"cpus": 1})
        deadline = time.monotonic() + 30
        while not ro.tasks_table(name="long"):  # not ended: written once the hold is over
            assert time.monotonic() < deadline, "an unended task's row was never written"
            time.sleep(0.05)
        assert ro.tasks_table(name="long")[0]["state"] == "submitted"


_HOLDER = """
    import sys, threading
    from simai.workflow import Records
    r = Records(sys.argv[1], hold=3600)  # only the end of input writes the held rows
    r.start_run()
    for i in range(100):
        r.event("task", "queued", "submitted", i)
    sent = threading.Event()
    r._after_commit(lambda error: sent.set())  # the frame reached the writer, which holds it
    sent.wait()
    print("recorder", r._proc.pid, flush=True)
    threading.Event().wait()
"""


def test_held_task_rows_are_committed_when_the_workflow_is_sigkilled(
    tmp_path: Path, children: list[subprocess.Popen]
) -> None:
    db = tmp_path / "records.db"
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLDER), str(db)], stdout=subprocess.PIPE, text=True
    )
    children.append(p)
    recorder = int(p.stdout.readline().split()[1])
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert _wait_gone(recorder), "the records writer process outlived its workflow"
    with Records(db, readonly=True) as ro:
        assert ro.summary()["tasks"] == {"submitted": 100}


# --- run directory ----------------------------------------------------------------------------


def test_run_dir_layout_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rd = RunDir("runs/wave")
    assert rd.path == tmp_path / "runs" / "wave"
    assert rd.logs_dir.is_dir() and rd.store_dir.is_dir()
    assert not RunDir.exists(rd.path)
    cfg = rd.write_config(workflow="wave", identity="wave:1", store="local")
    assert cfg["simai_version"] == simai.__version__ and cfg["created"] > 0
    rd.write_config(executor="local")
    assert rd.config() | {"created": 0} == cfg | {"executor": "local", "created": 0}
    assert RunDir.exists(rd.path)
    assert RunDir(rd.path, create=False).config()["identity"] == "wave:1"
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        RunDir(tmp_path / "elsewhere", create=False)


def test_identity_mismatch_is_refused(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd._check_identity("anything")  # a new run directory
    rd.write_config(workflow="wave", identity="wave:abc")
    rd._check_identity("wave:abc")
    with pytest.raises(RunDirMismatch, match="belongs to workflow 'wave'.*'molecules:123'"):
        RunDir(tmp_path / "run")._check_identity("molecules:123")
    assert issubclass(RunDirMismatch, ValueError)


def test_log_names_are_safe_and_distinct(tmp_path: Path) -> None:
    assert log_stem("trainer") == "trainer"
    assert log_stem("sim/0") != log_stem("sim_0") == "sim_0"
    assert "/" not in log_stem("../../etc/passwd") and not log_stem("../x").startswith(".")
    with pytest.raises(ValueError, match="non-empty"):
        log_stem("")
    rd = RunDir(tmp_path / "run")
    rd.log_path("sim/0").write_text("x\n")
    assert rd.find_log("sim/0") == rd.log_path("sim/0")
    assert rd.find_log(log_stem("sim/0")) == rd.log_path("sim/0")
    with pytest.raises(KeyError, match=r"no log named 'other'.*sim_0-"):
        rd.find_log("other")


_LOCKER = """
    import sys
    from simai.workflow import RunDir
    rd = RunDir(sys.argv[1])
    rd.lock()
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_second_lock_is_refused_and_sigkill_releases_it(
    tmp_path: Path, children: list[subprocess.Popen]
) -> None:
    path = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_LOCKER), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(p)
    assert p.stdout.readline() == "locked\n"
    rd = RunDir(path)
    with pytest.raises(RunDirLocked, match=f"in use by pid {p.pid} on ") as err:
        rd.lock()
    assert err.value.pid == p.pid
    assert rd.holder()["pid"] == p.pid
    p.kill()
    p.wait()
    assert rd.holder() is None
    with rd:
        assert rd.holder()["pid"] == os.getpid()
        with pytest.raises(RunDirLocked, match=f"pid {os.getpid()}"):
            RunDir(path).lock()  # a second object in the same process is refused too
    assert rd.holder() is None


# --- CLI ----------------------------------------------------------------------------------------


def _fill_run(rd: RunDir) -> None:
    rd.write_config(workflow="wave", identity="wave:1", store="local", executor="local")
    with Records(rd.records_path) as r:
        r.start_run()
        r.end_run("failed")
        r.start_run()
        r.event("component", "sim", "started", worker=101)
        r.event("component", "trainer", "started", worker=102)
        r.event("component", "trainer", "failed", detail="Traceback\nRuntimeError: diverged")
        r.event("component", "trainer", "restarting")
        for i in range(6):
            r.event("task", "simulate", "submitted", f"p{i}")
            r.event("task", "simulate", "started", f"p{i}", worker=i % 2)
            if i < 4:
                r.event("task", "simulate", "finished", f"p{i}")
        r.event("task", "simulate", "failed", "p4", detail="Traceback\nValueError: bad period 4")
    rd.log_path("trainer").write_text("".join(f"epoch {i}\n" for i in range(50)))


def _simai(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SIMAI, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_status_and_logs(tmp_path: Path, children: list[subprocess.Popen]) -> None:
    rd = RunDir(tmp_path / "runs" / "wave")
    _fill_run(rd)

    out = _simai("status", "wave", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "workflow wave, store local, executor local" in text
    assert "live: no" in text
    lines = text.splitlines()
    attempt1 = next(line for line in lines if line.strip().startswith("1 "))
    assert attempt1.split()[-3] == "failed"
    attempt2 = next(line for line in lines if line.strip().startswith("2 "))
    assert "interrupted" in attempt2  # recorded running, but no process holds the lock
    trainer = next(line for line in lines if line.strip().startswith("trainer"))
    assert trainer.split()[:4] == ["trainer", "restarting", "1", "restarting"]
    assert next(line for line in lines if line.strip().startswith("all")).split() == [
        "all",
        "1",
        "4",
        "1",
    ]
    assert "failures: 1" in text and "ValueError: bad period 4" in text
    assert "task simulate[p4]" in text

    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_LOCKER), str(rd.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(p)
    assert p.stdout.readline() == "locked\n"
    out = _simai("status", str(rd.path), "--json", cwd=tmp_path / "runs")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["live"]["pid"] == p.pid
    assert [r["status"] for r in data["runs"]] == ["failed", "running"]
    assert data["tasks"] == {"running": 1, "done": 4, "failed": 1}
    assert data["config"]["identity"] == "wave:1"
    assert {c["name"]: c["restarts"] for c in data["components"]} == {"sim": 0, "trainer": 1}
    assert data["failures"][0]["detail"].endswith("bad period 4")

    out = _simai("logs", "wave", "trainer", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == rd.log_path("trainer").read_text()
    out = _simai("logs", "wave", "trainer", "--tail", "2", cwd=tmp_path)
    assert out.stdout == "epoch 48\nepoch 49\n"
    out = _simai("logs", "wave", "simulation", cwd=tmp_path)
    assert out.returncode == 1
    assert "no log named 'simulation'" in out.stderr and "logs there: trainer" in out.stderr
    out = _simai("status", "nowhere", cwd=tmp_path)
    assert out.returncode == 1
    assert "no run directory 'nowhere'" in out.stderr and "runs under" in out.stderr
    assert "wave" in out.stderr
    out = _simai("status", "wave", "--names", "0", cwd=tmp_path)
    assert out.returncode == 2
    assert "argument --names: names must be an int >= 1, not 0" in out.stderr


def test_cli_reports_a_refused_argument_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(args: object) -> int:
        raise TypeError("shards must be an int >= 1, not '2'")

    monkeypatch.setattr(cli, "store_env", refuse)
    assert cli.main(["store", "env"]) == 1
    assert capsys.readouterr().err == "simai store: error: shards must be an int >= 1, not '2'\n"
    with pytest.raises(SystemExit):
        cli.main(["store", "start", "--shards", "0"])
    assert "argument --shards: shards must be an int >= 1, not 0" in capsys.readouterr().err


def test_simai_run_shows_a_scripts_error_as_python_does(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def f(a):\n    return a + 'x'\n\nf(1)\n")
    out = _simai("run", "bad.py", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith('Traceback (most recent call last):\n  File "bad.py", line 4')
    assert out.stderr.rstrip().endswith(
        "TypeError: unsupported operand type(s) for +: 'int' and 'str'"
    )
    assert "simai/" not in out.stderr  # the script's frames only
    out = _simai("run", "missing.py", cwd=tmp_path)
    assert (
        out.returncode == 1 and out.stderr == "simai run: error: no workflow script 'missing.py'\n"
    )


# --- memo keys made by the local executor's workers ------------------------------------------


def _echo(*args: object, **kwargs: object) -> tuple:
    return args, kwargs


def _unless_seventh(i: int) -> int:
    if i % 7 == 6:
        raise ValueError(f"seventh {i}")
    return i


def _append_zero(items: list) -> int:
    items.append(0)  # changes its argument: the memo key is of the arguments it was given
    return len(items)


@simai_task
def _scaled(x: float, factor: float = 2.0) -> float:
    return x * factor


def test_a_resume_recalls_every_task_whatever_its_arguments(tmp_path: Path) -> None:
    """Plain arguments get their memo key in the worker, others in the workflow: a resume
    finds them all, a task that changes its arguments by the arguments it was given."""
    from simai import Workflow

    view = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous
    calls: list[tuple[object, tuple, dict]] = [
        (_echo, (1, "a", 2.5, None), {}),
        (_echo, ((1, 2), [3, {"x": None, "y": "z" * 3}]), {"k": b"\x00\x01", "a": -0.0}),
        (_echo, (view, np.int64(7)), {"b": True, "s": frozenset({3, 1, 2})}),
        (_echo, (), {"only": {"nested": [1.5, "é"]}}),
        (_scaled, (1.5,), {"factor": 4}),  # the workers see the function it wraps
        (_append_zero, ([5, 6],), {}),
    ]
    run = tmp_path / "run"
    with Workflow("keys", store="file", run_dir=run, resume=False) as wf:
        first = [wf.submit(fn, *args, **kw).result() for fn, args, kw in calls]
    with Records(run / "records.db", readonly=True) as ro:  # journals folded in at the end
        assert len(_memo_keys(ro)) == len(calls)
    assert not any((run / "memo").iterdir())
    with Workflow("keys", store="file", run_dir=run, resume=True) as wf:
        again = [wf.submit(fn, *args, **kw).result() for fn, args, kw in calls]
        assert wf.executor.memo.recalled == len(calls)  # type: ignore[union-attr]
    assert again[-1] == first[-1] == 3 and again[-2] == first[-2] == 6.0
    np.testing.assert_array_equal(again[2][0][0], view)
    assert again[:2] == first[:2] and again[3] == first[3]


def test_plain_arguments_are_keyed_by_the_writer_and_old_keys_still_recall(
    tmp_path: Path,
) -> None:
    """The workers journal plain arguments and the records writer hashes them into the key
    the workflow computes (memokey.atom_key); a memo kept under the pickle-based key of an
    older simai is recalled too, so that resuming its run redoes nothing."""
    from simai import Workflow
    from simai.launch.memokey import atom_key, function_ident, legacy_function_key

    calls = [((1, "é", -0.0, None, b"\x00", True), {}), ((2**70, 0.1), {"z": 1, "a": "x"})]
    run = tmp_path / "run"
    with Workflow("atoms", store="file", run_dir=run, resume=False) as wf:
        for args, kw in calls:
            wf.submit(_echo, *args, **kw).result()
    ident = function_ident(_echo)
    want = {atom_key(ident, args, sorted(kw.items())) for args, kw in calls}
    with Records(run / "records.db", readonly=True) as ro:
        assert _memo_keys(ro) == want
    legacy = {atom_key(ident, a, sorted(k.items())): legacy_function_key(_echo, a, k)
              for a, k in calls}  # fmt: skip
    with sqlite3.connect(run / "records.db") as db:  # as an older simai would have kept them
        for new, old in legacy.items():
            db.execute("UPDATE memo SET key = ? WHERE key = ?", (old, new))
    with Workflow("atoms", store="file", run_dir=run, resume=True) as wf:
        assert [wf.submit(_echo, *a, **k).result() for a, k in calls] == [(a, k) for a, k in calls]
        assert wf.executor.memo.recalled == len(calls)  # type: ignore[union-attr]


@pytest.mark.parametrize("journal", ["kept", "gone"])
def test_results_with_memos_and_errors_between_them_reach_their_futures(
    tmp_path: Path, journal: str
) -> None:
    """A worker sends the results of quick tasks with memos together, between the frames of
    failed ones; with its journal directory gone, it reports them as not kept and the
    workflow's memo keeps them. Either way each future gets its own result and a resume
    recalls every finished task."""
    import shutil

    from simai import Workflow

    def outcomes(futures: list) -> list:
        errors = [f.exception() for f in futures]
        return [f.result() if e is None else str(e) for f, e in zip(futures, errors, strict=True)]

    expected = [f"seventh {i}" if i % 7 == 6 else i for i in range(300)]
    run = tmp_path / "run"
    with Workflow("mixed", store="file", run_dir=run, resume=False) as wf:
        if journal == "gone":
            shutil.rmtree(run / "memo")
        assert outcomes([wf.submit(_unless_seventh, i) for i in range(300)]) == expected
    finished = sum(1 for e in expected if isinstance(e, int))
    with Records(run / "records.db", readonly=True) as ro:
        assert len(_memo_keys(ro)) == finished
    with Workflow("mixed", store="file", run_dir=run, resume=True) as wf:
        assert outcomes([wf.submit(_unless_seventh, i) for i in range(300)]) == expected
        assert wf.executor.memo.recalled == finished  # type: ignore[union-attr]


def test_a_first_memo_lookup_in_the_records_thread_sees_the_journals(tmp_path: Path) -> None:
    """A future settled by a memo commit can launch a dependent task, whose memo lookup
    then runs in the records thread: it must not wait for that thread."""
    db, journals = tmp_path / "records.db", tmp_path / "memo"
    journals.mkdir()
    _journal(journals, "1-a", [("k", b"kept")], False)
    found: list[object] = []
    looked = threading.Event()

    def lookup(error: BaseException | None) -> None:
        found.append(r._memo_get("k"))
        looked.set()

    with Records(db, journals=journals) as r:
        r.event("component", "c", "started")
        r._after_commit(lookup)  # runs once that event is committed
        assert looked.wait(20), "the lookup in the records thread did not return"
    assert found[0].result == b"kept"  # type: ignore[union-attr]


def test_a_memo_bigger_than_one_read_of_its_journal_is_folded_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simai.workflow import _recorder

    db, journals = tmp_path / "records.db", tmp_path / "memo"
    journals.mkdir()
    Records(db).close()
    big = [(f"k{i}", bytes([i]) * 5000) for i in range(3)]
    _journal(journals, "1-a", [("small", b"s"), *big], False)
    monkeypatch.setattr(_recorder, "_JOURNAL_READ", 1000)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert _recorder.fold_journals(conn, str(journals), remove=True) == 4
        rows = dict(conn.execute("SELECT key, result FROM memo").fetchall())
    finally:
        conn.close()
    assert rows == {"small": b"s", **dict(big)}
    assert not any(journals.iterdir())


def test_a_task_cancelled_through_its_future_is_recorded_cancelled(tmp_path: Path) -> None:
    from simai.workflow import Workflow

    run = tmp_path / "run"
    one_core = WorkflowOptions(executor_config={"cores": 1})
    with Workflow("cancel", run_dir=run, options=one_core) as wf:
        slow = wf.submit(_sleep, 1.0)
        waiting = wf.submit(_sleep, 0.0)
        assert waiting.cancel()
        assert slow.result(timeout=60) == 1.0
        deadline = time.monotonic() + 20
        while wf.task_counts()["cancelled"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wf.task_counts() == {
            "done": 1,
            "recalled": 0,
            "running": 0,
            "queued": 0,
            "failed": 0,
            "cancelled": 1,
        }
    with Records(run / "records.db", readonly=True) as ro:
        assert [r["state"] for r in ro.tasks_table()] == ["done", "cancelled"]
        (event,) = ro.events(kind="task")
        assert event["event"] == "cancelled" and "was cancelled" in event["detail"]


def _terminate_mid_task(run: Path) -> tuple[dict[str, str], int]:
    """Tasks on an executor of their own that simai terminates (as a steering loop does
    with its trainer's): one running, one queued whose future was cancelled. Their
    states by name, and the failures the run counts."""
    from simai.launch.local import LocalExecutor
    from simai.workflow import Workflow

    with Workflow("terminated", store="file", run_dir=run) as wf:
        ai = LocalExecutor(cores=1)
        ai.observer = wf.executor.observer
        try:
            running = ai.submit(_sleep, 60.0)
            queued = ai.submit(_sleep, 0.0)
            deadline = time.monotonic() + 30
            while not running.running():
                assert time.monotonic() < deadline, "the task never started"
                time.sleep(0.02)
            assert queued.cancel()
        finally:
            ai.terminate()
    ids = [f.simai_task.id for f in (running, queued)]  # type: ignore[attr-defined]
    names = dict(zip(ids, ["running", "queued"], strict=True))
    with Records(run / "records.db", readonly=True) as ro:
        states = {names[int(r["item_id"])]: r["state"] for r in ro.tasks_table()}
        return states, ro.summary()["failures_total"]


def test_a_queued_task_whose_future_was_cancelled_is_recorded_cancelled(tmp_path: Path) -> None:
    """An executor that drops a cancelled task unstarted tells no one: not left queued."""
    states, _ = _terminate_mid_task(tmp_path / "run")
    assert states["queued"] == "cancelled"


def test_a_task_running_when_simai_terminates_its_executor_is_cancelled(tmp_path: Path) -> None:
    states, failures = _terminate_mid_task(tmp_path / "run")
    assert states["running"] == "cancelled" and failures == 0


def test_a_kept_result_that_cannot_be_loaded_runs_again(tmp_path: Path, caplog) -> None:
    """A memo whose pickle no longer loads (its class left the code, say) is a miss."""
    from simai import Workflow

    run = tmp_path / "run"
    with Workflow("stale", store="file", run_dir=run, resume=False) as wf:
        assert wf.submit(_echo, 1).result() == ((1,), {})
    with Records(run / "records.db") as r:
        (key,) = _memo_keys(r)
        r._memo_put_many([(key, "_echo", b"\x80\x05not a pickle")])
    with Workflow("stale", store="file", run_dir=run, resume=True) as wf:
        assert wf.submit(_echo, 1).result() == ((1,), {})
        assert wf.executor.memo.recalled == 0  # type: ignore[union-attr]
    assert "runs again: its kept result cannot be loaded" in caplog.text


def test_numpy_scalars_are_stored_as_numbers(tmp_path: Path) -> None:
    """marshal writes numpy scalars as raw bytes: times, steps and counts are converted first."""
    with Records(tmp_path / "records.db") as r:
        r.start_run()
        r.event("component", "c", "started", at=np.float64(101.0))
        r.log_metric("loss", np.float32(0.5), step=np.int64(7), at=np.float64(103.0))
        r.stream_sample("s", np.int64(10), np.int64(2), at=np.float64(104.0))
        r.flush()
    db = sqlite3.connect(tmp_path / "records.db")
    try:
        assert db.execute("SELECT time, step FROM metrics").fetchall() == [(103.0, 7)]
        assert db.execute("SELECT * FROM stream_backlog").fetchall() == [(104.0, "s", 10, 2)]
        times = db.execute("SELECT typeof(time) FROM events").fetchall()
        assert times and all(t == ("real",) for t in times)
    finally:
        db.close()


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _fail_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError("first attempt fails")
    return "second attempt"


def _boom() -> None:
    raise ValueError("bad input 7")


def test_a_workflow_writes_one_row_per_task_and_rows_for_tasks_still_running(
    tmp_path: Path,
) -> None:
    """A real run on one core: a long task shows running and the one behind it queued
    while they last (rows written after the hold), and every task ends with one row that
    has its times, retries and error."""
    from simai.workflow import Workflow

    run = tmp_path / "run"
    one_core = WorkflowOptions(executor_config={"cores": 1})
    with Workflow("rows", run_dir=run, options=one_core) as wf:
        slow = wf.submit(_sleep, 3.0)
        queued = wf.submit(_sleep, 0.0)
        with Records(run / "records.db", readonly=True) as ro:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                states = {t["item_id"]: t["state"] for t in ro.tasks_table()}
                if len(states) == 2:
                    break
                time.sleep(0.1)
        assert sorted(states.values()) == ["running", "submitted"], states
        assert wf.task_counts() == {
            "done": 0,
            "recalled": 0,
            "running": 1,
            "queued": 1,
            "failed": 0,
            "cancelled": 0,
        }
        assert slow.result(timeout=60) == 3.0 and queued.result(timeout=60) == 0.0
        again = wf.submit(_fail_once, str(tmp_path / "marker"), retries=1)
        assert again.result(timeout=60) == "second attempt"
        broken = wf.submit(_boom)
        with pytest.raises(ValueError):
            broken.result(timeout=60)
        never = wf.submit(_sleep, broken)
        with pytest.raises(Exception, match="bad input 7"):
            never.result(timeout=60)
        assert wf.task_counts() == {
            "done": 3,
            "recalled": 0,
            "running": 0,
            "queued": 0,
            "failed": 1,
            "cancelled": 1,
        }
    with Records(run / "records.db", readonly=True) as ro:
        rows = ro.tasks_table()
        by_state = {r["state"]: r for r in rows}
        assert [r["state"] for r in rows] == ["done", "done", "done", "failed", "cancelled"]
        for r in rows[:4]:
            assert r["submitted"] <= r["started"] <= r["ended"]
        assert rows[0]["ended"] - rows[0]["started"] >= 3.0
        assert rows[2]["name"] == "_fail_once" and rows[2]["retries"] == 1
        assert by_state["failed"]["detail"] == "ValueError: bad input 7"
        assert by_state["cancelled"]["started"] is None
        assert all(r["retries"] == 0 for r in rows if r["name"] != "_fail_once")
        events = [(e["name"], e["event"]) for e in ro.events(kind="task")]
        assert events == [("_fail_once", "retried"), ("_boom", "failed"), ("_sleep", "cancelled")]
        assert "RuntimeError: first attempt fails" in ro.events(kind="task")[0]["detail"]


def test_the_latest_memo_of_a_key_counts(tmp_path: Path) -> None:
    with Records(tmp_path / "records.db") as r:
        r._memo_put_many([("k0", "f", b"old")])
        r._memo_put_many([("k0", "f", b"new")])
        assert r._memo_get("k0").result == b"new"
        assert _memo_keys(r) == {"k0"}


def _journal(
    directory: Path, name: str, memos: list[tuple[str, bytes]], torn: bool, per_record: int = 1
) -> Path:
    """A memo journal as a local executor's worker writes it (``per_record`` memos sent
    together in each record), its last record cut short with ``torn`` (the worker was
    killed while it wrote)."""
    from simai.launch._worker import _journal_record

    entries = [(key, "t", blob) for key, blob in memos]
    data = b"".join(
        _journal_record(entries[i : i + per_record]) for i in range(0, len(entries), per_record)
    )
    if torn:
        data += _journal_record([("cut", "t", b"x" * 100)])[:-10]
    path = directory / f"{name}.memo"
    path.write_bytes(data)
    return path


def test_memo_journals_are_folded_in_once_and_removed_when_whole(tmp_path: Path) -> None:
    db, journals = tmp_path / "records.db", tmp_path / "memo"
    journals.mkdir()
    whole = _journal(journals, "1-a", [(f"a{i}", pickle.dumps(i)) for i in range(1000)], False, 7)
    torn = _journal(journals, "2-b", [("b0", b"b0"), ("b1", b"b1")], True)
    (journals / "notes.txt").write_text("not a journal")
    with Records(db, journals=journals) as r:  # folded in when the writer starts
        assert pickle.loads(r._memo_get("a999").result) == 999
        assert r._memo_get("b1").result == b"b1" and r._memo_get("cut") is None
        more = _journal(journals, "3-c", [("c0", b"c0")], False)  # written during the run
        assert r._memo_get("c0") is None  # folded in at the end only
    assert not whole.exists() and not more.exists()  # folded in to the last byte: removed
    assert torn.exists() and (journals / "notes.txt").exists()
    with Records(db, journals=journals) as r:  # the torn one is not folded in twice
        assert r._memo_get("c0").result == b"c0"
        assert len(_memo_keys(r)) == 1003
    count = sqlite3.connect(db).execute("SELECT count(*) FROM memo").fetchone()[0]
    assert count == 1003


def test_task_rows_wait_for_an_idle_writer_but_memos_do_not(tmp_path: Path) -> None:
    """During a burst of results the writer commits each frame's memos (the futures wait
    for them) and defers the tasks' rows until no frame comes, a flush, or the hold."""
    from simai.workflow import _recorder

    Records(tmp_path / "records.db").close()
    db = sqlite3.connect(tmp_path / "records.db", isolation_level=None)
    batcher = _recorder.Batcher(db, "here", hold=1.0)
    row = ("f", 1, "finished", 1.0, 2.0, 3.0, None, 0, None)
    memo = ("k1", "f", "done", b"", 3.0)
    batcher.commit([(_recorder.TASK, _rows(1, "here", [row])), (_recorder.MEMO, [memo])], now=10.0)

    def count(table: str) -> int:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    assert (count("memo"), count("tasks")) == (1, 0)
    assert batcher.wait_time(10.0) == _recorder.IDLE
    batcher.commit([], now=10.001, idle=True)
    assert count("tasks") == 1 and batcher.wait_time(10.001) is None
    batcher.commit([(_recorder.TASK, _rows(1, "here", [(*row[:1], 2, *row[2:])]))], now=11.0)
    batcher.commit([(_recorder.FLUSH, 1)], now=11.0)
    assert count("tasks") == 2
    batcher.commit([(_recorder.TASK, _rows(1, "here", [(*row[:1], 3, *row[2:])]))], now=12.0)
    batcher.commit([], now=13.0)  # frames kept coming, but the row waited its hold
    assert count("tasks") == 3


def _count_run(folder: str, x: int) -> int:
    with open(os.path.join(folder, f"ran-{x}"), "a") as f:
        f.write("x")
    return x * x


def test_without_a_memo_tasks_are_recorded_and_a_resume_runs_them_again(tmp_path: Path) -> None:
    from simai.workflow import Workflow

    run, marks = tmp_path / "run", str(tmp_path)
    for attempt in (1, 2):
        with Workflow("plain", run_dir=run, memoize=False, resume=attempt == 2) as wf:
            assert wf.executor.memo is None
            assert [wf.submit(_count_run, marks, x).result(timeout=60) for x in range(3)] == [
                0,
                1,
                4,
            ]
    assert [(tmp_path / f"ran-{x}").read_text() for x in range(3)] == ["xx"] * 3
    with Records(run / "records.db", readonly=True) as ro:
        assert [r["attempt"] for r in ro.tasks_table(state="done")] == [1, 1, 1, 2, 2, 2]
        assert not _memo_keys(ro)
