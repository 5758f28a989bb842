"""One finished simulation of a steering loop, as handed to user code and kept on disk."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Result"]


@dataclass(frozen=True)
class Result:
    """A simulation that ended: ``ok`` with a float ``value``, or failed with ``error``.

    Attributes
    ----------
    candidate : Any
        The candidate simulated.
    index : int
        The candidate's position in the candidate list (with a proposer: in the order it
        was asked, from 0).
    value : float or None
        The simulation's value; None if it failed.
    ok : bool
        Whether the simulation succeeded.
    error : str or None
        Why it failed, as ``"Type: message"``; None if it succeeded.
    batch : int
        The training batch the result belongs to: 0 for the initial batch, k for the k-th
        batch of ``batch_size`` results after it.
    model_version : int
        The model whose scores picked the candidate (0: picked at random, before any model,
        or by a proposer).
    started : float or None
        Epoch seconds the simulation started (for a failure without timings, when it was
        submitted).
    ended : float or None
        Epoch seconds the simulation ended.
    worker : int or None
        The pid of the process it ran in, when known.
    host : str or None
        The host it ran on, when known.
    """

    candidate: Any
    index: int
    value: float | None
    ok: bool
    error: str | None
    batch: int
    model_version: int
    started: float | None
    ended: float | None
    worker: int | None = None
    host: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds the simulation ran, when known."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    def to_json(self) -> str:
        """One JSON line; a candidate JSON cannot hold is written as its ``repr``."""
        data = asdict(self)
        try:
            json.dumps(data["candidate"])
        except (TypeError, ValueError):
            data["candidate"] = repr(data["candidate"])
        return json.dumps(data, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], candidate: Any) -> Result:
        """Rebuild a result read back from disk, with the real ``candidate`` object."""
        fields = {k: data.get(k) for k in cls.__dataclass_fields__ if k != "candidate"}
        return cls(candidate=candidate, **fields)
