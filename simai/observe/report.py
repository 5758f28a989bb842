"""``simai report RUN``: one self-contained HTML page telling what a run did.

The page holds a Gantt chart of every task and component by host and worker slot, core
utilisation over time, tasks running and waiting, store bytes moved per component, stream
backlog, every user metric against step and time, and the failures with their log tails.
Charts are inline SVG drawn here in Python; the page needs no network and no library.

Big runs stay small: up to :data:`MAX_BARS` task bars are drawn one by one (each with a
tooltip); beyond that each worker slot (or group of slots) becomes a row of time bins
shaded by how busy it was and coloured by the task name that kept it busiest. A report of
100,000 tasks is about a megabyte and opens in a browser in a couple of seconds.

Works on a run in progress (the records database is read-only, in one snapshot) and on a
finished one.
"""

from __future__ import annotations

import functools
import heapq
import os
import re
import socket
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from simai.observe import _report_assets as assets
from simai.observe import _report_svg as s
from simai.observe.formatting import fmt_bytes, fmt_dur, fmt_mem, fmt_num
from simai.observe.queries import RunData, Series, is_backlog, load
from simai.workflow.rundir import RunDir

#: beyond this many task bars the Gantt chart shows binned busy-ness per slot
MAX_BARS = 2000
#: at most this many rows of task slots in the Gantt chart (slots are grouped beyond)
MAX_ROWS = 200
#: time bins of the aggregated charts
BINS = 400
#: task names with their own colour; the rest share one
TOP_NAMES = len(s.PALETTE)
#: failures listed with their log tails
MAX_FAILURES = 100
LOG_TAIL_LINES = 30


def write_report(run: str | os.PathLike[str] | RunDir, output: str | os.PathLike[str]) -> Path:
    """Write the report of run directory ``run`` to ``output`` (atomically); returns the path."""
    out = Path(output)
    if not out.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write the report to {out}: {out.parent} is not a directory"
        )
    html = render(run)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out


def render(run: str | os.PathLike[str] | RunDir) -> str:
    """The report of run directory ``run`` as an HTML string."""
    run_dir = run if isinstance(run, RunDir) else RunDir(run, create=False)
    data = load(run_dir, failure_limit=MAX_FAILURES)
    return _Page(data, run_dir).html()


# --- lanes -----------------------------------------------------------------------------------


_DIGITS = re.compile(r"(\d+)")


