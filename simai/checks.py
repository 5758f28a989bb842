"""Argument checks shared by every layer, with one phrasing for their messages.

A value of the wrong type raises TypeError, a value out of range ValueError; both say
"<name> must be <what>, not <value>". This module imports nothing from simai, so any layer
may use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _fail(error: type[Exception], name: str, what: str, value: Any) -> Exception:
    return error(f"{name} must be {what}, not {value!r}")


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    *,
    maximum: int | None = None,
    optional: bool = False,
) -> Any:
    """Return `value` if it is an int (not a bool) in [minimum, maximum], or None if optional.

    numpy integers count as ints: they are returned as Python ints."""
    if optional and value is None:
        return None
    if minimum is not None and maximum is not None:
        what = f"an int in {minimum}..{maximum}"
    elif minimum is not None:
        what = f"an int >= {minimum}"
    else:
        what = "an int"
    if optional:
        what += " or None"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(TypeError, name, what, value)
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(ValueError, name, what, value)
    return value


def check_number(
    name: str,
    value: Any,
    minimum: float | None = None,
    *,
    positive: bool = False,
    optional: bool = False,
    unit: str = "",
) -> Any:
    """Return `value` as a float if it is a finite real number, >= minimum (or > 0 when
    positive), or None if optional. `unit` names what it counts, e.g. "seconds"."""
    if optional and value is None:
        return None
    what = f"a number of {unit}" if unit else "a number"
    if positive:
        what += " > 0"
    elif minimum is not None:
        what += f" >= {minimum:g}"
    if optional:
        what += " or None"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(TypeError, name, what, value)
    number = float(value)
    if (
        not math.isfinite(number)
        or (positive and not number > 0)
        or (minimum is not None and number < minimum)
    ):
        raise _fail(ValueError, name, what, value)
    return number


def check_seconds(name: str, value: Any, *, positive: bool = False, optional: bool = True) -> Any:
    """Return `value` as float seconds (>= 0, or > 0 when positive), or None if optional."""
    return check_number(name, value, 0.0, positive=positive, optional=optional, unit="seconds")
