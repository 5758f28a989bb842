"""A digital twin: assimilate a drifting system's sensor stream, forecast it, retrain on drift.

    python examples/twin/twin.py                       # 15-30 s on 2 cores
    python examples/twin/twin.py --steps 4000 --threshold 0.1
    python examples/twin/twin.py --no-drift            # the same system without the drift

Three components run at once (twinlib.py has the physics):

- `plant`, the physical system: a heated rod whose diffusivity drifts from 0.1 to 0.2 over
  the middle of the run (`--drift`). In real time (`--pace` seconds a step) it streams noisy
  readings of its temperature to the run's store.
- `twin` assimilates each reading into its own simulation (the rod's equation with the
  nominal diffusivity, nudged towards the reading: `--gain`) and streams the assimilated
  state. With the newest surrogate version (`simai.Surrogate`, hot-reloaded) it forecasts the
  state `--horizon` steps ahead; when that step comes, the forecast's RMS error against the
  assimilated state is logged (`forecast_error`). When the mean error of the current
  version's last `--check` forecasts passes `--threshold`, it asks for a retraining, once
  per version. For comparison it also forecasts with the first version, frozen
  (`forecast_error_frozen`).
- `trainer` fits the surrogate (state, heater phase) -> state `--horizon` steps later on
  the first `--warmup` assimilated states, publishes it, then refits on the newest
  `--window` states at each request and publishes the new version.

The twin waits for each version it asked for while the readings queue in the stream (none is
lost) and then catches up, so the steps at which versions change, and every error figure below,
are the same on a fast or a slow machine. At the default pace a small machine's first fits
take longer than the plant's whole run; `--pace 0.01` gives a plant the twin keeps up with.

Prints the mean forecast error before and after each retraining, the errors of the retrained
and the frozen surrogate over the run's last fifth, and the number of retrainings; writes
<run-dir>/twin-result.json. `simai report <run-dir>` plots forecast_error against step.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import twinlib

import simai
from simai.models import latest_model, load_model, publish_model

OBS = "twin/observations"
STATES = "twin/states"
RETRAIN = "twin/retrain"
READY = "twin/ready/"
SUMMARY = "twin/summary"
MODEL = "twin-forecaster"


def plant(seed: int, steps: int, pace: float, drift: tuple[float, float], noise: float) -> None:
    """The physical system: stream a noisy reading every `pace` seconds, in real time."""
    store = simai.open_store()
    for name in ("twin", "trainer"):  # a physical system would not wait: this is a demo
        store.wait(READY + name, timeout=300)
    rod = twinlib.Plant(seed, steps, drift, noise)
    t0 = time.monotonic()
    for n in range(steps):
        reading = rod.step(n)
        store.append(OBS, np.concatenate([[n + 1], reading]).astype(np.float32))
        if n % 50 == 0:
            simai.log_metric("diffusivity", twinlib.kappa_at(n, steps, drift), step=n + 1)
        delay = t0 + (n + 1) * pace - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def twin(horizon: int, gain: float, threshold: float, check: int, warmup: int, wait: float) -> None:
    """Assimilate each reading, forecast with the newest surrogate, ask for retrainings.

    Forecasts start at step `warmup`, once the trainer published a first version. After
    asking for a retraining the twin waits (up to `wait` seconds) for the new version while
    the plant's readings queue in the stream, then catches up: the steps at which versions
    change do not depend on how fast this machine trains.
    """
    import torch

    torch.set_num_threads(1)
    store = simai.open_store()
    surrogate = simai.Surrogate(MODEL, poll=1.0, trusted=True)  # our own trainer's model
    store.put(READY + "twin", b"1")
    state: np.ndarray | None = None
    frozen = None  # the first version, kept for comparison
    pending: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    recent: deque[float] = deque(maxlen=check)  # errors of the version in use
    records: list[tuple[int, float, float, int]] = []  # step, error, frozen error, version
    asks: list[dict[str, Any]] = []
    version = 0
    lag = 0  # the most readings that waited in the stream
    readings = store.stream(OBS, timeout=300)
    for row in readings:
        step, reading = int(row[0]), row[1:].astype(np.float64)
        if state is None:
            state = reading.copy()
        else:  # the twin's model, then a nudge towards the reading
            state = twinlib.advance(state, step - 1, twinlib.KAPPA0)
            state += gain * (reading - state)
        store.append(STATES, np.concatenate([[step], state]).astype(np.float32))
        due = pending.pop(step, None)
        if due is not None:
            forecast, frozen_forecast, made_by = due
            err = twinlib.rms(forecast, state)
            frozen_err = twinlib.rms(frozen_forecast, state)
            simai.log_metric("forecast_error", err, step=step)
            simai.log_metric("forecast_error_frozen", frozen_err, step=step)
            records.append((step, err, frozen_err, made_by))
            if made_by == version:
                recent.append(err)
            if len(recent) == check and np.mean(recent) > threshold:
                ask = {"step": step, "error": float(np.mean(recent)), "version": version}
                store.append(RETRAIN, ask)
                asks.append(ask)
                simai.log_metric("retrains", len(asks), step=step)
                deadline = time.monotonic() + wait
                while not surrogate.refresh():  # True once the new version is loaded
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no retrained version in {wait} s")
                    time.sleep(0.01)
                lag = max(lag, store.stream_len(OBS) - readings.index)
        if step < warmup:
            continue
        if frozen is None:
            surrogate.wait_for_model(timeout=wait)
            lag = max(lag, store.stream_len(OBS) - readings.index)
        x = twinlib.features(state, step)[None]
        forecast, used = surrogate.call(x)
        if used != version:
            version = used
            recent.clear()
            simai.log_metric("model_version", version, step=step)
        if frozen is None:
            frozen = load_model(store, MODEL, version=version, trusted=True)
        with torch.no_grad():
            frozen_forecast = frozen(torch.from_numpy(x)).numpy()
        pending[step + horizon] = (forecast[0], frozen_forecast[0], version)
    summary = summarize(records, asks, check)
    summary["max_lag_steps"] = lag
    store.put(SUMMARY, summary)


def summarize(
    records: list[tuple[int, float, float, int]], asks: list[dict[str, Any]], check: int
) -> dict[str, Any]:
    """Mean forecast errors: overall, around each retraining, over the last fifth."""
    if not records:
        return {"forecasts": 0, "retrains": len(asks), "asks": asks}
    steps = np.array([r[0] for r in records])
    err = np.array([r[1] for r in records])
    frozen = np.array([r[2] for r in records])
    versions = np.array([r[3] for r in records])
    around = []
    for ask in asks:
        before = err[steps <= ask["step"]][-check:]
        after = err[versions > ask["version"]][:check]
        around.append(
            {
                "step": ask["step"],
                "before": float(before.mean()),
                "after": float(after.mean()) if len(after) else None,
            }
        )
    done = [a for a in around if a["after"] is not None]
    last = steps >= steps[0] + 0.8 * (steps[-1] - steps[0])
    return {
        "forecasts": len(records),
        "first_forecast_step": int(steps[0]),
        "mean_error": float(err.mean()),
        "mean_error_frozen": float(frozen.mean()),
        "last_fifth_error": float(err[last].mean()),
        "last_fifth_error_frozen": float(frozen[last].mean()),
        "retrains": len(asks),
        "retrains_evaluated": len(done),
        "mean_error_before_retrains": float(np.mean([a["before"] for a in done])) if done else None,
        "mean_error_after_retrains": float(np.mean([a["after"] for a in done])) if done else None,
        "around_retrains": around,
        "versions_used": sorted({int(v) for v in versions}),
    }


def trainer(horizon: int, warmup: int, window: int, fit_steps: int, lr: float = 3e-3) -> None:
    """Fit the first `warmup` states, then refit the newest `window` at each request."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    store = simai.open_store()
    model = twinlib.make_model()
    rng = np.random.default_rng(0)
    store.put(READY + "trainer", b"1")
    rows = store.stream(STATES, timeout=300)
    states: list[np.ndarray] = []

    def read(upto: int) -> None:
        while len(states) < upto:
            row = next(rows)
            states.append(row)

    def fit(reason: str, step: int) -> None:
        t0 = time.perf_counter()
        data = np.array(states[-window:])
        x = np.stack([twinlib.features(r[1:], int(r[0])) for r in data[:-horizon]])
        y = data[horizon:, 1:].astype(np.float32)
        x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        total = 0.0
        for _ in range(fit_steps):
            pick = torch.from_numpy(rng.integers(0, len(x), 64))
            loss = torch.nn.functional.mse_loss(model(x_t[pick]), y_t[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss)
        metrics = {"loss": total / fit_steps, "states": len(data), "reason": reason}
        publish_model(store, MODEL, model, step=step, metrics=metrics)
        simai.log_metric("fit_loss", metrics["loss"], step=step)
        simai.log_metric("fit_seconds", time.perf_counter() - t0, step=step)

    read(warmup)
    fit("warm-up", int(states[-1][0]))
    handled = 0
    while True:
        try:
            ask = next(store.stream(RETRAIN, start=handled, timeout=0.2))
        except TimeoutError:
            read(store.stream_len(STATES))
            continue
        except StopIteration:
            return
        handled += 1
        read(ask["step"])  # the states up to the ask: the twin waits for this version
        fit("retrain", ask["step"])


def fraction_pair(text: str) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START,END, not {text!r}") from None
    if not 0 <= start <= end <= 1:
        raise argparse.ArgumentTypeError(f"need 0 <= START <= END <= 1, not {text!r}")
    return start, end


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps the plant streams")
    parser.add_argument("--pace", type=float, default=0.002, help="seconds per plant step")
    parser.add_argument(
        "--drift",
        type=fraction_pair,
        default=(0.35, 0.65),
        help="START,END: the diffusivity ramps from 0.1 to 0.2 over these fractions of the run",
    )
    parser.add_argument("--no-drift", action="store_true", help="keep the diffusivity at 0.1")
    parser.add_argument("--noise", type=float, default=0.05, help="sensor noise std")
    parser.add_argument("--gain", type=float, default=0.3, help="nudging gain in (0, 1]")
    parser.add_argument("--horizon", type=int, default=50, help="forecast lead, in steps")
    parser.add_argument("--threshold", type=float, default=0.07, help="RMS forecast error")
    parser.add_argument("--check", type=int, default=20, help="forecasts averaged per check")
    parser.add_argument("--warmup", type=int, default=400, help="states before the first fit")
    parser.add_argument("--window", type=int, default=400, help="newest states per refit")
    parser.add_argument("--fit-steps", type=int, default=300, help="optimizer steps per fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default="runs/twin")
    parser.add_argument("--quiet", action="store_true", help="no live progress display")
    args = parser.parse_args(argv)
    for name in ("steps", "horizon", "check", "warmup", "window", "fit_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.gain <= 1:
        parser.error("--gain must be in (0, 1]")
    if args.window <= args.horizon or args.warmup <= args.horizon:
        parser.error("--window and --warmup must exceed --horizon")
    if args.warmup >= args.steps:
        parser.error("--warmup must be below --steps")
    if args.no_drift:
        args.drift = (1.0, 1.0)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.monotonic()
    with (
        simai.Workflow(
            "twin",
            run_dir=args.run_dir,
            resume=False,
            options=simai.WorkflowOptions(executor_config={"oversubscribe": True}),
        ) as wf,
        simai.observe.progress(wf, quiet=args.quiet, streams=[OBS, STATES]),
    ):
        store = wf.store()
        trainer_c = wf.start(
            trainer, args.horizon, args.warmup, args.window, args.fit_steps, name="trainer"
        )
        twin_c = wf.start(
            twin,
            args.horizon,
            args.gain,
            args.threshold,
            args.check,
            args.warmup,
            120.0,
            name="twin",
        )
        plant_c = wf.start(
            plant, args.seed, args.steps, args.pace, args.drift, args.noise, name="plant"
        )
        comps = [plant_c, twin_c, trainer_c]
        wait(plant_c, comps)
        store.close_stream(OBS)  # the plant, its only producer, is done
        wait(twin_c, comps)
        store.close_stream(STATES)
        store.close_stream(RETRAIN)
        wait(trainer_c, comps)
        summary = store.get(SUMMARY)
        summary.update(
            threshold=args.threshold,
            horizon=args.horizon,
            steps=args.steps,
            versions_published=latest_model(store, MODEL)[0],
            wall_s=time.monotonic() - start,
            run_dir=str(wf.run_dir.path),
        )
    return summary


def wait(component: simai.Component, comps: list[simai.Component]) -> None:
    """Wait for `component` to end; raise as soon as any of `comps` failed."""
    while True:
        for c in comps:
            if c.done:
                c.wait(0)  # raises ComponentFailed with the log's last lines
        try:
            component.wait(0.2)
            return
        except TimeoutError:
            pass


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    s = run(args)
    if not s["forecasts"]:
        raise SystemExit("twin: no forecast was checked (no surrogate version in time?)")
    print(
        f"{s['forecasts']} forecasts {s['horizon']} steps ahead checked from step "
        f"{s['first_forecast_step']}: mean RMS error {s['mean_error']:.4f} "
        f"(threshold {s['threshold']:g})"
    )
    for a in s["around_retrains"]:
        after = "not evaluated" if a["after"] is None else f"{a['after']:.4f}"
        print(f"  retrain at step {a['step']}: error {a['before']:.4f} before, {after} after")
    if s["retrains_evaluated"]:
        print(
            f"retrains: {s['retrains']}; mean error before them "
            f"{s['mean_error_before_retrains']:.4f}, after {s['mean_error_after_retrains']:.4f}"
        )
    else:
        print(f"retrains: {s['retrains']}")
    print(
        f"last fifth of the run: error {s['last_fifth_error']:.4f} retrained online, "
        f"{s['last_fifth_error_frozen']:.4f} with the first version frozen; "
        f"{s['versions_published']} versions published; at most {s['max_lag_steps']} readings "
        "queued while the twin waited for a version"
    )
    path = Path(s["run_dir"]) / "twin-result.json"
    path.write_text(json.dumps(s, indent=1))
    print(
        f"result: {path}; records: simai status {s['run_dir']}; report: simai report {s['run_dir']}"
    )


if __name__ == "__main__":
    main()
