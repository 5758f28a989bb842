"""`simai report` and `simai status` on a real run, the report rendered in headless Chromium.

One workflow run (tasks that finish, a task and a command that fail, a component that
runs, one that fails after a restart, a metric) is shared by the tests of this file; a
report is also made while that run is still live. Chromium tests are skipped only when
no `chromium` is installed.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from _procs import children, no_new_children

import simai
from simai.launch import Command, CommandError
from simai.observe import _report_browser as browser
from simai.observe.report import MAX_BARS, render, task_lanes
from simai.workflow import ComponentFailed, Records, RunDir, Workflow

SIMAI = str(Path(sys.executable).with_name("simai"))
CHROMIUM = browser.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)


@simai.task
def square(x: int) -> int:
    return x * x


@simai.task
def explode(x: int) -> int:
    raise ValueError(f"bad input {x}")


def chatty(n: int) -> None:
    for i in range(n):
        print(f"chatty line {i}", flush=True)


def flaky() -> None:
    print("flaky is about to fail", flush=True)
    raise RuntimeError("flaky gave up")


def _simai(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SIMAI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished run, and the report made of it while it was still live."""
    before = children()
    run = tmp_path_factory.mktemp("report") / "run"
    live_report = run.parent / "live.html"
    with Workflow("report-demo", run_dir=run) as wf:
        ok = wf.start(chatty, 20, name="chatty")
        bad = wf.start(flaky, name="flaky", restart="on-failure", max_restarts=1)
        squares = [square(i) for i in range(8)]
        failing = explode(3)
        script = "import sys; print('cmd out'); print('cmd stderr line', file=sys.stderr); exit(3)"
        cmd = wf.submit(Command([sys.executable, "-c", script], name="cmd"))
        for step in range(50):
            wf.records.log_metric("loss", 1.0 / (step + 1), step=step, source="test")
        assert [f.result(timeout=60) for f in squares] == [i * i for i in range(8)]
        with pytest.raises(ValueError, match="bad input 3"):
            failing.result(timeout=60)
        with pytest.raises(CommandError):
            cmd.result(timeout=60)
        assert ok.wait(60) == "done"
        with pytest.raises(ComponentFailed):
            bad.wait(60)
        out = _simai("report", str(run), "-o", str(live_report))
        assert out.returncode == 0, out.stderr
    assert no_new_children(before)
    return run, live_report


def test_report_has_every_part_and_needs_no_network(sample_run: tuple[Path, Path]) -> None:
    run, _ = sample_run
    out = _simai("report", "run", cwd=run.parent)  # a run name under ./runs is not needed
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path == run / "report.html" and "wrote" in out.stderr
    html = path.read_text()
    for text in ("Timeline", "Cores and tasks over time", "Store traffic", "Stream backlog"):
        assert f"<h2>{text}</h2>" in html
    for name in ("chatty", "flaky", "square", "explode", "cmd"):
        assert name in html
    assert "<h3>loss <small>latest 0.02 · 50 values</small></h3>" in html
    # failures with their error and the tail of their log
    assert "ValueError: bad input 3" in html
    assert "flaky is about to fail" in html  # the component's log
    assert "cmd stderr line" in html  # the command's stderr log
    assert "<h4>log tail: flaky.log</h4>" in html
    assert re.search(r"<h4>log tail: cmd-\w+\.err</h4><pre>cmd stderr line</pre>", html)
    assert re.search(r"Failures \((\d+)\)", html).group(1) == "4"  # explode, cmd, flaky x2
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "<link" not in html


def test_report_of_a_live_run(sample_run: tuple[Path, Path]) -> None:
    _, live = sample_run
    html = live.read_text()
    assert '<em class="status running">running</em>' in html
    assert "live: pid " in html


