"""The steering loop: a model picks which simulations run next while workers stay busy.

One loop thread owns the state. Executors' done-callbacks only post events to it; on each
event it records what happened and, in the same step, submits replacements, so the number
of simulations in flight never drops while anything else (training, inference, user code)
is going on. User code reads results from a queue: a slow ``for`` body delays nobody.

Where training and inference run: by default on a small private
:class:`~simai.launch.LocalExecutor` (``ai_cores`` cores, 1 by default) next to the
simulations' executor, not on it. On the simulations' executor a training task would take a
simulation slot (or wait for one), so workers would idle or the model would lag; on a side
executor it shares cores with simulations through the OS scheduler, which slows the few
simulations on those cores a little while training runs instead of stalling any. Pass
``ai_executor=`` (for example the workflow's own executor, or a Parsl executor with GPU
nodes) to put them elsewhere.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import math
import os
import pickle
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simai.launch import (
    Command,
    CommandResult,
    Executor,
    LocalExecutor,
    TaskTimeoutError,
    current_executor,
)
from simai.steer.policies import Policy, get_policy
from simai.steer.result import Result
from simai.steer.state import SteeringState
from simai.steer.tasks import SimulationError, predict_chunk, simulate_one, train_model

if TYPE_CHECKING:
    from simai.workflow import Workflow

__all__ = ["Steering", "SteeringError"]

_END = object()
_MAX_ERROR = 4000
STATE_FORMAT = 1


class SteeringError(RuntimeError):
    """The loop could not go on: too many failed simulations, or unusable predictions."""


@dataclass
class _Flight:
    index: int
    model_version: int
    submitted: float
    future: Future | None = None
    command: bool = False


@dataclass
class _Round:
    version: int
    model: Any
    chunks: list[np.ndarray]
    means: dict[int, np.ndarray] = field(default_factory=dict)
    stds: dict[int, np.ndarray | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    futures: list[Future] = field(default_factory=list)
    pending: int = 0


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _plain(fn: Any) -> Any:
    """The function itself for a ``@simai.task`` (calling that in a worker would submit)."""
    return getattr(fn, "__simai_function__", fn)


def _returns_command(fn: Callable[..., Any]) -> bool:
    try:
        ret = inspect.signature(fn).return_annotation
    except (TypeError, ValueError):
        return False
    return ret is Command or ret in ("Command", "simai.Command", "simai.launch.Command")


def _error_text(exc: BaseException) -> str:
    # a SimulationError's message already names the exception the simulation raised
    text = str(exc) if isinstance(exc, SimulationError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _as_value(raw: Any) -> float:
    """A simulation's value as a finite float, or ValueError saying why not."""
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"simulate returned {raw!r}, not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"simulate returned {type(raw).__name__} {raw!r}, not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"simulate returned {value}, not a finite number")
    return value


def _last_line_value(result: CommandResult) -> float:
    try:
        lines = Path(result.stdout).read_text(errors="replace").splitlines()
    except OSError as e:
        raise ValueError(f"cannot read the command's stdout {result.stdout}: {e}") from None
    lines = [ln.strip() for ln in lines if ln.strip()]
    if not lines:
        raise ValueError(f"the command printed nothing on stdout ({result.stdout})")
    try:
        return _as_value(lines[-1])
    except ValueError:
        raise ValueError(
            f"the last line of the command's stdout ({result.stdout}) is not a number: "
            f"{lines[-1][:200]!r}"
        ) from None


