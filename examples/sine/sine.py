"""Online training with a surrogate in the loop: learn sin(x) while simulations produce it.

    python examples/sine/sine.py                      # node-local store, local executor
    python examples/sine/sine.py --store redis        # the same through redis-server shards
    python examples/sine/sine.py --executor parsl     # components on Parsl workers
    python examples/sine/sine.py --quiet              # without the live progress display

Two simulation components append (x, sin x) samples to a stream; a trainer component fits a
small MLP online and publishes a model version every few hundred steps; an evaluator component
calls the newest version through `simai.Surrogate` on a fixed grid and reports its MSE as
versions arrive. The run ends when the MSE is below the target or at the time budget. The
trainer and the evaluator log their loss and MSE with `simai.log_metric`; the terminal shows
them live with the components' states and the sample stream's growth.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import simai
from simai.models import publish_model

SAMPLES = "sine/samples"
EVALS = "sine/evals"
STOP = "sine/stop"
MODEL = "sine"


def simulation(seed: int, batch: int = 64, pause: float = 0.02) -> None:
    """A stand-in simulation: each step yields `batch` samples (x, sin x), x in [-pi, pi]."""
    store = simai.open_store()
    rng = np.random.default_rng(seed)
    while not store.exists(STOP):
        x = rng.uniform(-np.pi, np.pi, batch).astype(np.float32)
        store.append(SAMPLES, np.stack([x, np.sin(x)], axis=1))
        time.sleep(pause)  # the simulation's own work between outputs


def trainer(
    publish_every: int = 100, batch: int = 256, window: int = 20000, lr: float = 3e-3
) -> None:
    """Fit a 1-64-64-1 tanh MLP on a replay window of the newest samples; publish versions."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    store = simai.open_store()
    model = torch.nn.Sequential(
        torch.nn.Linear(1, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    replay = np.empty((window, 2), np.float32)
    filled = head = consumed = seen = step = 0
    rng = np.random.default_rng(0)
    samples = store.stream(SAMPLES, timeout=60)
    loss_sum = 0.0
    while True:
        if step % 20 == 0:
            if store.exists(STOP):
                return
            ready = store.stream_len(SAMPLES)
            while consumed < ready or filled < batch:
                new = next(samples)
                consumed += 1
                seen += len(new)
                at = (head + np.arange(len(new))) % window
                replay[at] = new
                head = (head + len(new)) % window
                filled = min(window, filled + len(new))
        pick = replay[rng.integers(0, filled, batch)]
        xy = torch.from_numpy(pick)
        loss = torch.nn.functional.mse_loss(model(xy[:, :1]), xy[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += float(loss)
        step += 1
        if step % publish_every == 0:
            metrics = {"loss": loss_sum / publish_every, "samples": seen}
            publish_model(store, MODEL, model, step=step, metrics=metrics)
            simai.log_metric("train_loss", metrics["loss"], step=step)
            loss_sum = 0.0


def evaluator(points: int = 1001, poll: float = 0.05) -> None:
    """Call the newest version through a Surrogate on a fixed grid; report each version's MSE."""
    import torch

    torch.set_num_threads(1)
    store = simai.open_store()
    grid = np.linspace(-np.pi, np.pi, points, dtype=np.float32)[:, None]
    truth = np.sin(grid)
    # trusted: the TorchScript was published by this run's own trainer, in a store only we open
    surrogate = simai.Surrogate(MODEL, poll=poll, trusted=True)
    last = None
    while not store.exists(STOP):
        if surrogate.version is None:
            try:
                surrogate.wait_for_model(timeout=1.0)
            except TimeoutError:
                continue
        y = surrogate(grid)
        if surrogate.version != last:
            last = surrogate.version
            meta = surrogate.metadata or {}
            record = {
                "version": last,
                "step": meta.get("step"),
                "mse": float(np.mean((y - truth) ** 2)),
                "loss": meta.get("metrics", {}).get("loss"),
                "time": time.time(),
            }
            store.put(f"sine/mse/{last}", record)
            simai.log_metric("grid_mse", record["mse"], step=record["step"])
            simai.log_metric("model_version", last, step=record["step"])
            store.append(EVALS, record)
            print(f"version {last}: grid MSE {record['mse']:.3e}", flush=True)
        time.sleep(poll)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="local", choices=["local", "redis"])
    parser.add_argument("--executor", default="local", choices=["local", "parsl"])
    parser.add_argument("--budget", type=float, default=50.0, help="seconds (default 50)")
    parser.add_argument("--target", type=float, default=1e-3, help="grid MSE to reach")
    parser.add_argument("--publish-every", type=int, default=100, help="training steps")
    parser.add_argument("--run-dir", default="runs/sine")
    parser.add_argument("--quiet", action="store_true", help="no live progress display")
    args = parser.parse_args()
    # four components on a small machine: let them share cores (the simulations mostly wait)
    if args.executor == "local":
        config = {"oversubscribe": True}
    else:
        from simai.launch.parsl import default_config

        parsl_config = default_config(4, run_dir=f"{args.run_dir}/parsl")
        # Parsl caps workers at the node's cores unless told how many cores to count
        parsl_config.executors[0].provider.worker_init = "export PARSL_CORES=4"
        config = {"config": parsl_config}
    start = time.monotonic()
    with (
        simai.Workflow(
            "sine",
            store=args.store,
            executor=args.executor,
            options=simai.WorkflowOptions(executor_config=config),
            run_dir=args.run_dir,
        ) as wf,
        simai.observe.progress(wf, quiet=args.quiet, streams=[SAMPLES]),
    ):
        comps = [wf.start(simulation, seed, name=f"simulation-{seed}") for seed in (1, 2)]
        comps.append(wf.start(trainer, args.publish_every, name="trainer"))
        comps.append(wf.start(evaluator, name="evaluator"))
        store = wf.store()
        best: dict | None = None
        reached = None
        index = 0
        while time.monotonic() - start < args.budget:
            left = args.budget - (time.monotonic() - start)
            try:
                record = next(store.stream(EVALS, start=index, timeout=min(1.0, max(left, 0))))
            except TimeoutError:
                for c in comps:
                    if c.done:
                        c.wait(0)  # raises ComponentFailed with the log's last lines
                continue
            index += 1
            elapsed = time.monotonic() - start
            print(
                f"[{elapsed:5.1f} s] version {record['version']:3d}  step {record['step']:6d}  "
                f"train loss {record['loss']:.2e}  grid MSE {record['mse']:.2e}",
                flush=True,
            )
            if best is None or record["mse"] < best["mse"]:
                best = record
            if record["mse"] < args.target:
                reached = elapsed
                break
        store.put(STOP, b"1")
        for c in comps:
            c.wait(30)
        result = {"best": best, "reached_target_s": reached, "target": args.target}
        store.put("sine/result", result)
    if best is None:
        print(f"no model version was evaluated within the {args.budget:.0f} s budget")
    else:
        outcome = (
            f"target {args.target:.0e} reached in {reached:.1f} s"
            if reached is not None
            else f"target {args.target:.0e} not reached in the {args.budget:.0f} s budget"
        )
        print(f"final MSE {best['mse']:.3e} (version {best['version']}): {outcome}")
    print(f"records: simai status {wf.run_dir.path}; report: simai report {wf.run_dir.path}")


if __name__ == "__main__":
    main()