@needs_chromium
def test_report_renders_in_headless_chromium(sample_run: tuple[Path, Path], tmp_path: Path):
    run, _ = sample_run
    page = tmp_path / "report.html"
    assert _simai("report", str(run), "-o", str(page)).returncode == 0
    # the report as it is, then a pointer over one time chart, which shows the time on all
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>var svg = document.querySelector('svg.chart[data-x0]');"
            "var b = svg.getBoundingClientRect(), d = svg.dataset;"
            "var x = b.left + (+d.left + 0.5 * d.pw) / svg.viewBox.baseVal.width * b.width;"
            "svg.dispatchEvent(new MouseEvent('mousemove', {clientX: x, clientY: b.top + 5}));"
            "var shown = document.querySelectorAll('.cursor text');"
            "document.body.setAttribute('data-cursors', shown.length + ' ' + "
            "shown[shown.length - 1].textContent);</script></body>",
        )
    )
    opened = browser.open_page(probe)
    assert opened.errors == [], opened.errors
    body = re.search(r"<body([^>]*)>", opened.dom).group(1)
    assert 'data-rendered="ok"' in body, body
    charts = int(re.search(r'data-charts="(\d+)"', body).group(1))
    assert charts >= 5 and f'data-drawn="{charts}"' in body
    assert "data-errors" not in re.search(r"<html([^>]*)>", opened.dom).group(1)
    cursors = re.search(r'data-cursors="(\d+) \+([\d.]+) s"', opened.dom)
    assert cursors is not None, opened.dom[-3000:]
    assert int(cursors.group(1)) == charts - 1  # every time chart; the step chart has none
    span = float(re.search(r'data-x1="([\d.e+-]+)"', opened.dom).group(1))
    assert float(cursors.group(2)) == pytest.approx(span / 2, rel=0.05, abs=0.02)

    shot = tmp_path / "report.png"
    browser.open_page(page, screenshot=shot, size=(1000, 800))
    pixels = read_png(shot.read_bytes())
    assert pixels.shape[:2] == (800, 1000)
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50  # charts, text and colours, not a blank page
    background = np.all(pixels[..., :3] >= 240, axis=-1).mean()
    assert background < 0.95


@needs_chromium
def test_a_javascript_error_is_caught(tmp_path: Path) -> None:
    """The check the report test relies on does see a broken page."""
    page = tmp_path / "broken.html"
    page.write_text(render_head_only())
    opened = browser.open_page(page)
    assert any("undefinedFunction" in e for e in opened.errors)  # Chromium's console log
    # and the report's own catcher, which marks the page
    assert "undefinedFunction" in re.search(r"<html([^>]*)>", opened.dom).group(1)


