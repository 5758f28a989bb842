"""Argument checks shared by every layer, with one phrasing for their messages.

A value of the wrong type raises TypeError, a value out of range ValueError; both say
"<name> must be <what>, not <value>". Each check returns the value in the type it names
(an int, a float), so callers keep what they checked. This module imports nothing from
simai, so any layer may use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, overload


def _fail(error: type[Exception], name: str, what: str, value: Any) -> Exception:
    return error(f"{name} must be {what}, not {value!r}")


@overload
def check_int(
    name: str,
    value: Any,
    minimum: int | None = ...,
    *,
    maximum: int | None = ...,
    optional: Literal[False] = ...,
) -> int: ...
@overload
def check_int(
    name: str,
    value: Any,
    minimum: int | None = ...,
    *,
    maximum: int | None = ...,
    optional: Literal[True],
) -> int | None: ...
def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    *,
    maximum: int | None = None,
    optional: bool = False,
) -> int | None:
    """`value` if it is a Python int (not a bool) in [minimum, maximum]; None is allowed when
    `optional`. numpy integers are refused: they do not survive JSON, which records use."""
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
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(TypeError, name, what, value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(ValueError, name, what, value)
    return int(value)


@overload
def check_number(
    name: str,
    value: Any,
    minimum: float | None = ...,
    *,
    positive: bool = ...,
    optional: Literal[False] = ...,
    unit: str = ...,
    infinite: bool = ...,
) -> float: ...
@overload
def check_number(
    name: str,
    value: Any,
    minimum: float | None = ...,
    *,
    positive: bool = ...,
    optional: Literal[True],
    unit: str = ...,
    infinite: bool = ...,
) -> float | None: ...
def check_number(
    name: str,
    value: Any,
    minimum: float | None = None,
    *,
    positive: bool = False,
    optional: bool = False,
    unit: str = "",
    infinite: bool = False,
) -> float | None:
    """`value` as a float if it is a real number (finite, unless `infinite` allows +inf),
    >= minimum (or > 0 when positive); None is allowed when `optional`. `unit` names what it
    counts, e.g. "seconds"."""
    if optional and value is None:
        return None
    what = "a number" if infinite else "a finite number"
    if unit:
        what += f" of {unit}"
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
        math.isnan(number)
        or (math.isinf(number) and not (infinite and number > 0))
        or (positive and not number > 0)
        or (minimum is not None and number < minimum)
    ):
        raise _fail(ValueError, name, what, value)
    return number


@overload
def check_seconds(
    name: str, value: Any, *, positive: bool = ..., optional: Literal[False] = ...
) -> float: ...
@overload
def check_seconds(
    name: str, value: Any, *, positive: bool = ..., optional: Literal[True]
) -> float | None: ...
def check_seconds(
    name: str, value: Any, *, positive: bool = False, optional: bool = False
) -> float | None:
    """`value` as float seconds, >= 0 (or > 0 when positive); inf means no limit, and None is
    allowed when `optional`."""
    if optional:
        return check_number(
            name, value, 0.0, positive=positive, optional=True, unit="seconds", infinite=True
        )
    return check_number(name, value, 0.0, positive=positive, unit="seconds", infinite=True)