def _fingerprint(candidates: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for c in candidates:
        h.update(pickle.dumps(c, protocol=4))
    return h.hexdigest()


def _slots(executor: Executor, cpus: int, in_flight: int | None) -> int:
    """Simulations the executor runs at once: a LocalExecutor's cores (times its
    oversubscription) over ``cpus``; for other executors ``in_flight`` if given, else this
    machine's cores over ``cpus``."""
    if isinstance(executor, LocalExecutor):
        return max(1, len(executor.cores) * executor.oversubscribe // cpus)
    if in_flight is not None:
        return in_flight
    return max(1, (os.cpu_count() or 1) // cpus)


def _split_predictions(out: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``predict``'s output as (mean, std or None), each of length ``n``, or ValueError."""
    std = None
    if isinstance(out, tuple) and len(out) == 2 and np.ndim(out[0]) == 1 and np.ndim(out[1]) == 1:
        mean, std = np.asarray(out[0], dtype=float), np.asarray(out[1], dtype=float)
    else:
        try:
            mean = np.asarray(out, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(
                f"predict returned {type(out).__name__}: expected an array of {n} means "
                "or a tuple (mean, std)"
            ) from None
    for what, arr in (("mean", mean), ("std", std)):
        if arr is not None and arr.shape != (n,):
            raise ValueError(
                f"predict returned a {what} of shape {arr.shape} for {n} candidates; "
                f"expected ({n},)"
            )
    return mean, std


class Steering:
    """Runs ``simulate`` on the candidates a model picks, until ``budget`` succeed.

    ``candidates``: a non-empty sequence of picklable candidates. ``simulate(candidate)``
    returns a float (run as a task), or builds a :class:`~simai.Command` whose stdout's last
    line is the float (a function annotated ``-> Command`` is called on the loop thread; any
    other function that returns a Command has it run as a second step). ``train(data)``
    gets every successful ``(candidate, value)`` so far and returns a model;
    ``predict(model, candidates)`` returns their predicted means, or ``(mean, std)``. Both
    run as tasks (see the module docstring for where). ``policy``: :class:`Greedy`,
    :class:`UCB`, :class:`Random` or a name ("greedy", "ucb", "ucb:2", "random").

    Budget rule: ``budget`` counts successful simulations only. A failed one (exception,
    non-zero exit, walltime, a value that is not a finite number) is recorded as a failed
    :class:`Result` and replaced by another candidate; a failed candidate is not retried
    (``sim_retries`` reruns an attempt inside the executor first). Once more than
    ``max_failures`` failed (default: ``budget``), the loop stops submitting and iteration
    raises :class:`SteeringError`. The loop also ends when no candidate is left.

    ``in_flight`` simulations are kept submitted at all times (until the budget is near);
    the default is twice the executor's worker slots for simulations (cores x
    oversubscription / ``sim_cpus``), so one waits queued behind each running one and a
    worker that frees up starts the next at once instead of waiting for the loop (a
    workflow's records make each result durable before its future resolves, which takes
    tens of milliseconds). The cost: a queued pick was chosen by the model of its time.

    Picks are random (seeded) until the first model has scored the candidates; the model is
    first trained once ``initial`` simulations succeeded and again after every
    ``batch_size`` new successes (one training at a time; a training that raises is recorded
    in ``trainings`` and the previous model stays). Each new model re-scores the candidates
    left with inference tasks over ``chunk_size`` chunks, in parallel.

    State lives in ``<run dir>/steer/<name>/`` (see :mod:`simai.steer.state`) and the
    newest scores and a progress summary are also put in the run's store under
    ``steer/<name>/``. With ``Workflow(resume=True)`` the loop continues where it stopped:
    saved results are kept and handed out again, simulations that were in flight are
    submitted first (the workflow's memo returns those that had finished without rerunning
    them), and the budget counts across runs. Without a workflow, ``executor`` (default: the
    current one) runs simulations and ``state_dir`` (default: none) keeps the state.
    """

    def __init__(
        self,
        candidates: Sequence[Any],
        simulate: Callable[[Any], Any],
        train: Callable[[list[tuple[Any, float]]], Any] | None,
        predict: Callable[[Any, list[Any]], Any] | None,
        policy: Policy | str = "greedy",
        *,
        budget: int = 200,
        initial: int = 20,
        batch_size: int = 10,
        in_flight: int | None = None,
        chunk_size: int = 2000,
        seed: int = 0,
        workflow: Workflow | None = None,
        name: str = "steer",
        sim_walltime: float | None = None,
        sim_cpus: int = 1,
        sim_retries: int = 0,
        train_cpus: int = 1,
        max_failures: int | None = None,
        executor: Executor | None = None,
        ai_executor: Executor | None = None,
        ai_cores: int | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(candidates, str | bytes | Mapping) or not (
            hasattr(candidates, "__len__") and hasattr(candidates, "__getitem__")
        ):
            raise TypeError(
                "candidates must be a sequence (list, tuple, array), "
                f"got {type(candidates).__name__}"
            )
        if len(candidates) == 0:
            raise ValueError("the candidate set is empty: nothing to steer")
        self.policy = get_policy(policy)
        if self.policy.needs_model:
            for what, fn in (("train", train), ("predict", predict)):
                if not callable(fn):
                    raise TypeError(
                        f"{what} must be callable for policy {self.policy!r}, got {fn!r}"
                    )
        if not callable(simulate):
            raise TypeError(f"simulate must be callable, got {simulate!r}")
        self.budget = _check_int("budget", budget, 1)
        self.initial = _check_int("initial", initial, 1)
        if budget < initial:
            raise ValueError(
                f"budget ({budget}) is below the initial batch ({initial}): the model would "
                "never be trained; raise the budget or lower initial"
            )
        if budget > len(candidates):
            raise ValueError(f"budget ({budget}) exceeds the {len(candidates)} candidates")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.chunk_size = _check_int("chunk_size", chunk_size, 1)
        self.sim_cpus = _check_int("sim_cpus", sim_cpus, 1)
        self.train_cpus = _check_int("train_cpus", train_cpus, 1)
        self.sim_retries = _check_int("sim_retries", sim_retries, 0)
        self.max_failures = _check_int(
            "max_failures", budget if max_failures is None else max_failures, 0
        )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if sim_walltime is not None and (
            isinstance(sim_walltime, bool)
            or not isinstance(sim_walltime, int | float)
            or not sim_walltime > 0
        ):
            raise ValueError(f"sim_walltime must be seconds > 0, got {sim_walltime!r}")
        if (
            not isinstance(name, str)
            or not name
            or name.strip("._-") == ""
            or any(not (ch.isalnum() or ch in "._-") for ch in name)
        ):
            raise ValueError(f"name {name!r} must be letters, digits, '.', '_' and '-'")
        self.name = name
        self.seed = seed
        self.candidates = candidates
        self.sim_walltime = sim_walltime
        self._simulate = _plain(simulate)
        self._builds_command = _returns_command(self._simulate)
        self._train = _plain(train)
        self._predict = _plain(predict)
        self.workflow = workflow
        if workflow is not None:
            if executor is not None or state_dir is not None:
                raise TypeError(
                    "give workflow= or executor=/state_dir=, not both: a workflow's executor "
                    "runs the simulations and its run directory keeps the state"
                )
            if not hasattr(workflow, "executor"):
                raise RuntimeError("the workflow is not running: create Steering inside `with wf:`")
            executor = workflow.executor
            state_dir = Path(workflow.run_dir.path, "steer", name)
        self.executor = executor or current_executor()
        if in_flight is not None:
            _check_int("in_flight", in_flight, 1)
        self._local_host = (
            socket.gethostname() if isinstance(self.executor, LocalExecutor) else None
        )
        self.slots = _slots(self.executor, self.sim_cpus, in_flight)
        self.in_flight_target = 2 * self.slots if in_flight is None else in_flight
        self._ai_executor = ai_executor
        self._own_ai = False
        self._ai_cores = _check_int("ai_cores", ai_cores, 1) if ai_cores is not None else None
        if self._ai_cores is not None and self._ai_cores < train_cpus:
            raise ValueError(f"ai_cores ({ai_cores}) is below train_cpus ({train_cpus})")

        n = len(candidates)
        self._lock = threading.RLock()
        self._events: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._results: list[Result] = []
        self._ok: list[tuple[int, float]] = []
        self._failed = 0
        self._taken = np.zeros(n, dtype=bool)
        self._flights: dict[int, _Flight] = {}
        self._resubmit: collections.deque[tuple[int, int]] = collections.deque()
        self._order = np.random.default_rng(
            self.policy.seed if getattr(self.policy, "seed", None) is not None else seed
        ).permutation(n)
        self._order_pos = 0
        self._ranking: np.ndarray | None = None
        self._rank_pos = 0
        self._model: Any = None
        self.model_version = 0
        self._scored_version = 0
        self._round: _Round | None = None
        self._training: Future | None = None
        self._trained_on: int | None = None
        self.trainings: list[dict[str, Any]] = []
        self.predict_failures: list[str] = []
        self._fatal: BaseException | None = None
        self._busy = 0.0
        self._t0: float | None = None
        self._t_end: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finished = False
        self._store: Any = None
        self._store_error: str | None = None
        self.resumed = 0

        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._state = SteeringState(state_dir) if state_dir is not None else None
        self._fp = _fingerprint(candidates)
        if self._state is not None:
            if workflow is not None and workflow.resume:
                self._restore()
            else:
                self._state.reset()
            self._save()

    # --- public API -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Result]:
        """Each :class:`Result` as its simulation ends (after the saved ones, on resume).

        Leaving the loop early (``break``, an exception, Ctrl-C) stops the steering: its
        state stays saved for a resumed run. A steering runs once: iterating it again
        yields nothing (``results`` keeps everything).
        """
        if not self._start():
            return
        try:
            while True:
                try:
                    item = self._out.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                yield item
            if self._fatal is not None:
                raise self._fatal
        finally:
            self.close()

    def run(self) -> list[Result]:
        """Run to the end and return every result."""
        for _ in self:
            pass
        return self.results

    @property
    def results(self) -> list[Result]:
        """Every result so far, failures included, in the order they ended."""
        with self._lock:
            return list(self._results)

    def best(self, k: int = 1) -> list[Result]:
        """The ``k`` successful results with the highest values, best first."""
        _check_int("k", k, 0)
        ok = [(r.value, n, r) for n, r in enumerate(self.results) if r.ok]
        return [r for _, _, r in sorted(ok, key=lambda t: (-t[0], t[1]))[:k]]  # type: ignore[operator]

    @property
    def in_flight(self) -> int:
        """Simulations submitted and not yet ended."""
        with self._lock:
            return len(self._flights)

    @property
    def training(self) -> bool:
        """Whether a training task is running."""
        with self._lock:
            return self._training is not None

    @property
    def stats(self) -> dict[str, Any]:
        """Counts and the workers' busy fraction (this run; a resumed run starts afresh).

        ``busy_fraction`` is the sum of simulation durations over ``slots`` (the executor's
        worker slots for simulations) times the wall time the loop ran; ``idle_time`` is the
        slot-seconds left unused.
        """
        with self._lock:
            wall = 0.0
            if self._t0 is not None:
                wall = (self._t_end or time.time()) - self._t0
            capacity = self.slots * wall
            return {
                "simulations_done": len(self._ok),
                "simulations_failed": self._failed,
                "in_flight": len(self._flights),
                "budget": self.budget,
                "candidates_left": int((~self._taken).sum()),
                "retrains": sum(1 for t in self.trainings if t.get("ok")),
                "train_failures": sum(1 for t in self.trainings if t.get("ok") is False),
                "predict_failures": len(self.predict_failures),
                "model_version": self.model_version,
                "scored_version": self._scored_version,
                "training": self._training is not None,
                "slots": self.slots,
                "in_flight_target": self.in_flight_target,
                "wall_time": wall,
                "busy_time": self._busy,
                "busy_fraction": min(1.0, self._busy / capacity) if capacity > 0 else 0.0,
                "idle_time": max(0.0, capacity - self._busy),
                "resumed_results": self.resumed,
                "store_error": self._store_error,
            }

    def close(self) -> None:
        """Stop steering: nothing new is submitted; the state stays saved. Idempotent.

        Simulations still running keep running until their executor stops (the workflow's
        exit does that); a resumed run picks them up again.
        """
        self._stop.set()
        self._events.put(("stop",))
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        with self._lock:
            pending = [f.future for f in self._flights.values() if f.future is not None]
            if self._training is not None:
                pending.append(self._training)
            if self._round is not None:
                pending.extend(self._round.futures)
            for future in pending:
                future.cancel()
            if self._t0 is not None and self._t_end is None:
                self._t_end = time.time()
            if self._own_ai and self._ai_executor is not None:
                self._ai_executor.terminate()
                self._own_ai = False
            self._save()
            if self._state is not None:
                self._state.close()
            if self._store is not None:
                with contextlib.suppress(Exception):
                    self._store.close()
                self._store = None

    # --- resume -----------------------------------------------------------------------------

    def _restore(self) -> None:
        assert self._state is not None
        state, rows = self._state.load()
        if state is None and not rows:
            return
        if state is not None:
            if state.get("candidates_sha256") != self._fp or state.get("n_candidates") != len(
                self.candidates
            ):
                raise ValueError(
                    f"steering state in {self._state.path} was made for another candidate set "
                    f"({state.get('n_candidates')} candidates); resume with the same "
                    "candidates, or use another name= or a fresh run"
                )
            self.model_version = int(state.get("model_version", 0))
            self.trainings = list(state.get("trainings", []))
            self.predict_failures = list(state.get("predict_failures", []))
        for row in rows:
            i = int(row["index"])
            result = Result.from_dict(row, self.candidates[i])
            self._results.append(result)
            self._taken[i] = True
            if result.ok:
                self._ok.append((i, float(result.value)))  # type: ignore[arg-type]
            else:
                self._failed += 1
            self._out.put(result)
        self.resumed = len(rows)
        for flight in (state or {}).get("in_flight", []):
            i = int(flight["index"])
            if not self._taken[i]:
                self._resubmit.append((i, int(flight.get("model_version", 0))))
        scores = self._state.load_scores()
        if scores is not None and self.policy.needs_model:
            version, mean, std = scores
            if mean.shape == (len(self.candidates),):
                self._rank(version, mean, std)

    # --- the loop thread --------------------------------------------------------------------

    def _start(self) -> bool:
        """Start the loop thread; False if it was started before (a loop runs once)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return False
            self._t0 = time.time()
            if self.workflow is not None:
                try:
                    self._store = self.workflow.store()
                except Exception as e:  # noqa: BLE001 - the run dir keeps the state anyway
                    self._store_error = _error_text(e)
            if self.policy.needs_model:
                self._ai()  # its worker starts during the initial batch, not at first training
            self._thread = threading.Thread(target=self._loop, name=f"simai-steer-{self.name}")
            self._thread.daemon = True
            self._thread.start()
            return True

    def _loop(self) -> None:
        try:
            with self._lock:
                self._step()
            while not self._finished and not self._stop.is_set():
                event = self._events.get()
                with self._lock:
                    if event[0] == "stop":
                        break
                    self._handle(event)
                    self._step()
        except BaseException as e:  # noqa: BLE001 - handed to the iterating thread
            self._fatal = e
        finally:
            with self._lock:
                self._t_end = time.time()
                self._save()
            self._out.put(_END)

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        if kind == "sim":
            self._on_simulation(event[1], event[2])
        elif kind == "train":
            self._on_training(event[1], event[2])
        elif kind == "predict":
            self._on_prediction(event[1], event[2], event[3])

    def _step(self) -> None:
        """Fill free slots, start a training when due, and decide whether the run is over."""
        if self._fatal is None:
            self._fill()
            self._maybe_train()
        idle = not self._flights
        if self._fatal is not None and idle:
            self._finished = True
        elif idle and len(self._ok) >= self.budget:
            self._finished = True
        elif idle and self._failed > self.max_failures and len(self._ok) < self.budget:
            last = next((r.error for r in reversed(self._results) if not r.ok), None)
            self._fatal = SteeringError(
                f"{self._failed} simulations failed (max_failures={self.max_failures}); "
                f"the last: {last}"
            )
            self._finished = True
        elif idle:
            self._finished = True  # no candidate left

    def _fill(self) -> None:
        while (
            len(self._flights) < self.in_flight_target
            and len(self._ok) + len(self._flights) < self.budget
            and self._failed <= self.max_failures
            and self._fatal is None
            and not self._stop.is_set()
        ):
            pick = self._pick()
            if pick is None:
                return
            self._submit(*pick)

    def _pick(self) -> tuple[int, int] | None:
        while self._resubmit:
            i, version = self._resubmit.popleft()
            if not self._taken[i]:
                return i, version
        if self._ranking is not None:
            while self._rank_pos < len(self._ranking):
                i = int(self._ranking[self._rank_pos])
                self._rank_pos += 1
                if not self._taken[i]:
                    return i, self._scored_version
        while self._order_pos < len(self._order):
            i = int(self._order[self._order_pos])
            self._order_pos += 1
            if not self._taken[i]:
                return i, 0
        return None

    def _submit(self, index: int, version: int) -> None:
        self._taken[index] = True
        flight = _Flight(index, version, time.time())
        self._flights[index] = flight
        candidate = self.candidates[index]
        try:
            if self._builds_command:
                command = self._simulate(candidate)
                if not isinstance(command, Command):
                    raise TypeError(
                        f"simulate is annotated -> Command but returned {type(command).__name__}"
                    )
                self._submit_command(flight, command)
            else:
                flight.future = self.executor.submit(
                    simulate_one,
                    self._simulate,
                    candidate,
                    resources={"cpus": self.sim_cpus},
                    retries=self.sim_retries,
                    walltime=self.sim_walltime,
                )
                self._watch(flight.future, "sim", index)
        except Exception as e:  # noqa: BLE001 - refused at submission: a failed simulation
            if self.executor._closed:
                self._flights.pop(index, None)
                self._taken[index] = False
                self._fatal = SteeringError(
                    f"the executor was shut down while steering ran: {_error_text(e)}"
                )
                return
            self._record_failure(flight, e)
            return
        self._save()

    def _submit_command(self, flight: _Flight, command: Command) -> None:
        walltime = self.sim_walltime if self.sim_walltime is not None else command.walltime
        flight.command = True
        flight.future = self.executor.submit_command(
            command, retries=self.sim_retries, walltime=walltime
        )
        self._watch(flight.future, "sim", flight.index)

    def _watch(self, future: Future, *event: Any) -> None:
        future.add_done_callback(lambda f: self._events.put((*event, f)))

    def _on_simulation(self, index: int, future: Future) -> None:
        flight = self._flights.get(index)
        if flight is None or flight.future is not future:
            return
        try:
            raw = future.result()
        except BaseException as e:  # noqa: BLE001 - CancelledError included
            if self._stop.is_set():
                return
            self._record_failure(flight, e)
            return
        worker = host = None
        try:
            if flight.command:
                ended = time.time()
                started = ended - raw.duration
                value = _last_line_value(raw)
            else:
                value, started, ended, worker, host = raw
                if isinstance(value, Command):
                    self._submit_command(flight, value)
                    return
                value = _as_value(value)
        except Exception as e:  # noqa: BLE001 - a value that cannot be used fails the sim
            self._record_failure(flight, e)
            return
        self._add_busy(started, ended)
        self._finish(flight, value, None, started, ended, worker, host)

    def _add_busy(self, started: float, ended: float) -> None:
        # from t0 on only: a result the memo recalls from an earlier run kept nobody busy now
        self._busy += max(0.0, ended - max(started, self._t0 or started))

    def _record_failure(self, flight: _Flight, error: BaseException) -> None:
        if isinstance(error, SimulationError):
            self._add_busy(error.started, error.ended)
            self._finish(
                flight, None, _error_text(error), error.started, error.ended, error.pid, error.host
            )
            return
        if isinstance(error, TaskTimeoutError) and self.sim_walltime is not None:
            self._busy += self.sim_walltime  # a worker was held that long; else unknown
        self._finish(flight, None, _error_text(error), flight.submitted, time.time(), None, None)

    def _finish(
        self,
        flight: _Flight,
        value: float | None,
        error: str | None,
        started: float | None,
        ended: float | None,
        worker: int | None,
        host: str | None,
    ) -> None:
        done = len(self._ok)
        batch = 0 if done < self.initial else 1 + (done - self.initial) // self.batch_size
        result = Result(
            candidate=self.candidates[flight.index],
            index=flight.index,
            value=value,
            ok=error is None,
            error=error,
            batch=batch,
            model_version=flight.model_version,
            started=started,
            ended=ended,
            worker=worker,
            host=host or (self._local_host if flight.command else None),
        )
        self._flights.pop(flight.index, None)
        if result.ok:
            self._ok.append((flight.index, value))  # type: ignore[arg-type]
        else:
            self._failed += 1
        self._results.append(result)
        if self._state is not None:
            self._state.append(result)
        self._save()
        self._out.put(result)

    # --- training and inference -------------------------------------------------------------

    def _ai(self) -> Executor:
        if self._ai_executor is None:
            log_dir = None
            if self.workflow is not None:
                log_dir = self.workflow.run_dir.logs_dir
            self._ai_executor = LocalExecutor(
                cores=self._ai_cores or self.train_cpus, log_dir=log_dir
            )
            self._ai_executor.observer = self.executor.observer
            self._own_ai = True
        return self._ai_executor

    def _maybe_train(self) -> None:
        n = len(self._ok)
        if (
            not self.policy.needs_model
            or self._training is not None
            or self._stop.is_set()
            or n < self.initial
            or n >= self.budget
            or (self._trained_on is not None and n - self._trained_on < self.batch_size)
            or self._taken.all()
        ):
            return
        self._trained_on = n
        data = [(self.candidates[i], v) for i, v in self._ok]
        attempt = {
            "version": self.model_version + 1,
            "n": n,
            "started": time.time(),
            "ended": None,
            "ok": None,
            "error": None,
        }
        self.trainings.append(attempt)
        self._training = self._ai().submit(
            train_model, self._train, data, resources={"cpus": self.train_cpus}
        )
        self._watch(self._training, "train", attempt)

    def _on_training(self, attempt: dict[str, Any], future: Future) -> None:
        self._training = None
        attempt["ended"] = time.time()
        try:
            model = future.result()
        except BaseException as e:  # noqa: BLE001 - recorded; the previous model stays
            attempt.update(ok=False, error=_error_text(e))
            self._save()
            return
        attempt["ok"] = True
        self.model_version = attempt["version"]
        self._model = model
        self._save()
        self._score(model, self.model_version)

    def _score(self, model: Any, version: int) -> None:
        left = np.flatnonzero(~self._taken)
        if len(left) == 0:
            return
        if self._round is not None:
            for f in self._round.futures:
                f.cancel()
        chunks = [left[i : i + self.chunk_size] for i in range(0, len(left), self.chunk_size)]
        rnd = _Round(version, model, chunks, pending=len(chunks))
        self._round = rnd
        ai = self._ai()
        for k, chunk in enumerate(chunks):
            fut = ai.submit(
                predict_chunk, self._predict, model, [self.candidates[i] for i in chunk]
            )
            rnd.futures.append(fut)
            self._watch(fut, "predict", rnd, k)

    def _on_prediction(self, rnd: _Round, k: int, future: Future) -> None:
        if rnd is not self._round:
            return
        rnd.pending -= 1
        try:
            mean, std = _split_predictions(future.result(), len(rnd.chunks[k]))
            if self.policy.needs_std and std is None:
                self._fatal = SteeringError(
                    f"policy {self.policy!r} needs uncertainty: predict must return (mean, std)"
                )
                self._save()
                return
            rnd.means[k], rnd.stds[k] = mean, std
        except BaseException as e:  # noqa: BLE001 - recorded; the chunk stays unscored
            rnd.errors.append(f"model {rnd.version}, chunk {k}: {_error_text(e)}")
        if rnd.pending:
            return
        self._round = None
        self.predict_failures.extend(rnd.errors)
        if not rnd.means:
            self._save()
            return
        n = len(self.candidates)
        mean = np.full(n, np.nan)
        std = np.full(n, np.nan) if self.policy.needs_std else None
        for k2, m in rnd.means.items():
            mean[rnd.chunks[k2]] = m
            s = rnd.stds.get(k2)
            if std is not None and s is not None:
                std[rnd.chunks[k2]] = s
        self._rank(rnd.version, mean, std)
        if self._state is not None:
            self._state.save_scores(rnd.version, mean, std)
        self._publish_scores(mean, std)
        self._save()

    def _rank(self, version: int, mean: np.ndarray, std: np.ndarray | None) -> None:
        """Order the scored candidates by the policy's priority, unscored ones after them."""
        if version < self._scored_version:
            return
        priority = self.policy.priority(mean, std)
        priority = np.where(np.isnan(priority), -np.inf, priority)
        order = np.argsort(-priority, kind="stable")
        scored = np.isfinite(mean[order])
        self._ranking = order[scored]
        self._rank_pos = 0
        self._scored_version = version

    # --- saving -----------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "n_candidates": len(self.candidates),
            "candidates_sha256": self._fp,
            "policy": repr(self.policy),
            "budget": self.budget,
            "initial": self.initial,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "simulations_done": len(self._ok),
            "simulations_failed": self._failed,
            "model_version": self.model_version,
            "scored_version": self._scored_version,
            "in_flight": [
                {"index": f.index, "model_version": f.model_version, "submitted": f.submitted}
                for f in self._flights.values()
            ]
            + [{"index": i, "model_version": v} for i, v in self._resubmit],
            "trainings": self.trainings,
            "predict_failures": self.predict_failures,
            "error": None if self._fatal is None else _error_text(self._fatal),
            "updated": time.time(),
        }

    def _save(self) -> None:
        if self._state is None:
            return
        snapshot = self._snapshot()
        self._state.save(snapshot)
        if self._store is not None:
            try:
                summary = {k: v for k, v in snapshot.items() if k not in ("in_flight", "trainings")}
                self._store.put(f"steer/{self.name}/state", summary)
            except Exception as e:  # noqa: BLE001 - the run dir holds the state regardless
                self._store_error = _error_text(e)

    def _publish_scores(self, mean: np.ndarray, std: np.ndarray | None) -> None:
        if self._store is None:
            return
        try:
            self._store.put(f"steer/{self.name}/scores/mean", mean)
            if std is not None:
                self._store.put(f"steer/{self.name}/scores/std", std)
        except Exception as e:  # noqa: BLE001 - scores are also in the run directory
            self._store_error = _error_text(e)