def test_status_json_and_text(sample_run: tuple[Path, Path]) -> None:
    run, _ = sample_run
    out = _simai("status", str(run), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["live"] is None and data["runs"][-1]["status"] == "done"
    assert data["tasks"] == {"done": 8, "failed": 2}
    assert data["queued"] == 0
    assert data["task_names"]["square"] == {"done": 8}
    assert data["durations"]["square"]["count"] == 8
    assert 0 <= data["durations"]["square"]["mean"] <= data["durations"]["square"]["max"]
    assert data["elapsed"] > 0
    comps = {c["name"]: c for c in data["components"]}
    assert comps["chatty"]["state"] == "done" and comps["chatty"]["restarts"] == 0
    assert comps["flaky"]["state"] == "failed" and comps["flaky"]["restarts"] == 1
    assert comps["chatty"]["uptime"] > 0
    loss = data["metrics"]["loss"]
    assert loss["value"] == pytest.approx(0.02) and loss["step"] == 49 and loss["count"] == 50
    assert data["failures_total"] == 3
    failed = {f["name"] for f in data["failures"]}
    assert failed == {"explode", "cmd", "flaky"}

    out = _simai("status", str(run), "--failures", "1")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.splitlines()[0].startswith(f"run {run}: done, ")
    assert "tasks: 10 (0 queued)" in text
    assert re.search(r"^  square +8 +0$", text, re.M)
    assert re.search(r"^  flaky +failed +1 ", text, re.M)
    head = "durations of finished tasks; CPU time and highest peak memory of all:"
    assert head in text
    assert re.search(r"^  square +8 +\S+ ", text.split(head)[1], re.M)
    assert re.search(r"^  loss +0\.02 +49 ", text, re.M)
    assert "failures: 3 (newest 1 shown)" in text


def test_many_tasks_are_binned_and_packed_into_slots(tmp_path: Path) -> None:
    """Beyond MAX_BARS task bars the timeline bins busy time per slot; tasks with no
    recorded worker are packed per host onto slots that never hold two at once."""
    rd = RunDir(tmp_path / "big")
    n = MAX_BARS + 500
    rng = np.random.default_rng(0)
    with Records(rd.records_path) as r:
        r.start_run()
        t0 = 1.7e9
        start = t0 + np.sort(rng.uniform(0, 600, n))
        end = start + rng.uniform(0.5, 20, n)
        for i, (a, b) in enumerate(zip(start.tolist(), end.tolist(), strict=True)):
            r.event("task", f"t{i % 3}", "submitted", i, at=a - 1, host=f"h{i % 2}")
            r.event("task", f"t{i % 3}", "finished", i, at=b, started=a)
        r.end_run("done")
    html = render(rd)
    assert "task runs, drawn as 400 time bins" in html
    assert "Workers were not recorded" in html
    assert len(html) < 2_000_000

    hosts = [f"h{i % 2}" for i in range(n)]
    lane, labels = task_lanes(hosts, [None] * n, start, end)
    assert (lane >= 0).all() and len(set(lane.tolist())) == len(labels)
    for k in range(len(labels)):
        mine = np.flatnonzero(lane == k)
        assert len({hosts[i] for i in mine}) == 1
        order = mine[np.argsort(start[mine])]
        assert (start[order][1:] >= end[order][:-1]).all()  # one task at a time per slot
    # as many slots per host as tasks ran there at once, at the busiest moment
    for h in ("h0", "h1"):
        mine = [i for i in range(n) if hosts[i] == h]
        points = sorted([(start[i], 1) for i in mine] + [(end[i], -1) for i in mine])
        peak = max(np.cumsum([d for _, d in points]))
        assert sum(label.startswith(f"{h} ") for label in labels) == peak


@pytest.mark.skipif(
    not hasattr(Records, "store_counters"), reason="this simai records no store counters"
)
def test_store_counters_become_traffic_per_component(tmp_path: Path) -> None:
    """Snapshots of running totals per process become bytes moved between snapshots."""
    rd = RunDir(tmp_path / "store")
    with Records(rd.records_path) as r:
        r.start_run()
        t0 = 1.7e9
        for k in range(1, 11):  # two processes, totals growing by 1 MB and 3 MB per snapshot
            r.store_counters(
                [
                    (t0 + k, "h", 1, "sim", "append", "samples", 10 * k, 1_000_000 * k),
                    (t0 + k, "h", 2, "", "get", "samples", 30 * k, 3_000_000 * k),
                ]
            )
        r.end_run("done")
    html = render(rd)
    part = html.split("<h2>Store traffic</h2>")[1].split("</section>")[0]
    assert "no store counters recorded" not in part and "<svg" in part
    assert "<td>sim</td><td>append</td><td>samples</td><td class=num>100</td>" in part
    assert "<td class=num>10 MB</td>" in part and "<td class=num>30 MB</td>" in part
    assert "tasks and workflow" in part

    out = _simai("status", str(rd.path), "--json")
    assert json.loads(out.stdout)["store"] == {"tasks and workflow": 30_000_000, "sim": 10_000_000}
    assert (
        "store bytes moved: tasks and workflow 30 MB, sim 10 MB"
        in _simai("status", str(rd.path)).stdout
    )


def test_backlog_metrics_are_drawn_as_stream_backlog(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "backlog")
    with Records(rd.records_path) as r:
        r.start_run()
        for i in range(20):
            r.log_metric("backlog:sim/samples", float(i % 7), step=i)
            r.log_metric("loss", 1.0 / (i + 1), step=i)
    html = render(rd)
    backlog = html.split("<h2>Stream backlog</h2>")[1].split("</section>")[0]
    assert "<svg" in backlog and "backlog:sim/samples" in backlog
    metrics = html.split("<h2>Metrics</h2>")[1].split("</section>")[0]
    assert "<h3>loss " in metrics and "backlog:" not in metrics


def test_watched_stream_samples_are_drawn_as_stream_backlog(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "watched")
    t0 = time.time()
    with Records(rd.records_path) as r:
        r.start_run()
        for i in range(10):
            r.stream_sample("sim/samples", length=10 * i, backlog=i % 3, at=t0 + i)
            r.stream_sample("sim/plain", length=5 * i, backlog=None, at=t0 + i)
    html = render(rd)
    backlog = html.split("<h2>Stream backlog</h2>")[1].split("</section>")[0]
    assert "<svg" in backlog and "backlog:sim/samples" in backlog
    # read without consumer groups: what was read is not known, so neither is the backlog
    assert "backlog:sim/plain" not in backlog
    assert "known for streams read through consumer groups only; not for sim/plain." in backlog


def test_a_stream_read_without_groups_has_no_backlog_drawn(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "plain")
    with Records(rd.records_path) as r:
        r.start_run()
        r.stream_sample("sim/plain", length=30, backlog=None)
    backlog = render(rd).split("<h2>Stream backlog</h2>")[1].split("</section>")[0]
    assert "<svg" not in backlog and "no stream backlog recorded" in backlog
    assert "not for sim/plain." in backlog


def test_a_resumed_and_then_killed_run(tmp_path: Path) -> None:
    """Each resumed attempt is marked on the timeline; an attempt left `running` with no
    live process is shown interrupted, its unfinished tasks up to the last record."""
    rd = RunDir(tmp_path / "resumed")
    t = time.time()
    with Records(rd.records_path) as r:
        r.start_run()
        r.event("task", "sim", "submitted", "a", at=t)
        r.event("task", "sim", "started", "a", at=t + 0.1)
        r.end_run("interrupted")
        r.start_run()
        r.event("task", "sim", "started", "a", at=t + 1.0)
        r.event("task", "sim", "finished", "a", at=t + 1.2)
        r.event("task", "sim", "submitted", "b", at=t + 1.2)
        r.event("task", "sim", "started", "b", at=t + 1.3)  # then the run is killed
    html = render(rd)
    assert '<em class="status interrupted">interrupted</em>' in html
    assert ">attempt 2</text>" in html and ">attempt 1</text>" not in html
    assert re.search(r"<title>sim\[b\] running: ", html)


def test_report_refuses_bad_input(tmp_path: Path) -> None:
    out = _simai("report", "nowhere", cwd=tmp_path)
    assert out.returncode == 1 and "no run directory 'nowhere'" in out.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "records.db").write_text("not a database")
    out = _simai("report", str(bad))
    assert out.returncode == 1 and "not a simai records database" in out.stderr
    out = _simai("report", str(bad), "-o", str(tmp_path / "no" / "such" / "dir.html"))
    assert out.returncode == 1
    assert f"{tmp_path / 'no' / 'such'} is not a directory" in out.stderr


