"""Ask/tell steering over a continuous box, with real worker processes, and batch diversity.

f(x, y) = -(x - 0.7)^2 - (y - 0.2)^2 on the unit square; each simulation sleeps a little.
Proposers run in the loop's process, so the tests read what they were asked and told.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

import simai
from simai.steer import (
    ModelSearch,
    Proposer,
    RandomSearch,
    Result,
    Steering,
    SteeringOptions,
)
from simai.steer.picking import CandidateOrder
from simai.steer.policies import Greedy

BOX = [(0.0, 1.0), (0.0, 1.0)]
OPTIMUM = np.array([0.7, 0.2])


# -- user functions (module level so worker processes import them) ---------------------


def f(p: list[float]) -> float:
    return -float(np.sum((np.asarray(p) - OPTIMUM) ** 2))


def simulate(p: list[float]) -> float:
    time.sleep(0.02)
    return f(p)


def fails(p: list[float]) -> bool:
    """A quarter of all points, wherever they are."""
    return int(p[0] * 1e6) % 4 == 0


def simulate_failing(p: list[float]) -> float:
    if fails(p):
        raise RuntimeError(f"no value at {p}")
    return simulate(p)


def fit(data: list[tuple[list[float], float]]) -> np.ndarray:
    """A separable quadratic fit: points straight at the optimum."""
    x = np.array([c for c, _ in data])
    y = np.array([v for _, v in data])
    return np.linalg.lstsq(features(x), y, rcond=None)[0]


def features(x: np.ndarray) -> np.ndarray:
    return np.c_[np.ones(len(x)), x, x**2]


def predict(model: np.ndarray, xs: list[list[float]]) -> np.ndarray:
    return features(np.asarray(xs)) @ model


def fit_1d(data: list[tuple[float, float]]) -> np.ndarray:
    return np.polyfit([x for x, _ in data], [y for _, y in data], 2)


def predict_1d(model: np.ndarray, xs: list[float]) -> np.ndarray:
    return np.polyval(model, np.asarray(xs))


def simulate_1d(x: float) -> float:
    time.sleep(0.02)
    return -((x - 0.7) ** 2)


# -- proposers -------------------------------------------------------------------------


class Recording(RandomSearch):
    """A RandomSearch that logs every ask and tell, in order."""

    def __init__(self, bounds=BOX, seed: int = 0) -> None:
        super().__init__(bounds, seed)
        self.log: list[tuple] = []

    def ask(self, n: int) -> list[list[float]]:
        out = super().ask(n)
        self.log.append(("ask", n, out))
        return out

    def tell(self, candidate, value) -> None:
        super().tell(candidate, value)
        self.log.append(("tell", candidate, value))

    def asks(self) -> list[int]:
        return [e[1] for e in self.log if e[0] == "ask"]

    def told(self) -> list[tuple]:
        return [(e[1], e[2]) for e in self.log if e[0] == "tell"]


class ShrinkingBox:
    """A hand-written optimizer with its own API: it samples around the best point so far,
    in a box that shrinks with each improvement."""

    def __init__(self, low: np.ndarray, high: np.ndarray, seed: int = 0) -> None:
        self.low, self.high = low, high
        self.rng = np.random.default_rng(seed)
        self.best: np.ndarray | None = None
        self.best_y = -np.inf
        self.width = high - low
        self.seen = 0
        self.failures = 0

    def suggest(self) -> np.ndarray:
        centre = (self.low + self.high) / 2 if self.best is None else self.best
        step = self.rng.uniform(-self.width / 2, self.width / 2)
        return np.clip(centre + step, self.low, self.high)

    def observe(self, x: np.ndarray, y: float) -> None:
        self.seen += 1
        if y > self.best_y:
            self.best, self.best_y = x, y
            self.width = self.width * 0.8

    def fail(self, x: np.ndarray) -> None:
        self.failures += 1


class ShrinkingBoxProposer:
    """The thin adapter that makes ShrinkingBox a Proposer."""

    def __init__(self, optimizer: ShrinkingBox) -> None:
        self.optimizer = optimizer

    def ask(self, n: int) -> list[list[float]]:
        return [self.optimizer.suggest().tolist() for _ in range(n)]

    def tell(self, candidate: list[float], value: float | None) -> None:
        if value is None:
            self.optimizer.fail(np.asarray(candidate))
        else:
            self.optimizer.observe(np.asarray(candidate), value)


class Listed:
    """Proposes the points of a list, then nothing."""

    def __init__(self, points: list) -> None:
        self.points = list(points)

    def ask(self, n: int) -> list:
        out, self.points = self.points[:n], self.points[n:]
        return out

    def tell(self, candidate, value) -> None:
        pass


def pairwise(points) -> np.ndarray:
    """Distances between every two points (numbers or vectors)."""
    p = np.asarray(points, dtype=float).reshape(len(points), -1)
    return np.array([np.linalg.norm(a - b) for a, b in itertools.combinations(p, 2)])


def steer(proposer, ex, sim=simulate, **options) -> Steering:
    options = {"budget": 12, "initial": 4, "in_flight": 4, **options}
    return Steering(proposer, sim, None, None, options=SteeringOptions(**options), executor=ex)


# -- ask/tell ------------------------------------------------------------------------------


def test_proposers_are_checked(ex):
    assert isinstance(RandomSearch(BOX), Proposer) and isinstance(Listed([]), Proposer)
    with pytest.raises(TypeError, match="bounds must be"):
        RandomSearch([0.0, 1.0])
    with pytest.raises(ValueError, match="low < high"):
        RandomSearch([(1.0, 0.0)])
    with pytest.raises(ValueError, match="uses no model: use RandomSearch"):
        ModelSearch(BOX, fit, predict, "random")
    with pytest.raises(TypeError, match="predict must be callable"):
        ModelSearch(BOX, fit, None)
    options = SteeringOptions(budget=10, initial=5)
    for kw in (
        dict(train=fit, predict=predict),
        dict(train=None, predict=None, initial_candidates=[0]),
        dict(train=None, predict=None, policy="ucb"),
        dict(train=None, predict=None, options=SteeringOptions(min_distance=0.1)),
    ):
        kw = {"options": options, **kw}
        with pytest.raises(TypeError, match="a proposer picks the candidates itself"):
            Steering(RandomSearch(BOX), simulate, executor=ex, **kw)
    with pytest.raises(ValueError, match=r"^min_distance must be a finite number > 0 or None"):
        SteeringOptions(min_distance=0)
    with pytest.raises(TypeError, match="min_distance needs candidates that are numbers"):
        Steering(
            ["CCO", "CCN"],
            simulate,
            fit,
            predict,
            options=SteeringOptions(budget=2, initial=1, min_distance=0.1),
            executor=ex,
        )


def test_random_search_fills_the_slots_and_is_told_every_result(ex):
    proposer = Recording()
    steering = steer(proposer, ex)
    results = steering.run()
    assert len(results) == 12 and all(r.ok for r in results)
    assert proposer.asks()[0] == 4  # as many as in_flight allows, in one ask
    assert sum(proposer.asks()) == 12  # nothing asked for that did not run
    assert proposer.told() == [(r.candidate, r.value) for r in results]
    assert sorted(r.index for r in results) == list(range(12))
    for r in results:
        assert isinstance(r.candidate, list) and len(r.candidate) == 2
        assert all(0.0 <= x <= 1.0 for x in r.candidate) and r.model_version == 0
    assert steering.stats["candidates_left"] is None


def test_model_search_finds_the_optimum_of_a_continuous_objective(ex):
    search = ModelSearch(BOX, fit, predict, initial=6, samples=2000, min_distance=0.01)
    steering = steer(search, ex, budget=20, initial=6)
    results = steering.run()
    assert len(results) == 20 and all(r.ok for r in results)
    assert len(search.data) == 20
    best = steering.best(1)[0]
    assert np.linalg.norm(np.asarray(best.candidate) - OPTIMUM) < 0.03
    assert best.value > max(r.value for r in results[:6])  # the model beat random points
    print("model search: best", best.candidate, "after", len(results))


def test_an_optimizer_plugs_in_through_a_thin_adapter_and_is_told_failures(ex):
    optimizer = ShrinkingBox(np.zeros(2), np.ones(2), seed=1)
    steering = steer(ShrinkingBoxProposer(optimizer), ex, sim=simulate_failing, budget=30)
    results = steering.run()
    failed = [r for r in results if not r.ok]
    assert sum(r.ok for r in results) == 30  # the budget counts successes
    assert failed and all(fails(r.candidate) and "no value at" in r.error for r in failed)
    assert optimizer.failures == len(failed) and optimizer.seen == 30
    assert np.linalg.norm(np.asarray(steering.best(1)[0].candidate) - OPTIMUM) < 0.15


def test_batch_mode_asks_batch_by_batch(ex):
    proposer = Recording()
    steering = steer(proposer, ex, budget=10, initial=4, batch_size=3, mode="batch")
    results = steering.run()
    assert len(results) == 10
    assert proposer.asks() == [4, 3, 3]
    told_before_ask = [
        sum(e[0] == "tell" for e in proposer.log[:n])
        for n, e in enumerate(proposer.log)
        if e[0] == "ask"
    ]
    assert told_before_ask == [0, 4, 7]  # each batch once the one before it ended
    assert [r.batch for r in results] == [0] * 4 + [1] * 3 + [2] * 3


def test_a_proposer_that_runs_dry_ends_the_loop(ex):
    steering = steer(Listed([[0.1, 0.1], [0.5, 0.5], [0.7, 0.2]]), ex)
    results = steering.run()
    by_index = sorted(results, key=lambda r: r.index)
    assert [r.candidate for r in by_index] == [[0.1, 0.1], [0.5, 0.5], [0.7, 0.2]]
    assert steer(Listed([]), ex).run() == []


def test_a_proposer_giving_what_cannot_run_stops_the_loop_with_why(ex):
    with pytest.raises(TypeError, match="must be JSON values .* array.tolist"):
        steer(Listed([np.array([0.1, 0.2])]), ex).run()

    class Greedy(Listed):
        def ask(self, n: int) -> list:
            return [[0.5, 0.5]] * (n + 1)

    with pytest.raises(ValueError, match=r"ask\(4\) returned 5 candidates, more than asked"):
        steer(Greedy([]), ex).run()


def test_a_resumed_run_tells_a_fresh_proposer_the_saved_results_first(tmp_path):
    run = tmp_path / "run"
    options = SteeringOptions(budget=12, initial=4, in_flight=4)

    def steering(wf: simai.Workflow, proposer) -> Steering:
        return Steering(proposer, simulate, None, None, options=options, workflow=wf)

    with simai.Workflow("asktell", run_dir=run, store="file") as wf:
        first = steering(wf, Recording())
        for n, _ in enumerate(first):
            if n == 4:
                break
        kept = first.results
        asked = {str(c) for e in first.proposer.log if e[0] == "ask" for c in e[2]}
    fresh, one = Recording(), SteeringOptions(budget=1, initial=1)
    with simai.Workflow("asktell", run_dir=run, store="file", resume=True) as wf:
        with pytest.raises(ValueError, match="made for a proposer"):
            Steering([0.1, 0.2], simulate, None, None, "random", options=one, workflow=wf)
        second = steering(wf, fresh)
        assert fresh.log == [("tell", r.candidate, r.value) for r in kept]  # before any ask
        results = second.run()
    assert results[: len(kept)] == kept
    assert sum(r.ok for r in results) == 12 and len({r.index for r in results}) == len(results)
    assert fresh.told() == [(r.candidate, r.value) for r in results]
    # what was in flight ran again (the workflow's memo recalls those that had ended)
    resubmitted = [r for r in results[len(kept) :] if str(r.candidate) in asked]
    assert resubmitted and all(r.index < len(asked) for r in resubmitted)
    assert second.stats["resumed_results"] == len(kept)


# -- batch diversity -------------------------------------------------------------------


GRID = [round(float(x), 3) for x in np.linspace(0.0, 1.0, 201)]  # a step of 0.005


def test_picks_of_one_ranking_keep_min_distance_apart():
    mean = -((np.asarray(GRID) - 0.7) ** 2)  # smooth: the best are neighbours

    def picks(k: int, **spacing) -> list[float]:
        order = CandidateOrder(len(GRID), Greedy(), 0, **spacing)
        order.rank(1, mean, None)
        return [GRID[order.pick()[0]] for _ in range(k)]

    assert pairwise(picks(4)).min() == pytest.approx(0.005)  # neighbours
    spaced = picks(4, points=np.asarray(GRID)[:, None], min_distance=0.05)
    assert spaced[0] == 0.7 and pairwise(spaced).min() >= 0.05
    # once none is far enough, the skipped ones follow: every candidate is handed out once
    everything = picks(len(GRID), points=np.asarray(GRID)[:, None], min_distance=0.3)
    assert sorted(everything) == GRID


@pytest.mark.parametrize("min_distance", [None, 0.05])
def test_a_batch_of_model_picks_is_spread_out(ex, tmp_path, min_distance):
    steering = Steering(
        GRID,
        simulate_1d,
        fit_1d,
        predict_1d,
        options=SteeringOptions(
            budget=16, initial=8, batch_size=4, mode="batch", min_distance=min_distance
        ),
        executor=ex,
    )
    results = steering.run()
    batches: dict[int, list[Result]] = {}
    for r in results:
        batches.setdefault(r.model_version, []).append(r)
    assert sorted(batches) == [0, 1, 2]
    for version in (1, 2):
        gaps = pairwise([r.candidate for r in batches[version]])
        if min_distance is None:
            assert gaps.min() == pytest.approx(0.005)  # four neighbours
        else:
            assert gaps.min() >= min_distance


def test_model_search_spreads_an_ask_and_keeps_off_the_points_running():
    def asked(min_distance: float) -> tuple[list, list]:
        search = ModelSearch(BOX, fit, predict, initial=6, min_distance=min_distance, seed=3)
        for p in search.ask(6):
            search.tell(p, f(p))
        return search.ask(4), search.ask(2)

    first, second = asked(0.0)
    assert pairwise(first).max() < 0.1  # a cluster around the optimum
    first, second = asked(0.1)
    assert pairwise(first).min() >= 0.1
    assert min(np.linalg.norm(np.subtract(a, b)) for a in first for b in second) >= 0.1
