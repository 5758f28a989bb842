"""Observing runs: live progress in the terminal, metrics, and reports from the records.

``with simai.observe.progress(wf):`` shows a running workflow's tasks, components, store
traffic, streams and latest metrics (see :mod:`simai.observe.live`).
"""

from simai.observe.live import Progress, Snapshot, progress

__all__ = ["Progress", "Snapshot", "progress"]
