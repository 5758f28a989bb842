"""The functions a steering loop sends to executors: they run in worker processes.

Each wraps a user function so the loop gets back what it needs (timings, where it ran)
without the user function having to know about steering.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "SimulationError",
    "named",
    "predict_chunk",
    "predict_published",
    "simulate_one",
    "train_model",
]


def named(runner: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """`runner`, named after the user's `fn` (which it is called with), so that records and
    the report show the user's function. The memo key still holds `fn` itself, as an argument."""
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    task = functools.partial(runner)
    task.__name__ = getattr(inner, "__name__", type(inner).__name__)  # type: ignore[attr-defined]
    task.__module__ = runner.__module__
    task.__qualname__ = runner.__qualname__  # type: ignore[attr-defined]
    return task


class SimulationError(Exception):
    """A simulation that raised, with when and where it ran: a failure kept a worker busy too."""

    def __init__(self, message: str, started: float, ended: float, pid: int, host: str):
        super().__init__(message, started, ended, pid, host)
        self.message, self.started, self.ended, self.pid, self.host = (
            message,
            started,
            ended,
            pid,
            host,
        )

    def __str__(self) -> str:
        return self.message


def simulate_one(
    simulate: Callable[[Any], Any], candidate: Any
) -> tuple[Any, float, float, int, str]:
    """``simulate(candidate)`` with its start and end times, pid and host."""
    started = time.time()
    try:
        value = simulate(candidate)
    except Exception as e:
        raise SimulationError(
            f"{type(e).__name__}: {e}", started, time.time(), os.getpid(), socket.gethostname()
        ) from e
    return value, started, time.time(), os.getpid(), socket.gethostname()


def train_model(
    train: Callable[[list[tuple[Any, float]]], Any], data: list[tuple[Any, float]]
) -> Any:
    """``train(data)``: a separate function so records name it ``train_model``."""
    return train(data)


def predict_chunk(
    predict: Callable[[Any, list[Any]], Any], model: Any, candidates: Sequence[Any]
) -> Any:
    """``predict(model, candidates)`` for one chunk of the candidate set."""
    return predict(model, list(candidates))


# the model version a worker loaded last, kept for the next chunk it scores
_loaded: dict[tuple[str, str, int], Any] = {}


def predict_published(
    predict: Callable[[Any, list[Any]], Any],
    url: str,
    name: str,
    version: int,
    trusted: bool,
    candidates: Sequence[Any],
) -> Any:
    """``predict(model, candidates)`` with version ``version`` of the registry's model
    ``name``, loaded here from the store at ``url`` (once per worker and version)."""
    key = (url, name, version)
    model = _loaded.get(key)
    if model is None:
        from simai.models import load_model
        from simai.store import open_store

        store = open_store(url)
        try:
            model = load_model(store, name, version, trusted=trusted)
        finally:
            store.close()
        _loaded.clear()
        _loaded[key] = model
    return predict(model, list(candidates))
