"""Training a steering loop's model and scoring the candidates with it, as tasks."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simai.launch import Executor, LocalExecutor
from simai.launch.executor import Observer
from simai.steer.errors import SteeringError
from simai.steer.options import SteeringOptions
from simai.steer.outputs import error_text, split_predictions
from simai.steer.policies import Policy
from simai.steer.tasks import named, predict_chunk, predict_published, train_model
from simai.store import Store, open_store

__all__ = ["Published", "Round", "Trainer"]


@dataclass(frozen=True)
class Published:
    """A model that a trainer component publishes in the registry, used instead of training.

    Attributes
    ----------
    url : str
        The store holding the registry.
    name : str
        The model's name.
    trusted : bool
        Whether TorchScript versions may be loaded.
    poll : float
        Seconds between checks of the registry.
    need_step : bool
        Whether a version must say (in ``step``) how many results it was trained on.
    """

    url: str
    name: str
    trusted: bool
    poll: float
    need_step: bool


@dataclass
class Round:
    """One model's inference over the candidates left, in chunks scored in parallel.

    Attributes
    ----------
    version : int
        The model's version.
    chunks : list of ndarray
        The candidates' indices, one array per inference task.
    means : dict
        Chunk number to its predicted means, for the chunks scored so far.
    stds : dict
        Chunk number to its predicted stds (None when predict gave means only).
    errors : list of str
        Why each chunk that raised failed.
    futures : list of Future
        The inference tasks, cancelled when a newer model's round starts.
    pending : int
        Chunks not ended yet.
    """

    version: int
    chunks: list[np.ndarray]
    means: dict[int, np.ndarray] = field(default_factory=dict)
    stds: dict[int, np.ndarray | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    futures: list[Future] = field(default_factory=list)
    pending: int = 0

    def scores(self, n: int, with_std: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
        """``(mean, std)`` over all ``n`` candidates, NaN where not scored (std None unless
        ``with_std``); None if no chunk was scored."""
        if not self.means:
            return None
        mean = np.full(n, np.nan)
        std = np.full(n, np.nan) if with_std else None
        for k, m in self.means.items():
            mean[self.chunks[k]] = m
            s = self.stds.get(k)
            if std is not None and s is not None:
                std[self.chunks[k]] = s
        return mean, std


class Trainer:
    """Trains the model (or takes the newest published version) and scores the candidates
    left with each new one, on the AI executor.

    One training runs at a time: the first once ``initial`` simulations succeeded, the next
    after every ``batch_size`` new successes. A training that raises is recorded in
    ``trainings`` and the previous model stays. Each new model scores the candidates left
    in chunks of ``chunk_size``, in parallel; it cancels an older model's round still going.
    Each task's end is handled on the loop thread (through ``post``); the trainer tells the
    loop what came of it through ``on_trained`` and ``on_round``.

    Parameters
    ----------
    candidates : Sequence
        The loop's candidates.
    policy : Policy
        The loop's policy: no training without ``needs_model``; ``needs_std`` makes a
        prediction without std an error.
    options : SteeringOptions
        ``initial``, ``batch_size``, ``budget``, ``chunk_size``, ``train_cpus`` and
        ``ai_cores`` apply here.
    train : callable
        The user's ``train(data)``, run as a task.
    predict : callable
        The user's ``predict(model, candidates)``, run as tasks over chunks.
    ai_executor : Executor or None
        Runs training and inference; None: a private LocalExecutor, made on first use.
    observer : Observer or None
        The private executor's observer (the workflow's records, as the simulations').
    log_dir : Path or None
        The private executor's log directory.
    post : callable
        ``post(future, handler)`` runs ``handler(future)`` on the loop thread once
        ``future`` is done.
    on_trained : callable
        ``on_trained(new_model)`` after a training ended; ``new_model`` False if it raised.
    on_round : callable
        ``on_round(version, scores)`` once a model's round of inference ended: ``scores``
        is :meth:`Round.scores` (None if no chunk was scored).
    published : Published or None
        Take the versions a trainer component publishes (:meth:`poll`) instead of training.
    """

    def __init__(
        self,
        candidates: Sequence[Any],
        policy: Policy,
        options: SteeringOptions,
        train: Callable[..., Any],
        predict: Callable[..., Any],
        *,
        ai_executor: Executor | None,
        observer: Observer | None,
        log_dir: Path | None,
        post: Callable[[Future, Callable[[Future], None]], None],
        on_trained: Callable[[bool], None],
        on_round: Callable[[int, tuple[np.ndarray, np.ndarray | None] | None], None],
        published: Published | None = None,
    ) -> None:
        self.candidates = candidates
        self.policy = policy
        self.options = options
        self._train = train
        self._predict = predict
        self._train_task = named(train_model, train) if train is not None else None
        runner = predict_chunk if published is None else predict_published
        self._predict_task = named(runner, predict) if predict is not None else None
        self._ai_executor = ai_executor
        self._own_ai = False
        self._observer = observer
        self._log_dir = log_dir
        self._post = post
        self._on_trained = on_trained
        self._on_round = on_round
        self._model: Any = None
        self.model_version = 0
        self.trainings: list[dict[str, Any]] = []
        self.predict_failures: list[str] = []
        self._training: Future | None = None
        self._trained_on: int | None = None
        self._round: Round | None = None
        self._published = published
        self._store: Store | None = None
        self._polled = -np.inf
        self.steps: dict[int, int | None] = {}  # a published version's step
        self.poll_error: str | None = None  # why the last check of the registry failed

    @property
    def training(self) -> bool:
        """Whether a training task is running."""
        return self._training is not None

    @property
    def busy(self) -> bool:
        """Whether a new model may still come: a training or a round of inference is
        running, or a trainer component may publish."""
        pending = self._training is not None or self._round is not None
        return pending or self._published is not None

    def restore(
        self, model_version: int, trainings: list[dict[str, Any]], predict_failures: list[str]
    ) -> None:
        """Go on from the model history of a stopped run."""
        self.model_version = model_version
        self.trainings = trainings
        self.predict_failures = predict_failures
        self.steps = {t["version"]: t.get("n") for t in trainings if t.get("published")}

    def start(self) -> None:
        """Start the AI executor now, so its worker is up before the first training."""
        if self.policy.needs_model:
            self._ai()
        if self._published is not None:
            self._store = open_store(self._published.url)

    def _ai(self) -> Executor:
        if self._ai_executor is None:
            o = self.options
            self._ai_executor = LocalExecutor(
                cores=o.ai_cores or o.train_cpus, log_dir=self._log_dir
            )
            self._ai_executor.observer = self._observer
            self._own_ai = True
        return self._ai_executor

    def maybe_train(self, ok: list[tuple[int, float]]) -> None:
        """Start a training on the successful ``(index, value)`` pairs when one is due."""
        n = len(ok)
        o = self.options
        if (
            not self.policy.needs_model
            or self._published is not None
            or self._training is not None
            or n < o.initial
            or n >= o.budget
            or (self._trained_on is not None and n - self._trained_on < o.batch_size)
        ):
            return
        self._trained_on = n
        data = [(self.candidates[i], v) for i, v in ok]
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
            self._train_task, self._train, data, resources={"cpus": o.train_cpus}
        )
        self._post(self._training, functools.partial(self._trained, attempt))

    def _trained(self, attempt: dict[str, Any], future: Future) -> None:
        self._training = None
        attempt["ended"] = time.time()
        try:
            self._model = future.result()
        except BaseException as e:  # noqa: BLE001 - recorded; the previous model stays
            attempt.update(ok=False, error=error_text(e))
            self._on_trained(False)
            return
        attempt["ok"] = True
        self.model_version = attempt["version"]
        self._on_trained(True)

    def poll(self, min_step: int | None) -> None:
        """Take the newest published version, if newer than the last one taken, and
        ``on_trained(True)``; with ``min_step``, only a version trained on that many results.
        At most every ``poll`` seconds, and not while a round of inference runs."""
        pub = self._published
        now = time.monotonic()
        if pub is None or self._store is None or self._round is not None:
            return
        if now - self._polled < pub.poll:
            return
        self._polled = now
        from simai.models.registry import check_loadable, latest_model

        try:
            version, meta = latest_model(self._store, pub.name)
        except KeyError:
            return  # nothing published yet
        except Exception as e:  # noqa: BLE001 - a store that fails now may answer later
            self.poll_error = error_text(e)
            return
        if version <= self.model_version:
            return
        step = meta.get("step")
        if step is None and (pub.need_step or min_step is not None):
            raise SteeringError(
                f"model {pub.name!r} version {version} has no step: publish each version "
                "with publish_model(..., step=<successful results it was trained on>)"
            )
        if min_step is not None and step < min_step:
            return
        try:
            check_loadable(meta, None, pub.trusted, pub.url)
        except (PermissionError, TypeError, ValueError) as e:
            raise SteeringError(f"{e} (SteeringOptions(model_trusted=True))") from None
        self.model_version = version
        self.steps[version] = step
        published_at = meta.get("time")
        self.trainings.append(
            {
                "version": version,
                "n": step,
                "started": published_at,
                "ended": published_at,
                "ok": True,
                "error": None,
                "published": True,
            }
        )
        self._on_trained(True)

    def score(self, left: np.ndarray) -> None:
        """Start a round of inference tasks scoring the candidates ``left`` with the newest
        model."""
        if len(left) == 0:
            return
        if self._round is not None:
            for f in self._round.futures:
                f.cancel()
        size = self.options.chunk_size
        chunks = [left[i : i + size] for i in range(0, len(left), size)]
        rnd = Round(self.model_version, chunks, pending=len(chunks))
        self._round = rnd
        ai = self._ai()
        pub = self._published
        for k, chunk in enumerate(chunks):
            some = [self.candidates[i] for i in chunk]
            if pub is None:
                fut = ai.submit(self._predict_task, self._predict, self._model, some)
            else:
                args = (pub.url, pub.name, self.model_version, pub.trusted, some)
                fut = ai.submit(self._predict_task, self._predict, *args)
            rnd.futures.append(fut)
            self._post(fut, functools.partial(self._predicted, rnd, k))

    def _predicted(self, rnd: Round, k: int, future: Future) -> None:
        """Record chunk ``k`` of a round; once all its chunks ended, hand on its scores.

        A chunk that raised stays unscored and is recorded in ``predict_failures``; scores
        without the std the policy needs raise :class:`SteeringError`.
        """
        if rnd is not self._round:
            return
        rnd.pending -= 1
        try:
            mean, std = split_predictions(future.result(), len(rnd.chunks[k]))
        except BaseException as e:  # noqa: BLE001 - recorded; the chunk stays unscored
            rnd.errors.append(f"model {rnd.version}, chunk {k}: {error_text(e)}")
        else:
            if self.policy.needs_std and std is None:
                raise SteeringError(
                    f"policy {self.policy!r} needs uncertainty but predict returned means "
                    "only: policies that need it (UCB, or any with needs_std = True) require "
                    "predict(model, candidates) -> (mean, std), two arrays with one value per "
                    "candidate; the greedy policy needs means only"
                )
            rnd.means[k], rnd.stds[k] = mean, std
        if rnd.pending:
            return
        self._round = None
        self.predict_failures.extend(rnd.errors)
        self._on_round(rnd.version, rnd.scores(len(self.candidates), self.policy.needs_std))

    def pending(self) -> list[Future]:
        """The training and inference tasks not ended yet."""
        futures = [] if self._training is None else [self._training]
        if self._round is not None:
            futures.extend(self._round.futures)
        return futures

    def close(self) -> None:
        """Stop the AI executor if this trainer started it."""
        if self._own_ai and self._ai_executor is not None:
            self._ai_executor.terminate()
            self._own_ai = False
        if self._store is not None:
            self._store.close()
            self._store = None
