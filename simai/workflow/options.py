"""A workflow's placement and tuning options, apart from what the workflow does.

As Parsl's ``Config`` is apart from the apps, :class:`WorkflowOptions` holds the knobs that
say where and how a run's store, executor and components go, checked once when made;
``Workflow(..., options=WorkflowOptions(...))`` takes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simai.checks import check_int, check_seconds

LAYOUTS = ("colocated", "clustered")


@dataclass(frozen=True)
class WorkflowOptions:
    """Where a run's store and tasks go, and how its components are watched.

    Parameters
    ----------
    executor_config : dict
        Keyword arguments of the executor's constructor (e.g. ``{"config": parsl_config}``
        for ``executor="parsl"``, ``{"cores": 4}`` for ``"local"``).
    store_shards : int
        Redis shards the workflow starts for ``store="redis"`` (default 1).
    layout : str
        ``"colocated"`` (the default): the store shares the node with tasks and components.
        ``"clustered"``: the store runs apart from the components, which the executor places
        on its own nodes.
    store_cores : int
        With ``store="redis"`` and a colocated layout, pin the shards to the first
        ``store_cores`` cores of the node and leave the others to tasks and components
        (default 0: no pinning).
    store_bind : str
        The address the shards the workflow starts listen on (default ``127.0.0.1``); a
        clustered layout needs one the executor's nodes reach.
    store_tls : bool
        With ``store="redis"``: the shards speak only TLS (``rediss://``), with a new CA and
        certificates made for the run; its processes get the files in the environment
        (``SIMAI_STORE_TLS_*``), as they get the password. Default False.
    heartbeat_interval : float
        Seconds between the heartbeats of components and the workflow's checks (default 1).
    heartbeat_timeout : float
        Seconds without a heartbeat after which a component is killed and handled as
        failed (default 60); longer than ``heartbeat_interval``.
    """

    executor_config: Mapping[str, Any] = field(default_factory=dict)
    store_shards: int = 1
    layout: str = "colocated"
    store_cores: int = 0
    store_bind: str = "127.0.0.1"
    store_tls: bool = False
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 60.0

    def __post_init__(self) -> None:
        config = self.executor_config
        if not isinstance(config, Mapping):
            raise TypeError(f"executor_config must be a dict of keyword arguments, not {config!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {self.layout!r}")
        if not isinstance(self.store_bind, str):
            raise TypeError(f"store_bind must be a host address, not {self.store_bind!r}")
        if not isinstance(self.store_tls, bool):
            raise TypeError(f"store_tls must be True or False, not {self.store_tls!r}")
        if not self.store_bind.strip():
            raise ValueError(f"store_bind must be a host address, not {self.store_bind!r}")
        checked = {
            "executor_config": dict(config),
            "store_shards": check_int("store_shards", self.store_shards, 1),
            "store_cores": check_int("store_cores", self.store_cores, 0),
            **{
                name: check_seconds(name, getattr(self, name), positive=True)
                for name in ("heartbeat_interval", "heartbeat_timeout")
            },
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if not self.heartbeat_timeout > self.heartbeat_interval:
            raise ValueError(
                f"heartbeat_timeout must be longer than heartbeat_interval "
                f"({self.heartbeat_interval:g} s), not {self.heartbeat_timeout:g} s: a "
                "component would be killed between two heartbeats"
            )
        if self.layout == "clustered" and self.store_cores:
            raise ValueError("store_cores splits one node's cores: it needs layout='colocated'")

    def check_store(self, store: str) -> None:
        """Refuse options that do not fit a workflow's ``store``."""
        if self.store_cores and store != "redis":
            raise ValueError("store_cores pins redis-server shards: it needs store='redis'")
        if self.store_tls and store != "redis":
            raise ValueError(
                "store_tls starts the run's redis-server shards with TLS: it needs "
                "store='redis' (a rediss:// URL of your own store takes its TLS files from "
                "SIMAI_STORE_TLS_CA, SIMAI_STORE_TLS_CERT and SIMAI_STORE_TLS_KEY)"
            )
        if self.layout == "clustered" and store == "redis" and self.store_bind.startswith("127."):
            raise ValueError(
                "a clustered layout runs components on other nodes: the store's shards must "
                "listen on an address they reach (store_bind='<this node's address>')"
            )
