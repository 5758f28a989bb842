"""An inverse problem: recover a hidden wave source's period and position from a noisy field.

    python examples/inverse/inverse.py                    # 15-30 s on 2 cores
    python examples/inverse/inverse.py --seed 3 --noise 0.1 --budget 60
    python examples/inverse/inverse.py --resolution 0.005 # a finer candidate grid

The observed field is a damped 1-D wave's space-time record at 14 sensors (wave1d.py), made
by a source of unknown period and position plus Gaussian noise. The truth is drawn from
`--seed` and kept in this process: no component or task sees it, only the observed field.

1. An ensemble of simulation components (`--members`, `--ensemble` simulations each) draws
   parameters from the prior box and streams (parameters, field) rows into the run's store.
2. A trainer component fits a surrogate, an MLP from the parameters to the field, online
   from that stream and publishes a model version every `--publish-every` steps.
3. Once a version has `--warm-steps` of training, a steering loop searches the grid of
   candidate parameters (`--resolution`) for the misfit's minimum: each simulation is a real
   run of the solver scored by minus its misfit to the observed field, and appends its field
   to the same stream; each retraining of the loop takes the newest surrogate version (which
   has learnt from those simulations too) and ranks the candidates left by their predicted
   misfit, so the simulations go where the surrogate puts the minimum.
4. The best simulated candidate is the answer: it is printed with its error against the
   truth, next to the surrogate's own minimum, and logged with `simai.log_metric`.

Writes <run-dir>/inverse-result.json; `simai status <run-dir>` and `simai report <run-dir>`
show the run, the training loss and the best misfit against simulations.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import wave1d

import simai
from simai.models import latest_model, load_model, publish_model
from simai.steer import Steering, SteeringOptions

SAMPLES = "inverse/samples"
STOP = "inverse/stop"
MODEL = "inverse-surrogate"


# --- components ------------------------------------------------------------------------------


def ensemble_member(seed: int, sims: int) -> None:
    """Simulate `sims` sources drawn from the prior; stream each as [period, position, field]."""
    store = simai.open_store()
    rng = np.random.default_rng(seed)
    for _ in range(sims):
        params = rng.uniform(wave1d.LOW, wave1d.HIGH)
        field = wave1d.simulate(*params)
        store.append(SAMPLES, np.concatenate([params, field]).astype(np.float32))


def trainer(publish_every: int, batch: int = 64, lr: float = 3e-3, window: int = 20000) -> None:
    """Fit the surrogate on every sample streamed so far; publish a version every few steps."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    store = simai.open_store()
    model = wave1d.make_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    width = 2 + wave1d.FIELD_SIZE
    replay = np.empty((window, width), np.float32)
    filled = consumed = step = 0
    rng = np.random.default_rng(0)
    samples = store.stream(SAMPLES, timeout=120)
    loss_sum = 0.0
    while True:
        if step % 20 == 0:
            if store.exists(STOP):
                return
            ready = store.stream_len(SAMPLES)
            while consumed < ready or filled < batch:
                row = next(samples)
                replay[consumed % window] = row
                consumed += 1
                filled = min(window, filled + 1)
        pick = replay[rng.integers(0, filled, batch)]
        x = torch.from_numpy(wave1d.normalise(pick[:, :2]))
        y = torch.from_numpy(pick[:, 2:] / wave1d.FIELD_SCALE)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += float(loss)
        step += 1
        if step % publish_every == 0:
            metrics = {"loss": loss_sum / publish_every, "samples": consumed}
            publish_model(store, MODEL, model, step=step, metrics=metrics)
            simai.log_metric("train_loss", metrics["loss"], step=step)
            loss_sum = 0.0


# --- the steering loop's simulate, train and predict (tasks) ----------------------------------


def simulate_misfit(candidate: tuple[float, float], observed: np.ndarray) -> float:
    """A real simulation of `candidate`, streamed for the trainer; minus its misfit."""
    field = wave1d.simulate(*candidate)
    row = np.concatenate([np.asarray(candidate, np.float64), field]).astype(np.float32)
    simai.open_store().append(SAMPLES, row)
    return -float(wave1d.misfit(field, observed))


