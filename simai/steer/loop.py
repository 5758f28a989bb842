"""The steering loop: a model picks which simulations run next while workers stay busy.

One loop thread owns the state. Executors' done-callbacks only post events to it; on each
event it records what happened and, in the same step, submits replacements, so the number
of simulations in flight never drops while anything else (training, inference, user code)
is going on. User code reads results from a queue: a slow ``for`` body delays nobody.
"""

from __future__ import annotations

import functools
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simai.checks import check_int
from simai.launch import Command, Executor, LocalExecutor, TaskTimeoutError, current_executor
from simai.steer.arguments import check_arguments, plain, returns_command
from simai.steer.asktell import Proposer
from simai.steer.errors import SteeringError
from simai.steer.options import SteeringOptions
from simai.steer.outputs import as_value, error_text, last_line_value
from simai.steer.picking import CandidateOrder, Proposals, as_points
from simai.steer.policies import Policy
from simai.steer.result import Result
from simai.steer.saving import Saver
from simai.steer.tasks import SimulationError, named, simulate_one
from simai.steer.training import Published, Trainer
from simai.workflow import Workflow
from simai.workflow.metrics import log_metric

__all__ = ["Steering"]

_END = object()
_STOP = object()


@dataclass
class _Flight:
    index: int
    model_version: int
    submitted: float
    future: Future | None = None
    command: bool = False


