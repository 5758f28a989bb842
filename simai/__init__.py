"""simai: couple simulations with AI/ML, from a laptop to a supercomputer."""

from concurrent.futures import as_completed, wait

from simai import launch, observe
from simai._version import __version__
from simai.launch import (
    Command,
    CommandError,
    CommandResult,
    DependencyError,
    Executor,
    LocalExecutor,
    Resources,
    TaskTimeoutError,
    WorkerLostError,
    get_executor,
    task,
)
from simai.models import Surrogate, SurrogateClient
from simai.store import (
    AuthenticationError,
    CorruptValueError,
    Store,
    StoreClosedError,
    open_store,
)
from simai.workflow import Component, ComponentFailed, Workflow, WorkflowOptions
from simai.workflow.metrics import log_metric

__all__ = [
    "AuthenticationError",
    "Command",
    "Component",
    "ComponentFailed",
    "CommandError",
    "CommandResult",
    "CorruptValueError",
    "DependencyError",
    "Executor",
    "LocalExecutor",
    "Resources",
    "Store",
    "StoreClosedError",
    "Surrogate",
    "SurrogateClient",
    "TaskTimeoutError",
    "WorkerLostError",
    "Workflow",
    "WorkflowOptions",
    "__version__",
    "as_completed",
    "get_executor",
    "launch",
    "log_metric",
    "observe",
    "open_store",
    "task",
    "wait",
]
