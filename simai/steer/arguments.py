"""Steering's arguments, checked before anything starts: what it steers (a candidate list or a
proposer), with what (train and predict, or a published model), and where (a workflow, or an
executor and a state directory)."""

from __future__ import annotations

import inspect
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simai.launch import Command, Executor
from simai.steer.asktell import Proposer
from simai.steer.options import SteeringOptions
from simai.steer.policies import Policy, get_policy
from simai.workflow import Workflow

__all__ = ["Arguments", "check_arguments", "plain", "returns_command"]


def plain(fn: Any) -> Any:
    """The function itself for a ``@simai.task`` (calling that in a worker would submit)."""
    return getattr(fn, "__simai_function__", fn)


def returns_command(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is annotated ``-> Command``: the loop then calls it itself and runs the
    command it builds, instead of sending it as a task."""
    try:
        ret = inspect.signature(fn).return_annotation
    except (TypeError, ValueError):
        return False
    return ret is Command or ret in ("Command", "simai.Command", "simai.launch.Command")


def _published_model(data: Any) -> Any:
    raise AssertionError("a published model is not trained by the loop")


class _Proposed(Policy):
    """The policy of a loop whose proposer picks: the loop trains and ranks nothing."""

    needs_model = False

    def __init__(self, proposer: Proposer) -> None:
        self.proposer = proposer

    def priority(self, mean: np.ndarray, std: np.ndarray | None) -> np.ndarray:
        raise TypeError("a proposer's candidates are not ranked by model scores")

    def __repr__(self) -> str:
        return repr(self.proposer)


def _indices(given: Any, n: int, initial: int) -> list[int]:
    """The ``initial_candidates`` as a list of distinct indices into ``n`` candidates."""
    if isinstance(given, str | bytes | Mapping) or not hasattr(given, "__iter__"):
        raise TypeError(f"initial_candidates must be a sequence of indices or None, not {given!r}")
    indices: list[int] = []
    for i in given:
        try:
            if isinstance(i, bool):
                raise TypeError
            index = operator.index(i)
        except TypeError:
            raise TypeError(
                f"initial_candidates must hold indices into the candidates (ints), not {i!r}"
            ) from None
        if not 0 <= index < n:
            raise ValueError(f"initial_candidates index {index} is out of range for {n} candidates")
        indices.append(index)
    if len(set(indices)) != len(indices):
        raise ValueError("initial_candidates holds an index twice")
    if len(indices) > initial:
        raise ValueError(
            f"initial_candidates holds {len(indices)} indices, more than options.initial "
            f"({initial}): they are the initial batch's first picks; raise initial"
        )
    return indices


@dataclass
class Arguments:
    """What ``check_arguments`` settled on.

    Attributes
    ----------
    proposer : Proposer or None
        The proposer, when one was given instead of a candidate list.
    policy : Policy
        The policy that ranks the candidates.
    options : SteeringOptions
        The options (the defaults when none were given).
    train : callable or None
        What trains the model (a placeholder when a published model replaces training).
    given : list of int
        The indices of the initial candidates the user gave.
    executor : Executor or None
        The executor of the simulations (the workflow's, with a workflow).
    state_dir : path or None
        Where the loop's state is kept (in the workflow's run directory, with a workflow).
    """

    proposer: Proposer | None
    policy: Policy
    options: SteeringOptions
    train: Callable[..., Any] | None
    given: list[int]
    executor: Executor | None
    state_dir: str | os.PathLike[str] | None


def check_arguments(
    candidates: Sequence[Any] | Proposer,
    simulate: Callable[[Any], Any],
    train: Callable[..., Any] | None,
    predict: Callable[..., Any] | None,
    policy: Policy | str,
    options: SteeringOptions | None,
    *,
    initial_candidates: Sequence[int] | None,
    model: str | None,
    workflow: Workflow | None,
    executor: Executor | None,
    state_dir: str | os.PathLike[str] | None,
) -> Arguments:
    """Refuse, saying why, arguments that do not make a steering loop; settle the rest."""
    proposer: Proposer | None = candidates if isinstance(candidates, Proposer) else None
    if options is None:
        options = SteeringOptions()
    elif not isinstance(options, SteeringOptions):
        raise TypeError(f"options must be SteeringOptions or None, not {options!r}")
    if proposer is not None:
        extra = {
            "train": train,
            "predict": predict,
            "model": model,
            "initial_candidates": initial_candidates,
            "options.min_distance": options.min_distance,
        }
        for what, value in extra.items():
            if value is not None:
                raise TypeError(
                    f"a proposer picks the candidates itself: leave {what} out "
                    "(ModelSearch takes train, predict and min_distance)"
                )
        if policy != "greedy":
            raise TypeError("a proposer picks the candidates itself: leave policy out")
        policy = _Proposed(proposer)
    else:
        if isinstance(candidates, str | bytes | Mapping) or not (
            hasattr(candidates, "__len__") and hasattr(candidates, "__getitem__")
        ):
            raise TypeError(
                "candidates must be a sequence (list, tuple, array) or a proposer, "
                f"not {type(candidates).__name__}"
            )
        if len(candidates) == 0:
            raise ValueError("the candidate set is empty: nothing to steer")
        if options.budget > len(candidates):
            raise ValueError(f"budget ({options.budget}) exceeds the {len(candidates)} candidates")
        policy = get_policy(policy)
    if model is not None:
        from simai.models.registry import check_model_name

        check_model_name(model)
        if train is not None:
            raise TypeError("give train= or model=, not both: model= replaces training")
        if not policy.needs_model:
            raise ValueError(f"policy {policy!r} uses no model, yet model= was given")
        if workflow is None:
            raise TypeError("model= reads the registry in the workflow's store: give workflow=")
        train = _published_model  # never called
    if policy.needs_model:
        for what, fn in (("train", train), ("predict", predict)):
            if not callable(fn):
                raise TypeError(f"{what} must be callable for policy {policy!r}, not {fn!r}")
    if not callable(simulate):
        raise TypeError(f"simulate must be callable, not {simulate!r}")
    given = (
        []
        if initial_candidates is None
        else _indices(initial_candidates, len(candidates), options.initial)
    )
    if workflow is not None:
        if executor is not None or state_dir is not None:
            raise TypeError(
                "give workflow= or executor=/state_dir=, not both: a workflow's executor "
                "runs the simulations and its run directory keeps the state"
            )
        if not isinstance(workflow, Workflow):
            raise TypeError(f"workflow must be a simai.Workflow, not {workflow!r}")
        if not hasattr(workflow, "executor"):
            raise RuntimeError("the workflow is not running: create Steering inside `with wf:`")
        executor = workflow.executor
        state_dir = Path(workflow.run_dir.path, "steer", options.name)
    return Arguments(proposer, policy, options, train, given, executor, state_dir)
