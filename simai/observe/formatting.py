"""Short human forms of numbers, byte counts, memory and durations, as reports and `simai status`
show them."""

from __future__ import annotations

import math


def fmt_num(v: float | None) -> str:
    """A short human form of a number: 0.00123 → 1.23e-3, 12345 → 12.3k."""
    if v is None or not math.isfinite(v):
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e15 or a < 1e-3:
        return f"{v:.3g}"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.4g}"


def fmt_bytes(v: float) -> str:
    """A byte count in decimal units: ``512 B``, ``1.5 kB``, ``12.3 MB``, ``4.56 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g} B"


def fmt_mem(v: float | None) -> str:
    """Memory in binary units, as ``free`` and batch systems give it: ``800 KiB``,
    ``512 MiB``, ``1.5 GiB`` (``-`` when not known)."""
    if v is None or not math.isfinite(v):
        return "-"
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}" if v < 100 * scale else f"{v / scale:.0f} {unit}"
    return f"{v:.0f} B"


def fmt_dur(s: float | None) -> str:
    """Seconds as ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
