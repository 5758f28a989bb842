"""Task launching: Python tasks and commands as futures, on this node or many.

``@task`` functions and :class:`Command` executables return
``concurrent.futures.Future``s; executors (``"local"``, ``"parsl"``) decide where they run.
"""

from simai.launch.command import Command, CommandError, CommandResult
from simai.launch.executor import (
    DependencyError,
    Executor,
    TaskTerminated,
    TaskTimeoutError,
    WorkerLostError,
    get_executor,
    register_executor,
)
from simai.launch.local import LocalExecutor
from simai.launch.mpi import MpiLauncher, detect_launcher, launch_argv
from simai.launch.resources import Resources
from simai.launch.task import TaskFunction, current_executor, submit, task, use

__all__ = [
    "Command",
    "CommandError",
    "CommandResult",
    "DependencyError",
    "Executor",
    "LocalExecutor",
    "MpiLauncher",
    "Resources",
    "TaskFunction",
    "TaskTerminated",
    "TaskTimeoutError",
    "WorkerLostError",
    "current_executor",
    "detect_launcher",
    "get_executor",
    "launch_argv",
    "register_executor",
    "submit",
    "task",
    "use",
]
