"""Which candidate a steering loop runs next."""

from __future__ import annotations

import collections

import numpy as np

from simai.steer.policies import Policy

__all__ = ["CandidateOrder"]


class CandidateOrder:
    """Hands out each candidate once: those requeued first (in flight when a run stopped),
    then those the user gave, then the newest model's ranking, then the rest in a seeded
    random order.

    Each pick comes with the version of the model that chose it (0: given or random).
    """

    def __init__(self, n: int, policy: Policy, seed: int) -> None:
        self.policy = policy
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
        self.scored_version = version