def newest_surrogate(data: list[tuple[Any, float]] | None = None) -> dict[str, Any]:
    """The loop's 'training': the newest surrogate version, as numpy weights.

    The trainer has been learning from the loop's simulations as they were streamed, so the
    newest version already knows `data`; it is not used here.
    """
    import torch

    torch.set_num_threads(1)
    store = simai.open_store()
    version, _ = latest_model(store, MODEL)
    model = load_model(store, MODEL, version=version, trusted=True)  # our own trainer's
    return {"version": version, "weights": wave1d.numpy_weights(model)}


def predicted_score(
    model: dict[str, Any], candidates: list[tuple[float, float]], observed: np.ndarray
) -> np.ndarray:
    """Minus the misfit of the surrogate's field for each candidate (numpy, no torch)."""
    fields = wave1d.mlp_forward(model["weights"], np.asarray(candidates, np.float64))
    return -wave1d.misfit(fields, observed)


def warm_up() -> None:
    """Import torch in the steering's model worker before the loop needs it."""
    import torch  # noqa: F401


# --- the run ---------------------------------------------------------------------------------


def observe(seed: int, noise: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The observed field and the truth that made it (to be kept from the search)."""
    rng = np.random.default_rng(seed)
    span = wave1d.HIGH - wave1d.LOW
    truth = rng.uniform(wave1d.LOW + 0.1 * span, wave1d.HIGH - 0.1 * span)
    clean = wave1d.simulate(*truth)
    rms = float(np.sqrt(np.mean(clean**2)))
    observed = clean + rng.normal(0.0, noise * rms, clean.shape).astype(np.float32)
    return observed, (float(truth[0]), float(truth[1]))


def wait_for_surrogate(store: simai.Store, steps: int, comps: list[simai.Component]) -> int:
    """Block until the trainer published a version with at least `steps` of training."""
    while True:
        try:
            version, meta = latest_model(store, MODEL)
            if (meta.get("step") or 0) >= steps:
                return version
        except KeyError:
            pass
        for c in comps:
            if c.done:
                c.wait(0)  # raises ComponentFailed with the log's last lines
                if c.name == "trainer":
                    raise RuntimeError("the trainer ended before it published a surrogate")
        time.sleep(0.1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="draws the hidden truth and noise")
    parser.add_argument("--noise", type=float, default=0.05, help="noise std / field RMS")
    parser.add_argument("--members", type=int, default=2, help="ensemble components")
    parser.add_argument("--ensemble", type=int, default=300, help="simulations per member")
    parser.add_argument("--publish-every", type=int, default=100, help="training steps")
    parser.add_argument("--warm-steps", type=int, default=300, help="training before steering")
    parser.add_argument("--resolution", type=float, default=0.01, help="candidate grid spacing")
    parser.add_argument("--budget", type=int, default=40, help="steered simulations")
    parser.add_argument("--initial", type=int, default=4, help="random picks first")
    parser.add_argument("--batch-size", type=int, default=4, help="results per retraining")
    parser.add_argument("--run-dir", default="runs/inverse")
    parser.add_argument("--quiet", action="store_true", help="no live progress display")
    args = parser.parse_args(argv)
    for name in ("members", "ensemble", "publish_every", "budget", "initial", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 <= args.noise < 1:
        parser.error("--noise must be in [0, 1)")
    if not 0 < args.resolution <= 0.1:
        parser.error("--resolution must be in (0, 0.1]")
    if args.initial > args.budget:
        parser.error("--initial must be at most --budget")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    observed, truth = observe(args.seed, args.noise)
    grid = wave1d.candidates(args.resolution)
    start = time.monotonic()
    with (
        simai.Workflow(
            "inverse",
            run_dir=args.run_dir,
            resume=False,
            # five components and the loop's simulations on a small machine: share cores
            options=simai.WorkflowOptions(executor_config={"oversubscribe": True}),
        ) as wf,
        simai.observe.progress(wf, quiet=args.quiet, streams=[SAMPLES]),
        simai.LocalExecutor(cores=1, prestart=1) as ai,  # the loop's model worker
    ):
        store = wf.store()
        comps = [wf.start(trainer, args.publish_every, name="trainer")]  # torch takes a while
        comps += [
            wf.start(ensemble_member, 1000 * args.seed + i, args.ensemble, name=f"member-{i}")
            for i in range(args.members)
        ]
        warm = ai.submit(warm_up)
        first = wait_for_surrogate(store, args.warm_steps, comps)
        warm.result()
        print(
            f"[{time.monotonic() - start:5.1f} s] surrogate version {first} trained on "
            f"{store.stream_len(SAMPLES)} ensemble samples: steering over {len(grid)} candidates",
            flush=True,
        )
        steering = Steering(
            grid,
            functools.partial(simulate_misfit, observed=observed),
            newest_surrogate,
            functools.partial(predicted_score, observed=observed),
            policy="greedy",
            options=SteeringOptions(
                budget=args.budget,
                initial=args.initial,
                batch_size=args.batch_size,
                seed=args.seed,
                name="inverse",
                in_flight=2,
            ),
            workflow=wf,
            ai_executor=ai,
        )
        best, best_at, done = None, 0, 0
        for r in steering:
            if not r.ok:
                print(f"simulation of {r.candidate} failed: {r.error}", flush=True)
                continue
            done += 1
            simai.log_metric("misfit", -r.value, step=done)
            if best is None or r.value > best.value:
                best, best_at = r, done
                simai.log_metric("best_misfit", -best.value, step=done)
                print(
                    f"[{time.monotonic() - start:5.1f} s] simulation {done:3d}: best misfit "
                    f"{-best.value:.4f} at period {best.candidate[0]:.3f}, position "
                    f"{best.candidate[1]:.3f} (surrogate v{r.model_version or '-'})",
                    flush=True,
                )
        if best is None:
            raise SystemExit("inverse: no steered simulation succeeded")
        final = ai.submit(newest_surrogate).result()
        scores = predicted_score(final, grid, observed)
        surrogate_pick = grid[int(np.argmax(scores))]
        store.put(STOP, b"1")
        for c in comps:
            c.wait(60)
        store.close_stream(SAMPLES)  # every producer is done
        period, position = best.candidate
        result = {
            "truth": {"period": truth[0], "position": truth[1]},
            "recovered": {"period": period, "position": position, "misfit": -best.value},
            "error": {"period": abs(period - truth[0]), "position": abs(position - truth[1])},
            "surrogate": {
                "version": final["version"],
                "period": surrogate_pick[0],
                "position": surrogate_pick[1],
                "predicted_misfit": -float(scores.max()),
            },
            "truth_misfit": float(wave1d.misfit(wave1d.simulate(*truth), observed)),
            "best_found_at": best_at,
            "model_picks": sum(1 for x in steering.results if x.ok and x.model_version),
            "candidates": len(grid),
            "steered_simulations": steering.stats["simulations_done"],
            "ensemble_simulations": args.members * args.ensemble,
            "samples_streamed": store.stream_len(SAMPLES),
            "retrains": steering.stats["retrains"],
            "wall_s": time.monotonic() - start,
            "run_dir": str(wf.run_dir.path),
        }
        for key in ("period", "position"):
            simai.log_metric(f"recovered_{key}", result["recovered"][key])
            simai.log_metric(f"{key}_error", result["error"][key])
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    t, r, e, s = result["truth"], result["recovered"], result["error"], result["surrogate"]
    print(
        f"recovered period {r['period']:.3f} (truth {t['period']:.4f}, error "
        f"{e['period']:.4f}), position {r['position']:.3f} (truth {t['position']:.4f}, error "
        f"{e['position']:.4f}); misfit {r['misfit']:.4f} "
        f"(the truth's own: {result['truth_misfit']:.4f})"
    )
    print(
        f"{result['steered_simulations']} steered simulations of {result['candidates']} "
        f"candidates ({result['model_picks']} picked by the surrogate, the best was number "
        f"{result['best_found_at']}) after {result['ensemble_simulations']} ensemble ones; "
        f"{result['retrains']} retrains; the surrogate alone (version {s['version']}) puts the "
        f"minimum at period {s['period']:.3f}, position {s['position']:.3f}"
    )
    path = Path(result["run_dir"]) / "inverse-result.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"result: {path}; records: simai status {result['run_dir']}")


if __name__ == "__main__":
    main()