def _natural(text: str) -> tuple:
    """A sort key putting ``node2`` before ``node10``."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(text)))


def task_lanes(
    host: Sequence[str], worker: Sequence[str | None], start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """The Gantt row of each started task (-1 if not started) and the rows' labels.

    A task that recorded its worker slot goes on row ``host worker``; the others are packed
    per host onto the first slot free at their start (as many rows as ran at once).
    """
    lane = np.full(len(start), -1, np.int64)
    keys: dict[tuple[str, str], int] = {}
    running = np.isfinite(start)
    named = [
        i
        for i, (w, ok) in enumerate(zip(worker, running.tolist(), strict=True))
        if ok and w is not None
    ]
    if named:
        lane[named] = [keys.setdefault((host[i], str(worker[i])), len(keys)) for i in named]
    busy: dict[str, list[tuple[float, int]]] = {}
    free: dict[str, list[int]] = {}
    count: dict[str, int] = {}
    unnamed = np.flatnonzero(running & (lane < 0))
    order = unnamed[np.argsort(start[unnamed], kind="stable")]
    for i, t, e in zip(order.tolist(), start[order].tolist(), end[order].tolist(), strict=True):
        h = host[i]
        heap, idle = busy.setdefault(h, []), free.setdefault(h, [])
        while heap and heap[0][0] <= t:
            heapq.heappush(idle, heapq.heappop(heap)[1])
        slot = heapq.heappop(idle) if idle else count.get(h, 0)
        count[h] = max(count.get(h, 0), slot + 1)
        heapq.heappush(heap, (e, slot))
        lane[i] = keys.setdefault((h, f"#{slot}"), len(keys))
    natural = functools.lru_cache(maxsize=None)(_natural)
    ordered = sorted(keys, key=lambda k: (natural(k[0]), natural(k[1])))
    remap = np.empty(max(len(keys), 1), np.int64)
    for new, k in enumerate(ordered):
        remap[keys[k]] = new
    lane[lane >= 0] = remap[lane[lane >= 0]]
    return lane, [f"{h or '?'} {w}" for h, w in ordered]


# --- the page --------------------------------------------------------------------------------


class _Page:
    def __init__(self, data: RunData, run_dir: RunDir):
        self.d = data
        self.run_dir = run_dir
        t = data.tasks
        self.span = data.t1 - data.t0
        self.edges = np.linspace(data.t0, data.t1, BINS + 1)
        self.width = self.span / BINS
        # colour by task name, the busiest names first
        started = np.isfinite(t.started)
        self.start = t.started
        ended = t.ended.copy()
        ended[started & ~np.isfinite(ended)] = data.t1  # running, or killed and not resumed
        self.end = ended
        busy = np.bincount(
            t.name[started], weights=(ended - t.started)[started], minlength=len(t.names)
        )
        rank = np.argsort(-busy, kind="stable")
        self.name_color = {}
        for r, i in enumerate(rank.tolist()):
            self.name_color[i] = s.color(r) if r < TOP_NAMES else s.OTHER
        self.color_names = [t.names[i] for i in rank.tolist()[:TOP_NAMES]]

    # --- assembly ------------------------------------------------------------------------

    def html(self) -> str:
        d = self.d
        title = d.config.get("workflow") or d.path.name
        sections = [
            self.header(),
            self.section("Timeline", self.gantt(), "gantt"),
            self.section("Cores and tasks over time", self.utilisation(), "util"),
            self.section("Store traffic", self.store(), "store"),
            self.section("Stream backlog", self.backlog(), "backlog"),
            self.section("Metrics", self.metrics(), "metrics"),
            self.section(f"Failures ({d.failures_total})", self.failures(), "failures"),
        ]
        made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.loaded_at))
        return assets.PAGE.format(
            title=escape(f"simai report: {title}"),
            css=assets.CSS,
            head_js=assets.HEAD_JS,
            js=assets.JS,
            body="".join(sections),
            footer=escape(f"made by simai report on {socket.gethostname()} at {made}"),
        )

    @staticmethod
    def section(title: str, body: str, key: str) -> str:
        return f'<section id="{key}"><h2>{escape(title)}</h2>{body}</section>'

    def header(self) -> str:
        d, t = self.d, self.d.tasks
        cfg = d.config
        name = cfg.get("workflow") or d.path.name
        status = d.runs[-1]["status"] if d.runs else "no records"
        if d.live is not None:
            status = "running"
        states, n = np.unique(t.state.astype(str), return_counts=True)
        counts = dict(zip(states.tolist(), n.tolist(), strict=True))
        queued = counts.get("submitted", 0) + counts.get("retried", 0)
        restarts = sum(c.restarts for c in d.components)
        done = t.state == "done"
        dur = (t.ended - t.started)[done]
        dur = dur[np.isfinite(dur)]
        of = [f"of {len(t):,}"]  # the others: recalled from an earlier attempt, lost, ...
        of += [f"{counts[k]:,} {k}" for k in ("recalled", "lost", "cancelled") if k in counts]
        cards = [
            ("tasks done", f"{counts.get('done', 0):,}", "; ".join(of)),
            ("running", f"{counts.get('running', 0):,}", f"{queued:,} queued"),
            ("failed", f"{counts.get('failed', 0):,}", f"{int(t.retries.sum()):,} retries"),
            ("components", f"{len(d.components)}", f"{restarts} restarts"),
            ("wall time", fmt_dur(self.span), f"{len(d.runs)} attempt(s)"),
            (
                "task time",
                fmt_dur(float(np.median(dur))) if len(dur) else "-",
                f"median; max {fmt_dur(float(dur.max()))}" if len(dur) else "none finished",
            ),
        ]
        peaks, cpus = t.peak_rss[np.isfinite(t.peak_rss)], t.cpu[np.isfinite(t.cpu)]
        if len(peaks) or len(cpus):
            worst = fmt_mem(float(peaks.max())) if len(peaks) else "-"
            total = f"CPU time {fmt_dur(float(cpus.sum()))} in all" if len(cpus) else "no CPU time"
            cards.append(("peak memory", worst, f"of a task; {total}"))
        if not len(t):  # a run of components only
            cards = [c for c in cards if c[0] in ("components", "wall time")]
        for m in self._latest_metrics()[: 10 - len(cards)]:
            last_step = m.step[-1] if m.step is not None else np.nan
            step = f"step {int(last_step)}" if np.isfinite(last_step) else "latest"
            cards.append((m.name, fmt_num(float(m.value[-1])), step))
        meta = [f"run directory {d.path}"]
        meta += [f"{k} {cfg[k]}" for k in ("store", "executor") if cfg.get(k)]
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.t0))
        meta.append(f"started {started}")
        if d.live is not None:
            meta.append(f"live: pid {d.live.get('pid')} on {d.live.get('host')}")
        card_html = "".join(
            f'<div class="card{" bad" if label == "failed" and value != "0" else ""}">'
            f"<b>{escape(value)}</b><span>{escape(label)}</span><small>{escape(sub)}</small></div>"
            for label, value, sub in cards
        )
        return (
            f'<header><h1>{escape(str(name))} <em class="status {escape(status)}">'
            f"{escape(status)}</em></h1>"
            f'<p class="meta">{" · ".join(escape(m) for m in meta)}</p>'
            f'<div class="cards">{card_html}</div></header>'
        )

    def _latest_metrics(self) -> list[Series]:
        seen: dict[str, Series] = {}
        for m in self.d.metrics:
            if len(m.time) and (m.name not in seen or m.time[-1] > seen[m.name].time[-1]):
                seen[m.name] = m
        return sorted(seen.values(), key=lambda m: m.name)

    # --- timeline ------------------------------------------------------------------------

    def gantt(self) -> str:
        d, t = self.d, self.d.tasks
        started = np.isfinite(self.start)
        lane, labels = task_lanes(t.host, t.worker, self.start, self.end)
        n_bars = int(started.sum())
        aggregate = n_bars > MAX_BARS or len(labels) > MAX_ROWS
        n_comp = len(d.components)
        group_of = np.arange(len(labels))
        row_labels = list(labels)
        capacity = np.ones(len(labels))
        if aggregate and len(labels) > MAX_ROWS:
            group_of = np.arange(len(labels)) * MAX_ROWS // len(labels)
            capacity = np.bincount(group_of).astype(float)
            row_labels = []
            for g in range(MAX_ROWS):
                members = [labels[i] for i in np.flatnonzero(group_of == g)]
                row_labels.append(
                    f"{members[0]} (+{len(members) - 1})" if len(members) > 1 else members[0]
                )
        if n_comp + len(row_labels) == 0:
            return '<p class="none">nothing has started yet</p>'
        row_h = max(3.0, min(18.0, 600 / max(len(row_labels), 1)))
        comp_h = max(row_h, 14.0)
        top = 8
        base = top + n_comp * comp_h
        height = int(base + len(row_labels) * row_h + 40)
        frame = s.Frame(0, self.span, 0, 1, height=height, left=110, bottom=34, top=top)
        parts = frame.x_axis("time since start", True)
        label_every = max(1, int(np.ceil(11 / row_h)))
        for r, label in enumerate([c.name for c in d.components] + row_labels):
            y, h = (
                (top + r * comp_h, comp_h) if r < n_comp else (base + (r - n_comp) * row_h, row_h)
            )
            if r % 2 == 0:
                parts.append(
                    f'<rect class="stripe" x="{frame.left}" y="{y:.1f}" width="{frame.pw:.0f}" '
                    f'height="{h:.1f}"/>'
                )
            if r < n_comp or (r - n_comp) % label_every == 0:
                short = label if len(label) <= 18 else label[:17] + "…"
                parts.append(
                    f'<text class="rl" x="{frame.left - 6}" y="{y + h / 2:.1f}">'
                    f"{escape(short)}<title>{escape(label)}</title></text>"
                )
        if n_comp:
            parts.append(
                f'<line class="sep" x1="{frame.left}" x2="{frame.left + frame.pw:.0f}" '
                f'y1="{base:.1f}" y2="{base:.1f}"/>'
            )
        pad = min(1.0, row_h * 0.12)
        for r, c in enumerate(d.components):
            y = top + r * comp_h + 2
            for a, b, how in c.intervals:
                b2 = d.t1 if b is None else b
                x0, x1 = float(frame.px(a - d.t0)), float(frame.px(b2 - d.t0))
                ok = how in (None, "finished", "stopped")
                fill = s.SLATE[min(r, len(s.SLATE) - 1)] if ok else s.FAILED
                what = "running" if b is None else f"ended: {how}"
                tip = (
                    f"{c.name} on {c.host or '?'}: {fmt_dur(b2 - a)} from "
                    f"+{fmt_dur(a - d.t0)}, {what}"
                )
                parts.append(
                    f'<rect class="comp" x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 1):.1f}" '
                    f'height="{comp_h - 4:.1f}" fill="{fill}"><title>{escape(tip)}</title></rect>'
                )
        if aggregate:
            parts += self._gantt_bins(frame, lane, group_of, capacity, len(row_labels), base, row_h)
            note = (
                f"{n_bars:,} task runs, drawn as {BINS} time bins of {fmt_dur(self.width)} per "
                f"{'slot' if len(labels) <= MAX_ROWS else 'group of slots'}: the darker, the "
                "busier; the colour is the task that kept it busiest."
            )
        else:
            parts += self._gantt_bars(frame, lane, base, row_h, pad)
            note = f"{n_bars:,} task runs; hover a bar for its task." if n_bars else "no task runs."
        for r in d.runs[1:]:  # where each resumed attempt began
            x = float(frame.px(r["started"] - d.t0))
            parts.append(
                f'<line class="attempt" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                f'y2="{height - frame.bottom:.0f}"/><text class="attempt" x="{x + 3:.1f}" '
                f'y="{height - frame.bottom - 4:.0f}">attempt {r["attempt"]}</text>'
            )
        if len(labels) and all(w is None for w in t.worker):
            note += " Workers were not recorded: rows are slots packed per host."
        items = [(n, self.name_color[t.names.index(n)]) for n in self.color_names]
        if len(t.names) > TOP_NAMES:
            items.append(("other tasks", s.OTHER))
        if n_comp:
            items.append(("components", s.SLATE[0]))
        items.append(("failed, or ended to restart", s.FAILED))
        return (
            s.svg(parts, height, label="timeline", frame=frame)
            + s.legend(items)
            + f'<p class="note">{escape(note)}</p>'
        )

    def _gantt_bars(
        self, frame: s.Frame, lane: np.ndarray, base: float, row_h: float, pad: float
    ) -> list[str]:
        d, t = self.d, self.d.tasks
        out = []
        for i in np.flatnonzero(lane >= 0).tolist():
            a, b = float(self.start[i]), float(self.end[i])
            x0, x1 = float(frame.px(a - d.t0)), float(frame.px(b - d.t0))
            state = t.state[i]
            fill = s.FAILED if state == "failed" else self.name_color[int(t.name[i])]
            cls = "bar run" if state == "running" else "bar"
            tip = (
                f"{t.names[int(t.name[i])]}[{t.item[i]}] {state}: {fmt_dur(b - a)} "
                f"from +{fmt_dur(a - d.t0)} on {t.host[i] or '?'}"
            )
            if state == "failed" and t.reason[i]:
                tip += f" ({t.reason[i]})"
            if np.isfinite(t.cpu[i]) or np.isfinite(t.peak_rss[i]):
                tip += f"; CPU {fmt_dur(float(t.cpu[i]))}, peak memory {fmt_mem(t.peak_rss[i])}"
            y = base + int(lane[i]) * row_h + pad
            out.append(
                f'<rect class="{cls}" x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 0.8):.1f}" '
                f'height="{row_h - 2 * pad:.1f}" fill="{fill}"><title>{escape(tip)}</title></rect>'
            )
        return out

    def _gantt_bins(
        self,
        frame: s.Frame,
        lane: np.ndarray,
        group_of: np.ndarray,
        capacity: np.ndarray,
        nrows: int,
        base: float,
        row_h: float,
    ) -> list[str]:
        d, t = self.d, self.d.tasks
        ok = lane >= 0
        row = group_of[lane[ok]]
        color_idx = {c: k for k, c in enumerate(dict.fromkeys(self.name_color.values()))}
        colors = list(color_idx)
        ncol = len(colors) + 1  # + failed
        name_col = np.array([color_idx[self.name_color[i]] for i in range(len(t.names))], np.int64)
        col = name_col[t.name[ok]]
        col[t.state[ok] == "failed"] = len(colors)
        colors.append(s.FAILED)
        busy = s.bin_busy(
            self.start[ok], self.end[ok], row * ncol + col, nrows * ncol, d.t0, self.width, BINS
        ).reshape(nrows, ncol, BINS)
        total = busy.sum(axis=1) / capacity[:, None]
        top = busy.argmax(axis=1)
        level = np.clip(np.ceil(total * 4), 0, 4).astype(np.int64)  # 0 = idle, 1..4 busier
        paths: dict[tuple[int, int], list[str]] = {}
        bw = frame.pw / BINS
        h = max(row_h - (1 if row_h > 4 else 0), 1)
        for r in range(nrows):
            lv, tp = level[r], top[r]
            change = np.flatnonzero((np.diff(lv) != 0) | (np.diff(tp) != 0)) + 1
            starts = np.concatenate([[0], change])
            stops = np.concatenate([change, [BINS]])
            y = base + r * row_h
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                if lv[a] == 0:
                    continue
                x = frame.left + a * bw
                paths.setdefault((int(tp[a]), int(lv[a])), []).append(
                    f"M{x:.1f} {y:.1f}h{(b - a) * bw:.1f}v{h:.1f}h{-(b - a) * bw:.1f}z"
                )
        out = []
        for (c, lv), segs in sorted(paths.items()):
            out.append(
                f'<path d="{"".join(segs)}" fill="{colors[c]}" fill-opacity="{lv / 4:.2f}"/>'
            )
        return out

    # --- utilisation ---------------------------------------------------------------------

    def utilisation(self) -> str:
        d, t = self.d, self.d.tasks
        ok = np.isfinite(self.start)
        ncolor = min(len(t.names), TOP_NAMES)
        order = {n: k for k, n in enumerate(self.color_names)}
        group = np.array([order.get(t.names[i], ncolor) for i in range(len(t.names))], np.int64)
        layers = []
        cores = s.bin_busy(
            self.start[ok],
            self.end[ok],
            group[t.name[ok]],
            ncolor + 1,
            d.t0,
            self.width,
            BINS,
            weight=t.cpus[ok],
        )
        comp_start, comp_end, comp_w, comp_g = [], [], [], []
        for g, c in enumerate(d.components):
            for a, b, _ in c.intervals:
                comp_start.append(a)
                comp_end.append(d.t1 if b is None else b)
                comp_w.append(c.cpus)
                comp_g.append(min(g, len(s.SLATE) - 1))
        n_groups = min(len(d.components), len(s.SLATE))
        comp = s.bin_busy(
            np.array(comp_start),
            np.array(comp_end),
            np.array(comp_g, np.int64),
            n_groups,
            d.t0,
            self.width,
            BINS,
            weight=np.array(comp_w),
        )
        for g in range(n_groups):
            if len(d.components) > len(s.SLATE) and g == n_groups - 1:
                label = "other components"
            else:
                label = d.components[g].name
            layers.append((label, comp[g], s.SLATE[g]))
        for k, name in enumerate(self.color_names):
            layers.append((name, cores[k], s.color(k)))
        if len(t.names) > TOP_NAMES:
            layers.append(("other tasks", cores[ncolor], s.OTHER))
        if not layers:
            return '<p class="none">nothing has run yet</p>'
        peak = float(sum(v for _, v, _ in layers).max())
        limit = self.d.config.get("cores")
        util = s.stacked_chart(
            layers,
            self.edges,
            x0=d.t0,
            x_label="time since start",
            y_label="cores in use",
            limit=float(limit) if isinstance(limit, int | float) else None,
        )
        # tasks running and waiting (submitted, not yet started)
        sub = t.submitted.copy()
        sub[~np.isfinite(sub)] = self.start[~np.isfinite(sub)]
        wait_end = np.where(ok, self.start, np.where(np.isfinite(t.ended), t.ended, d.t1))
        has = np.isfinite(sub)
        waiting = s.bin_busy(
            sub[has], wait_end[has], np.zeros(int(has.sum()), np.int64), 1, d.t0, self.width, BINS
        )[0]
        running = s.bin_busy(
            self.start[ok],
            self.end[ok],
            np.zeros(int(ok.sum()), np.int64),
            1,
            d.t0,
            self.width,
            BINS,
        )[0]
        mids = (self.edges[:-1] + self.edges[1:]) / 2 - d.t0
        counts = s.line_chart(
            [
                s.Line("running", mids, running, "#4e79a7"),
                s.Line("waiting to start", mids, waiting, "#f28e2b"),
            ],
            x_label="time since start",
            y_label="tasks",
            x_time=True,
            x_range=(0, self.span),
            height=180,
            zero=True,
        )
        items = [(label, c) for label, _, c in layers]
        out = (
            util
            + s.legend(items)
            + f'<p class="note">peak {peak:.1f} cores busy (mean over bins of '
            f"{escape(fmt_dur(self.width))}); tasks count their cpus × ranks.</p>"
        )
        if not len(t):
            return out + '<p class="none">no tasks submitted</p>'
        return out + counts + s.legend([("running", "#4e79a7"), ("waiting to start", "#f28e2b")])

    # --- store, backlog, metrics -----------------------------------------------------------

    def _rate_lines(self, series: list[Series]) -> list[s.Line]:
        """Amounts per second in each time bin, an amount spread over the interval it
        covers (from ``since`` to ``time``)."""
        lines = []
        mids = (self.edges[:-1] + self.edges[1:]) / 2 - self.d.t0
        starts = {c.name: np.array([a for a, _, _ in c.intervals]) for c in self.d.components}
        for k, ser in enumerate(series[:TOP_NAMES]):
            since = ser.since.copy() if ser.since is not None else ser.time.copy()
            first = np.flatnonzero(np.isnan(since))
            if len(first):  # a process's first snapshot: since it (or its component) started
                began = starts.get(ser.name, np.array([]))
                at = np.searchsorted(began, ser.time[first], side="right") - 1
                since[first] = np.where(
                    at >= 0, began[np.maximum(at, 0)] if len(began) else self.d.t0, self.d.t0
                )
            spread = ser.time > since
            rate = s.bin_busy(
                since[spread],
                ser.time[spread],
                np.zeros(int(spread.sum()), np.int64),
                1,
                self.d.t0,
                self.width,
                BINS,
                weight=ser.value[spread] / (ser.time - since)[spread],
            )[0]
            idx = np.clip(
                np.searchsorted(self.edges, ser.time[~spread], side="right") - 1, 0, BINS - 1
            )
            rate += np.bincount(idx, weights=ser.value[~spread], minlength=BINS) / self.width
            lines.append(s.Line(ser.name, mids, rate, s.color(k)))
        return lines

    def store(self) -> str:
        traffic = self.d.store
        if traffic is None or not traffic.series:
            return '<p class="none">no store counters recorded</p>'
        lines = self._rate_lines(traffic.series)
        rows = "".join(
            f"<tr><td>{escape(r['component'])}</td><td>{escape(r['op'])}</td>"
            f"<td>{escape(r['prefix'])}</td><td class=num>{r['ops']:,}</td>"
            f"<td class=num>{escape(fmt_bytes(r['bytes']))}</td></tr>"
            for r in traffic.totals[:12]
        )
        more = len(traffic.totals) - 12
        return (
            s.line_chart(
                lines,
                x_label="time since start",
                y_label="bytes/s",
                x_time=True,
                x_range=(0, self.span),
                y_fmt="bytes",
                zero=True,
            )
            + s.legend([(ln.label, ln.color) for ln in lines])
            + '<table class="totals"><thead><tr><th>component</th><th>op</th><th>key prefix</th>'
            "<th class=num>ops</th><th class=num>bytes</th></tr></thead><tbody>"
            + rows
            + "</tbody></table>"
            + (
                f'<p class="note">and {more} more (component, op, prefix) rows</p>'
                if more > 0
                else ""
            )
        )

    def backlog(self) -> str:
        series, unknown = self.d.backlog, self.d.backlog_unknown
        note = '<p class="note">Backlog is known for streams read through consumer groups only'
        note += f"; not for {escape(', '.join(unknown))}.</p>" if unknown else ".</p>"
        if not series:
            return '<p class="none">no stream backlog recorded</p>' + (note if unknown else "")
        lines = [
            s.Line(x.name, x.time - self.d.t0, x.value, s.color(k))
            for k, x in enumerate(series[:TOP_NAMES])
        ]
        chart = s.line_chart(
            lines,
            x_label="time since start",
            y_label="entries the slowest group has not read",
            x_time=True,
            x_range=(0, self.span),
            step=True,
            zero=True,
        )
        return chart + s.legend([(ln.label, ln.color) for ln in lines]) + note

    def metrics(self) -> str:
        groups: dict[str, list[Series]] = {}
        for m in self.d.metrics:
            if not is_backlog(m.name):
                groups.setdefault(m.name, []).append(m)
        if not groups:
            return '<p class="none">no metrics logged (simai.log_metric)</p>'
        out = ['<div class="metrics">']
        for name, series in sorted(groups.items()):
            multi = len(series) > 1
            by_time = [
                s.Line(m.source or name, m.time - self.d.t0, m.value, s.color(k))
                for k, m in enumerate(series)
            ]
            by_step = [
                s.Line(m.source or name, m.step, m.value, s.color(k))
                for k, m in enumerate(series)
                if m.step is not None
            ]
            last = max(series, key=lambda m: m.time[-1])
            n = sum(len(m.time) for m in series)
            head = (
                f"<h3>{escape(name)} <small>latest {escape(fmt_num(float(last.value[-1])))}"
                f" · {n:,} values</small></h3>"
            )
            charts = []
            if by_step:
                charts.append(
                    s.line_chart(
                        by_step,
                        x_label="step",
                        y_label=name,
                        x_time=False,
                        height=200,
                        width=540,
                        left=70,
                    )
                )
            charts.append(
                s.line_chart(
                    by_time,
                    x_label="time since start",
                    y_label=name,
                    x_time=True,
                    x_range=(0, self.span),
                    height=200,
                    width=540,
                    left=70,
                )
            )
            leg = s.legend([(ln.label, ln.color) for ln in by_time]) if multi else ""
            out.append(
                f'<div class="metric">{head}<div class="pair">{"".join(charts)}</div>{leg}</div>'
            )
        out.append("</div>")
        return "".join(out)

    # --- failures ------------------------------------------------------------------------

    def failures(self) -> str:
        d = self.d
        if not d.failures:
            return '<p class="none">no failures</p>'
        rows = []
        for f in d.failures:
            item = f"{f['name']}[{f['item_id']}]" if f["item_id"] is not None else f["name"]
            detail = (f["detail"] or "").rstrip()
            tail = self._log_tail(f)
            first = next(
                (ln for ln in reversed(detail.splitlines()) if ln.strip()), "(no detail recorded)"
            )
            body = ""
            if detail:
                body += f"<h4>error</h4><pre>{escape(detail)}</pre>"
            if tail:
                body += f"<h4>log tail: {escape(tail[0])}</h4><pre>{escape(tail[1])}</pre>"
            when = "-" if not f["time"] else f"+{fmt_dur(f['time'] - d.t0)}"
            reason = f.get("reason") or "-"
            if f.get("peak_rss") is not None:
                reason += f", peak memory {fmt_mem(f['peak_rss'])}"
            rows.append(
                f'<tr><td><span class="kind {escape(f["kind"])}">{escape(f["kind"])}</span></td>'
                f"<td>{escape(item)}</td><td>{escape(when)}</td>"
                f"<td>{escape(str(f['host'] or '-'))}</td><td>{escape(reason)}</td>"
                f"<td><details><summary>{escape(first[:160])}</summary>{body}</details></td></tr>"
            )
        more = ""
        if d.failures_total > len(d.failures):
            more = (
                f'<p class="note">newest {len(d.failures)} of {d.failures_total:,} shown; '
                f"`simai status {escape(str(d.path))} --failures N` lists more.</p>"
            )
        return (
            '<div class="scroll"><table class="fail"><thead><tr><th>kind</th><th>what</th>'
            "<th>when</th><th>host</th><th>reason</th>"
            "<th>error (click for details and log tail)</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table></div>"
            + more
        )

    def _log_tail(self, f: dict[str, Any]) -> tuple[str, str] | None:
        """The last lines of a failure's log: a component's own log, or a task's
        ``<name>-<id>[.<attempt>].err|.out`` (the executor's naming)."""
        if f["item_id"] is None:
            candidates = [self.run_dir.log_path(f["name"])]
        else:
            stem = f"{str(f['name']).replace(os.sep, '_')}-{f['item_id']}"
            pattern = re.compile(re.escape(stem) + r"(\.\d+)?\.(err|out|log)")
            candidates = sorted(
                (self.run_dir.logs_dir / n for n in self._log_files if pattern.fullmatch(n)),
                key=lambda p: (p.suffix != ".err", p.name),
            )
        for path in candidates:
            try:
                with open(path, "rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, size - 16384))
                    text = fh.read().decode(errors="replace")
            except OSError:
                continue
            lines = text.splitlines()[-LOG_TAIL_LINES:]
            if any(ln.strip() for ln in lines):
                return path.name, "\n".join(lines)
        return None

    @functools.cached_property
    def _log_files(self) -> list[str]:
        try:
            return os.listdir(self.run_dir.logs_dir)
        except OSError:
            return []