def _slots(executor: Executor, cpus: int, in_flight: int | None) -> int:
    """Simulations the executor runs at once: a LocalExecutor's cores (times its
    oversubscription) over ``cpus``; for other executors ``in_flight`` if given, else this
    machine's cores over ``cpus``."""
    if isinstance(executor, LocalExecutor):
        return max(1, len(executor.cores) * executor.oversubscribe // cpus)
    if in_flight is not None:
        return in_flight
    return max(1, (os.cpu_count() or 1) // cpus)


class Steering:
    """Runs ``simulate`` on the candidates a model (or a proposer) picks, until
    ``options.budget`` succeed.

    It **maximises** ``simulate``'s value: the policy runs the candidates with the highest
    predicted values first (return ``-loss`` to minimise). Iterate it for each
    :class:`Result` as its simulation ends in this process, or call :meth:`run`.

    Parameters
    ----------
    candidates : Sequence or Proposer
        The candidates to choose from: a non-empty sequence (list, tuple, array) of
        picklable objects, at least ``options.budget`` of them. Or a :class:`Proposer`
        that makes them up when asked (ask/tell), such as :class:`RandomSearch`,
        :class:`ModelSearch` or an adapter around an optimizer: it then picks alone, so
        ``train``, ``predict``, ``model``, ``policy`` and ``initial_candidates`` are left
        out.
    simulate : callable
        ``simulate(candidate)`` returns the candidate's value, a float, and runs as a task.
        A function annotated ``-> Command`` is called on the loop thread instead and builds
        a :class:`~simai.Command` whose stdout's last line is the value; any other function
        that returns a Command has it run as a second step.
    train : callable or None
        ``train(data)`` gets every successful ``(candidate, value)`` so far and returns a
        model; it runs as a task. None for a policy without a model (random), or with
        ``model``.
    predict : callable or None
        ``predict(model, candidates)`` returns their predicted means, or ``(mean, std)``
        (which UCB needs); it runs as tasks over chunks of the candidates. None only for a
        policy without a model (random). Higher predictions are picked first.
    policy : Policy or str
        How scores become picks: :class:`Greedy`, :class:`UCB`, :class:`Random` or a name
        ("greedy", "ucb", "ucb:2", "random"). Default "greedy".
    options : SteeringOptions or None
        The budget, batch sizes, mode, cores and other tuning knobs; None: the defaults.
    initial_candidates : Sequence of int or None
        Indices into ``candidates`` of those to simulate first, in this order, instead of
        random picks: at most ``options.initial`` distinct ones (the rest of the initial
        batch is random). None (default): all random.
    model : str or None
        Instead of ``train``: the name of a model a trainer component publishes in the
        workflow store's registry (:func:`~simai.models.publish_model` with ``step`` = the
        successes it was trained on), reading the results from the store stream
        ``steer/<name>/results``. Each newer version is loaded in the inference tasks and
        scores the candidates; see ``options.model_lag``.
    workflow : Workflow or None
        The running workflow (create Steering inside ``with wf:``): its executor runs the
        simulations, its run directory keeps the state in ``steer/<name>/`` (see
        :mod:`simai.steer.state`), its store gets the newest scores, a progress summary
        and the stream of results under ``steer/<name>/``. With ``Workflow(resume=True)``
        the loop continues where it stopped: saved results stay in :attr:`results` and
        count toward the budget (iteration yields only those that end in this process);
        simulations that were in flight are submitted first.
    executor : Executor or None
        Without a workflow: runs the simulations. None: the current executor.
    ai_executor : Executor or None
        Runs training and inference, for example the workflow's executor or a Parsl
        executor with GPU nodes. None: a private :class:`~simai.launch.LocalExecutor` of
        ``options.ai_cores`` cores next to the simulations' executor. On the simulations'
        executor a training task would take a simulation slot (or wait for one); on a
        side executor it shares cores with simulations through the OS scheduler, which
        slows the few simulations on those cores a little instead of stalling any.
    state_dir : str or PathLike or None
        Without a workflow: where the state is kept. None: nowhere.

    Notes
    -----
    ``budget`` counts successful simulations only. A failed one (an exception, a non-zero
    exit, the walltime, a value that is not a finite number) is recorded as a failed
    :class:`Result` and replaced by another candidate; once more than ``max_failures``
    failed, the loop stops submitting and iteration raises :class:`SteeringError`. The loop
    also ends when no candidate is left.

    A proposer is asked, on the loop's thread, for as many candidates as the free slots
    (``in_flight``) take, and told each result as it ends: ``tell(candidate, value)``, with
    ``value`` None for a failure. :attr:`Result.index` numbers its candidates in the order
    they were asked, ``model_version`` is 0. On resume a fresh proposer is told every saved
    result before it is asked.

    The first ``initial`` picks are ``initial_candidates``, then random (seeded) ones. The
    model is trained once ``initial`` simulations succeeded and again after every
    ``batch_size`` new successes, one training at a time (one that raises is recorded in
    ``trainings``; the previous model stays). Each new model re-scores the candidates left;
    ``options.mode`` says whether picks wait for it. :attr:`Result.model_version` is the
    version of the model whose scores chose the pick (0: given or random).
    """

    def __init__(
        self,
        candidates: Sequence[Any] | Proposer,
        simulate: Callable[[Any], Any],
        train: Callable[[list[tuple[Any, float]]], Any] | None,
        predict: Callable[[Any, list[Any]], Any] | None,
        policy: Policy | str = "greedy",
        options: SteeringOptions | None = None,
        *,
        initial_candidates: Sequence[int] | None = None,
        model: str | None = None,
        workflow: Workflow | None = None,
        executor: Executor | None = None,
        ai_executor: Executor | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        args = check_arguments(
            candidates,
            simulate,
            train,
            predict,
            policy,
            options,
            initial_candidates=initial_candidates,
            model=model,
            workflow=workflow,
            executor=executor,
            state_dir=state_dir,
        )
        options, train, given = args.options, args.train, args.given
        executor, state_dir = args.executor, args.state_dir
        self.proposer = args.proposer
        self.policy = args.policy
        self.options = options
        self.model = model
        self.workflow = workflow
        self.executor = executor or current_executor()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.slots = _slots(self.executor, options.sim_cpus, options.in_flight)
        self.in_flight_target = 2 * self.slots if options.in_flight is None else options.in_flight
        self.resumed = 0
        self._max_failures = (
            options.budget if options.max_failures is None else options.max_failures
        )
        self._simulate = plain(simulate)
        self._builds_command = returns_command(self._simulate)
        self._simulate_task = named(simulate_one, self._simulate)
        self._local_host = (
            socket.gethostname() if isinstance(self.executor, LocalExecutor) else None
        )

        self._lock = threading.RLock()
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._results: list[Result] = []
        self._ok: list[tuple[int, float]] = []
        self._failed = 0
        self._best: float | None = None
        self._flights: dict[int, _Flight] = {}
        self._order: CandidateOrder | Proposals
        if self.proposer is not None:
            self._order = Proposals(self.proposer)
            self.candidates: Sequence[Any] | Mapping[int, Any] = self._order.candidates
        else:
            points = None if options.min_distance is None else as_points(candidates)
            self._order = CandidateOrder(
                len(candidates), self.policy, options.seed, points, options.min_distance
            )
            self._order.give(given)
            self.candidates = candidates
        # picks stop once successes + flights reach the cap, until a model lifts it (or,
        # with a proposer in batch mode, the batch ends)
        self._waits = (
            options.mode == "batch"
            if self.proposer is not None
            else self.policy.needs_model and not options.random_fill
        )
        self._cap = options.initial if self._waits else options.budget
        self._idle_wait = 0.0  # slot-seconds free slots waited for a model
        self._idle_free = 0  # slots free while waiting, since _idle_mark
        self._idle_mark = 0.0
        self._trainer = Trainer(
            self.candidates,
            self.policy,
            options,
            plain(train),
            plain(predict),
            ai_executor=ai_executor,
            observer=self.executor.observer,
            log_dir=workflow.run_dir.logs_dir if workflow is not None else None,
            post=self._post,
            on_trained=self._on_trained,
            on_round=self._on_round,
            published=None
            if model is None or workflow is None
            else Published(
                workflow.store_url,
                model,
                options.model_trusted,
                options.model_poll,
                options.mode == "batch" or options.model_lag is not None,
            ),
        )
        self._fatal: BaseException | None = None
        self._busy = 0.0
        self._t0: float | None = None
        self._t_end: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finished = False

        self._saver: Saver | None = None
        if self.state_dir is not None:
            self._saver = Saver(self.state_dir, self.candidates, options, self.policy)
            if workflow is not None and workflow.resume:
                self._resume()
                self._cap = self._resumed_cap()
            else:
                self._saver.reset()
            self._save()

    # --- public API -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Result]:
        """Each :class:`Result` as its simulation ends in this process: on resume, the
        saved ones are not yielded again (they are in :attr:`results`), so what the loop's
        body logs is logged once.

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
        k = check_int("k", k, 0)
        ok = [(r.value, n, r) for n, r in enumerate(self.results) if r.ok]
        return [r for _, _, r in sorted(ok, key=lambda t: (-t[0], t[1]))[:k]]  # type: ignore[operator]

    @property
    def model_version(self) -> int:
        """The newest model's version (0: none trained yet)."""
        return self._trainer.model_version

    @property
    def trainings(self) -> list[dict[str, Any]]:
        """Every training started (with ``model``: every published version taken, marked
        ``published``): version, n (results trained on), started, ended, ok, error."""
        return self._trainer.trainings

    @property
    def predict_failures(self) -> list[str]:
        """Why each inference chunk that raised failed."""
        return self._trainer.predict_failures

    @property
    def in_flight(self) -> int:
        """Simulations submitted and not yet ended."""
        with self._lock:
            return len(self._flights)

    @property
    def training(self) -> bool:
        """Whether a training task is running."""
        with self._lock:
            return self._trainer.training

    @property
    def stats(self) -> dict[str, Any]:
        """Counts and the workers' busy fraction (this run; a resumed run starts afresh).

        ``busy_fraction`` is the sum of simulation durations over ``slots`` (the executor's
        worker slots for simulations) times the wall time the loop ran; ``idle_time`` is the
        slot-seconds left unused, ``idle_waiting_for_model`` the part of it that free slots
        waited because the mode held picks back for a model (after the initial batch in
        async mode without ``random_fill``; a batch's tail, training and scoring in batch
        mode).
        """
        with self._lock:
            wall = 0.0
            if self._t0 is not None:
                wall = (self._t_end or time.time()) - self._t0
            waited = self._idle_wait
            if self._t_end is None and self._t0 is not None:
                waited += self._idle_free * (time.time() - self._idle_mark)
            capacity = self.slots * wall
            trainings = self._trainer.trainings
            return {
                "simulations_done": len(self._ok),
                "simulations_failed": self._failed,
                "in_flight": len(self._flights),
                "budget": self.options.budget,
                "candidates_left": self._order.n_left,
                "retrains": sum(1 for t in trainings if t.get("ok")),
                "train_failures": sum(1 for t in trainings if t.get("ok") is False),
                "predict_failures": len(self._trainer.predict_failures),
                "model_version": self._trainer.model_version,
                "scored_version": self._order.scored_version,
                "training": self._trainer.training,
                "slots": self.slots,
                "in_flight_target": self.in_flight_target,
                "wall_time": wall,
                "busy_time": self._busy,
                "busy_fraction": min(1.0, self._busy / capacity) if capacity > 0 else 0.0,
                "idle_time": max(0.0, capacity - self._busy),
                "idle_waiting_for_model": waited,
                "mode": self.options.mode,
                "resumed_results": self.resumed,
                "store_error": None if self._saver is None else self._saver.store_error,
            }

    def close(self) -> None:
        """Stop steering: nothing new is submitted; the state stays saved. Idempotent.

        Simulations still running keep running until their executor stops (the workflow's
        exit does that); a resumed run picks them up again.
        """
        self._stop.set()
        self._events.put(_STOP)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        with self._lock:
            pending = [f.future for f in self._flights.values() if f.future is not None]
            for future in pending + self._trainer.pending():
                future.cancel()
            if self._t0 is not None and self._t_end is None:
                self._t_end = time.time()
            self._trainer.close()
            self._save()
            if self._saver is not None:
                self._saver.close()

    # --- resume and saving ------------------------------------------------------------------

    def _resume(self) -> None:
        """Take up what a stopped run saved: its results (kept, not yielded again), its
        model history, its simulations in flight and its newest scores."""
        assert self._saver is not None
        saved = self._saver.load()
        if saved is None:
            return
        self._trainer.restore(saved.model_version, saved.trainings, saved.predict_failures)
        if isinstance(self._order, Proposals):
            self._order.restore(saved.candidates)
        for result in saved.results:
            self._record(result)  # tells a proposer what it would have learnt
        self.resumed = len(saved.results)
        for index, version in saved.in_flight:
            self._order.requeue(index, version)
        scores = self._saver.load_scores() if self.policy.needs_model else None
        if scores is not None:
            self._order.rank(*scores)

    def _resumed_cap(self) -> int:
        """Where picks stop on resume: nowhere once a model ranked the candidates (async);
        the end of the batch the results reached (batch mode)."""
        o = self.options
        if not self._waits or (o.mode == "async" and self._order.ranked):
            return o.budget
        done = len(self._ok)
        if o.mode == "async" or done < o.initial:
            return o.initial
        return min(o.budget, o.initial + -(-(done - o.initial) // o.batch_size) * o.batch_size)

    def _save(self) -> None:
        if self._saver is None:
            return
        self._saver.save(
            done=len(self._ok),
            failed=self._failed,
            model_version=self._trainer.model_version,
            scored_version=self._order.scored_version,
            flights=[(f.index, f.model_version, f.submitted) for f in self._flights.values()],
            requeued=self._order.requeued,
            trainings=self._trainer.trainings,
            predict_failures=self._trainer.predict_failures,
            error=self._fatal,
        )

    # --- the loop thread --------------------------------------------------------------------

    def _start(self) -> bool:
        """Start the loop thread; False if it was started before (a loop runs once)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return False
            self._t0 = self._idle_mark = time.time()
            if self.workflow is not None and self._saver is not None:
                self._saver.open_store(self.workflow.store)
            self._trainer.start()  # its worker starts during the initial batch
            self._thread = threading.Thread(
                target=self._loop, name=f"simai-steer-{self.options.name}"
            )
            self._thread.daemon = True
            self._thread.start()
            return True

    def _loop(self) -> None:
        try:
            with self._lock:
                self._step()
            poll = self.options.model_poll if self.model is not None else None
            while not self._finished and not self._stop.is_set():
                try:
                    event = self._events.get(timeout=poll)
                except queue.Empty:
                    event = None  # time to check the registry again
                with self._lock:
                    if event is _STOP:
                        break
                    try:
                        if event is not None:
                            event()
                    except SteeringError as e:
                        self._fatal = e
                        self._save()
                    self._step()
        except BaseException as e:  # noqa: BLE001 - handed to the iterating thread
            self._fatal = e
        finally:
            with self._lock:
                self._t_end = time.time()
                self._count_idle()
                self._idle_free = 0
                self._save()
            self._out.put(_END)

    def _post(self, future: Future, handler: Callable[[Future], None]) -> None:
        """Run ``handler(future)`` on the loop thread once ``future`` is done; a handler
        that raises :class:`SteeringError` stops the run."""
        future.add_done_callback(lambda f: self._events.put(functools.partial(handler, f)))

    def _held(self) -> bool:
        """Whether picks wait for a model: the cap, not the budget, stops them, or the
        published version that ranked the candidates lags too far behind the results."""
        o = self.options
        if self._cap < o.budget and len(self._ok) + len(self._flights) >= self._cap:
            return True
        if self.model is None or o.model_lag is None or o.mode == "batch":
            return False
        if not self._order.ranked:
            return False
        step = self._trainer.steps.get(self._order.scored_version)
        return step is None or len(self._ok) - step > o.model_lag

    def _lift(self) -> None:
        """Let the next ``batch_size`` picks go: the model they waited for came (or failed:
        then they follow the previous ranking, or are random without one)."""
        o = self.options
        if o.mode == "async" and self._order.ranked:
            self._cap = o.budget
        else:
            self._cap = min(o.budget, len(self._ok) + o.batch_size)

    def _count_idle(self) -> None:
        """Add the slot-seconds free slots waited for a model since the last step."""
        now = time.time()
        self._idle_wait += self._idle_free * max(0.0, now - self._idle_mark)
        self._idle_mark = now
        waiting = self._fatal is None and not self._finished and not self._stop.is_set()
        if waiting and self._held() and not self._order.exhausted:
            self._idle_free = max(0, self.slots - len(self._flights))
        else:
            self._idle_free = 0

    def _step(self) -> None:
        """Fill free slots, start a training when due, and decide whether the run is over."""
        if self._fatal is None:
            self._fill()
            if not self._stop.is_set() and not self._order.exhausted:
                batch_done = len(self._ok) >= self._cap and not self._flights
                if self.options.mode == "async" or batch_done:
                    self._trainer.maybe_train(self._ok)
                    if self.model is not None and len(self._ok) < self.options.budget:
                        self._trainer.poll(len(self._ok) if self.options.mode == "batch" else None)
                if not self._flights and self._held() and not self._trainer.busy:
                    self._lift()  # nothing would lift the cap: never wait forever
                    self._fill()
        self._step_end()
        self._count_idle()

    def _step_end(self) -> None:
        """Decide whether the run is over: nothing in flight and nothing to wait for."""
        if self._flights:
            return
        if self._fatal is None and len(self._ok) < self.options.budget:
            if self._failed > self._max_failures:
                last = next((r.error for r in reversed(self._results) if not r.ok), None)
                self._fatal = SteeringError(
                    f"{self._failed} simulations failed (max_failures={self._max_failures}); "
                    f"the last: {last}"
                )
            elif self._held() and self._trainer.busy and not self._order.exhausted:
                return  # waiting for a model
        self._finished = True  # done, failed, or no candidate left

    def _on_trained(self, new_model: bool) -> None:
        self._save()
        if new_model:
            self._trainer.score(self._order.left())
        elif self._held():
            self._lift()

    def _on_round(self, version: int, scores: tuple[np.ndarray, np.ndarray | None] | None) -> None:
        if scores is not None:
            self._order.rank(version, *scores)
            if self._saver is not None:
                self._saver.save_scores(version, *scores)
        if self._held() or (self.options.mode == "async" and self._order.ranked):
            self._lift()
        self._save()

    # --- simulations ------------------------------------------------------------------------

    def _may_pick(self) -> bool:
        return (
            len(self._flights) < self.in_flight_target
            and len(self._ok) + len(self._flights) < self.options.budget
            and (not self._held() or self._order.chosen)
            and self._failed <= self._max_failures
            and self._fatal is None
            and not self._stop.is_set()
        )

    def _fill(self) -> None:
        if isinstance(self._order, Proposals) and self._may_pick():
            flights = len(self._flights)  # ask for every pick the target and cap allow
            self._order.ask(
                min(self.in_flight_target - flights, self._cap - len(self._ok) - flights)
            )
        while self._may_pick():
            pick = self._order.pick()
            if pick is None:
                return
            self._submit(*pick)

    def _submit(self, index: int, version: int) -> None:
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
                    self._simulate_task,
                    self._simulate,
                    candidate,
                    resources={"cpus": self.options.sim_cpus},
                    retries=self.options.sim_retries,
                    walltime=self.options.sim_walltime,
                )
                self._post(flight.future, functools.partial(self._on_simulation, index))
        except Exception as e:  # noqa: BLE001 - refused at submission: a failed simulation
            if self.executor._closed:
                self._flights.pop(index, None)
                self._order.release(index)
                self._fatal = SteeringError(
                    f"the executor was shut down while steering ran: {error_text(e)}"
                )
                return
            self._record_failure(flight, e)
            return
        self._save()

    def _submit_command(self, flight: _Flight, command: Command) -> None:
        walltime = self.options.sim_walltime
        flight.command = True
        flight.future = self.executor.submit_command(
            command,
            retries=self.options.sim_retries,
            walltime=command.walltime if walltime is None else walltime,
        )
        self._post(flight.future, functools.partial(self._on_simulation, flight.index))

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
                value = last_line_value(raw)
            else:
                value, started, ended, worker, host = raw
                if isinstance(value, Command):
                    self._submit_command(flight, value)
                    return
                value = as_value(value)
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
                flight, None, error_text(error), error.started, error.ended, error.pid, error.host
            )
            return
        sim_walltime = self.options.sim_walltime
        if isinstance(error, TaskTimeoutError) and sim_walltime is not None:
            self._busy += sim_walltime  # a worker was held that long; else unknown
        self._finish(flight, None, error_text(error), flight.submitted, time.time(), None, None)

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
        o = self.options
        result = Result(
            candidate=self.candidates[flight.index],
            index=flight.index,
            value=value,
            ok=error is None,
            error=error,
            batch=0 if done < o.initial else 1 + (done - o.initial) // o.batch_size,
            model_version=flight.model_version,
            started=started,
            ended=ended,
            worker=worker,
            host=host or (self._local_host if flight.command else None),
        )
        self._flights.pop(flight.index, None)
        if self._saver is not None:
            self._saver.append(result)
        self._record(result)
        self._log(result)
        self._save()
        self._out.put(result)

    def _log(self, result: Result) -> None:
        """A success's value, the best so far and the model version behind the pick, as the
        run's metrics ``steer/<name>/...`` at step = successes so far: the report draws them
        against simulations and against time. Resumed results were logged when they ended."""
        if self.workflow is None or not result.ok:
            return
        if self._best is None:
            self._best = max(v for _, v in self._ok)
        self._best = max(self._best, float(result.value))  # type: ignore[arg-type]
        prefix, step = f"steer/{self.options.name}", len(self._ok)
        log_metric(f"{prefix}/value", float(result.value), step=step)  # type: ignore[arg-type]
        log_metric(f"{prefix}/best", self._best, step=step)
        log_metric(f"{prefix}/model_version", result.model_version, step=step)

    def _record(self, result: Result) -> None:
        self._results.append(result)
        self._order.take(result.index)
        if self.proposer is not None:
            self.proposer.tell(result.candidate, result.value)
        if result.ok:
            self._ok.append((result.index, float(result.value)))  # type: ignore[arg-type]
        else:
            self._failed += 1
