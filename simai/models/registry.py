"""The model registry: versioned models kept in a store, with metadata.

A model version is two entries written in order, then a pointer:

    models/<name>/data/<v>   the model's bytes (TorchScript, ONNX, or a torch state_dict)
    models/<name>/meta/<v>   its metadata (JSON); a version exists once this is written
    models/<name>/latest     the metadata of the newest version: the cheap check for readers

Version numbers come from the stream `models/<name>/versions`: `append` returns a distinct,
increasing index on every backend (put-if-absent `link(2)` on files, `RPUSH` on Redis), so
concurrent publishers never share a number. A reader of `latest` sees a whole version or the
one before it, never a half-written one, because the pointer is only written after both
entries. When publishers race, the pointer may name an older version for an instant; each
publisher re-checks after writing, so it ends on the newest.

Loading never runs code the reader did not choose: a state_dict version is built with the
class the reader passes (`model_class=`; the class named in the metadata is never imported),
its weights are read with `torch.load(weights_only=True)`, and a TorchScript version, whose
`__setstate__` methods run when it loads, needs `trusted=True`: trust whoever can write the store.

torch is imported lazily: the registry costs nothing to processes that never touch a model.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from simai.checks import check_int
from simai.store import Store, check_key

FORMATS = ("torchscript", "onnx", "state_dict")
PREFIX = "models"


def check_model_name(name: Any) -> str:
    """Return `name` if it can name a model, else raise ValueError saying why."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty str, not {name!r}")
    if "/" in name:
        raise ValueError(f"model name {name!r} must not contain '/'")
    check_key(f"{PREFIX}/{name}/latest", "model name")
    return name


def model_key(name: str, kind: str, version: int | None = None) -> str:
    """The key (or stream) `kind` of model `name`: latest, versions, data/<v>, meta/<v>."""
    base = f"{PREFIX}/{name}/{kind}"
    return base if version is None else f"{base}/{version:010d}"


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch.jit warns that it is deprecated in favour of torch.export, yet TorchScript is the
    format that loads without the model's Python code; keep those warnings out of user logs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        yield


def _torch_module(obj: Any) -> bool:
    """Whether `obj` is a torch.nn.Module, without importing torch when nobody has."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _serialize(model: Any, example: Any) -> tuple[bytes, dict[str, Any]]:
    """The model as bytes and the format fields of its metadata."""
    if isinstance(model, bytes | bytearray | memoryview):
        data = bytes(model)
        if not data:
            raise ValueError("ONNX model bytes are empty")
        return data, {"format": "onnx"}
    if _torch_module(model):
        import torch

        with _quiet_jit():
            script = model if isinstance(model, torch.jit.ScriptModule) else None
            if script is None:
                try:
                    script = torch.jit.script(model)
                except Exception as e:
                    if example is None:
                        raise TypeError(
                            f"torch.jit.script failed for {type(model).__name__} ({e}); pass "
                            "example=<an input batch> to publish it with torch.jit.trace instead"
                        ) from e
                    script = torch.jit.trace(model, example)
            buf = io.BytesIO()
            torch.jit.save(script, buf)
        return buf.getvalue(), {"format": "torchscript"}
    if isinstance(model, tuple) and len(model) in (2, 3) and isinstance(model[1], str):
        state, cls = model[0], model[1]
        kwargs = model[2] if len(model) == 3 else {}
        if not isinstance(state, dict):
            raise TypeError(f"a (state_dict, 'module:Class') model needs a dict, got {state!r}")
        if cls.count(":") != 1 or not all(cls.split(":")):
            raise ValueError(f"model class {cls!r} must be written 'package.module:Class'")
        if not isinstance(kwargs, dict):
            raise TypeError(f"constructor arguments must be a dict, got {kwargs!r}")
        _check_json(kwargs, "constructor arguments")
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue(), {"format": "state_dict", "class": cls, "kwargs": kwargs}
    raise TypeError(
        "publish_model takes a torch.nn.Module, ONNX bytes or (state_dict, 'module:Class'), "
        f"not {type(model).__name__}"
    )


def _plain(value: Any) -> Any:
    """A numpy scalar, or a 0-d array or tensor (a loss), as the Python number JSON keeps."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return value.item()
    return value


