"""Each task's CPU time and peak memory, and why a task failed (exit status, signal, walltime,
out-of-memory kill, exception, cancelled): real processes, the real CLI, and a real
out-of-memory kill inside a memory-limited cgroup."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import simai
from simai import cli
from simai.launch import Command, CommandError, LocalExecutor, TaskTimeoutError, WorkerLostError
from simai.launch.executor import failure_reason
from simai.launch.usage import oom_counter_files, read_oom_kills
from simai.observe.report import render
from simai.workflow import Records, RunDir

MIB = 1 << 20


def allocate(mib: int) -> int:
    """Touch ``mib`` MiB (``bytes * n`` writes every page), then free it."""
    data = b"\x01" * (mib * MIB)
    return len(data)


def add(a: int, b: int) -> int:
    return a + b


def spin(seconds: float) -> float:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return seconds


def fail() -> None:
    raise ValueError("bad input")


def die(signum: int) -> None:
    os.kill(os.getpid(), signum)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def run_child(argv: list[str]) -> int:
    """A task that runs a process and waits for it: its CPU time counts as the task's."""
    return subprocess.run(argv, check=True).returncode


ALLOCATE = "import time\ndata = b'\\x01' * (200 << 20)\ntime.sleep(0.5)"


# --- measuring --------------------------------------------------------------------------------


def test_a_python_task_records_its_cpu_time_and_peak_memory(tmp_path: Path) -> None:
    allocate(300)  # a peak here, which a worker started now inherits in its ru_maxrss
    with LocalExecutor(cores=1, log_dir=tmp_path / "logs") as ex:
        big = ex.submit(allocate, 200)
        assert big.result(timeout=60) == 200 * MIB
        small = ex.submit(add, 1, 1)  # the same worker: its peak is its own, not the last one's
        assert small.result(timeout=60) == 2
        busy = ex.submit(spin, 0.2)
        assert busy.result(timeout=60) == 0.2
        child = ex.submit(run_child, [sys.executable, "-c", "import time\nt = time.process_time()"
                                      "\nwhile time.process_time() - t < 0.2: pass"])  # fmt: skip
        assert child.result(timeout=60) == 0
    big_task, small_task = big.simai_task, small.simai_task  # type: ignore[attr-defined]
    assert big_task.max_rss >= 200 * MIB
    assert 0 < big_task.cpu_time < 30
    assert 0 < small_task.max_rss < 100 * MIB
    assert 0 <= small_task.cpu_time < 0.1
    assert 0.19 <= busy.simai_task.cpu_time < 5  # type: ignore[attr-defined]
    assert child.simai_task.cpu_time >= 0.19  # type: ignore[attr-defined] # its child's CPU


@pytest.mark.parametrize("parent_peak", [0, 400], ids=["small-parent", "big-parent"])
def test_a_command_records_its_cpu_time_and_peak_memory(tmp_path: Path, parent_peak: int) -> None:
    """Its own peak, not the memory of the process that started it (which the kernel's
    ru_maxrss of a child starts from)."""
    ballast = b"\x01" * (parent_peak * MIB)
    with LocalExecutor(cores=1, log_dir=tmp_path / "logs") as ex:
        fut = ex.submit_command(Command([sys.executable, "-c", ALLOCATE], name="alloc"))
        result = fut.result(timeout=60)
        idle = Command([sys.executable, "-c", "import time\ntime.sleep(0.3)"], name="idle")
        small = ex.submit_command(idle).result(timeout=60)
    del ballast
    assert result.returncode == 0
    assert 200 * MIB <= result.max_rss < 300 * MIB
    assert 0 < result.cpu_time < 30
    task = fut.simai_task  # type: ignore[attr-defined]
    assert (task.cpu_time, task.max_rss) == (result.cpu_time, result.max_rss)
    assert 0 < small.max_rss < 100 * MIB


def test_a_failed_command_keeps_its_usage_and_says_why(tmp_path: Path) -> None:
    with LocalExecutor(cores=1, log_dir=tmp_path / "logs") as ex:
        code = f"{ALLOCATE}\nimport sys\nsys.exit(3)"
        failed = ex.submit_command(Command([sys.executable, "-c", code], name="exits"))
        kill = "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)"
        killed = ex.submit_command(Command([sys.executable, "-c", kill], name="killed"))
        hang = Command([sys.executable, "-c", "import time\ntime.sleep(60)"], name="hangs")
        late = ex.submit_command(hang, walltime=0.5)
        exit_error, signal_error = failed.exception(60), killed.exception(60)
        timeout_error = late.exception(60)
    assert isinstance(exit_error, CommandError) and exit_error.returncode == 3
    assert exit_error.max_rss >= 200 * MIB and not exit_error.oom
    assert failed.simai_task.max_rss >= 200 * MIB  # type: ignore[attr-defined]
    assert failure_reason(exit_error) == "exit"
    assert isinstance(signal_error, CommandError) and signal_error.returncode == -signal.SIGTERM
    assert failure_reason(signal_error) == "signal"
    assert isinstance(timeout_error, TaskTimeoutError)
    assert failure_reason(timeout_error) == "walltime"
    assert late.simai_task.max_rss > 0  # type: ignore[attr-defined]


