"""What a task or command needs: nodes, ranks, cores and GPUs, and its memory behaviour."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simai.checks import check_int

__all__ = ["Resources", "as_resources"]


@dataclass(frozen=True)
class Resources:
    """Resources one task or command asks for.

    ``cpus`` and ``gpus`` count per rank; a Python task is one rank. ``cpus=0`` is a task
    that mostly waits (for a model, a file, a remote service, an emulated compute step): the
    local executor runs it beside the tasks that hold cores, at a lower CPU priority, so its
    waits take no core and its bursts never starve them. ``nodes`` defaults to the fewest
    nodes that hold ``ranks`` at ``ranks_per_node`` (1 when that is not given).
    ``huge_pages=False`` opts the task out of huge pages for its large allocations (see
    :mod:`simai.launch.memory`; on by default). Values that are negative, zero where at
    least one is needed, or that cannot fit together raise ``ValueError`` (``TypeError``
    for non-integers) when constructed.
    """

    cpus: int = 1
    gpus: int = 0
    ranks: int = 1
    ranks_per_node: int | None = None
    nodes: int = field(default=None)  # type: ignore[assignment]
    huge_pages: bool = True

    def __post_init__(self) -> None:
        check_int("Resources.cpus", self.cpus, 0)
        if not isinstance(self.huge_pages, bool):
            raise TypeError(f"Resources.huge_pages must be True or False, not {self.huge_pages!r}")
        check_int("Resources.gpus", self.gpus, 0)
        check_int("Resources.ranks", self.ranks, 1)
        if self.ranks_per_node is not None:
            check_int("Resources.ranks_per_node", self.ranks_per_node, 1)
        if self.nodes is None:
            per_node = self.ranks_per_node or self.ranks
            object.__setattr__(self, "nodes", math.ceil(self.ranks / per_node))
        check_int("Resources.nodes", self.nodes, 1)
        if self.nodes > self.ranks:
            raise ValueError(
                f"Resources asks for {self.nodes} nodes but only {self.ranks} ranks: "
                "every node needs at least one rank"
            )
        if self.ranks_per_node is not None and self.nodes * self.ranks_per_node < self.ranks:
            raise ValueError(
                f"Resources cannot place {self.ranks} ranks on {self.nodes} nodes at "
                f"{self.ranks_per_node} ranks per node"
            )

    @property
    def total_cpus(self) -> int:
        """Cores over all ranks."""
        return self.cpus * self.ranks

    @property
    def total_gpus(self) -> int:
        """GPUs over all ranks."""
        return self.gpus * self.ranks

    def per_node(self) -> tuple[int, int]:
        """(cores, GPUs) the busiest node needs."""
        ranks = self.ranks_per_node or math.ceil(self.ranks / self.nodes)
        ranks = min(ranks, self.ranks)
        return ranks * self.cpus, ranks * self.gpus


def as_resources(value: Resources | Mapping[str, int] | None = None, **overrides: Any) -> Resources:
    """Turn ``None``, a mapping or a ``Resources`` into ``Resources``; ``overrides`` win."""
    if value is None:
        base: dict[str, Any] = {}
    elif isinstance(value, Resources):
        if not overrides:
            return value
        base = {
            "cpus": value.cpus,
            "gpus": value.gpus,
            "ranks": value.ranks,
            "ranks_per_node": value.ranks_per_node,
            "huge_pages": value.huge_pages,
        }
        if not {"ranks", "ranks_per_node", "nodes"} & set(overrides):
            base["nodes"] = value.nodes
    elif isinstance(value, Mapping):
        base = dict(value)
    else:
        raise TypeError(f"resources must be a Resources or a dict, got {type(value).__name__}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(base) - {"cpus", "gpus", "ranks", "ranks_per_node", "nodes", "huge_pages"}
    if unknown:
        raise TypeError(f"unknown resource field(s): {', '.join(sorted(unknown))}")
    return Resources(**base)
