"""Workflows: a run of coupled tasks and components, its run directory, records and resume."""

from simai.workflow.component import Component, ComponentFailed
from simai.workflow.metrics import log_metric
from simai.workflow.records import EVENTS, KINDS, STATE_OF, MemoEntry, Records, RecordsClosed
from simai.workflow.rundir import RunDir, RunDirError, RunDirLocked, RunDirMismatch, log_stem
from simai.workflow.workflow import Workflow, WorkflowStopped

__all__ = [
    "Component",
    "ComponentFailed",
    "Workflow",
    "log_metric",
    "WorkflowStopped",
    "EVENTS",
    "KINDS",
    "STATE_OF",
    "MemoEntry",
    "Records",
    "RecordsClosed",
    "RunDir",
    "RunDirError",
    "RunDirLocked",
    "RunDirMismatch",
    "log_stem",
]
