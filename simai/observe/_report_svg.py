"""Inline SVG charts for the run report: axes, lines, stacked areas and Gantt rows.

Plain strings built in Python (no plotting library, nothing fetched when the page opens).
Every chart is an ``<svg class="chart">`` whose drawing fits in a fixed view box and scales
with the page. Numbers are rounded to 0.1 px to keep big reports small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from simai.observe.formatting import fmt_bytes, fmt_num

#: colour-blind-friendly categorical palette (Tableau 10)
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#86bcb6",
)
OTHER = "#c9c9c9"
#: components: slate shades, apart from the task colours
SLATE = ("#52667a", "#8aa0b5", "#34495e", "#a9b8c6", "#6c8198", "#c3ced8")
FAILED = "#e15759"
WIDTH = 1100


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def time_ticks(span: float, n: int = 8) -> tuple[list[float], float, str]:
    """Tick positions (seconds) for a relative time axis, with the unit to label them in."""
    if span < 120:
        unit, div = "s", 1.0
    elif span < 7200:
        unit, div = "min", 60.0
    else:
        unit, div = "h", 3600.0
    return [t * div for t in nice_ticks(0, span / div, n)], div, unit


def _f(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


@dataclass
class Frame:
    """A plot area inside an SVG: maps data coordinates to pixels and draws the axes."""

    x0: float
    x1: float
    y0: float
    y1: float
    height: int = 220
    width: int = WIDTH
    left: int = 110
    right: int = 20
    top: int = 24
    bottom: int = 34
    log_y: bool = False

    @property
    def pw(self) -> float:
        return self.width - self.left - self.right

    @property
    def ph(self) -> float:
        return self.height - self.top - self.bottom

    def _ty(self, v: np.ndarray | float) -> np.ndarray | float:
        if self.log_y:
            return np.log10(np.maximum(v, 1e-300))
        return v

    def px(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.left + (np.asarray(x) - self.x0) / (self.x1 - self.x0 or 1) * self.pw

    def py(self, y: np.ndarray | float) -> np.ndarray | float:
        lo, hi = self._ty(self.y0), self._ty(self.y1)
        return self.top + self.ph - (self._ty(np.asarray(y, float)) - lo) / (hi - lo or 1) * self.ph

    def x_axis(self, x_label: str, x_time: bool) -> list[str]:
        out = []
        if x_time:
            ticks, div, unit = time_ticks(self.x1 - self.x0)
            xt = [(self.x0 + t, f"{_f(t / div)} {unit}" if t else "0") for t in ticks]
        else:
            xt = [(t, fmt_num(t)) for t in nice_ticks(self.x0, self.x1, 8)]
        base = self.top + self.ph
        for x, label in xt:
            if not self.x0 - 1e-9 <= x <= self.x1 + 1e-9:
                continue
            p = _f(float(self.px(x)))
            out.append(
                f'<line class="tick" x1="{p}" x2="{p}" y1="{_f(base)}" y2="{_f(base + 4)}"/>'
            )
            out.append(f'<text class="xl" x="{p}" y="{_f(base + 16)}">{escape(label)}</text>')
        out.append(
            f'<line class="axis" x1="{self.left}" x2="{_f(self.left + self.pw)}" '
            f'y1="{_f(base)}" y2="{_f(base)}"/>'
        )
        out.append(
            f'<text class="xt" x="{_f(self.left + self.pw)}" y="{self.height - 2}">'
            f"{escape(x_label)}</text>"
        )
        return out

    def axes(
        self, x_label: str, y_label: str, x_time: bool, y_fmt: str = "num", grid: bool = True
    ) -> list[str]:
        out = self.x_axis(x_label, x_time)
        if self.log_y:
            lo, hi = math.floor(math.log10(self.y0)), math.ceil(math.log10(self.y1))
            yt = [10.0**e for e in range(lo, hi + 1)]
        else:
            yt = nice_ticks(self.y0, self.y1, max(2, int(self.ph // 40)))
        fmt = fmt_bytes if y_fmt == "bytes" else fmt_num
        for y in yt:
            if not self.y0 - 1e-12 <= y <= self.y1 * (1 + 1e-9) + 1e-12:
                continue
            p = _f(float(self.py(y)))
            if grid:
                out.append(
                    f'<line class="grid" x1="{self.left}" x2="{_f(self.left + self.pw)}" '
                    f'y1="{p}" y2="{p}"/>'
                )
            out.append(f'<text class="yl" x="{self.left - 6}" y="{p}">{escape(fmt(y))}</text>')
        out.append(f'<text class="yt" x="4" y="{self.top - 20}">{escape(y_label)}</text>')
        return out


def svg(
    parts: Sequence[str],
    height: int,
    width: int = WIDTH,
    label: str = "",
    frame: Frame | None = None,
) -> str:
    """An ``<svg class="chart">``; with a time ``frame``, data attributes that let the
    page's script show the time under the pointer."""
    data = ""
    if frame is not None:
        data = (
            f' data-x0="{frame.x0:.6g}" data-x1="{frame.x1:.6g}" data-left="{frame.left}" '
            f'data-pw="{frame.pw:.1f}" data-top="{frame.top}" data-ph="{frame.ph:.1f}"'
        )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMinYMin meet"{data}>'
        + "".join(parts)
        + "</svg>"
    )


