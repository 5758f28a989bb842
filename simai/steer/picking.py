"""Which candidate a steering loop runs next: from a finite list, or from a proposer."""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simai.steer.policies import Policy

__all__ = ["CandidateOrder", "Proposals", "as_points", "spread"]


def as_points(candidates: Sequence[Any]) -> np.ndarray:
    """Candidates as an ``(n, d)`` float array (numbers: ``d`` = 1), to measure distances."""
    try:
        points = np.asarray(candidates, dtype=float)
    except (TypeError, ValueError):
        points = np.empty(0)
    if points.ndim == 1 and len(points):
        points = points[:, None]
    if points.ndim != 2 or not len(points):
        raise TypeError(
            "min_distance needs candidates that are numbers or equal-length vectors of numbers"
        )
    return points


def _far(point: np.ndarray, others: list[np.ndarray], min_distance: float) -> bool:
    """Whether ``point`` is at least ``min_distance`` (Euclidean) from each of ``others``."""
    if not others:
        return True
    return float(np.min(np.linalg.norm(np.asarray(others) - point, axis=1))) >= min_distance


def spread(
    ranking: np.ndarray, points: np.ndarray, k: int, min_distance: float, avoid: list[np.ndarray]
) -> list[int]:
    """The first ``k`` of ``ranking`` (indices of ``points``) that lie at least
    ``min_distance`` from those kept before them and from ``avoid``; fewer if fewer do."""
    kept: list[int] = []
    others = list(avoid)
    for i in ranking:
        if len(kept) == k:
            break
        if _far(points[i], others, min_distance):
            kept.append(int(i))
            others.append(points[i])
    return kept


class CandidateOrder:
    """Hands out each candidate once: those requeued first (in flight when a run stopped),
    then those the user gave, then the newest model's ranking, then the rest in a seeded
    random order.

    Each pick comes with the version of the model that chose it (0: given or random). With
    ``min_distance``, a ranking's picks skip candidates (``points``) closer than that to an
    earlier pick of the same ranking; once none is far enough, the skipped ones follow in
    rank order.
    """

    def __init__(
        self,
        n: int,
        policy: Policy,
        seed: int,
        points: np.ndarray | None = None,
        min_distance: float | None = None,
    ) -> None:
        self.policy = policy
        self._points = points
        self._min_distance = min_distance
        self._picked: list[np.ndarray] = []  # points picked from the current ranking
        self._skipped: collections.deque[int] = collections.deque()
        self._taken = np.zeros(n, dtype=bool)
        self._requeued: collections.deque[tuple[int, int]] = collections.deque()
        self._given: collections.deque[int] = collections.deque()
        policy_seed = getattr(policy, "seed", None)
        rng = np.random.default_rng(seed if policy_seed is None else policy_seed)
        self._order = rng.permutation(n)
        self._order_pos = 0
        self._ranking: np.ndarray | None = None
        self._rank_pos = 0
        self.scored_version = 0

    def take(self, index: int) -> None:
        """Never hand out ``index`` (it ran, in this run or an earlier one)."""
        self._taken[index] = True

    def release(self, index: int) -> None:
        """Hand ``index`` out again: it was picked but never ran."""
        self._taken[index] = False

    def left(self) -> np.ndarray:
        """Indices of the candidates not taken yet."""
        return np.flatnonzero(~self._taken)

    @property
    def n_left(self) -> int:
        """How many candidates are not taken yet."""
        return int(self._taken.size - np.count_nonzero(self._taken))

    @property
    def exhausted(self) -> bool:
        """Whether every candidate was taken."""
        return self.n_left == 0

    @property
    def requeued(self) -> list[tuple[int, int]]:
        """The ``(index, model_version)`` pairs still to hand out first."""
        return list(self._requeued)

    def requeue(self, index: int, version: int) -> None:
        """Hand ``index`` out first, unless it was taken since."""
        if not self._taken[index]:
            self._requeued.append((index, version))

    def give(self, indices: list[int]) -> None:
        """Hand ``indices`` out, in this order, after the requeued ones and before any
        ranking (the user's first candidates); those taken already are skipped."""
        self._given.extend(indices)

    @property
    def chosen(self) -> bool:
        """Whether a requeued or given candidate is still to hand out: picks that nothing
        needs to wait for."""
        return any(not self._taken[i] for i, _ in self._requeued) or any(
            not self._taken[i] for i in self._given
        )

    @property
    def ranked(self) -> bool:
        """Whether a model's ranking exists (it may be used up)."""
        return self._ranking is not None

    def pick(self) -> tuple[int, int] | None:
        """Take the next candidate; its index and the model version that chose it, or None
        when no candidate is left."""
        found = self._next()
        if found is not None:
            self._taken[found[0]] = True
        return found

    def _next(self) -> tuple[int, int] | None:
        while self._requeued:
            i, version = self._requeued.popleft()
            if not self._taken[i]:
                return i, version
        while self._given:
            i = self._given.popleft()
            if not self._taken[i]:
                return i, 0
        if self._ranking is not None:
            while self._rank_pos < len(self._ranking):
                i = int(self._ranking[self._rank_pos])
                self._rank_pos += 1
                if self._taken[i]:
                    continue
                if self._min_distance is not None:
                    assert self._points is not None
                    if not _far(self._points[i], self._picked, self._min_distance):
                        self._skipped.append(i)
                        continue
                    self._picked.append(self._points[i])
                return i, self.scored_version
            while self._skipped:  # none left far enough: the closest ones after all
                i = self._skipped.popleft()
                if not self._taken[i]:
                    return i, self.scored_version
        while self._order_pos < len(self._order):
            i = int(self._order[self._order_pos])
            self._order_pos += 1
            if not self._taken[i]:
                return i, 0
        return None

    def rank(self, version: int, mean: np.ndarray, std: np.ndarray | None) -> None:
        """Order the scored candidates by the policy's priority, unscored (NaN) ones after
        them; scores of a model older than the current ranking's are ignored."""
        if version < self.scored_version:
            return
        priority = self.policy.priority(mean, std)
        priority = np.where(np.isnan(priority), -np.inf, priority)
        order = np.argsort(-priority, kind="stable")
        scored = np.isfinite(mean[order])
        self._ranking = order[scored]
        self._rank_pos = 0
        self._picked.clear()
        self._skipped.clear()
        self.scored_version = version


