"""Ask/tell: candidates that a proposer makes up as the loop runs, instead of a finite list.

A :class:`Proposer` (an optimizer, or an adapter around one) gives candidates when asked and
learns from each value it is told. :class:`RandomSearch` and :class:`ModelSearch` are the
built-in ones, for boxes of continuous parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from simai.checks import check_int, check_number
from simai.steer.outputs import split_predictions
from simai.steer.picking import spread
from simai.steer.policies import Policy, get_policy

__all__ = ["ModelSearch", "Proposer", "RandomSearch"]


@runtime_checkable
class Proposer(Protocol):
    """What :class:`~simai.steer.Steering` takes instead of a candidate list: it asks for
    candidates to keep the workers busy and tells the value of each that ran.

    ``ask(n)`` returns at most ``n`` new candidates, as JSON values (numbers, strings,
    lists, dicts; the loop passes them through JSON, so tuples become lists); fewer, or
    none, when it has nothing to propose now: the loop asks again after the next result,
    and ends if nothing is in flight. ``tell(candidate, value)`` gives a simulation's value,
    or None if it failed. It may tell a candidate this proposer never gave: on resume, a
    fresh proposer is told every saved result before it is first asked, and the simulations
    that were in flight run again and are told as they end. Both run on the loop's thread
    between results: keep them quick. An exception in either stops the run.
    """

    def ask(self, n: int) -> Sequence[Any]:
        """At most ``n`` new candidates."""
        ...

    def tell(self, candidate: Any, value: float | None) -> None:
        """``candidate``'s value, or None if its simulation failed."""
        ...


class RandomSearch:
    """Uniform random points of a box: the baseline proposer. Each candidate is a list of
    floats, one per dimension.

    A resumed run, whose saved results are told before the first ask, draws from another
    stream than the stopped one did, so no point comes twice.

    Parameters
    ----------
    bounds : sequence of (low, high)
        The box: one pair of finite numbers per dimension, ``low < high``.
    seed : int
        Seed of the draws (default 0).
    """

    def __init__(self, bounds: Sequence[tuple[float, float]], seed: int = 0) -> None:
        try:
            box = np.asarray(bounds, dtype=float)
        except (TypeError, ValueError):
            box = np.empty(0)
        if box.ndim != 2 or box.shape[1] != 2 or not len(box):
            raise TypeError(f"bounds must be (low, high) pairs, one per dimension, not {bounds!r}")
        if not np.isfinite(box).all() or (box[:, 0] >= box[:, 1]).any():
            raise ValueError(f"each bound must be finite numbers with low < high, not {bounds!r}")
        self.low, self.high = box[:, 0], box[:, 1]
        self.seed = check_int("seed", seed, 0)
        self._told = 0
        self._rng: np.random.Generator | None = None

    def sample(self, n: int) -> np.ndarray:
        """``n`` random points, an ``(n, dimensions)`` array."""
        if self._rng is None:  # after a resume's tells: a stream of its own
            self._rng = np.random.default_rng([self.seed, self._told])
        return self._rng.uniform(self.low, self.high, size=(n, len(self.low)))

    def ask(self, n: int) -> list[list[float]]:
        return self.sample(n).tolist()

    def tell(self, candidate: Any, value: float | None) -> None:
        self._told += 1

    def __repr__(self) -> str:
        bounds = [(float(lo), float(hi)) for lo, hi in zip(self.low, self.high, strict=True)]
        return f"{type(self).__name__}({bounds}, seed={self.seed})"


class ModelSearch(RandomSearch):
    """Model-based search in a box: random points until ``initial`` results succeeded, then
    the best of ``samples`` fresh random points by the user's model, refit on the results
    so far whenever new ones came.

    ``train`` and ``predict`` are those a candidate list's :class:`~simai.steer.Steering`
    takes, but they run here, in the loop's process, between results: keep them fast. For a
    model that takes seconds, give ``Steering`` a large random pool as candidates
    (``RandomSearch(bounds).ask(100_000)``) instead: it trains and scores as tasks.

    Parameters
    ----------
    bounds : sequence of (low, high)
        The box: one pair of finite numbers per dimension, ``low < high``.
    train : callable
        ``train(data)`` gets every successful ``(candidate, value)`` so far and returns a
        model.
    predict : callable
        ``predict(model, candidates)`` returns their predicted means, or ``(mean, std)``
        (which UCB needs). Higher predictions are picked first.
    policy : Policy or str
        How predictions become priorities: :class:`~simai.steer.Greedy` or
        :class:`~simai.steer.UCB`, or a name ("greedy", "ucb", "ucb:2"). Default "greedy".
    initial : int
        Successes before the first model (default 10): random points until then, no more
        than needed to reach it (further asks wait for their results).
    samples : int
        Random points each ask scores (default 1000).
    min_distance : float
        The least distance (Euclidean) of one ask's points from each other and from the
        points still running, so that a batch is not a cluster of neighbours (default 0).
    seed : int
        Seed of the random points (default 0).
    """

    def __init__(
        self,
        bounds: Sequence[tuple[float, float]],
        train: Callable[[list[tuple[Any, float]]], Any],
        predict: Callable[[Any, list[Any]], Any],
        policy: Policy | str = "greedy",
        *,
        initial: int = 10,
        samples: int = 1000,
        min_distance: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(bounds, seed)
        for what, fn in (("train", train), ("predict", predict)):
            if not callable(fn):
                raise TypeError(f"{what} must be callable, not {fn!r}")
        self.policy = get_policy(policy)
        if not self.policy.needs_model:
            raise ValueError(f"policy {self.policy!r} uses no model: use RandomSearch")
        self.initial = check_int("initial", initial, 1)
        self.samples = check_int("samples", samples, 1)
        self.min_distance = check_number("min_distance", min_distance, 0.0)
        self.data: list[tuple[Any, float]] = []
        self._train, self._predict = train, predict
        self._running: list[list[float]] = []
        self._model: Any = None
        self._fitted_on = 0

    def ask(self, n: int) -> list[list[float]]:
        if len(self.data) < self.initial:
            points = self.sample(max(0, min(n, self.initial - len(self.data) - len(self._running))))
        else:
            points = self._best(n)
        picked = points.tolist()
        self._running.extend(picked)
        return picked

    def _best(self, n: int) -> np.ndarray:
        """The top ``n`` of a fresh random sample by the policy, spread ``min_distance``
        apart and from the points running."""
        if self._fitted_on != len(self.data):
            self._model = self._train(list(self.data))
            self._fitted_on = len(self.data)
        pool = self.sample(self.samples)
        mean, std = split_predictions(self._predict(self._model, pool.tolist()), len(pool))
        priority = self.policy.priority(mean, std)
        ranking = np.argsort(-np.where(np.isnan(priority), -np.inf, priority), kind="stable")
        running = [np.asarray(p, dtype=float) for p in self._running]
        return pool[spread(ranking, pool, n, self.min_distance, running)]

    def tell(self, candidate: Any, value: float | None) -> None:
        super().tell(candidate, value)
        if candidate in self._running:
            self._running.remove(candidate)
        if value is not None:
            self.data.append((candidate, value))

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, policy={self.policy!r}, initial={self.initial})"