def render_head_only() -> str:
    from simai.observe import _report_assets as assets

    return (
        f"<!DOCTYPE html><html><head><script>{assets.HEAD_JS}</script></head>"
        "<body><script>undefinedFunction();</script></body></html>"
    )


# --- PNG ------------------------------------------------------------------------------------


def read_png(data: bytes) -> np.ndarray:
    """The pixels of an 8-bit RGB or RGBA PNG (what Chromium writes) as (rows, cols, bpp)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, -1)
    out = np.zeros((height, width * bpp), np.int32)
    prev = np.zeros(width * bpp, np.int32)
    for y in range(height):
        kind, row = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            cur = row
        elif kind == 1:
            cur = np.cumsum(row.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:
            cur = (row + prev) % 256
        else:  # average or Paeth: each byte depends on the one to its left
            cur_l, up = row.tolist(), prev.tolist()
            for x in range(width * bpp):
                a = cur_l[x - bpp] if x >= bpp else 0
                b = up[x]
                if kind == 3:
                    cur_l[x] = (cur_l[x] + (a + b) // 2) & 255
                else:
                    c = up[x - bpp] if x >= bpp else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    cur_l[x] = (cur_l[x] + pred) & 255
            cur = np.array(cur_l, np.int32)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp).astype(np.uint8)
