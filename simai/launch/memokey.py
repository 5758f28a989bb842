"""The memo key of a task: what it computes, hashed, so that a resume knows it finished.

Standard library only (cloudpickle is imported only for values pickle cannot take): the
local executor's worker, a script that imports nothing of simai, loads this file by its
path and computes its tasks' keys here, byte for byte as the workflow does.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Mapping, Sequence

#: each function's identity by its id (the function is kept alive while cached, so that
#: its id is not reused)
_IDENTS: dict[int, tuple[object, str]] = {}


def function_ident(fn: Callable[..., object]) -> str:
    """The function's identity in memo keys: ``module:qualname``."""
    known = _IDENTS.get(id(fn))
    if known is not None and known[0] is fn:
        return known[1]
    ident = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    if len(_IDENTS) >= 256:
        _IDENTS.clear()
    _IDENTS[id(fn)] = (fn, ident)
    return ident


def function_key(
    fn: Callable[..., object], args: tuple, kwargs: Mapping[str, object] | None
) -> str | None:
    """The memo key of ``fn(*args, **kwargs)``: sha256 of the function's identity and the
    arguments; None when they cannot be pickled."""
    items = sorted(kwargs.items()) if kwargs else []
    return _digest(("function", function_ident(fn), args, items))


def command_key(argv: Sequence[str], cwd: object, env: Mapping[str, str] | None) -> str | None:
    """The memo key of a command: sha256 of its argv, working directory and environment."""
    return _digest(("command", list(argv), str(cwd), sorted((env or {}).items())))


def _digest(what: tuple) -> str | None:
    try:
        blob = pickle.dumps(what, protocol=5)  # the C pickler first: it is the faster one
    except Exception:  # noqa: BLE001 - lambdas and local classes need cloudpickle
        try:
            import cloudpickle

            blob = cloudpickle.dumps(what)
        except Exception:  # noqa: BLE001 - an argument that cannot be hashed is not memoized
            return None
    return hashlib.sha256(blob).hexdigest()
