"""simai.checks: one phrasing, TypeError for the wrong type, ValueError out of range."""

import math

import numpy as np
import pytest

from simai.checks import check_int, check_number, check_seconds


def test_check_int():
    assert check_int("n", 3, 1) == 3 and type(check_int("n", 3, 1)) is int
    assert check_int("n", None, 1, optional=True) is None
    with pytest.raises(ValueError, match=r"^n must be an int >= 1, not 0$"):
        check_int("n", 0, 1)
    with pytest.raises(ValueError, match=r"^n must be an int in 1\.\.4, not 5$"):
        check_int("n", 5, 1, maximum=4)
    for bad in (True, 2.0, "2", np.int64(2), None):
        with pytest.raises(TypeError, match=r"^n must be an int >= 1, not "):
            check_int("n", bad, 1)
    with pytest.raises(TypeError, match=r"^n must be an int >= 1 or None, not '2'$"):
        check_int("n", "2", 1, optional=True)


def test_check_number():
    assert check_number("x", np.float32(0.5)) == 0.5 and type(check_number("x", 1)) is float
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"^x must be a finite number, not "):
            check_number("x", bad)
    with pytest.raises(ValueError, match=r"^beta must be a finite number >= 0, not -1$"):
        check_number("beta", -1, 0)
    with pytest.raises(TypeError, match=r"^beta must be a finite number >= 0, not True$"):
        check_number("beta", True, 0)


def test_check_seconds():
    assert check_seconds("timeout", math.inf) == math.inf  # no limit
    assert check_seconds("timeout", None, optional=True) is None
    assert check_seconds("walltime", 2, positive=True) == 2.0
    with pytest.raises(ValueError, match=r"^walltime must be a number of seconds > 0, not 0$"):
        check_seconds("walltime", 0, positive=True)
    for bad in (math.nan, -1, -math.inf):
        with pytest.raises(ValueError, match=r"^timeout must be a number of seconds >= 0"):
            check_seconds("timeout", bad)
    with pytest.raises(TypeError, match=r"^timeout must be a number of seconds >= 0, not None$"):
        check_seconds("timeout", None)
