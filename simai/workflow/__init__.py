"""Workflows: a run of coupled tasks and components, its run directory, records and resume."""

from simai.workflow.component import Component, ComponentFailed
from simai.workflow.metrics import log_metric
from simai.workflow.options import WorkflowOptions
from simai.workflow.records import EVENTS, KINDS, STATE_OF, MemoEntry, Records, RecordsClosed
from simai.workflow.rundir import RunDir, RunDirError, RunDirLocked, RunDirMismatch, log_stem
from simai.workflow.script import run_script
from simai.workflow.workflow import Workflow, WorkflowStopped

__all__ = [
    "Component",
    "ComponentFailed",
    "Workflow",
    "WorkflowOptions",
    "log_metric",
    "run_script",
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