def _check_json(value: Any, what: str) -> None:
    """Refuse, before a version number is taken, what the store will not keep as JSON."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError(f"{what} hold NaN or Infinity, which JSON cannot: {value!r}") from None
    except TypeError as e:
        raise TypeError(f"{what} must be JSON-serializable: {e}") from None


def publish_model(
    store: Store,
    name: str,
    model: Any,
    *,
    step: int | None = None,
    metrics: dict[str, Any] | None = None,
    producer: str | None = None,
    keep: int = 5,
    example: Any = None,
) -> int:
    """Save `model` as the next version of `name`; return its version number (from 1).

    `model` is a torch.nn.Module (saved as TorchScript: scripted, or traced on `example`
    when scripting fails), ONNX `bytes`, or `(state_dict, "module:Class"[, kwargs])`. Only
    the newest `keep` versions are kept.
    """
    check_model_name(name)
    check_int("keep", keep, 1)
    check_int("step", step, optional=True)
    if metrics is not None and not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict of names to numbers, not {metrics!r}")
    metrics = {k: _plain(v) for k, v in (metrics or {}).items()}
    _check_json(metrics, "metrics")
    data, fields = _serialize(model, example)
    producer = producer or f"{socket.gethostname()}:{os.getpid()}"
    claim = {"producer": producer, "time": time.time()}
    version = 1 + store.append(model_key(name, "versions"), claim)
    meta = {
        "name": name,
        "version": version,
        "time": time.time(),
        "producer": producer,
        "step": step,
        "metrics": metrics,
        "bytes": len(data),
        **fields,
    }
    store.put(model_key(name, "data", version), data)
    store.put(model_key(name, "meta", version), meta)
    _advance_latest(store, name, meta)
    _prune(store, name, keep)
    return version


def _advance_latest(store: Store, name: str, meta: dict[str, Any]) -> None:
    """Point `latest` at the newest version, re-checking after each write (racing publishers)."""
    pointer = model_key(name, "latest")
    candidate: dict[str, Any] | None = meta
    while True:
        current = _get_or_none(store, pointer)
        if candidate is not None and (current is None or current["version"] < candidate["version"]):
            store.put(pointer, candidate)
        newest = _versions(store, name)
        current = _get_or_none(store, pointer)
        if not newest or (current is not None and current["version"] >= newest[-1]):
            return
        candidate = _get_or_none(store, model_key(name, "meta", newest[-1]))


def _get_or_none(store: Store, key: str) -> Any:
    try:
        return store.get(key)
    except KeyError:
        return None


def _versions(store: Store, name: str) -> list[int]:
    prefix = model_key(name, "meta") + "/"
    return sorted(int(k[len(prefix) :]) for k in store.keys(prefix) if k[len(prefix) :].isdigit())


def _prune(store: Store, name: str, keep: int) -> None:
    for v in _versions(store, name)[:-keep]:
        store.delete(model_key(name, "meta", v))
        store.delete(model_key(name, "data", v))


def latest_model(store: Store, name: str) -> tuple[int, dict[str, Any]]:
    """(version, metadata) of the newest version of `name`; KeyError if none was published."""
    meta = _get_or_none(store, model_key(check_model_name(name), "latest"))
    if meta is None:
        raise KeyError(f"no model {name!r} has been published in {store.url}")
    return meta["version"], meta


def model_versions(store: Store, name: str) -> list[dict[str, Any]]:
    """Metadata of every kept version of `name`, oldest first."""
    out = []
    for v in _versions(store, check_model_name(name)):
        meta = _get_or_none(store, model_key(name, "meta", v))
        if meta is not None:
            out.append(meta)
    return out


def load_model(
    store: Store,
    name: str,
    version: int | None = None,
    *,
    device: str = "cpu",
    model_class: Any = None,
    trusted: bool = False,
) -> Any:
    """Version `version` (default: the latest) of `name`, loaded.

    TorchScript and state_dict versions come back as torch modules in eval mode on `device`;
    ONNX versions as their bytes. KeyError if that version does not exist (or was pruned).
    A state_dict version is built as `model_class(**kwargs)` (kwargs from its metadata); a
    TorchScript version runs code stored with it, so it needs `trusted=True`.
    """
    meta = load_meta(store, name, version)
    check_loadable(meta, model_class, trusted, store.url)
    try:
        data = store.get(model_key(name, "data", meta["version"]))
    except KeyError:
        raise KeyError(
            f"model {name!r} version {meta['version']} was pruned while loading"
        ) from None
    return load_data(meta, data, device, model_class)


def load_meta(store: Store, name: str, version: int | None = None) -> dict[str, Any]:
    """Metadata of one version (default: the latest); KeyError if it does not exist."""
    if version is None:
        return latest_model(store, name)[1]
    check_int("version", version, 1)
    meta = _get_or_none(store, model_key(check_model_name(name), "meta", version))
    if meta is None:
        raise KeyError(f"model {name!r} has no version {version} in {store.url} (pruned?)")
    return meta


def check_loadable(meta: dict[str, Any], model_class: Any, trusted: bool, url: str) -> None:
    """Refuse, saying what to pass, a version that loading it as asked would not build safely:
    TorchScript without `trusted=True`, a state_dict without `model_class`."""
    fmt, what = meta.get("format"), f"model {meta.get('name')!r} version {meta.get('version')}"
    if fmt not in FORMATS:
        raise ValueError(f"{what} has an unknown format {fmt!r}")
    if fmt == "torchscript" and not trusted:
        raise PermissionError(
            f"{what} is TorchScript, and loading it runs code stored with it: pass "
            f"trusted=True if you trust whoever can write {url} (for a store only you can "
            "open, the processes of your own runs)"
        )
    if fmt == "state_dict" and model_class is None:
        raise TypeError(
            f"{what} holds a state_dict published for class {meta.get('class')!r}: pass "
            "model_class=<that class> to build it (simai never imports a class the store names)"
        )
    if model_class is not None and not callable(model_class):
        raise TypeError(f"model_class must be a class, not {model_class!r}")


def load_data(
    meta: dict[str, Any], data: bytes, device: str = "cpu", model_class: Any = None
) -> Any:
    """Turn a version's stored bytes back into a model, following its metadata (checked with
    `check_loadable` first)."""
    fmt = meta.get("format")
    if fmt == "onnx":
        return data
    import torch

    if fmt == "torchscript":
        with _quiet_jit():
            module = torch.jit.load(io.BytesIO(data), map_location=device)
    else:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
        kwargs = meta.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"model {meta.get('name')!r} has damaged kwargs {kwargs!r}")
        module = model_class(**kwargs)
        module.load_state_dict(state)
        module.to(device)
    return module.eval()
