"""Steering modes: async (waits for the first model, or fills with random picks) and batch
(synchronous active learning), and the user's first candidates, with real worker processes.

A toy problem: 300 floats, a cheap deterministic value with a short sleep, and an
inverse-distance 3-nearest-neighbour model.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import simai
from simai.launch import LocalExecutor
from simai.steer import Result, Steering, SteeringError, SteeringOptions

CANDIDATES = [float(x) for x in np.linspace(0.0, 3.0, 300)]
SCENARIO = dict(budget=32, initial=8, batch_size=4)


def value(x: float) -> float:
    time.sleep(0.1)
    return float(np.sin(3 * x) + 0.5 * np.cos(7 * x))


def value_failing(x: float) -> float:
    """Fails for every third candidate."""
    if round(x / 3 * 299) % 3 == 0:
        raise RuntimeError(f"no value for {x}")
    return value(x)


def knn_train(data: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([x for x, _ in data]), np.array([y for _, y in data])


def knn_predict(model: tuple[np.ndarray, np.ndarray], xs: list[float]) -> np.ndarray:
    known, ys = model
    d = np.abs(np.asarray(xs)[:, None] - known[None, :])
    near = np.argsort(d, axis=1)[:, :3]
    w = 1.0 / (np.take_along_axis(d, near, axis=1) + 1e-6)
    return (w * ys[near]).sum(axis=1) / w.sum(axis=1)


def knn_train_failing_first(data: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 8:
        raise RuntimeError("first training failed")
    return knn_train(data)


def knn_module(xs: list[float], ys: list[float]):
    """The 3-nearest-neighbour model as a torch module, to publish in the registry."""
    import torch

    class KNN(torch.nn.Module):
        def __init__(self, xs: list[float], ys: list[float]) -> None:
            super().__init__()
            self.register_buffer("xs", torch.tensor(xs, dtype=torch.float64))
            self.register_buffer("ys", torch.tensor(ys, dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            d = (x[:, None] - self.xs[None, :]).abs()
            dist, near = torch.topk(d, min(3, int(self.xs.shape[0])), dim=1, largest=False)
            w = 1.0 / (dist + 1e-6)
            return (w * self.ys[near]).sum(1) / w.sum(1)

    return KNN(xs, ys)


def knn_publisher(stream: str, name: str, first: int, every: int, slow: float = 0.0) -> None:
    """A trainer component: reads the steering's results from the store and publishes a
    version trained on the first ``first`` successes, then on every ``every`` more, each
    after ``slow`` seconds (a training that takes a while)."""
    from simai.models import publish_model

    store = simai.open_store()
    xs: list[float] = []
    ys: list[float] = []
    published = 0
    for row in store.stream(stream):  # runs until the workflow stops it
        if row["ok"]:
            xs.append(row["candidate"])
            ys.append(row["value"])
        n = len(xs)
        if n >= first and (published == 0 or n - published >= every):
            if published:
                time.sleep(slow)
            publish_model(store, name, knn_module(xs, ys), step=n)
            published = n


def knn_predict_published(model, xs: list[float]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor(xs, dtype=torch.float64)).numpy()


@pytest.fixture
def ex2(tmp_path):
    """Two worker slots for simulations; no process outlives the test."""
    from _procs import children, no_new_children

    before = children()
    cores = min(2, len(os.sched_getaffinity(0)))
    executor = LocalExecutor(cores=cores, oversubscribe=2 // cores, log_dir=tmp_path / "logs")
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    assert no_new_children(before)


def steer(ex, tmp_path, simulate=value, train=knn_train, **options) -> Steering:
    return Steering(
        CANDIDATES,
        simulate,
        train,
        knn_predict,
        "greedy",
        SteeringOptions(**{**SCENARIO, **options}),
        executor=ex,
        state_dir=tmp_path / "state" / options.get("name", "steer"),
    )


def random_picks(results: list[Result]) -> int:
    return sum(r.model_version == 0 for r in results)


def by_version(results: list[Result]) -> dict[int, list[Result]]:
    groups: dict[int, list[Result]] = {}
    for r in results:
        groups.setdefault(r.model_version, []).append(r)
    return groups


def test_options_of_the_modes_are_checked():
    assert SteeringOptions().mode == "async" and SteeringOptions().random_fill is False
    with pytest.raises(ValueError, match=r"^mode must be 'async' or 'batch', not 'sync'$"):
        SteeringOptions(mode="sync")
    with pytest.raises(TypeError, match=r"^mode must be 'async' or 'batch', not 1$"):
        SteeringOptions(mode=1)
    with pytest.raises(TypeError, match=r"^random_fill must be a bool, not 'yes'$"):
        SteeringOptions(random_fill="yes")
    with pytest.raises(ValueError, match="random_fill is for mode='async' only"):
        SteeringOptions(mode="batch", random_fill=True)


def test_initial_candidates_are_checked(ex2):
    def make(given):
        return Steering(
            CANDIDATES,
            value,
            knn_train,
            knn_predict,
            options=SteeringOptions(**SCENARIO),
            initial_candidates=given,
            executor=ex2,
        )

    with pytest.raises(ValueError, match="index 300 is out of range for 300 candidates"):
        make([1, 300])
    with pytest.raises(ValueError, match="index -1 is out of range"):
        make([-1])
    with pytest.raises(ValueError, match="holds an index twice"):
        make([3, 3])
    with pytest.raises(ValueError, match=r"holds 9 indices, more than options.initial \(8\)"):
        make(range(9))
    with pytest.raises(TypeError, match=r"indices into the candidates \(ints\), not 0.5"):
        make([0.5])
    with pytest.raises(TypeError, match=r"indices into the candidates \(ints\), not True"):
        make([True])
    with pytest.raises(TypeError, match="initial_candidates must be a sequence of indices"):
        make("012")
    make(np.array([4, 5], dtype=np.int64)).close()  # numpy indices (from argsort) are fine


def test_batch_mode_runs_synchronous_batches_of_model_picks(ex2, tmp_path):
    steering = steer(ex2, tmp_path, mode="batch")
    assert steering.slots == 2
    yielded = list(steering)
    results = steering.results
    assert yielded == results and len(results) == 32 and all(r.ok for r in results)
    assert len({r.index for r in results}) == 32
    assert random_picks(results) == 8
    assert sum(r.model_version > 0 for r in results) == 24
    # batch k is the top 4 of model k, trained on every result before it
    assert all(r.model_version == r.batch for r in results)
    assert [t["n"] for t in steering.trainings] == [8, 12, 16, 20, 24, 28]
    assert all(t["ok"] for t in steering.trainings)
    groups = by_version(results)
    assert sorted(groups) == list(range(7))
    assert [len(groups[v]) for v in range(7)] == [8] + [4] * 6
    for v in range(6):  # a batch started once the one before it had ended, all of it
        assert max(r.ended for r in groups[v]) <= min(r.started for r in groups[v + 1])
    stats = steering.stats
    assert stats["mode"] == "batch" and stats["idle_waiting_for_model"] > 0
    print("batch:", random_picks(results), "random,", 32 - random_picks(results), "model")


def test_async_mode_waits_for_the_first_model_instead_of_random_picks(ex2, tmp_path):
    steering = steer(ex2, tmp_path)
    results = steering.run()
    assert len(results) == 32 and all(r.ok for r in results)
    assert random_picks(results) == 8  # the initial batch only
    assert all(r.model_version == 0 for r in results[:8])
    assert steering.trainings[0]["n"] == 8
    assert steering.stats["idle_waiting_for_model"] > 0
    # with random_fill the workers stay busy with random picks while the model trains
    filled = steer(ex2, tmp_path, random_fill=True, name="filled")
    results = filled.run()
    assert len(results) == 32 and all(r.ok for r in results)
    assert random_picks(results) > 8
    assert filled.stats["idle_waiting_for_model"] == 0
    print("async:", random_picks(steering.results), "random; random_fill:", random_picks(results))


@pytest.mark.parametrize(("mode", "initial"), [("async", 8), ("batch", 3)])
def test_initial_candidates_are_simulated_first(ex2, tmp_path, mode, initial):
    given = [299, 0, 150]
    steering = Steering(
        CANDIDATES,
        value,
        knn_train,
        knn_predict,
        options=SteeringOptions(**{**SCENARIO, "initial": initial, "mode": mode}),
        initial_candidates=given,
        executor=ex2,
    )
    results = steering.run()
    assert len(results) == 32
    first = {r.index for r in results if r.model_version == 0}
    assert len(first) == initial and set(given) <= first  # the rest of the batch is random
    assert steering.trainings[0]["n"] == initial


@pytest.mark.parametrize("mode", ["async", "batch"])
def test_failures_are_replaced_by_picks_of_the_same_model(ex2, tmp_path, mode):
    steering = steer(ex2, tmp_path, simulate=value_failing, mode=mode)
    results = steering.run()
    ok = [r for r in results if r.ok]
    assert len(ok) == 32 and len(results) > 32
    assert all(round(r.candidate / 3 * 299) % 3 == 0 for r in results if not r.ok)
    assert sum(r.model_version == 0 for r in ok) == 8
    if mode == "batch":
        groups = by_version(ok)
        assert [len(groups[v]) for v in sorted(groups)] == [8] + [4] * 6


@pytest.mark.parametrize("mode", ["async", "batch"])
def test_a_failed_first_training_makes_the_next_batch_random_not_a_stall(ex2, tmp_path, mode):
    steering = steer(ex2, tmp_path, train=knn_train_failing_first, mode=mode)
    results = steering.run()
    assert len(results) == 32 and all(r.ok for r in results)
    assert steering.trainings[0]["ok"] is False and steering.trainings[1]["n"] == 12
    assert random_picks(results) == 12  # the initial batch and one batch without a model
    assert min(r.model_version for r in results[12:]) >= 1  # a failed training takes no version


@pytest.mark.parametrize("mode", ["async", "batch"])
def test_a_model_published_by_a_trainer_component_steers(tmp_path, mode):
    pytest.importorskip("torch")
    lag = 4
    with simai.Workflow("steer-registry", run_dir=tmp_path / "run", store="file") as wf:
        # in async mode a slow trainer: without model_lag the picks would run ahead of it
        slow = 1.0 if mode == "async" else 0.0
        trainer = wf.start(knn_publisher, "steer/steer/results", "knn", 8, 4, slow, name="trainer")
        with pytest.raises(TypeError, match="give train= or model=, not both"):
            Steering(CANDIDATES, value, knn_train, knn_predict, model="knn", workflow=wf)
        steering = Steering(
            CANDIDATES,
            value,
            None,
            knn_predict_published,
            options=SteeringOptions(
                **SCENARIO, mode=mode, model_lag=lag, model_poll=0.05, model_trusted=True
            ),
            model="knn",
            workflow=wf,
        )
        results = steering.run()
        assert trainer.state == "running"
        trainer.stop()
    assert len(results) == 32 and all(r.ok for r in results)
    assert not steering.predict_failures
    assert random_picks(results) == 8
    steps = {t["version"]: t["n"] for t in steering.trainings}
    assert all(t["published"] for t in steering.trainings) and min(steps.values()) >= 8
    ended = sorted(r.ended for r in results)
    for r in results[8:]:
        before = sum(e <= r.started for e in ended)  # successes when it started, at least
        if mode == "batch":  # each batch waited for a version trained on all before it
            assert steps[r.model_version] == 8 + 4 * (r.batch - 1) == before - (before - 8) % 4
        else:  # picked while its version lagged at most `lag` successes (+ those queued)
            assert before < steps[r.model_version] + lag + steering.in_flight_target
    rows = simai.open_store(wf.store_url).stream("steer/steer/results", timeout=10)
    assert [next(rows)["index"] for _ in results] == [r.index for r in results]


def test_a_published_model_is_checked(tmp_path):
    with simai.Workflow("steer-registry", run_dir=tmp_path / "run", store="file") as wf:
        with pytest.raises(TypeError, match="model= reads the registry in the workflow"):
            Steering(CANDIDATES, value, None, knn_predict, model="knn", executor=wf.executor)
        with pytest.raises(ValueError, match="uses no model, yet model= was given"):
            Steering(CANDIDATES, value, None, None, "random", model="knn", workflow=wf)
        with pytest.raises(ValueError, match="must not contain '/'"):
            Steering(CANDIDATES, value, None, knn_predict, model="a/b", workflow=wf)
        from simai.models import publish_model

        publish_model(wf.store(), "knn", knn_module([0.5], [1.0]), step=None)
        steering = Steering(
            CANDIDATES,
            value,
            None,
            knn_predict_published,
            options=SteeringOptions(budget=4, initial=2, batch_size=2, model_poll=0.05),
            model="knn",
            workflow=wf,
        )
        with pytest.raises(SteeringError, match="TorchScript.*model_trusted=True"):
            steering.run()


def test_a_batch_run_stopped_mid_batch_resumes_its_batches(tmp_path):
    def steering(wf: simai.Workflow) -> Steering:
        return Steering(
            CANDIDATES,
            value,
            knn_train,
            knn_predict,
            options=SteeringOptions(**SCENARIO, mode="batch"),
            workflow=wf,
        )

    run = tmp_path / "run"
    with simai.Workflow("steer-batch", run_dir=run, store="file") as wf:
        first = steering(wf)
        for n, _ in enumerate(first):
            if n == 9:  # the second result of the first model's batch
                break
        kept = first.results
    with simai.Workflow("steer-batch", run_dir=run, store="file", resume=True) as wf:
        second = steering(wf)
        yielded = list(second)
        results = second.results
    assert results[: len(kept)] == kept and yielded == results[len(kept) :]
    assert len(results) == 32 and all(r.ok for r in results)
    assert len({r.index for r in results}) == 32
    assert all(r.model_version == r.batch for r in results)
    groups = by_version(results)
    assert [len(groups[v]) for v in sorted(groups)] == [8] + [4] * 6
