"""What user code gives back, made into what the loop keeps: values, scores, error texts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from simai.launch import CommandResult
from simai.steer.tasks import SimulationError

__all__ = ["as_value", "error_text", "last_line_value", "split_predictions"]

_MAX_ERROR = 4000


def error_text(exc: BaseException) -> str:
    """``"Type: message"``, cut to a few thousand characters for the state files."""
    # a SimulationError's message already names the exception the simulation raised
    text = str(exc) if isinstance(exc, SimulationError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def as_value(raw: Any) -> float:
    """A simulation's value as a finite float, or ValueError saying why not."""
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"simulate returned {raw!r}, not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"simulate returned {type(raw).__name__} {raw!r}, not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"simulate returned {value}, not a finite number")
    return value


def last_line_value(result: CommandResult) -> float:
    """The value a simulation command printed as the last line of its stdout."""
    try:
        lines = Path(result.stdout).read_text(errors="replace").splitlines()
    except OSError as e:
        raise ValueError(f"cannot read the command's stdout {result.stdout}: {e}") from None
    lines = [ln.strip() for ln in lines if ln.strip()]
    if not lines:
        raise ValueError(f"the command printed nothing on stdout ({result.stdout})")
    try:
        return as_value(lines[-1])
    except ValueError:
        raise ValueError(
            f"the last line of the command's stdout ({result.stdout}) is not a number: "
            f"{lines[-1][:200]!r}"
        ) from None


def split_predictions(out: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``predict``'s output as (mean, std or None), each of length ``n``, or ValueError."""
    std = None
    if isinstance(out, tuple) and len(out) == 2 and np.ndim(out[0]) == 1 and np.ndim(out[1]) == 1:
        mean, std = np.asarray(out[0], dtype=float), np.asarray(out[1], dtype=float)
    else:
        try:
            mean = np.asarray(out, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(
                f"predict returned {type(out).__name__}: expected an array of {n} means "
                "or a tuple (mean, std)"
            ) from None
    for what, arr in (("mean", mean), ("std", std)):
        if arr is not None and arr.shape != (n,):
            raise ValueError(
                f"predict returned a {what} of shape {arr.shape} for {n} candidates; "
                f"expected ({n},)"
            )
    return mean, std
