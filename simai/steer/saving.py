"""Saving a steering loop's progress and reading it back for a resumed run.

The files (:class:`~simai.steer.state.SteeringState`) are the record; the run's store gets a
copy (a progress summary, the newest scores, and every result in the stream
``steer/<name>/results``, as the JSON objects of ``results.jsonl``) for whoever watches the
run or trains on its results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simai.steer.options import SteeringOptions
from simai.steer.outputs import error_text
from simai.steer.policies import Policy
from simai.steer.result import Result
from simai.steer.state import SteeringState
from simai.store import Store

__all__ = ["Saved", "Saver"]


def _fingerprint(candidates: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for c in candidates:
        h.update(pickle.dumps(c, protocol=4))
    return h.hexdigest()


@dataclass
class Saved:
    """What a stopped run left: its results, its model's history, the simulations that
    were in flight as ``(index, model_version)`` and, for a proposer's, the candidates of
    both by index."""

    results: list[Result]
    model_version: int = 0
    trainings: list[dict[str, Any]] = field(default_factory=list)
    predict_failures: list[str] = field(default_factory=list)
    in_flight: list[tuple[int, int]] = field(default_factory=list)
    candidates: dict[int, Any] = field(default_factory=dict)


class Saver:
    """Keeps one loop's state in ``path`` and, once :meth:`open_store` is called, in the
    run's store under ``steer/<name>/``.

    ``candidates`` is the loop's list, or a proposer's candidates by index (a mapping that
    grows): those are saved with the simulations in flight and read back from JSON. A store
    that fails is noted in ``store_error``, never fatal: the files hold the state.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        candidates: Sequence[Any] | Mapping[int, Any],
        options: SteeringOptions,
        policy: Policy,
    ) -> None:
        self.files = SteeringState(path)
        self._candidates = candidates
        self._proposed = isinstance(candidates, Mapping)
        self._n = None if self._proposed else len(candidates)
        self._fingerprint = None if self._proposed else _fingerprint(candidates)
        self._options = options
        self._policy = policy
        self._store: Store | None = None
        self.store_error: str | None = None

    def reset(self) -> None:
        """Forget what an earlier run saved (a run that starts over)."""
        self.files.reset()

    def load(self) -> Saved | None:
        """What an earlier run saved, or None; ValueError if it was made for other
        candidates."""
        state, rows = self.files.load()
        if state is None and not rows:
            return None
        if state is not None and (
            state.get("candidates_sha256") != self._fingerprint
            or state.get("n_candidates") != self._n
        ):
            n = state.get("n_candidates")
            made_for = "a proposer" if n is None else f"another candidate set ({n} candidates)"
            raise ValueError(
                f"steering state in {self.files.path} was made for {made_for}; resume with "
                "the same candidates, or use another name= or a fresh run"
            )
        state = state or {}
        flights = state.get("in_flight", [])
        proposed = (
            {int(r["index"]): r["candidate"] for r in [*rows, *flights]} if self._proposed else {}
        )
        candidates = proposed if self._proposed else self._candidates
        return Saved(
            results=[Result.from_dict(r, candidates[int(r["index"])]) for r in rows],
            model_version=int(state.get("model_version", 0)),
            trainings=list(state.get("trainings", [])),
            predict_failures=list(state.get("predict_failures", [])),
            in_flight=[(int(f["index"]), int(f.get("model_version", 0))) for f in flights],
            candidates=proposed,
        )

    def load_scores(self) -> tuple[int, np.ndarray, np.ndarray | None] | None:
        """The newest saved scores ``(version, mean, std)``, if they fit the candidates."""
        scores = self.files.load_scores()
        if scores is None or scores[1].shape != (len(self._candidates),):
            return None
        return scores

    @property
    def stream(self) -> str:
        """The store stream that gets every result."""
        return f"steer/{self._options.name}/results"

    def open_store(self, open_store: Callable[[], Store]) -> None:
        """Copy the progress to the store ``open_store()`` opens from now on, and bring its
        results stream up to the saved results; a store that fails is noted in
        ``store_error``."""
        try:
            self._store = open_store()
            _, rows = self.files.load()
            held = self._store.stream_len(self.stream)
            if held > len(rows):  # left by an earlier run that did not resume
                self._store.delete_stream(self.stream)
                held = 0
            for row in rows[held:]:
                self._store.append(self.stream, row)
        except Exception as e:  # noqa: BLE001 - the run dir keeps the state anyway
            self.store_error = error_text(e)

    def append(self, result: Result) -> None:
        """Add a finished simulation, durably, before user code sees it; then to the store's
        results stream."""
        self.files.append(result)
        if self._store is not None:
            try:
                self._store.append(self.stream, json.loads(result.to_json()))
            except Exception as e:  # noqa: BLE001 - the run directory holds the results
                self.store_error = error_text(e)

    def save(
        self,
        *,
        done: int,
        failed: int,
        model_version: int,
        scored_version: int,
        flights: Iterable[tuple[int, int, float]],
        requeued: Iterable[tuple[int, int]],
        trainings: list[dict[str, Any]],
        predict_failures: list[str],
        error: BaseException | None,
    ) -> None:
        """Replace the saved progress. ``flights`` are the simulations in flight as
        ``(index, model_version, submitted)``; ``requeued`` those still to resubmit."""
        o = self._options
        in_flight = [{"index": i, "model_version": v, "submitted": t} for i, v, t in flights] + [
            {"index": i, "model_version": v} for i, v in requeued
        ]
        if self._proposed:
            for f in in_flight:
                f["candidate"] = self._candidates[f["index"]]
        snapshot = {
            "name": o.name,
            "n_candidates": self._n,
            "candidates_sha256": self._fingerprint,
            "policy": repr(self._policy),
            "budget": o.budget,
            "initial": o.initial,
            "batch_size": o.batch_size,
            "seed": o.seed,
            "simulations_done": done,
            "simulations_failed": failed,
            "model_version": model_version,
            "scored_version": scored_version,
            "in_flight": in_flight,
            "trainings": trainings,
            "predict_failures": predict_failures,
            "error": None if error is None else error_text(error),
            "updated": time.time(),
        }
        self.files.save(snapshot)
        summary = {k: v for k, v in snapshot.items() if k not in ("in_flight", "trainings")}
        self._put({"state": summary})

    def save_scores(self, version: int, mean: np.ndarray, std: np.ndarray | None) -> None:
        """Keep a model's scores, NaN where a candidate was not scored."""
        self.files.save_scores(version, mean, std)
        self._put(
            {"scores/mean": mean} if std is None else {"scores/mean": mean, "scores/std": std}
        )

    def _put(self, values: dict[str, Any]) -> None:
        if self._store is None:
            return
        try:
            for key, value in values.items():
                self._store.put(f"steer/{self._options.name}/{key}", value)
        except Exception as e:  # noqa: BLE001 - the run directory holds the state regardless
            self.store_error = error_text(e)

    def close(self) -> None:
        self.files.close()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None
