"""A steering loop's state on disk: what survives a stopped run so it resumes where it was.

Layout of ``<run dir>/steer/<name>/``::

    results.jsonl   one JSON line per finished simulation (ok or failed), appended and
                    fsync-ed before the result is handed to user code; the source of truth
    state.json      the rest (the format's version, configuration, candidates'
                    fingerprint, simulations in flight (with their candidates when a
                    proposer made them), model version, training history), replaced
                    atomically
    scores.npz      the newest model's scores (mean, std, version) of the candidates left,
                    so a resumed loop ranks at once instead of waiting for a retrain

Nothing here is pickled: a resumed loop reads JSON and plain numpy arrays only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from simai.steer.result import Result

__all__ = ["STATE_FORMAT", "SteeringState"]

#: the version of this layout, written into ``state.json``; a resumed loop refuses another
STATE_FORMAT = 1

RESULTS = "results.jsonl"
STATE = "state.json"
SCORES = "scores.npz"


class SteeringState:
    """Reads and writes one loop's files in ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._results_fh: Any = None

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def state_path(self) -> Path:
        return self.path / STATE

    @property
    def scores_path(self) -> Path:
        return self.path / SCORES

    def reset(self) -> None:
        """Forget everything (a run that starts over rather than resumes)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def load(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """``(state, results)`` as saved; ``(None, [])`` for a new loop.

        A ``state.json`` of another :data:`STATE_FORMAT` is a ValueError. A last line torn
        by a kill mid-write is dropped (and cut from the file, so later appends stay
        readable); a damaged line before the last is an error.
        """
        state = None
        if self.state_path.is_file():
            try:
                state = json.loads(self.state_path.read_text())
            except ValueError as e:
                raise ValueError(f"{self.state_path} is not valid JSON: {e}") from None
            found = state.get("format") if isinstance(state, dict) else None
            if found != STATE_FORMAT:
                raise ValueError(
                    f"{self.state_path} holds steering state of format {found!r}, but this "
                    f"version of simai reads format {STATE_FORMAT}: resume it with the simai "
                    "that wrote it, or use another name= or a fresh run"
                )
        results: list[dict[str, Any]] = []
        if self.results_path.is_file():
            data = self.results_path.read_bytes()
            good = 0
            lines = data.split(b"\n")
            for n, line in enumerate(lines):
                if not line.strip():
                    good += len(line) + 1
                    continue
                try:
                    results.append(json.loads(line))
                except ValueError:
                    if n < len(lines) - 1 and any(x.strip() for x in lines[n + 1 :]):
                        raise ValueError(
                            f"{self.results_path} line {n + 1} is damaged: {line[:80]!r}"
                        ) from None
                    break
                good += len(line) + 1
            if good < len(data):
                with open(self.results_path, "r+b") as fh:
                    fh.truncate(min(good, len(data)))
        return state, results

    def append(self, result: Result) -> None:
        """Add one result durably (flushed and fsync-ed)."""
        if self._results_fh is None:
            self._results_fh = open(self.results_path, "a", encoding="utf-8")  # noqa: SIM115
        self._results_fh.write(result.to_json() + "\n")
        self._results_fh.flush()
        os.fsync(self._results_fh.fileno())

    def save(self, state: dict[str, Any]) -> None:
        """Replace ``state.json`` atomically (a reader sees the old or the new file), stamped
        with :data:`STATE_FORMAT`."""
        tmp = self.path / f".{STATE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"format": STATE_FORMAT, **state}, indent=1, allow_nan=False))
        os.replace(tmp, self.state_path)

    def save_scores(self, version: int, mean: np.ndarray, std: np.ndarray | None) -> None:
        """Replace ``scores.npz`` atomically; NaN marks candidates that were not scored."""
        tmp = self.path / f".scores.{os.getpid()}.tmp.npz"
        arrays: dict[str, np.ndarray] = {"version": np.array(version), "mean": mean}
        if std is not None:
            arrays["std"] = std
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, self.scores_path)

    def load_scores(self) -> tuple[int, np.ndarray, np.ndarray | None] | None:
        """``(version, mean, std)`` saved last, or None."""
        if not self.scores_path.is_file():
            return None
        with np.load(self.scores_path, allow_pickle=False) as z:
            std = z["std"] if "std" in z.files else None
            return int(z["version"]), z["mean"], std

    def close(self) -> None:
        if self._results_fh is not None:
            self._results_fh.close()
            self._results_fh = None