def test_a_worker_killed_by_sigkill_is_not_called_out_of_memory(tmp_path: Path) -> None:
    with LocalExecutor(cores=1, log_dir=tmp_path / "logs") as ex:
        err = ex.submit(die, signal.SIGKILL).exception(60)
    assert isinstance(err, WorkerLostError) and "SIGKILL" in str(err)
    assert not err.oom and "out-of-memory" not in str(err)
    assert failure_reason(err) == "signal"


# --- records, status and report ----------------------------------------------------------------


def test_usage_and_failure_reasons_in_records_status_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with simai.Workflow("usage", store="file", run_dir=run) as wf:
        ok = [wf.submit(allocate, 200), wf.submit(spin, 0.2)]
        cmd = wf.submit(Command([sys.executable, "-c", ALLOCATE], name="alloc_command"))
        bad = {
            "exception": wf.submit(fail),
            "walltime": wf.submit(sleep, 30, walltime=0.5),
            "signal": wf.submit(die, signal.SIGKILL),
            "exit": wf.submit(Command([sys.executable, "-c", "raise SystemExit(3)"], name="ex3")),
        }
        bad["cancelled"] = wf.submit(add, bad["exception"], 1)
        assert [f.result(60) for f in ok] == [200 * MIB, 0.2]
        assert cmd.result(60).returncode == 0
        for f in bad.values():
            assert f.exception(60) is not None
    with Records(RunDir(run, create=False).records_path, readonly=True) as ro:
        rows = {r["name"]: r for r in ro.tasks_table()}
    assert rows["allocate"]["peak_rss"] >= 200 * MIB and rows["allocate"]["cpu"] > 0
    assert rows["alloc_command"]["peak_rss"] >= 200 * MIB and rows["alloc_command"]["cpu"] > 0
    assert rows["spin"]["cpu"] >= 0.19
    assert {r["name"]: r["reason"] for r in rows.values() if r["state"] != "done"} == {
        "fail": "exception",
        "sleep": "walltime",
        "die": "signal",
        "ex3": "exit",
        "add": "cancelled",
    }
    assert all(r["reason"] is None for r in rows.values() if r["state"] == "done")

    assert cli.main(["status", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["durations"]["allocate"]["peak_rss"] >= 200 * MIB
    assert data["durations"]["spin"]["cpu"] >= 0.19
    reasons = {f["name"]: f["reason"] for f in data["failures"]}
    assert reasons == {"fail": "exception", "sleep": "walltime", "die": "signal", "ex3": "exit"}
    assert data["failure_reasons"] == {"exception": 1, "walltime": 1, "signal": 1, "exit": 1}

    assert cli.main(["status", str(run)]) == 0
    text = capsys.readouterr().out
    assert [ln for ln in text.splitlines() if ln.split()[:1] == ["allocate"] and "MiB" in ln]
    assert "cpu" in text and "peak memory" in text
    assert "task sleep[" in text and "(walltime)" in text and "(signal)" in text
    assert "1 exception, 1 exit, 1 signal, 1 walltime" in text

    html = render(run)
    assert "peak memory" in html and "walltime" in html and "MiB" in html


def test_cpu_and_peak_of_retried_attempts_add_up(tmp_path: Path) -> None:
    with Records(tmp_path / "records.db") as r:
        r.start_run()
        r.event("task", "sim", "submitted", 1)
        r.event("task", "sim", "retried", 1, cpu=1.5, peak_rss=300, reason="oom", detail="x")
        r.event("task", "sim", "finished", 1, cpu=2.0, peak_rss=200, started=time.time())
        r.tasks([("fast", 2, "finished", 1.0, 2.0, 3.0, None, 0, None, 0.25, 1000, None)])
        r.tasks([("fast", 3, "failed", 1.0, 2.0, 3.0, None, 0, "E: x", 0.5, 9, "exception")])
        r.flush()
        rows = {(t["name"], t["item_id"]): t for t in r.tasks_table()}
        durations = {d["name"]: d for d in r.task_durations()}
    assert (rows["sim", "1"]["cpu"], rows["sim", "1"]["peak_rss"]) == (3.5, 300)
    assert rows["sim", "1"]["reason"] == "oom"  # its last failure's, like its detail
    assert (rows["fast", "2"]["cpu"], rows["fast", "2"]["peak_rss"]) == (0.25, 1000)
    assert rows["fast", "3"]["reason"] == "exception"
    assert durations["fast"]["cpu"] == 0.75 and durations["fast"]["peak_rss"] == 1000


# --- out-of-memory kills -------------------------------------------------------------------------


def test_oom_counter_files_of_cgroup_v1_and_v2(tmp_path: Path) -> None:
    v2 = tmp_path / "unified" / "job" / "step"
    v1 = tmp_path / "memory" / "job"  # its mount shows the hierarchy from /slurm on
    for folder, name in ((v2, "memory.events"), (v1, "memory.oom_control")):
        folder.mkdir(parents=True)
        (folder / name).write_text("oom 2\noom_kill 1\n")
    mountinfo = (
        f"30 23 0:26 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n"
        f"31 23 0:27 /slurm {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
        f"32 23 0:28 / {tmp_path}/cpu rw - cgroup cgroup rw,cpu\n"
    )
    cgroups = "5:cpu:/x\n4:memory:/slurm/job\n0::/job/step\n"
    files = oom_counter_files(cgroups, mountinfo)
    assert files == (str(v1 / "memory.oom_control"), str(v2 / "memory.events"))
    assert [read_oom_kills(f) for f in files] == [1, 1]
    # an exited process's v1 paths are not its own (the kernel shows "/"): only v2 counts
    assert oom_counter_files(cgroups, mountinfo, exited=True) == (str(v2 / "memory.events"),)
    assert oom_counter_files("0::/gone (deleted)\n", mountinfo) == ()
    assert read_oom_kills(str(tmp_path / "missing")) is None


def _write(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A new cgroup limited to ``limit`` bytes of memory and no swap: under the cgroup v2
    root where its memory controller is on, else under this process's cgroup v1 memory
    one. Skips the test where this cannot be done (not root, no memory controller)."""
    if os.geteuid() != 0:
        pytest.skip("making a memory-limited cgroup needs root")
    mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    name = f"simai-test-{uuid.uuid4().hex[:8]}"
    path = None
    for m in mounts:
        fstype = m[m.index("-") + 1]
        root = Path(m[4])
        if fstype == "cgroup2" and "memory" in (root / "cgroup.subtree_control").read_text():
            path = root / name
            path.mkdir()
            _write(path / "memory.max", str(limit))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
            break
    else:
        v1 = [m for m in mounts if m[m.index("-") + 1] == "cgroup" and "memory" in m[-1].split(",")]
        own = [
            line.split(":", 2)[2]
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if "memory" in line.split(":")[1].split(",")
        ]
        if not v1 or not own:
            pytest.skip("no cgroup memory controller here (neither v2 nor v1)")
        path = Path(v1[0][4]) / own[0].lstrip("/") / name
        try:
            path.mkdir()
        except OSError as e:
            pytest.skip(f"cannot make a cgroup v1 memory cgroup here: {e}")
        _write(path / "memory.limit_in_bytes", str(limit))
        if (path / "memory.memsw.limit_in_bytes").exists():
            _write(path / "memory.memsw.limit_in_bytes", str(limit))
    try:
        yield path
    finally:
        deadline = time.monotonic() + 30
        while True:
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            try:
                path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


OOM_RUN = textwrap.dedent(
    """
    import json, os, sys
    import simai
    from simai.launch import Command

    cgroup, run = sys.argv[1], sys.argv[2]
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))  # this run and all it starts: limited to the cgroup's memory

    HOG = "chunks = [b'\\\\x01' * (8 << 20) for _ in range(1024)]"  # 8 GiB, 8 MiB at a time

    def hog(mib):
        chunks = [b"\\x01" * (8 << 20) for _ in range(mib // 8)]
        return len(chunks)

    def add(a, b):
        return a + b

    out = {}
    with simai.Workflow("oom", store="file", run_dir=run) as wf:
        for name, submit in (
            ("command", lambda: wf.submit(Command([sys.executable, "-c", HOG], name="hog_cmd"))),
            ("python", lambda: wf.submit(hog, 8192)),
            ("after", lambda: wf.submit(add, 1, 2)),
        ):
            error = submit().exception(timeout=120)
            out[name] = None if error is None else [type(error).__name__, str(error)]
    print(json.dumps(out))
    """
)


def test_an_out_of_memory_kill_is_named_as_such(tmp_path: Path) -> None:
    """A Command and a Python task that allocate past their cgroup's memory limit are
    killed by the kernel's out-of-memory killer: their error says so (with their peak
    memory), and the records give the reason ``oom``."""
    script, run = tmp_path / "oom_run.py", tmp_path / "run"
    script.write_text(OOM_RUN)
    with memory_cgroup(400 * MIB) as cgroup:
        proc = subprocess.run(
            [sys.executable, str(script), str(cgroup), str(run)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["after"] is None  # the run goes on
    assert out["command"][0] == "CommandError"
    assert out["python"][0] == "WorkerLostError"
    for kind in ("command", "python"):
        assert "killed by the kernel's out-of-memory killer (peak memory" in out[kind][1]
    with Records(RunDir(run, create=False).records_path, readonly=True) as ro:
        rows = {r["name"]: r for r in ro.tasks_table()}
    for name in ("hog_cmd", "hog"):
        assert rows[name]["state"] == "failed" and rows[name]["reason"] == "oom"
        assert 100 * MIB <= rows[name]["peak_rss"] <= 400 * MIB
