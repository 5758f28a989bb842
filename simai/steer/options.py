"""A steering loop's tuning knobs, checked once and kept apart from what the loop does."""

from __future__ import annotations

from dataclasses import dataclass

from simai.checks import check_int, check_number, check_seconds

__all__ = ["MODES", "SteeringOptions"]

#: how a loop alternates simulations and models (see :class:`SteeringOptions`)
MODES = ("async", "batch")

# the smallest value each int option takes
_COUNTS = {
    "budget": 1,
    "initial": 1,
    "batch_size": 1,
    "chunk_size": 1,
    "seed": 0,
    "sim_cpus": 1,
    "sim_retries": 0,
    "train_cpus": 1,
}
_OPTIONAL_COUNTS = {"in_flight": 1, "max_failures": 0, "ai_cores": 1, "model_lag": 0}


@dataclass(frozen=True)
class SteeringOptions:
    """A :class:`~simai.steer.Steering` loop's settings: its budget, batches, mode, cores,
    seed and name.

    Every value is checked when the options are made: a value of the wrong type raises
    ``TypeError``, one out of range ``ValueError``. ``dataclasses.replace`` makes a variant.

    Parameters
    ----------
    budget : int
        Successful simulations to run (default 200). Failed ones do not count: each is
        replaced by another candidate, so the loop ends once ``budget`` succeeded or no
        candidate is left.
    initial : int
        Successful simulations before the first training, at most ``budget`` (default 20):
        the ``initial_candidates`` given to :class:`~simai.steer.Steering`, then random
        (seeded) picks. A failed one is replaced by another random pick.
    batch_size : int
        New successful simulations between trainings (default 10). One training runs at a
        time.
    mode : str
        ``"async"`` (default): once the first model scored the candidates, picks never
        wait for a model; each new one re-ranks the candidates left while the workers go
        on with the previous ranking. ``"batch"``: run the initial batch and wait for all
        of it, train on every result so far, score, run the top ``batch_size`` picks and
        wait for all of them, and so on. Failures are replaced within their batch. With a
        proposer, async asks for a candidate whenever a slot frees up; batch asks for
        ``initial``, then ``batch_size`` at a time, each batch once the previous one ended.
    random_fill : bool
        Async mode only: keep the workers busy with more random picks after the
        ``initial`` ones while the first model trains and scores (default False: they
        wait; ``stats["idle_waiting_for_model"]`` says what that cost).
    in_flight : int or None
        Simulations kept submitted at all times, until the budget is near. None (default):
        twice the executor's worker slots for simulations (cores x oversubscription /
        ``sim_cpus``), so one waits queued behind each running one and a worker that frees
        up starts the next at once instead of waiting for the loop (a workflow makes each
        result durable before its future resolves). The cost: a queued pick was chosen by
        the model of its time.
    min_distance : float or None
        Spaces the picks of one model's ranking: a candidate closer (Euclidean, candidates
        being numbers or equal-length vectors of numbers) than this to an earlier pick of
        the same ranking is skipped, so that a batch is not a cluster of neighbours; once
        none left is far enough, the skipped ones follow in rank order. None (default): no
        spacing. Scale the candidates' coordinates so that distances mean something.
    chunk_size : int
        Candidates per inference task (default 2000): a new model scores the candidates
        left in chunks, in parallel.
    seed : int
        Seed of the random picks before the first model (default 0); a
        :class:`~simai.steer.Random` policy's own seed takes precedence.
    name : str
        The loop's name, of letters, digits, '.', '_' and '-' (default "steer"): its state
        lives in ``<run dir>/steer/<name>/`` and under ``steer/<name>/`` in the run's store.
    sim_walltime : float or None
        Seconds a simulation may run before it is stopped and counts as failed. None
        (default): no limit but a :class:`~simai.Command`'s own walltime.
    sim_cpus : int
        Cores per simulation (default 1).
    sim_retries : int
        Reruns of a failed simulation inside the executor before it counts as failed
        (default 0). A failed candidate is not picked again.
    train_cpus : int
        Cores per training task (default 1).
    max_failures : int or None
        Failed simulations tolerated: once more failed, the loop stops submitting and
        iteration raises :class:`~simai.steer.SteeringError`. None (default): ``budget``.
    ai_cores : int or None
        Cores of the private executor that runs training and inference when
        :class:`~simai.steer.Steering` gets no ``ai_executor``, at least ``train_cpus``.
        None (default): ``train_cpus``.
    model_lag : int or None
        With a published model (``Steering(model=...)``), async mode: successful results
        the newest scored version may lack (its metadata ``step`` below the successes)
        before picks wait for a newer one. None (default): never wait once a version has
        scored the candidates. Batch mode always waits for ``step`` >= the successes.
    model_poll : float
        With a published model: seconds between checks of the registry (default 0.5).
    model_trusted : bool
        With a published model: load TorchScript versions, which run code stored with
        them (default False); say so only if you trust whoever can write the store.
    """

    budget: int = 200
    initial: int = 20
    batch_size: int = 10
    mode: str = "async"
    random_fill: bool = False
    in_flight: int | None = None
    min_distance: float | None = None
    chunk_size: int = 2000
    seed: int = 0
    name: str = "steer"
    sim_walltime: float | None = None
    sim_cpus: int = 1
    sim_retries: int = 0
    train_cpus: int = 1
    max_failures: int | None = None
    ai_cores: int | None = None
    model_lag: int | None = None
    model_poll: float = 0.5
    model_trusted: bool = False

    def __post_init__(self) -> None:
        # the dataclass is frozen: keep what the checks return (seconds as floats) this way
        for field, minimum in _COUNTS.items():
            object.__setattr__(self, field, check_int(field, getattr(self, field), minimum))
        for field, minimum in _OPTIONAL_COUNTS.items():
            value = check_int(field, getattr(self, field), minimum, optional=True)
            object.__setattr__(self, field, value)
        walltime = check_seconds("sim_walltime", self.sim_walltime, positive=True, optional=True)
        object.__setattr__(self, "sim_walltime", walltime)
        spacing = check_number("min_distance", self.min_distance, positive=True, optional=True)
        object.__setattr__(self, "min_distance", spacing)
        poll = check_number("model_poll", self.model_poll, 0.0, positive=True, unit="seconds")
        object.__setattr__(self, "model_poll", poll)
        for flag in ("random_fill", "model_trusted"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, not {getattr(self, flag)!r}")
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise (ValueError if isinstance(self.mode, str) else TypeError)(
                f"mode must be 'async' or 'batch', not {self.mode!r}"
            )
        if self.random_fill and self.mode == "batch":
            raise ValueError("random_fill is for mode='async' only: a batch waits for its model")
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, not {self.name!r}")
        if self.name.strip("._-") == "" or any(
            not (ch.isalnum() or ch in "._-") for ch in self.name
        ):
            raise ValueError(f"name must be letters, digits, '.', '_' and '-', not {self.name!r}")
        if self.budget < self.initial:
            raise ValueError(
                f"budget ({self.budget}) is below the initial batch ({self.initial}): the "
                "model would never be trained; raise the budget or lower initial"
            )
        if self.ai_cores is not None and self.ai_cores < self.train_cpus:
            raise ValueError(f"ai_cores ({self.ai_cores}) is below train_cpus ({self.train_cpus})")
