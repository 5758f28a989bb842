"""A steering loop's tuning knobs, checked once and kept apart from what the loop does."""

from __future__ import annotations

from dataclasses import dataclass

from simai.checks import check_int, check_seconds

__all__ = ["SteeringOptions"]

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
_OPTIONAL_COUNTS = {"in_flight": 1, "max_failures": 0, "ai_cores": 1}


@dataclass(frozen=True)
class SteeringOptions:
    """A :class:`~simai.steer.Steering` loop's settings: its budget, batches, cores, seed
    and name.

    Every value is checked when the options are made: a value of the wrong type raises
    ``TypeError``, one out of range ``ValueError``. ``dataclasses.replace`` makes a variant.

    Parameters
    ----------
    budget : int
        Successful simulations to run (default 200). Failed ones do not count: each is
        replaced by another candidate, so the loop ends once ``budget`` succeeded or no
        candidate is left.
    initial : int
        Successful simulations before the first training, at most ``budget`` (default 20).
        Until the first model has scored the candidates, picks are random (seeded).
    batch_size : int
        New successful simulations between trainings (default 10). One training runs at a
        time.
    in_flight : int or None
        Simulations kept submitted at all times, until the budget is near. None (default):
        twice the executor's worker slots for simulations (cores x oversubscription /
        ``sim_cpus``), so one waits queued behind each running one and a worker that frees
        up starts the next at once instead of waiting for the loop (a workflow makes each
        result durable before its future resolves). The cost: a queued pick was chosen by
        the model of its time.
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
    """

    budget: int = 200
    initial: int = 20
    batch_size: int = 10
    in_flight: int | None = None
    chunk_size: int = 2000
    seed: int = 0
    name: str = "steer"
    sim_walltime: float | None = None
    sim_cpus: int = 1
    sim_retries: int = 0
    train_cpus: int = 1
    max_failures: int | None = None
    ai_cores: int | None = None

    def __post_init__(self) -> None:
        # the dataclass is frozen: keep what the checks return (seconds as floats) this way
        for field, minimum in _COUNTS.items():
            object.__setattr__(self, field, check_int(field, getattr(self, field), minimum))
        for field, minimum in _OPTIONAL_COUNTS.items():
            value = check_int(field, getattr(self, field), minimum, optional=True)
            object.__setattr__(self, field, value)
        walltime = check_seconds("sim_walltime", self.sim_walltime, positive=True, optional=True)
        object.__setattr__(self, "sim_walltime", walltime)
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
