"""Policies: which unsimulated candidates a steering loop runs next, given model scores."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from simai.checks import check_int, check_number

__all__ = ["Greedy", "Policy", "Random", "UCB", "get_policy"]


class Policy(abc.ABC):
    """Turns a model's predictions into a priority per candidate (higher runs sooner).

    ``needs_model`` False means the loop never trains or scores (the random baseline);
    ``needs_std`` True means ``predict`` must return ``(mean, std)``.
    """

    needs_model: bool = True
    needs_std: bool = False

    @abc.abstractmethod
    def priority(self, mean: np.ndarray, std: np.ndarray | None) -> np.ndarray:
        """One priority per candidate, same length as ``mean``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Greedy(Policy):
    """Run the candidates with the highest predicted mean first (pure exploitation)."""

    def priority(self, mean: np.ndarray, std: np.ndarray | None) -> np.ndarray:
        return mean


class UCB(Policy):
    """Upper confidence bound: ``mean + beta * std``; needs a model that gives uncertainty."""

    needs_std = True

    def __init__(self, beta: float = 1.0) -> None:
        self.beta = check_number("UCB beta", beta, 0)

    def priority(self, mean: np.ndarray, std: np.ndarray | None) -> np.ndarray:
        if std is None:
            raise ValueError(
                "the UCB policy needs uncertainty: predict(model, candidates) must return "
                "(mean, std), not the means only"
            )
        return mean + self.beta * std

    def __repr__(self) -> str:
        return f"UCB(beta={self.beta})"


class Random(Policy):
    """The baseline: candidates in a seeded random order; no model is trained.

    ``seed`` None uses the steering loop's seed.
    """

    needs_model = False

    def __init__(self, seed: int | None = None) -> None:
        self.seed = check_int("Random seed", seed, 0, optional=True)

    def priority(self, mean: np.ndarray, std: np.ndarray | None) -> np.ndarray:
        raise TypeError("the Random policy does not rank by model scores")

    def __repr__(self) -> str:
        return f"Random(seed={self.seed})"


_NAMES = {"greedy": Greedy, "ucb": UCB, "random": Random}


def get_policy(spec: str | Policy, **options: Any) -> Policy:
    """A policy from its name (``"greedy"``, ``"ucb"``, ``"random"``, any case; ``"ucb:2"``
    sets UCB's beta) or a :class:`Policy` as is. ``options`` go to the constructor."""
    if isinstance(spec, Policy):
        if options:
            raise TypeError("options given for a policy that already exists")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"policy must be a Policy or a name, got {type(spec).__name__} {spec!r}")
    name, _, arg = spec.strip().lower().partition(":")
    cls = _NAMES.get(name)
    if cls is None:
        raise ValueError(f"unknown policy {spec!r}; known: {', '.join(sorted(_NAMES))}")
    if arg:
        try:
            value: Any = int(arg) if cls is Random else float(arg)
        except ValueError:
            raise ValueError(f"policy {spec!r}: {arg!r} is not a number") from None
        if cls is Greedy:
            raise ValueError(f"policy {spec!r}: greedy takes no parameter")
        options.setdefault("seed" if cls is Random else "beta", value)
    return cls(**options)
