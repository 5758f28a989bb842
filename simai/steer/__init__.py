"""Steering: a model decides which simulations run next while workers stay busy.

:class:`Steering` keeps simulations in flight, hands each result to user code as it ends,
retrains in the background, re-scores the candidates left, and picks the next ones by a
:class:`Policy` (:class:`Greedy`, :class:`UCB`, :class:`Random`); :class:`SteeringOptions`
holds its tuning knobs. Instead of a finite candidate list it takes a :class:`Proposer`
(ask/tell), such as :class:`RandomSearch`, :class:`ModelSearch` or an optimizer's adapter.
Its state lives in the run directory, so a stopped run resumes where it left off.
"""

from simai.steer.asktell import ModelSearch, Proposer, RandomSearch
from simai.steer.errors import SteeringError
from simai.steer.loop import Steering
from simai.steer.options import SteeringOptions
from simai.steer.policies import UCB, Greedy, Policy, Random, get_policy
from simai.steer.result import Result
from simai.steer.state import SteeringState

__all__ = [
    "UCB",
    "Greedy",
    "ModelSearch",
    "Policy",
    "Proposer",
    "Random",
    "RandomSearch",
    "Result",
    "Steering",
    "SteeringError",
    "SteeringOptions",
    "SteeringState",
    "get_policy",
]
