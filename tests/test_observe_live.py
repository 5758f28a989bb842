"""The live progress display of a real workflow: on a terminal (a real pty), as plain log
lines in a pipe, and off with --quiet."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _procs import children, no_new_children

import simai
from simai.observe.live import Progress
from simai.workflow import Records

DEMO = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import simai

    def simulation(n):
        store = simai.open_store()
        for i in range(n):
            store.append("samples", np.zeros(4))
            simai.log_metric("sim_step", i, step=i)
            time.sleep(0.02)

    def work(x):
        time.sleep(0.1)
        return x

    quiet = "--quiet" in sys.argv
    with simai.Workflow("demo", run_dir=sys.argv[1]) as wf, simai.observe.progress(
        wf, quiet=quiet, streams=["samples"], interval=0.2
    ):
        component = wf.start(simulation, 30, name="simulation")
        print("results", sum(f.result() for f in [wf.submit(work, i) for i in range(6)]))
        component.wait(60)
        simai.log_metric("loss", 0.125, step=3)
    """
)


@pytest.fixture
def demo(tmp_path: Path):
    before = children()
    script = tmp_path / "demo.py"
    script.write_text(DEMO)
    yield [sys.executable, str(script), str(tmp_path / "run")]
    assert no_new_children(before)


def test_plain_lines_when_not_a_terminal(demo: list[str]) -> None:
    proc = subprocess.run(demo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "results 15\n"  # the display stays out of stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[simai demo")]
    assert lines, proc.stderr
    assert "\x1b[" not in proc.stderr
    last = lines[-1]
    assert "tasks 6 done, 0 running, 0 queued, 0 failed" in last
    assert "components simulation done" in last
    assert "stream samples 30" in last
    assert "loss=0.125@3" in last and "sim_step=29@29" in last


def test_quiet_shows_nothing(demo: list[str]) -> None:
    proc = subprocess.run([*demo, "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "results 15\n"
    assert "[simai" not in proc.stderr


def test_live_display_on_a_terminal(demo: list[str]) -> None:
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120")
    env.pop("SIMAI_PROGRESS", None)
    proc = subprocess.Popen(demo, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert "\x1b[" in text  # drawn with cursor movements and colours, not log lines
    assert "[simai demo" not in text
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "results 15" in plain  # the script's own output is printed above the display
    final = plain[plain.rindex("simai demo") :]
    assert re.search(r"6 done\s+0 running\s+0 queued\s+0 failed", final), final
    assert re.search(r"simulation\s+done\s+0", final), final
    assert re.search(r"stream samples\s+30", final), final
    assert re.search(r"loss\s+0\.125\s+3", final), final


def sim(n: int) -> None:
    store = simai.open_store()
    for _ in range(n):
        store.append("s", np.zeros(2))


def test_snapshot_of_a_running_workflow(tmp_path: Path) -> None:
    with simai.Workflow("snap", run_dir=tmp_path / "run") as wf:
        wf.start(sim, 5, name="sim").wait(60)
        [f.result() for f in [wf.submit(abs, -i) for i in range(3)]]
        simai.log_metric("loss", 0.5, step=1)
        reader = wf.store().stream("s", group="g")
        for _ in range(3):
            next(reader)  # the group has read 2 values for sure (the 3rd is acked on the 4th)
        wf.poll_metrics()
        with Progress(wf, mode="plain", streams=["s"], file=io.StringIO()) as view:
            snap = view.snapshot()
    assert snap.tasks == {
        "done": 3,
        "recalled": 0,
        "running": 0,
        "queued": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert snap.components == [("sim", "done", 0)]
    assert snap.metrics == {"loss": (0.5, 1)}
    assert (snap.streams["s"]["length"], snap.streams["s"]["backlog"]) == (5, 3)
    assert "tasks 3 done" in view.line(snap) and "loss=0.5@1" in view.line(snap)
    with Records(tmp_path / "run" / "records.db", readonly=True) as ro:
        samples = [(s, length, backlog) for _, s, length, backlog in ro.stream_samples()]
    assert samples == [("s", 5, 3)]  # recorded once: it did not change


def test_the_display_reads_through_a_connection_of_its_own(tmp_path: Path) -> None:
    with simai.Workflow("own", run_dir=tmp_path / "run") as wf:
        simai.log_metric("loss", 0.25, step=2)
        wf.poll_metrics()
        with Progress(wf, mode="plain", file=io.StringIO()) as view:
            held, release = threading.Event(), threading.Event()

            def hold() -> None:  # the workflow's records busy, e.g. a memo lookup
                with wf.records._lock:
                    held.set()
                    release.wait(30)

            holder = threading.Thread(target=hold)
            holder.start()
            try:
                assert held.wait(10)
                start = time.monotonic()
                snap = view.snapshot()
                assert time.monotonic() - start < 5
            finally:
                release.set()
                holder.join()
            reader = view._records
            assert reader is not None and reader is not wf.records and reader.readonly
            assert snap.metrics == {"loss": (0.25, 2)}
    assert view._records is None  # closed with the display


def test_a_bad_mode_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIMAI_PROGRESS", "fancy")
    with simai.Workflow("bad", run_dir=tmp_path / "run") as wf:
        with pytest.raises(ValueError, match=r"one of \('live', 'plain', 'off'\), not 'fancy'"):
            Progress(wf)
