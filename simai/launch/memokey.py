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


#: argument types whose ``repr`` is exact and says the type (a float's is its shortest
#: round-tripping form), and that ``marshal`` carries unchanged
ATOMS = frozenset((type(None), bool, int, float, str, bytes))


def atom_items(args: tuple, kwargs: Mapping[str, object] | None) -> list | None:
    """The keyword arguments sorted by name when every argument is one of :data:`ATOMS`
    (the common case), else None."""
    if type(args) is not tuple:
        return None
    for value in args:
        if type(value) not in ATOMS:
            return None
    if not kwargs:
        return []
    for value in kwargs.values():
        if type(value) not in ATOMS:
            return None
    return sorted(kwargs.items())


def atom_key(ident: str, args: tuple, items: list) -> str:
    """The memo key of a call whose arguments are all :data:`ATOMS`: sha256 of the function's
    identity and the arguments' ``repr``. It depends on values alone (a pickle also
    depends on which arguments are one object), so it can be computed later from a copy:
    the local executor's workers journal the arguments and the records writer hashes them."""
    text = f"function\0{ident}\0{args!r}\0{items!r}"
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()


def function_key(
    fn: Callable[..., object], args: tuple, kwargs: Mapping[str, object] | None
) -> str | None:
    """The memo key of ``fn(*args, **kwargs)``: :func:`atom_key` for plain values, else
    sha256 of the function's identity and the arguments' pickle; None when they cannot be
    pickled."""
    items = atom_items(args, kwargs)
    if items is not None:
        return atom_key(function_ident(fn), args, items)
    return legacy_function_key(fn, args, kwargs)


def legacy_function_key(
    fn: Callable[..., object], args: tuple, kwargs: Mapping[str, object] | None
) -> str | None:
    """The memo key of ``fn(*args, **kwargs)`` hashed from the arguments' pickle, as simai
    computed it for every call before :func:`atom_key`: a resume also looks a task up by
    it, so that a run an older simai began is not redone."""
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
