"""The steering loop with real worker processes and a cheap analytic simulation.

f(x) = -(x - 0.7)^2 on a grid of x in [0, 1]; each simulation sleeps a little to cost
something. The model is a quadratic fit, so a trained model points straight at 0.7.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import simai
from simai.steer import (
    UCB,
    Greedy,
    Random,
    Result,
    Steering,
    SteeringError,
    SteeringOptions,
    get_policy,
)
from simai.steer.picking import CandidateOrder

GRID = [round(float(x), 4) for x in np.linspace(0.0, 1.0, 1001)]
OPTIMUM = 0.7
SIM_SLEEP = 0.05


# -- user functions (module level so worker processes import them) ---------------------


def f(x: float) -> float:
    return -((x - OPTIMUM) ** 2)


def simulate(x: float) -> float:
    time.sleep(SIM_SLEEP)
    return f(x)


def model_is_behind(folder: Path) -> bool:
    """Whether the loop is training or scoring a model it has not used yet."""
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return False
    if state["error"]:
        return False
    if state["simulations_done"] >= state["initial"] and not state["trainings"]:
        return True
    last = state["trainings"][-1] if state["trainings"] else None
    return last is not None and (
        last["ok"] is None or (last["ok"] and state["scored_version"] < last["version"])
    )


def simulate_gated(folder: str, x: float) -> float:
    """Waits for the model to catch up first: makes the model fast relative to the
    simulations, whatever the machine's load, for tests about what the model decides."""
    deadline = time.monotonic() + 30
    while model_is_behind(Path(folder)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return simulate(x)


def simulate_after_training_started(folder: str, x: float) -> float:
    """From the 8th result on, waits for a training to have started: so one surely runs
    while simulations go on, whatever the machine's load."""
    results, started = Path(folder, "results.jsonl"), Path(folder, "training-started")
    deadline = time.monotonic() + 30
    while (
        not started.exists()
        and results.exists()
        and results.read_text().count("\n") >= 8
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    return simulate(x)


def fit_when_20_more(data: list[tuple[float, float]]) -> dict:
    """Trains until 20 more simulations ended: it can only finish if they keep flowing."""
    results = Path(os.environ["STEER_TEST_RESULTS"])
    results.with_name("training-started").touch()
    deadline = time.monotonic() + 30
    while results.read_text().count("\n") < len(data) + 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    return fit(data)


def fit(data: list[tuple[float, float]]) -> dict:
    xs = np.array([d[0] for d in data])
    ys = np.array([d[1] for d in data])
    return {"coef": np.polyfit(xs, ys, 2), "pid": os.getpid(), "n": len(data)}


def predict_mean(model: dict, xs: list[float]) -> np.ndarray:
    return np.polyval(model["coef"], np.asarray(xs))


def predict_mean_std(model: dict, xs: list[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(xs)
    return np.polyval(model["coef"], x), np.abs(x - 0.5)


def fit_failing_second(data: list[tuple[float, float]]) -> dict:
    if 10 <= len(data) < 15:
        raise RuntimeError("training diverged")
    return fit(data)


def simulate_with_failures(x: float) -> float:
    i = round(x * 1000)
    if i % 5 == 0:
        raise ValueError(f"cannot simulate {x}")
    if i % 5 == 1:
        return float("nan")
    if i == 2:
        time.sleep(60)  # hangs: the walltime kills it
    time.sleep(0.02)
    return f(x)


def predict_logged(model: dict, xs: list[float]) -> np.ndarray:
    """Logs each call; waits (10 s at most) until a chunk of the same model started in
    another process: returns at once only if chunks run in parallel."""
    start = time.time()
    log = Path(os.environ["STEER_TEST_LOG"])
    Path(f"{log}.{model['n']}.{os.getpid()}").touch()
    deadline = time.monotonic() + 10
    while len(list(log.parent.glob(f"{log.name}.{model['n']}.*"))) < 2:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    with open(log, "a") as fh:
        fh.write(json.dumps([model["n"], len(xs), os.getpid(), start, time.time()]) + "\n")
    return predict_mean(model, xs)


def command_for(x: float) -> simai.Command:
    i = round(x * 1000)
    if i % 4 == 0:
        return simai.Command(["false"])
    if i % 4 == 1:
        return simai.Command(["echo", "not-a-number"])
    return simai.Command(["printf", "log line\\n%s\\n", repr(f(x))])


def command_for_unannotated(x):
    return simai.Command(["printf", "%s\\n", repr(f(x))])


# -- helpers ---------------------------------------------------------------------------


def near_optimum(r: Result) -> bool:
    return r.ok and abs(r.candidate - OPTIMUM) <= 0.01


def overlapping(calls: list[tuple[int, int, float, float]]) -> bool:
    spans = sorted((start, end, pid) for _, pid, start, end in calls)
    return any(b[0] < a[1] and a[2] != b[2] for a, b in zip(spans, spans[1:], strict=False))


def assert_each_candidate_once(results: list[Result]) -> None:
    indices = [r.index for r in results]
    assert len(indices) == len(set(indices))


def gated(wf: simai.Workflow, name: str = "steer") -> functools.partial:
    return functools.partial(simulate_gated, str(wf.run_dir.path / "steer" / name))


@pytest.fixture
def wf(tmp_path):
    with simai.Workflow("steer-test", run_dir=tmp_path / "run", store="file") as workflow:
        yield workflow


# -- policies and bad input ------------------------------------------------------------


def test_policies_parse_from_strings_and_rank():
    assert isinstance(get_policy("greedy"), Greedy)
    assert isinstance(get_policy(" Random "), Random)
    assert get_policy("ucb").beta == 1.0
    assert get_policy("UCB:2.5").beta == 2.5
    assert get_policy("random:7").seed == 7
    policy = UCB(beta=2)
    assert get_policy(policy) is policy
    mean, std = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_array_equal(UCB(beta=2).priority(mean, std), [1.0, 2.0])
    np.testing.assert_array_equal(Greedy().priority(mean, None), mean)
    with pytest.raises(ValueError, match="needs uncertainty"):
        UCB().priority(mean, None)
    with pytest.raises(ValueError, match="unknown policy 'best'"):
        get_policy("best")
    with pytest.raises(ValueError, match="greedy takes no parameter"):
        get_policy("greedy:3")
    with pytest.raises(ValueError, match=r"^UCB beta must be a finite number >= 0, not -1$"):
        UCB(beta=-1)
    with pytest.raises(TypeError, match="UCB beta must be a finite number"):
        UCB(beta="2")
    with pytest.raises(TypeError, match=r"^Random seed must be an int >= 0 or None, not 1.5$"):
        Random(seed=1.5)


def test_candidate_order_hands_each_candidate_out_once():
    order = CandidateOrder(5, Greedy(), seed=0)
    order.take(2)
    order.requeue(2, 1)  # taken since: not handed out again
    order.requeue(4, 3)
    assert order.requeued == [(4, 3)]
    assert order.pick() == (4, 3)
    order.rank(1, np.array([0.0, 5.0, 9.0, np.nan, 1.0]), None)
    assert order.pick() == (1, 1)
    order.release(1)
    assert order.n_left == 3 and list(order.left()) == [0, 1, 3]
    assert order.pick() == (0, 1)  # the ranking goes on; the released one comes later
    assert sorted([order.pick(), order.pick()]) == [(1, 0), (3, 0)]
    assert order.pick() is None and order.n_left == 0


def test_bad_input_is_refused_up_front(ex):
    options = SteeringOptions(budget=10, initial=5)
    kw = dict(options=options, executor=ex)
    with pytest.raises(ValueError, match="candidate set is empty"):
        Steering([], simulate, fit, predict_mean, **kw)
    with pytest.raises(ValueError, match="exceeds the 3 candidates"):
        Steering([1, 2, 3], simulate, fit, predict_mean, **kw)
    with pytest.raises(TypeError, match="candidates must be a sequence"):
        Steering("CCO", simulate, fit, predict_mean, **kw)
    with pytest.raises(TypeError, match="train must be callable"):
        Steering(GRID, simulate, None, predict_mean, **kw)
    with pytest.raises(ValueError, match="unknown policy"):
        Steering(GRID, simulate, fit, predict_mean, "best", **kw)
    with pytest.raises(TypeError, match="options must be SteeringOptions"):
        Steering(GRID, simulate, fit, predict_mean, options={"budget": 10}, executor=ex)
    with pytest.raises(TypeError, match="give workflow= or executor="):
        Steering(GRID, simulate, fit, predict_mean, workflow=object(), **kw)
    with pytest.raises(TypeError, match=r"^workflow must be a simai.Workflow, not 'wf'$"):
        Steering(GRID, simulate, fit, predict_mean, options=options, workflow="wf")
    # the random baseline needs no model
    Steering(GRID, simulate, None, None, "random", **kw).close()


def test_options_are_checked_when_made():
    with pytest.raises(ValueError, match=r"budget \(4\) is below the initial batch \(5\)"):
        SteeringOptions(budget=4, initial=5)
    with pytest.raises(ValueError, match=r"ai_cores \(1\) is below train_cpus \(2\)"):
        SteeringOptions(train_cpus=2, ai_cores=1)
    with pytest.raises(TypeError, match=r"^budget must be an int >= 1, not 2.5$"):
        SteeringOptions(budget=2.5)
    with pytest.raises(ValueError, match=r"^batch_size must be an int >= 1, not 0$"):
        SteeringOptions(batch_size=0)
    with pytest.raises(TypeError, match=r"^seed must be an int >= 0, not True$"):
        SteeringOptions(seed=True)
    with pytest.raises(ValueError, match=r"^max_failures must be an int >= 0 or None, not -1$"):
        SteeringOptions(max_failures=-1)
    with pytest.raises(ValueError, match=r"^sim_walltime must be a number of seconds > 0"):
        SteeringOptions(sim_walltime=0)
    with pytest.raises(TypeError, match=r"^sim_walltime must be a number of seconds"):
        SteeringOptions(sim_walltime="1h")
    with pytest.raises(ValueError, match=r"^name must be letters, digits"):
        SteeringOptions(name="a/b")
    with pytest.raises(TypeError, match=r"^name must be a str"):
        SteeringOptions(name=None)
    with pytest.raises(TypeError, match=r"^seed must be an int >= 0, not np.int64\(3\)$"):
        SteeringOptions(seed=np.int64(3))
    options = SteeringOptions(budget=30, sim_walltime=5)
    assert type(options.sim_walltime) is float and options.sim_walltime == 5.0
    assert options.max_failures is None and options.in_flight is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.budget = 3  # type: ignore[misc]
    assert dataclasses.replace(options, budget=40).budget == 40
    with pytest.raises(ValueError, match="below the initial batch"):
        dataclasses.replace(options, budget=10)


# -- behaviour -------------------------------------------------------------------------


def test_results_stream_as_they_end_and_greedy_beats_random(wf):
    found: dict[str, int] = {}
    best: dict[str, float] = {}
    for policy in ("greedy", "random"):
        steering = Steering(
            GRID,
            gated(wf, "greedy") if policy == "greedy" else simulate,
            fit,
            predict_mean,
            policy,
            options=SteeringOptions(
                budget=40, initial=10, batch_size=5, seed=0, name=policy, chunk_size=300
            ),
            workflow=wf,
        )
        handed: list[tuple[Result, int]] = []
        for result in steering:
            handed.append((result, len(steering.results)))
        results = steering.results
        assert [r for r, _ in handed] == results
        assert len(results) == 40 and all(r.ok for r in results)
        assert_each_candidate_once(results)
        # handed over one by one while others still ran: the first result came out before
        # the last simulations had even started
        first_handed_at = min(r.ended for r in results)
        assert sum(r.started > first_handed_at for r in results) > 10
        found[policy] = next((n for n, r in enumerate(results) if near_optimum(r)), math.inf)
        best[policy] = steering.best(1)[0].value
        assert [r.value for r in steering.best(3)] == sorted(
            (r.value for r in results), reverse=True
        )[:3]
        if policy == "greedy":
            assert steering.stats["retrains"] >= 1, (steering.trainings, steering.stats)
            assert all(r.model_version == 0 for r in results[:10])
            assert any(r.model_version >= 1 for r in results)
        else:
            assert steering.stats["retrains"] == 0
    assert found["greedy"] < found["random"]
    assert best["greedy"] > best["random"]


def test_in_flight_stays_full_while_a_slow_training_runs(wf, monkeypatch):
    results_file = wf.run_dir.path / "steer" / "steer" / "results.jsonl"
    monkeypatch.setenv("STEER_TEST_RESULTS", str(results_file))
    steering = Steering(
        GRID,
        functools.partial(simulate_after_training_started, str(results_file.parent)),
        fit_when_20_more,
        predict_mean,
        Greedy(),
        options=SteeringOptions(budget=70, initial=6, batch_size=20, random_fill=True),
        workflow=wf,
    )
    target = steering.in_flight_target
    assert target == 2 * steering.slots == 2 * len(os.sched_getaffinity(0))
    samples: list[tuple[bool, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            s = steering.stats
            samples.append((s["training"], s["in_flight"], s["simulations_done"]))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        results = steering.run()
    finally:
        stop.set()
        sampler.join()
    assert len(results) == 70 and all(r.ok for r in results)
    assert_each_candidate_once(results)
    during = [n for training, n, done in samples if training and done + target <= 70]
    assert during, "no sample was taken while a training ran"
    assert min(during) == target
    trained = [t for t in steering.trainings if t["ok"]]
    assert trained and steering.stats["retrains"] == len(trained)
    window = trained[0]
    finished_meanwhile = [r for r in results if window["started"] < r.ended < window["ended"]]
    assert len(finished_meanwhile) >= 10  # simulations kept ending while the model trained
    assert trained[0]["ended"] < results[-1].ended
    stats = steering.stats
    assert 0 < stats["busy_fraction"] <= 1.0
    assert stats["idle_time"] >= 0
    print(f"busy fraction {stats['busy_fraction']:.2f}, load {os.getloadavg()}")


def test_inference_runs_as_parallel_tasks_over_chunks(wf, tmp_path, monkeypatch):
    log = tmp_path / "predict.log"
    monkeypatch.setenv("STEER_TEST_LOG", str(log))
    steering = Steering(
        GRID,
        gated(wf),
        fit,
        predict_logged,
        "greedy",
        options=SteeringOptions(budget=20, initial=8, batch_size=8, chunk_size=250, ai_cores=2),
        workflow=wf,
    )
    results = steering.run()
    assert_each_candidate_once(results)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    by_round: dict[int, list] = {}
    for n, size, pid, start, end in calls:
        by_round.setdefault(n, []).append((size, pid, start, end))
    first = by_round[8]
    assert all(size <= 250 for size, *_ in first)
    assert len(GRID) - 20 <= sum(size for size, *_ in first) <= len(GRID) - 8
    assert len(first) == math.ceil(sum(size for size, *_ in first) / 250)
    assert all(pid != os.getpid() for _, pid, _, _ in first)
    # chunks of one round ran at the same time, in separate worker processes
    assert any(overlapping(calls) for calls in by_round.values())
    scored = steering.stats["scored_version"]
    assert scored >= 1
    assert wf.store().get("steer/steer/scores/mean").shape == (len(GRID),)


def test_failures_are_recorded_with_their_reason_and_replaced(wf):
    # of x = 0.000 .. 0.050, exactly 29 succeed: the loop must run each of them; the one
    # that hangs (x = 0.002) is given first, so the walltime surely stops one; 10 s, so that
    # no other simulation reaches it on a loaded machine
    candidates = GRID[:51]
    steering = Steering(
        candidates,
        simulate_with_failures,
        fit,
        predict_mean,
        "greedy",
        options=SteeringOptions(budget=29, initial=5, batch_size=5, sim_walltime=10.0, seed=1),
        initial_candidates=[2],
        workflow=wf,
    )
    results = steering.run()
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert len(ok) == 29  # failures do not count against the budget
    assert {r.index for r in ok} == {i for i in range(51) if i % 5 > 1 and i != 2}
    assert len(results) == 29 + len(failed) and any(r.index == 2 for r in failed)
    assert_each_candidate_once(results)
    for r in failed:
        assert r.value is None and r.ended is not None
        if r.index == 2:
            assert r.error.startswith("TaskTimeoutError")
        elif r.index % 5 == 0:
            assert r.error.startswith("ValueError: cannot simulate")
            # a simulation that raised kept its worker busy: when and where it ran is known
            assert r.worker is not None and r.started <= r.ended
        else:
            assert r.index % 5 == 1 and "not a finite number" in r.error
    assert steering.stats["simulations_failed"] == len(failed) >= 10
    # the record on disk holds every failure with its reason too
    lines = (wf.run_dir.path / "steer" / "steer" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["error"] for x in lines] == [r.error for r in results]


def test_a_training_that_raises_is_recorded_and_the_old_model_kept(wf):
    steering = Steering(
        GRID,
        gated(wf),
        fit_failing_second,
        predict_mean,
        "greedy",
        options=SteeringOptions(budget=30, initial=5, batch_size=5),
        workflow=wf,
    )
    results = steering.run()
    assert len(results) == 30 and all(r.ok for r in results)
    assert_each_candidate_once(results)
    failed = [t for t in steering.trainings if t["ok"] is False]
    assert failed and "RuntimeError: training diverged" in failed[0]["error"]
    assert steering.stats["train_failures"] == len(failed)
    assert steering.stats["retrains"] >= 2  # the first model, and later ones after the failure
    assert any(near_optimum(r) for r in results)


def test_too_many_failures_stop_the_loop_with_the_reason(wf):
    steering = Steering(
        GRID,
        simulate_with_failures,
        fit,
        predict_mean,
        "random",
        options=SteeringOptions(budget=30, initial=5, max_failures=3, seed=2),
        workflow=wf,
    )
    with pytest.raises(SteeringError, match=r"\d+ simulations failed \(max_failures=3\)"):
        for _ in steering:
            pass
    assert steering.stats["simulations_failed"] >= 3


def test_commands_as_simulations(wf):
    # of x = 0.000 .. 0.015, half fail: the loop must run every candidate for 8 successes
    steering = Steering(
        GRID[:16],
        command_for,
        None,
        None,
        "random",
        options=SteeringOptions(budget=8, initial=4, max_failures=8),
        workflow=wf,
    )
    results = steering.run()
    ok = [r for r in results if r.ok]
    assert len(ok) == 8 and len(results) == 16
    assert_each_candidate_once(results)
    assert all(r.value == pytest.approx(f(r.candidate)) for r in ok)
    assert all(r.index % 4 in (2, 3) for r in ok)
    for r in results:
        if r.index % 4 == 0:
            assert r.error.startswith("CommandError") and "exited with status 1" in r.error
        elif r.index % 4 == 1:
            assert "is not a number: 'not-a-number'" in r.error
    # a builder without the annotation runs as a task, then its command runs
    steering = Steering(
        GRID,
        command_for_unannotated,
        None,
        None,
        "random",
        options=SteeringOptions(budget=4, initial=2, name="plain"),
        workflow=wf,
    )
    results = steering.run()
    assert len(results) == 4 and all(r.ok for r in results)
    assert all(r.value == pytest.approx(f(r.candidate)) for r in results)


def test_state_is_kept_in_the_run_dir_store_and_records(wf):
    steering = Steering(
        GRID,
        gated(wf),
        fit,
        predict_mean_std,
        UCB(beta=0.1),
        options=SteeringOptions(budget=16, initial=6, batch_size=5),
        workflow=wf,
    )
    results = steering.run()
    folder = wf.run_dir.path / "steer" / "steer"
    rows = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [r.index for r in results]
    state = json.loads((folder / "state.json").read_text())
    assert state["model_version"] == steering.model_version >= 1
    assert state["in_flight"] == [] and state["simulations_done"] == 16
    with np.load(folder / "scores.npz") as z:
        assert int(z["version"]) == steering.stats["scored_version"]
        assert z["std"].shape == (len(GRID),)
    summary = wf.store().get("steer/steer/state")
    assert summary["simulations_done"] == 16
    wf.records.flush()
    names = {t["name"] for t in wf.records.tasks_table()}
    assert names == {"simulate_gated", "fit", "predict_mean_std"}  # the user's functions
    metrics = wf.records.latest_metrics()
    best = max(r.value for r in results if r.ok)
    assert (
        metrics["steer/steer/best"]["value"] == best and metrics["steer/steer/best"]["step"] == 16
    )
    assert metrics["steer/steer/value"]["count"] == 16
    assert metrics["steer/steer/model_version"]["value"] == results[-1].model_version


def test_ucb_without_uncertainty_stops_with_a_clear_error(wf):
    steering = Steering(
        GRID,
        gated(wf),
        fit,
        predict_mean,
        "ucb",
        options=SteeringOptions(budget=20, initial=4),
        workflow=wf,
    )
    with pytest.raises(
        SteeringError, match=r"needs uncertainty.*predict\(model, candidates\) -> \(mean, std\)"
    ):
        steering.run()


def test_without_a_workflow_on_a_plain_executor(ex, tmp_path):
    steering = Steering(
        GRID,
        simulate,
        fit,
        predict_mean,
        options=SteeringOptions(budget=12, initial=4, batch_size=4),
        executor=ex,
        state_dir=tmp_path / "state",
    )
    results = steering.run()
    assert len(results) == 12 and all(r.ok for r in results)
    assert Path(tmp_path / "state" / "results.jsonl").read_text().count("\n") == 12


def test_breaking_out_keeps_the_state_and_a_resumed_run_finishes_it(tmp_path):
    run = tmp_path / "run"

    def steering(wf: simai.Workflow, candidates: list[float] = GRID) -> Steering:
        return Steering(
            candidates,
            simulate,
            fit,
            predict_mean,
            options=SteeringOptions(budget=12, initial=4, batch_size=4),
            workflow=wf,
        )

    with simai.Workflow("steer-test", run_dir=run, store="file") as wf:
        first = steering(wf)
        for n, _ in enumerate(first):
            if n == 2:
                break
        assert list(first) == []  # a steering runs once
        kept = first.results
        state = json.loads((run / "steer" / "steer" / "state.json").read_text())
        assert state["simulations_done"] == len([r for r in kept if r.ok]) >= 3
    with simai.Workflow("steer-test", run_dir=run, store="file", resume=True) as wf:
        with pytest.raises(ValueError, match="another candidate set"):
            steering(wf, GRID[:500])
        second = steering(wf)
        yielded = list(second)
        results = second.results
    assert results[: len(kept)] == kept
    assert yielded == results[len(kept) :]  # saved results are not handed out again
    # the store's results stream holds each result once, across both runs
    with simai.open_store(wf.store_url) as store:
        rows = store.stream("steer/steer/results", timeout=10)
        assert [next(rows)["index"] for _ in results] == [r.index for r in results]
        assert store.stream_len("steer/steer/results") == len(results)
    assert sum(r.ok for r in results) == 12
    assert_each_candidate_once(results)
    assert second.stats["resumed_results"] == len(kept)


def test_an_executor_shut_down_under_the_loop_is_an_error(tmp_path):
    from _procs import children, no_new_children

    before = children()
    executor = simai.LocalExecutor(log_dir=tmp_path / "logs")
    steering = Steering(
        GRID,
        simulate,
        None,
        None,
        "random",
        options=SteeringOptions(budget=50, initial=5),
        executor=executor,
    )
    try:
        with pytest.raises(SteeringError, match="executor was shut down"):
            for n, _ in enumerate(steering):
                if n == 3:
                    executor.shutdown(wait=False)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    assert 4 <= len(steering.results) < 50
    assert no_new_children(before)
