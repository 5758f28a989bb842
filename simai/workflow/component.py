"""Long-running components: simulations, trainers, inference services.

A component is a Python function or an executable that runs for a long time beside others.
It runs through the workflow's executor (so it is placed and bound like any command) inside
a small runner process that writes its pid and a heartbeat and turns a stop request into a
graceful exit. The workflow watches the heartbeat and restarts a component that dies,
following its policy, recording every event.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from simai.launch import Command, Resources
from simai.store.counters import COMPONENT_ENV

if TYPE_CHECKING:
    from simai.workflow.workflow import Workflow

POLICIES = ("never", "on-failure", "always")


class ComponentFailed(RuntimeError):
    """A component ended in failure after its restarts were used up."""


class Component:
    """Handle of a running component: its state, log, restarts, and `wait`/`stop`.

    Made by :meth:`Workflow.start`, which checks the arguments. Its `state` is "pending",
    "running", "restarting", "done", "failed" or "stopped".

    Parameters
    ----------
    workflow : Workflow
        The run it belongs to.
    name : str
        Its name, unique in the run: it names its log and its records.
    target : callable or Command
        What it runs: a function called with `args` and `kwargs`, or a command.
    args : tuple
        Positional arguments of a function.
    kwargs : dict
        Keyword arguments of a function.
    resources : Resources
        What the executor reserves for it.
    restart : str
        "never", "on-failure" or "always".
    max_restarts : int
        Restarts at most.
    """

    def __init__(
        self,
        workflow: Workflow,
        name: str,
        target: Callable[..., Any] | Command,
        args: tuple,
        kwargs: dict[str, Any],
        resources: Resources,
        restart: str,
        max_restarts: int,
    ) -> None:
        self.workflow = workflow
        self.name = name
        self.resources = resources
        self.restart = restart
        self.max_restarts = max_restarts
        self.restarts = 0
        self.state = "pending"
        self.returncode: int | None = None
        self.error: BaseException | None = None
        self.log = workflow.run_dir.log_path(name)
        self._control = workflow.run_dir.path / "control" / name
        self._control.parent.mkdir(exist_ok=True)
        self._target = target
        self._spec = self._write_spec(target, args, kwargs)
        self._future: Future | None = None
        #: the environment of its own store user (see Workflow.start), set by the workflow
        self.store_env: dict[str, str] = {}
        self._stopping = False
        self._ended = threading.Event()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Component({self.name!r}, state={self.state!r}, restarts={self.restarts})"

    # --- lifecycle ------------------------------------------------------------------------

    def _write_spec(self, target: Any, args: tuple, kwargs: dict[str, Any]) -> Path:
        spec: dict[str, Any] = {
            "control": str(self._control),
            "interval": self.workflow.options.heartbeat_interval,
            "sys_path": list(sys.path),  # so the function's module imports as it does here
        }
        if isinstance(target, Command):
            spec["argv"] = list(target.argv)
        else:
            spec["call"] = cloudpickle.dumps((target, args, kwargs))
        path = Path(f"{self._control}.spec")
        path.write_bytes(pickle.dumps(spec))
        return path

    def _command(self) -> Command:
        base = self._target if isinstance(self._target, Command) else None
        env = dict(base.env or {}) if base is not None else {}
        env[COMPONENT_ENV] = self.name
        env.update(self.store_env)
        return Command(
            [sys.executable, "-m", "simai.workflow._runner", str(self._spec)],
            ranks=self.resources.ranks,
            ranks_per_node=self.resources.ranks_per_node,
            cpus_per_rank=self.resources.cpus,
            gpus_per_rank=self.resources.gpus,
            huge_pages=self.resources.huge_pages,
            env=env,
            cwd=base.cwd if base is not None else None,
            stdout=self.log,
            stderr=self.log,
            name=self.name,
        )

    def _launch(self) -> None:
        for suffix in (".stop", ".pid"):
            Path(f"{self._control}{suffix}").unlink(missing_ok=True)
        Path(f"{self._control}.heartbeat").touch()
        self._started_at = time.time()
        future = self.workflow.executor.submit_command(self._command())
        with self._lock:
            self._future = future
            self.state = "running"
        self.workflow.records.event("component", self.name, "started", resources=self._res())
        future.add_done_callback(self._on_exit)

    def _res(self) -> dict[str, Any]:
        r = self.resources
        return {
            "cpus": r.cpus,
            "gpus": r.gpus,
            "ranks": r.ranks,
            "nodes": r.nodes,
            "huge_pages": self.workflow.executor.huge_pages(r),
        }

    def _on_exit(self, future: Future) -> None:
        error = future.exception() if not future.cancelled() else None
        self.returncode = getattr(error, "returncode", None if error else 0)
        failed = error is not None or future.cancelled()
        records = self.workflow.records
        if self._stopping or self.workflow.closing:
            self._end("stopped", None)
            return
        again = self.restart == "always" or (self.restart == "on-failure" and failed)
        if again and self.restarts < self.max_restarts:
            self.state = "restarting"
            detail = f"exit {self.returncode}: {error}" if failed else "exited"
            records.event("component", self.name, "restarting", detail=detail + self.log_tail())
            self.restarts += 1
            try:
                self._launch()
            except Exception as exc:  # noqa: BLE001 - recorded and surfaced by wait()
                self._end("failed", exc)
                return
            records.event("component", self.name, "restarted", detail=f"restart {self.restarts}")
            return
        if failed:
            self._end("failed", error or RuntimeError("cancelled"))
        else:
            self._end("done", None)

    def _end(self, state: str, error: BaseException | None) -> None:
        self.state = state
        self.error = error
        event = {"done": "finished", "failed": "failed", "stopped": "stopped"}[state]
        detail = None
        if error is not None:
            detail = f"{error}\n{self.log_tail()}"
        self.workflow.records.event("component", self.name, event, detail=detail)
        self._ended.set()

    # --- watching -------------------------------------------------------------------------

    def heartbeat_age(self) -> float:
        try:
            return time.time() - Path(f"{self._control}.heartbeat").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _check_heartbeat(self, timeout: float) -> None:
        if self.state != "running" or self._stopping:
            return
        if time.time() - self._started_at < timeout:
            return
        age = self.heartbeat_age()
        if age > timeout:
            self.workflow.records.event(
                "component", self.name, "failed", detail=f"no heartbeat for {age:.0f} s: killed"
            )
            self._kill(signal.SIGKILL)

    def _pid(self) -> int | None:
        try:
            info = json.loads(Path(f"{self._control}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return info["pid"] if info.get("host") == socket.gethostname() else None

    def _kill(self, sig: int) -> None:
        pid = self._pid()
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # --- public ---------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> str:
        """Block until the component has ended for good; return its final state.

        Raises ComponentFailed (with the log tail) if it failed, TimeoutError on timeout.
        """
        if not self._ended.wait(timeout):
            raise TimeoutError(f"component {self.name!r} still {self.state} after {timeout:g} s")
        if self.state == "failed":
            raise ComponentFailed(
                f"component {self.name!r} failed after {self.restarts} restart(s): "
                f"{self.error}\n{self.log_tail()}"
            ) from self.error
        return self.state

    def stop(self, grace: float = 10.0) -> str:
        """Ask the component to exit (SIGTERM in it), kill it after `grace` seconds."""
        self._stopping = True
        Path(f"{self._control}.stop").touch()
        self._kill(signal.SIGTERM)
        if not self._ended.wait(grace):
            self._kill(signal.SIGKILL)
            if self._future is not None and not self._ended.wait(grace):
                self._future.cancel()
                self._end("stopped", None)
        return self.state

    @property
    def done(self) -> bool:
        return self._ended.is_set()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return ""
        return ("\n--- last lines of " + str(self.log) + " ---\n" + "\n".join(text)) if text else ""