class Proposals:
    """Hands out a proposer's candidates, each under the next index: those requeued first
    (in flight when a run stopped, or picked and never run), then those it proposed.

    :meth:`ask` asks the proposer for more; ``candidates`` maps every index handed out to
    its candidate, passed through JSON so that a resumed run, which reads them back from
    JSON, sees the same. Picks come with model version 0.
    """

    n_left = None  # unknown: the proposer is asked until it proposes nothing
    exhausted = False
    ranked = False
    scored_version = 0

    def __init__(self, proposer: Any) -> None:
        self.proposer = proposer
        self.candidates: dict[int, Any] = {}
        self._next = 0
        self._done: set[int] = set()
        self._queue: collections.deque[tuple[int, int]] = collections.deque()

    def take(self, index: int) -> None:
        """Never hand out ``index`` (it ran)."""
        self._done.add(index)

    def release(self, index: int) -> None:
        """Hand ``index`` out again, first: it was picked but never ran."""
        self._queue.appendleft((index, 0))

    def restore(self, candidates: Mapping[int, Any]) -> None:
        """Know the candidates a stopped run handed out, under their indices."""
        self.candidates.update(candidates)
        self._next = max(self._next, max(candidates, default=-1) + 1)

    def requeue(self, index: int, version: int) -> None:
        """Hand ``index`` out first, unless it ran since."""
        if index not in self._done:
            self._queue.append((index, version))

    @property
    def requeued(self) -> list[tuple[int, int]]:
        """The ``(index, model_version)`` pairs still to hand out."""
        return list(self._queue)

    @property
    def chosen(self) -> bool:
        """Whether a candidate is still to hand out."""
        return bool(self._queue)

    def ask(self, n: int) -> None:
        """Ask the proposer for the candidates ``n`` picks need beyond those queued."""
        n -= len(self._queue)
        if n <= 0:
            return
        proposed = self.proposer.ask(n)
        if isinstance(proposed, str | bytes | Mapping) or not hasattr(proposed, "__iter__"):
            raise TypeError(
                f"{self.proposer!r}.ask({n}) must return a list of candidates, "
                f"not {type(proposed).__name__}"
            )
        proposed = list(proposed)
        if len(proposed) > n:
            raise ValueError(
                f"{self.proposer!r}.ask({n}) returned {len(proposed)} candidates, more than asked"
            )
        for candidate in proposed:
            self.candidates[self._next] = self._json(candidate)
            self._queue.append((self._next, 0))
            self._next += 1

    def _json(self, candidate: Any) -> Any:
        try:
            return json.loads(json.dumps(candidate, allow_nan=False))
        except (TypeError, ValueError):
            raise TypeError(
                f"{self.proposer!r} proposed {type(candidate).__name__} {candidate!r:.100}: a "
                "proposer's candidates must be JSON values (numbers, strings, lists, dicts), "
                "which a resumed run reads back; give an array as array.tolist()"
            ) from None

    def pick(self) -> tuple[int, int] | None:
        """The next candidate's index and model version, or None until asked again."""
        while self._queue:
            index, version = self._queue.popleft()
            if index not in self._done:
                return index, version
        return None