def _path(x: np.ndarray, y: np.ndarray) -> str:
    pts = [f"{_f(a)},{_f(b)}" for a, b in zip(x.tolist(), y.tolist(), strict=True)]
    return "M" + "L".join(pts) if pts else ""


def downsample(
    x: np.ndarray, y: np.ndarray, limit: int = 1500, bins: int = 600
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """At most ``limit`` points as they are; more become ``bins`` means with min/max."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) <= limit:
        return x, y, None, None
    edges = np.linspace(x.min(), x.max(), bins + 1)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    keep = count > 0
    mean = np.bincount(idx, y, minlength=bins)[keep] / count[keep]
    lo = np.full(bins, np.inf)
    hi = np.full(bins, -np.inf)
    np.minimum.at(lo, idx, y)
    np.maximum.at(hi, idx, y)
    mid = ((edges[:-1] + edges[1:]) / 2)[keep]
    return mid, mean, lo[keep], hi[keep]


@dataclass
class Line:
    label: str
    x: np.ndarray
    y: np.ndarray
    color: str


def line_chart(
    lines: Sequence[Line],
    *,
    x_label: str,
    y_label: str,
    x_time: bool,
    x_range: tuple[float, float] | None = None,
    height: int = 220,
    width: int = WIDTH,
    y_fmt: str = "num",
    step: bool = False,
    zero: bool = False,
    left: int = 110,
) -> str:
    """Lines (downsampled to mean with a min-max band when long); log y for wide ranges."""
    prepared = [(ln, *downsample(ln.x, ln.y)) for ln in lines]
    xs = [p[1] for p in prepared if len(p[1])]
    ys = [v for p in prepared for v in (p[2], p[3], p[4]) if v is not None and len(v)]
    if not xs:
        return svg(['<text class="empty" x="20" y="30">no values</text>'], 50, width)
    x0, x1 = x_range or (min(float(a.min()) for a in xs), max(float(a.max()) for a in xs))
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    y0 = min(float(a.min()) for a in ys)
    y1 = max(float(a.max()) for a in ys)
    log_y = not zero and y0 > 0 and y1 / y0 > 1e3
    if not log_y:
        if zero or (y0 >= 0 and y0 < 0.25 * y1):
            y0 = min(0.0, y0)
        pad = (y1 - y0) * 0.05 or abs(y1) * 0.1 or 1.0
        y1 += pad
        if y0 != 0:
            y0 -= pad
    else:
        y0, y1 = 10 ** math.floor(math.log10(y0)), 10 ** math.ceil(math.log10(y1))
    frame = Frame(x0, x1, y0, y1, height=height, width=width, left=left, log_y=log_y)
    parts = frame.axes(x_label, y_label, x_time, y_fmt)
    for ln, x, y, lo, hi in prepared:
        if not len(x):
            continue
        px, py = frame.px(x), frame.py(y)
        if lo is not None and hi is not None:
            band = _path(
                np.concatenate([px, px[::-1]]),
                np.concatenate([frame.py(hi), frame.py(lo)[::-1]]),
            )
            parts.append(f'<path class="band" d="{band}Z" fill="{ln.color}"/>')
        if step and len(px) > 1:
            px = np.repeat(px, 2)[1:]
            py = np.repeat(py, 2)[:-1]
        if len(px) == 1:
            parts.append(
                f'<circle cx="{_f(float(px[0]))}" cy="{_f(float(py[0]))}" r="3" fill="{ln.color}"/>'
            )
        else:
            parts.append(
                f'<path class="line" d="{_path(px, py)}" stroke="{ln.color}">'
                f"<title>{escape(ln.label)}</title></path>"
            )
            if len(px) <= 60 and not step:
                parts += [
                    f'<circle cx="{_f(a)}" cy="{_f(b)}" r="2.5" fill="{ln.color}"/>'
                    for a, b in zip(px.tolist(), py.tolist(), strict=True)
                ]
    return svg(parts, height, width, y_label, frame if x_time else None)


def stacked_chart(
    layers: Sequence[tuple[str, np.ndarray, str]],
    edges: np.ndarray,
    *,
    x0: float,
    x_label: str,
    y_label: str,
    height: int = 220,
    width: int = WIDTH,
    y_fmt: str = "num",
    limit: float | None = None,
) -> str:
    """Stacked areas over time bins (``edges`` in seconds from ``x0``), first layer at the
    bottom; ``limit`` draws a dashed capacity line."""
    mids = np.repeat(edges, 2)[1:-1] - x0
    total = np.zeros(len(edges) - 1)
    for _, values, _ in layers:
        total = total + values
    top = max(float(total.max()) if len(total) else 0.0, limit or 0.0) * 1.08 or 1.0
    frame = Frame(0.0, float(edges[-1] - x0), 0.0, top, height=height, width=width)
    parts = frame.axes(x_label, y_label, True, y_fmt)
    below = np.zeros(len(edges) - 1)
    px = frame.px(mids)
    for label, values, col in layers:
        above = below + values
        d = _path(
            np.concatenate([px, px[::-1]]),
            np.concatenate([frame.py(np.repeat(above, 2)), frame.py(np.repeat(below, 2))[::-1]]),
        )
        parts.append(
            f'<path class="area" d="{d}Z" fill="{col}"><title>{escape(label)}</title></path>'
        )
        below = above
    if limit:
        p = _f(float(frame.py(limit)))
        parts.append(
            f'<line class="limit" x1="{frame.left}" x2="{_f(frame.left + frame.pw)}" '
            f'y1="{p}" y2="{p}"/>'
        )
    return svg(parts, height, width, y_label, frame)


def legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span><i style="background:{c}"></i>{escape(label)}</span>' for label, c in items
        )
        + "</div>"
    )


def bin_busy(
    start: np.ndarray,
    end: np.ndarray,
    group: np.ndarray,
    ngroups: int,
    t0: float,
    width: float,
    nbins: int,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Exact busy time per (group, time bin) of intervals ``[start, end)``, in units of the
    bin width (so 1.0 = busy all the bin long), times ``weight``."""
    out = np.zeros((ngroups, nbins + 1))
    if not len(start):
        return out[:, :nbins]
    s = np.clip((start - t0) / width, 0, nbins)
    e = np.clip((end - t0) / width, 0, nbins)
    keep = e > s
    s, e, g = s[keep], e[keep], group[keep]
    w = np.ones(len(s)) if weight is None else weight[keep]
    b0 = np.minimum(np.floor(s).astype(np.int64), nbins - 1)
    b1 = np.minimum(np.floor(e).astype(np.int64), nbins)
    flat = out.reshape(-1)
    row = g.astype(np.int64) * (nbins + 1)
    same = b0 == b1
    np.add.at(flat, row[same] + b0[same], (e - s)[same] * w[same])
    d = ~same
    np.add.at(flat, row[d] + b0[d], (b0[d] + 1 - s[d]) * w[d])
    np.add.at(flat, row[d] + b1[d], (e[d] - b1[d]) * w[d])
    slope = np.zeros_like(out)
    sflat = slope.reshape(-1)
    inner = d & (b1 > b0 + 1)
    np.add.at(sflat, row[inner] + b0[inner] + 1, w[inner])
    np.add.at(sflat, row[inner] + b1[inner], -w[inner])
    out += np.cumsum(slope, axis=1)
    return out[:, :nbins]
