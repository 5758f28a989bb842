"""The wave ensemble: simulations produce (u_t, u_{t+1}) pairs, CNN trainers fit u_t -> u_{t+1}.

Each simulation advances u = sin(2r - wt) / (r + 1) on an n x n grid over [-2pi, 2pi]^2 with
its own period (40 to 80 steps) and writes `--steps` pairs into the run's store; one trainer
per kernel size (3, 5, 7) fits Conv2d(1,8,k) -> tanh -> Conv2d(8,1,k) to all of them.

    python examples/wave/wave.py                                # staged, node-local store
    python examples/wave/wave.py --mode online --store redis    # trainers read streams live
    python examples/wave/wave.py --num-sims 4 --grid-size 64 --epochs 1   # a quick look

`--mode staged`: simulations are tasks that put one key per pair; when all have finished,
the trainers (components) get every pair. `--mode online`: the trainers start first and read
each simulation's stream while it is written. Trainers read pair by pair, every epoch, so none
holds the whole data set. Training is deliberately light (each pair gives one optimizer step
on `--patches` random `--patch`-sized crops) so the default run, 32 x 10 pairs of 512 x 512
(640 MiB), takes 15 to 30 s on 2 cores: it exercises the data layer, it does not train a
production model. The report separates run time from time in the store, for the simulations
(puts) and the trainers (gets or stream reads; waiting for a simulation counts apart).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import wavelib

import simai

PREFIX = "wave"


@simai.task
def simulation(sim: int, period: float, grid_size: int, steps: int, online: bool) -> dict:
    """One simulation: a task that writes its pairs as keys (staged) or a stream (online)."""
    sink = wavelib.StoreSink(PREFIX, stream=online)
    return wavelib.simulate(sim, period, grid_size, steps, sink)


def trainer(kernel: int, num_sims: int, steps: int, online: bool, opts: dict[str, Any]) -> None:
    """One trainer component: fits its CNN, then puts its report under report/trainer-kK.

    It says `ready/trainer-kK` once torch is imported, so that online the simulations start
    when the trainers can consume.
    """
    t0 = time.perf_counter()
    import torch  # noqa: F401 - the slow import happens before the trainer says it is ready

    startup_s = time.perf_counter() - t0
    simai.store().put(f"ready/trainer-k{kernel}", b"1")
    if online:
        source: Any = wavelib.StoreStreamSource(PREFIX, num_sims)
    else:
        source = wavelib.StoreKeysSource(PREFIX, num_sims, steps)
    report = wavelib.train(kernel, source, **opts)
    report["startup_s"] += startup_s
    simai.store().put(f"report/trainer-k{kernel}", report)
    print(f"trainer k={kernel}: loss {report['loss']:.3g}", flush=True)


def wait_ready(store: simai.Store, component: simai.Component) -> None:
    """Block until a trainer said it is ready; a trainer that failed raises ComponentFailed."""
    while True:
        try:
            store.wait(f"ready/{component.name}", timeout=1.0)
            return
        except TimeoutError:
            if component.done:
                component.wait()
                raise RuntimeError(f"{component.name} ended without becoming ready") from None


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["staged", "online"], default="staged")
    parser.add_argument("--num-sims", type=positive, default=32)
    parser.add_argument("--grid-size", type=positive, default=512)
    parser.add_argument("--steps", type=positive, default=10, help="pairs per simulation")
    parser.add_argument("--store", choices=["local", "redis", "file"], default="local")
    parser.add_argument("--executor", choices=["local", "parsl"], default="local")
    parser.add_argument("--epochs", type=positive, default=3)
    parser.add_argument("--patch", type=positive, default=64, help="crop size for training")
    parser.add_argument("--patches", type=positive, default=4, help="crops per pair and step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default="runs/wave")
    parser.add_argument("--keep-data", action="store_true", help="leave the pairs in the store")
    args = parser.parse_args(argv)
    if args.grid_size < 8:
        parser.error(f"--grid-size {args.grid_size} is too small: use 8 or more")
    return args


def executor_config(executor: str, online: bool) -> dict[str, Any]:
    """Online, the trainers and at least one simulation must run at once."""
    cores = len(os.sched_getaffinity(0))
    if executor == "parsl":
        return {"workers": cores + len(wavelib.KERNELS)} if online else {}
    return {"oversubscribe": True} if online and cores <= len(wavelib.KERNELS) else {}


def run(args: argparse.Namespace) -> dict[str, Any]:
    online = args.mode == "online"
    opts = {"epochs": args.epochs, "patch": args.patch, "patches": args.patches, "seed": args.seed}
    config = executor_config(args.executor, online)
    with simai.Workflow(
        "wave",
        store=args.store,
        executor=args.executor,
        run_dir=args.run_dir,
        resume=False,
        executor_config=config,
    ) as wf:
        store = wf.store()
        t0 = time.perf_counter()

        def start_trainers() -> list[simai.Component]:
            return [
                wf.start(trainer, k, args.num_sims, args.steps, online, opts, name=f"trainer-k{k}")
                for k in wavelib.KERNELS
            ]

        trainers = start_trainers() if online else []
        for component in trainers:
            wait_ready(store, component)
        futures = [
            simulation(i, p, args.grid_size, args.steps, online)
            for i, p in enumerate(wavelib.periods(args.num_sims))
        ]
        sims = [f.result() for f in futures]
        sims_wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        if not online:
            trainers = start_trainers()
        for component in trainers:
            component.wait()
        t2 = time.perf_counter()
        reports = [store.get(f"report/trainer-k{k}") for k in wavelib.KERNELS]
        if online:
            names = [wavelib.stream_name(PREFIX, s) for s in range(args.num_sims)]
            stored = sum(store.stream_len(n) for n in names)
        else:
            names = store.keys(PREFIX + "/")
            stored = len(names)
        if not args.keep_data:
            delete = store.delete_stream if online else store.delete
            for name in names:
                delete(name)
        store.close()
    return {
        "mode": args.mode,
        "store": args.store,
        "executor": args.executor,
        "executor_config": config,
        "num_sims": args.num_sims,
        "grid_size": args.grid_size,
        "steps": args.steps,
        "bytes": args.num_sims * args.steps * 2 * args.grid_size**2 * 4,
        "pairs_stored": stored,
        "wall_s": t2 - t0,
        "simulations": {
            "wall_s": sims_wall,
            "run_s": sum(s["run_s"] for s in sims),
            "put_s": sum(s["put_s"] for s in sims),
            "pairs": sum(s["pairs"] for s in sims),
        },
        "trainers": {
            "wall_s": (t2 - t1) if not online else t2 - t0,
            "run_s": sum(r["run_s"] for r in reports),
            "data_s": sum(r["data_s"] for r in reports),
            "wait_s": sum(r["wait_s"] for r in reports),
            "per_kernel": reports,
        },
        "run_dir": str(wf.run_dir.path),
        "store_url": wf.store_url,
    }


def table(report: dict[str, Any]) -> str:
    sims, tr = report["simulations"], report["trainers"]
    puts, reads = ("appends", "stream reads") if report["mode"] == "online" else ("puts", "gets")
    mib = report["bytes"] / 2**20
    lines = [
        f"wave: mode={report['mode']} store={report['store']} executor={report['executor']}: "
        f"{report['num_sims']} simulations x {report['steps']} pairs of "
        f"{report['grid_size']}x{report['grid_size']} float32 ({mib:.0f} MiB), "
        f"{len(tr['per_kernel'])} trainers",
        "",
        "| part | wall s | run s (sum) | data movement s (sum) | waiting s (sum) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| simulations | {sims['wall_s']:.2f} | {sims['run_s']:.2f} | {sims['put_s']:.2f} ({puts})"
        " | - |",
        f"| trainers | {tr['wall_s']:.2f} | {tr['run_s']:.2f} | {tr['data_s']:.2f} ({reads}) | "
        f"{tr['wait_s']:.2f} |",
        "",
        "| kernel | epochs | pairs/epoch | startup s | run s | data s | wait s | train s "
        "| final loss |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in tr["per_kernel"]:
        lines.append(
            f"| {r['kernel']} | {r['epochs']} | {','.join(map(str, r['pairs_per_epoch']))} | "
            f"{r['startup_s']:.2f} | {r['run_s']:.2f} | {r['data_s']:.2f} | {r['wait_s']:.2f} | "
            f"{r['train_s']:.2f} | "
            f"{r['loss']:.3g} |"
        )
    lines.append("")
    lines.append(f"total {report['wall_s']:.2f} s; pairs in the store: {report['pairs_stored']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print(table(report))
    path = Path(report["run_dir"]) / "wave-report.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"report: {path}; records: simai status {report['run_dir']}")


if __name__ == "__main__":
    main()
