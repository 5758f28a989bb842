"""In-process inference with hot reload: the latest published model, called like a function.

A simulation calls `Surrogate(name)(x)` in its own process (no network hop per call). At most
every `poll` seconds a call first reads the registry's small `latest` pointer; when it names a
newer version, that version is loaded in full and only then swapped in, so a call runs either
the old model or the new one, never a half-loaded one.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from simai.checks import check_int, check_seconds
from simai.models.registry import check_loadable, check_model_name, load_data, load_meta, model_key
from simai.store import Store, open_store

Runner = Callable[[Any], Any]


def open_store_arg(store: Store | str | None) -> Store:
    """A Store from a Store, a URL, or None (the run's store, from $SIMAI_STORE)."""
    if store is None or isinstance(store, str):
        return open_store(store)
    if isinstance(store, Store):
        return store
    raise TypeError(f"store must be a Store, a URL or None, not {type(store).__name__}")


class Surrogate:
    """The latest version of model `name`, callable on batches; swaps in new versions.

    `s(x)` takes a batch as a numpy array or torch tensor and returns the same kind (numpy
    arrays come back as numpy; tensors on the input's device). `max_batch` splits larger
    batches into pieces. `s.version` is the version that answered the last call (before any
    call: the one loaded). `s.call(x)` returns `(y, version)` together, for threaded callers.

    Parameters
    ----------
    name : str
        The model's name in the registry.
    store : Store, str or None
        The store, its URL, or None for the run's store ($SIMAI_STORE).
    device : str
        Where the model runs (``"cpu"``, ``"cuda:0"``).
    poll : float
        Seconds between checks for a newer version (0: check on every call).
    max_batch : int or None
        Largest batch run at once; larger ones are split.
    trusted : bool
        Load TorchScript versions, which run code stored with them: say so only if you trust
        whoever can write the store.
    model_class : class or None
        Builds state_dict versions as ``model_class(**kwargs)``.
    """

    def __init__(
        self,
        name: str,
        store: Store | str | None = None,
        device: str = "cpu",
        poll: float = 1.0,
        max_batch: int | None = None,
        *,
        trusted: bool = False,
        model_class: Any = None,
    ) -> None:
        self.name = check_model_name(name)
        check_seconds("poll", poll)
        check_int("max_batch", max_batch, 1, optional=True)
        self.store = open_store_arg(store)
        self.device = device
        self.poll = float(poll)
        self.max_batch = max_batch
        self.trusted, self.model_class = trusted, model_class
        self.version: int | None = None
        self.metadata: dict[str, Any] | None = None
        self._current: tuple[int, dict[str, Any], Runner] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._bad: set[int] = set()

    def __repr__(self) -> str:
        return f"Surrogate({self.name!r}, version={self.version}, store={self.store.url!r})"

    # --- versions -------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Check the latest pointer now; load and swap in a newer version. Return if swapped."""
        with self._lock:
            self._next_check = time.monotonic() + self.poll
            try:
                latest = self.store.get(model_key(self.name, "latest"))
            except KeyError:
                return False
            version = latest["version"]
            held = self._current[0] if self._current else 0
            if version <= held or version in self._bad:
                return False
            try:
                meta = load_meta(self.store, self.name, version)
                check_loadable(meta, self.model_class, self.trusted, self.store.url)
                data = self.store.get(model_key(self.name, "data", version))
                model = load_data(meta, data, self.device, self.model_class)
                runner = _runner(model, self.device)
            except KeyError:
                return False  # pruned by a newer version: the next check finds that one
            except Exception as e:
                if self._current is None:
                    raise
                self._bad.add(version)
                warnings.warn(
                    f"model {self.name!r} version {version} could not be loaded ({e}); "
                    f"keeping version {held}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return False
            self._current = (version, meta, runner)
            if self.version is None:
                self.version, self.metadata = version, meta
            return True

    def wait_for_model(self, timeout: float | None = None) -> int:
        """Block until a version is published and loaded; return its number."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.store.wait(model_key(self.name, "latest"), timeout=left)
            if self.refresh() or self._current is not None:
                return self._current[0]  # type: ignore[index]
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no loadable version of model {self.name!r} in {timeout:g} s")
            time.sleep(0.05)

    # --- calls ----------------------------------------------------------------------------

    def call(self, x: Any) -> tuple[Any, int]:
        """Run the model on batch `x`; return the output and the version that produced it."""
        if time.monotonic() >= self._next_check:
            self.refresh()
        current = self._current
        if current is None:
            raise LookupError(
                f"no version of model {self.name!r} is published yet in {self.store.url}; "
                "call wait_for_model() first"
            )
        version, meta, runner = current
        if self.max_batch is None or len(x) <= self.max_batch:
            y = runner(x)
        else:
            parts = [runner(x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
            y = np.concatenate(parts) if isinstance(parts[0], np.ndarray) else _cat(parts)
        self.version, self.metadata = version, meta
        return y, version

    def __call__(self, x: Any) -> Any:
        return self.call(x)[0]


def _cat(parts: list[Any]) -> Any:
    import torch

    return torch.cat(parts)


def _runner(model: Any, device: str) -> Runner:
    if isinstance(model, bytes):
        return _onnx_runner(model)
    import torch

    dtype = next((p.dtype for p in model.parameters()), torch.float32)

    def run(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            t, back = x, x.device
        else:
            t, back = torch.from_numpy(np.ascontiguousarray(x)), None
        if t.is_floating_point() and t.dtype != dtype:
            t = t.to(dtype)
        with torch.no_grad():
            y = model(t.to(device))
        return y.to(back) if back is not None else y.cpu().numpy()

    return run


def _onnx_runner(data: bytes) -> Runner:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "this model version is ONNX: running it needs `pip install onnxruntime` "
            "(load_model() returns its bytes without it)"
        ) from None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    want = np.float32 if inp.type == "tensor(float)" else None

    def run(x: Any) -> Any:
        torch = sys.modules.get("torch")
        is_tensor = torch is not None and isinstance(x, torch.Tensor)
        a = x.detach().cpu().numpy() if is_tensor else np.asarray(x)
        if want is not None and a.dtype != want:
            a = a.astype(want)
        y = session.run(None, {inp.name: a})[0]
        return torch.from_numpy(y).to(x.device) if is_tensor else y

    return run
