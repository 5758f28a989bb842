"""The wave ensemble: simulations produce (u_t, u_{t+1}) pairs, CNN trainers fit u_t -> u_{t+1}.

Each simulation advances u = sin(2r - wt) / (r + 1) on an n x n grid over [-2pi, 2pi]^2 with
its own period (40 to 80 steps) and writes `--steps` pairs into the run's store; one trainer
per kernel size (3, 5, 7) fits Conv2d(1,8,k) -> tanh -> Conv2d(8,1,k) to all of them.

    python examples/wave/wave.py                                # staged, node-local store
    python examples/wave/wave.py --mode online --store redis    # trainers read streams live
    python examples/wave/wave.py --num-sims 4 --grid-size 64 --epochs 1   # a quick look
    python examples/wave/wave.py --surrogate                    # the CNN steps the simulations
    python examples/wave/wave.py --train full --mode online     # real training, live data

`--mode staged`: simulations are tasks that put one key per pair; when all have finished,
the trainers (components) get every pair. `--mode online`: the trainers start first and read
each simulation's stream while it is written. Trainers read pair by pair, every epoch, so none
holds the whole data set. Training is deliberately light (each pair gives one optimizer step
on `--patches` random `--patch`-sized crops) so the default run, 32 x 10 pairs of 512 x 512
(640 MiB), takes 15 to 30 s on 2 cores: it exercises the data layer, it does not train a
production model. The report separates run time from time in the store, for the simulations
(puts) and the trainers (gets or stream reads; waiting for a simulation counts apart).

`--train full` is the training users run: two trainers (kernels 3 and 5, a core each), each
`--epochs` (default 1) passes over all pairs, whole frames, `--batch` pairs (default 4) an
optimizer step, torch.optim.Adam, then the final loss, the trained model's MSE on every pair.
`--step-compute S` makes each simulation step first wait S seconds (an emulated solver, as
one waiting on a device or its MPI peers; with --train full the default is 0.5 s). Online,
the simulations, which mostly wait, take no core from the trainers: they run as
`Resources(cpus=0)` tasks (no core of their own, a lower CPU priority).
The report adds the phases (simulations, training) and, online, the overlap: the fraction
of training steps done before the last simulation ended.

`--surrogate` (tight coupling, online): the trainers publish their CNN to the model registry
every `--publish-every` pairs; each simulation, after its `--steps` recorded steps (the
warm-up), advances `--surrogate-steps` more with the newest version of one of them
(`--surrogate-kernel`), called in-process through `simai.Surrogate`, which swaps in new
versions as they are published. Every `--check-every` surrogate steps it compares its state
with the exact solution and, above `--max-error` (relative L2), falls back to the exact
update (the state and the previous state are reset to the exact ones). The report adds, per
simulation and in total, the surrogate's steps, checks, checks passed, fallbacks, errors,
the versions it used, and its time against the exact steps it replaced.

What the surrogate sees: a CNN given u_t alone cannot tell which way the wave travels nor how
fast (each simulation has its own period); it fell back at about 240 of the 320 checks of
the default run. The wave equation steps as u_{t+1} = 2 u_t - u_{t-1} + (c dt)^2 lap(u_t),
so with --surrogate each recorded sample is (u_{t-1}, u_t, kappa, u_{t+1}), kappa = (c dt)^2
the simulation's own constant as a field (c = w/2, the speed of sin(2r - wt)), and the
trainers fit that leapfrog update with their CNN, Conv2d(2,8,k) -> tanh -> Conv2d(8,1,k) on
(u_{t-1}, u_t), in the place of the Laplacian (`wavelib.make_leapfrog_model`), at --lr 3e-2
(the first simulations step with the version fitted on one warm-up's 10 samples). The CNN
learns one spatial operator for all simulations, so a version fitted on the first ones steps
the others: 315 of the 320 checks of the default run pass (3 runs on 2 cores; the 5 that
fail are one each in the simulations that run on the first version). The checks are as
before: the state against the exact solution, relative L2, every --check-every steps. The
samples are 4 fields, not 2: --surrogate stores twice the bytes. Time: the "exact" step here
evaluates the closed-form solution (about 5 ms on 512 x 512, one core), cheaper than the CNN
(about 50 ms), so the surrogate costs time rather than saving it; the report says how much,
and the exact-step cost above which it would save (break-even).
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
from simai.models import publish_model

PREFIX = "wave"


@simai.task
def simulation(
    sim: int,
    period: float,
    grid_size: int,
    steps: int,
    online: bool,
    surrogate: dict[str, Any] | None = None,
    compute_s: float = 0.0,
) -> dict:
    """One simulation: a task that writes its pairs as keys (staged) or a stream (online).

    With `surrogate` (options of --surrogate) it goes on after its `steps` recorded steps
    (the warm-up) for `surrogate["steps"]` more, advanced by the newest published CNN.
    """
    sink = wavelib.StoreSink(PREFIX, stream=online)
    if surrogate is None:
        return wavelib.simulate(sim, period, grid_size, steps, sink, compute_s=compute_s)
    t0 = time.perf_counter()
    stepper = wavelib.SurrogateStepper(
        wavelib.model_name(surrogate["kernel"]),
        wavelib.radius(grid_size),
        period,
        kernel=surrogate["kernel"],
        warmup=steps,
        check_every=surrogate["check_every"],
        max_error=surrogate["max_error"],
        wait=surrogate["wait"],
    )
    setup_s = time.perf_counter() - t0
    total = steps + surrogate["steps"]
    result = wavelib.simulate(
        sim,
        period,
        grid_size,
        total,
        sink,
        stepper=stepper,
        record=steps,
        leapfrog=True,
        compute_s=compute_s,
    )
    result["surrogate"] = stepper.report()
    result["surrogate"]["setup_s"] = setup_s  # import torch (once per worker process)
    return result


def trainer(
    kernel: int,
    num_sims: int,
    steps: int,
    online: bool,
    opts: dict[str, Any],
    publish_every: int | None = None,
) -> None:
    """One trainer component: fits its CNN, then puts its report under report/trainer-kK.

    It says `ready/trainer-kK` once torch is imported, so that online the simulations start
    when the trainers can consume. With `publish_every` (--surrogate), it fits the leapfrog
    model to (u_{t-1}, u_t, kappa, u_{t+1}) samples and publishes it as a new version of
    `wave-kK` in the model registry after the first `steps` samples (one simulation's
    warm-up: simulations wait for a first version), then every `publish_every` samples and
    after each epoch.
    """
    t0 = time.perf_counter()
    import torch  # noqa: F401 - the slow import happens before the trainer says it is ready

    startup_s = time.perf_counter() - t0
    simai.open_store().put(f"ready/trainer-k{kernel}", b"1")
    if online:
        source: Any = wavelib.StoreStreamSource(PREFIX, num_sims)
    else:
        source = wavelib.StoreKeysSource(PREFIX, num_sims, steps)
    published: list[int] = []
    publish = None
    if publish_every:
        store = simai.open_store()

        def publish(model: Any, epoch: int, step: int, loss: float) -> None:
            metrics = {"loss": loss, "epoch": epoch}
            name, producer = wavelib.model_name(kernel), f"trainer-k{kernel}"
            published.append(
                publish_model(store, name, model, step=step, metrics=metrics, producer=producer)
            )

    report = wavelib.train(
        kernel,
        source,
        publish=publish,
        publish_every=publish_every,
        publish_first=steps if publish_every else None,
        build_model=wavelib.make_leapfrog_model if publish_every else wavelib.make_model,
        **opts,
    )
    report["published"] = published
    report["startup_s"] += startup_s
    simai.open_store().put(f"report/trainer-k{kernel}", report)
    print(f"trainer k={kernel}: loss {report['loss']:.3g}", flush=True)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode", choices=["staged", "online"], help="default: staged; online with --surrogate"
    )
    parser.add_argument("--num-sims", type=positive, default=32)
    parser.add_argument("--grid-size", type=positive, default=512)
    parser.add_argument("--steps", type=positive, default=10, help="pairs per simulation")
    parser.add_argument("--store", choices=["local", "redis", "file"], default="local")
    parser.add_argument("--executor", choices=["local", "parsl"], default="local")
    parser.add_argument(
        "--train",
        choices=["light", "full"],
        default="light",
        help="light: one step on crops per pair (default); full: whole frames in batches",
    )
    parser.add_argument(
        "--step-compute",
        type=non_negative,
        help="seconds each simulation step waits first, an emulated solver (default: 0; "
        "0.5 with --train full)",
    )
    parser.add_argument("--epochs", type=positive, help="default: 3; 1 with --train full")
    parser.add_argument("--patch", type=positive, default=64, help="crop size for training")
    parser.add_argument("--patches", type=positive, default=4, help="crops per pair and step")
    parser.add_argument("--batch", type=positive, default=4, help="pairs a step (--train full)")
    parser.add_argument(
        "--lr", type=float, help="Adam's learning rate (default: 3e-3; 3e-2 with --surrogate)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default="runs/wave")
    parser.add_argument("--keep-data", action="store_true", help="leave the pairs in the store")
    group = parser.add_argument_group("surrogate (tight coupling)")
    group.add_argument(
        "--surrogate",
        action="store_true",
        help="after the --steps recorded steps, advance each simulation with the newest CNN",
    )
    group.add_argument(
        "--surrogate-steps", type=positive, default=20, help="steps after the warm-up"
    )
    group.add_argument("--surrogate-kernel", type=int, choices=wavelib.KERNELS, default=3)
    group.add_argument(
        "--check-every", type=positive, default=2, help="surrogate steps between exact checks"
    )
    group.add_argument(
        "--max-error",
        type=non_negative,
        default=0.25,
        help="relative L2 error above which a check falls back to the exact update",
    )
    group.add_argument(
        "--publish-every",
        type=positive,
        help="pairs between published versions (default: an eighth of an epoch's pairs, at "
        "least --steps); the first comes after --steps pairs",
    )
    group.add_argument(
        "--surrogate-wait",
        type=non_negative,
        default=60.0,
        help="seconds a simulation waits for a first version before stepping exactly",
    )
    args = parser.parse_args(argv)
    if args.grid_size < 8:
        parser.error(f"--grid-size {args.grid_size} is too small: use 8 or more")
    if args.surrogate and args.mode == "staged":
        parser.error(
            "--surrogate needs --mode online: staged, no model exists while simulations run"
        )
    if args.surrogate and args.train == "full":
        parser.error("--surrogate trains light: leave out --train full")
    if args.mode is None:
        args.mode = "online" if args.surrogate else "staged"
    full = args.train == "full"
    if args.epochs is None:
        args.epochs = 1 if full else 3
    if args.step_compute is None:
        args.step_compute = 0.5 if full else 0.0
    if args.lr is None:
        # the first simulations step with a version fitted on one warm-up (--steps samples):
        # at 3e-2 the leapfrog CNN reaches the Laplacian's scale within those few steps
        args.lr = 3e-2 if args.surrogate else 3e-3
    if not args.lr > 0:
        parser.error(f"--lr must be positive, not {args.lr}")
    if args.publish_every is None:
        args.publish_every = max(args.steps, args.num_sims * args.steps // 8)
    margin = 2 * (args.surrogate_kernel // 2)
    if args.surrogate and args.grid_size <= 2 * margin:
        parser.error(
            f"--grid-size {args.grid_size} leaves no interior for a kernel of "
            f"{args.surrogate_kernel}: use more than {2 * margin}"
        )
    return args


def executor_config(executor: str, online: bool) -> dict[str, Any]:
    """Online, the trainers and at least one simulation must run at once."""
    cores = len(os.sched_getaffinity(0))
    if executor == "parsl":
        return {"workers": cores + len(wavelib.KERNELS)} if online else {}
    return {"oversubscribe": True} if online and cores <= len(wavelib.KERNELS) else {}


def open_workflow(args: argparse.Namespace, config: dict[str, Any]) -> simai.Workflow:
    """The run's workflow: a fresh run of --store and --executor placed by `config`."""
    return simai.Workflow(
        "wave",
        store=args.store,
        executor=args.executor,
        run_dir=args.run_dir,
        resume=False,
        options=simai.WorkflowOptions(executor_config=config),
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.train == "full":
        return run_full(args)
    online = args.mode == "online"
    channels = 4 if args.surrogate else 2  # (u_{t-1}, u_t, kappa, u_{t+1}) or (u_t, u_{t+1})
    opts = {
        "epochs": args.epochs,
        "patch": args.patch,
        "patches": args.patches,
        "lr": args.lr,
        "seed": args.seed,
    }
    config = executor_config(args.executor, online)
    with open_workflow(args, config) as wf:
        store = wf.store()
        t0 = time.perf_counter()

        publish_every = args.publish_every if args.surrogate else None
        surrogate = surrogate_options(args) if args.surrogate else None

        def start_trainers() -> list[simai.Component]:
            return [
                wf.start(
                    trainer,
                    k,
                    args.num_sims,
                    args.steps,
                    online,
                    opts,
                    publish_every,
                    name=f"trainer-k{k}",
                )
                for k in wavelib.KERNELS
            ]

        trainers = start_trainers() if online else []
        for component in trainers:
            wavelib.wait_ready(store, component)
        futures = [
            simulation(i, p, args.grid_size, args.steps, online, surrogate, args.step_compute)
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
    report: dict[str, Any] = {
        "mode": args.mode,
        "train": "light",
        "step_compute": args.step_compute,
        "store": args.store,
        "executor": args.executor,
        "executor_config": config,
        "num_sims": args.num_sims,
        "grid_size": args.grid_size,
        "steps": args.steps,
        "channels": channels,
        "bytes": args.num_sims * args.steps * channels * args.grid_size**2 * 4,
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
    if surrogate is not None:
        report["surrogate"] = surrogate_report(surrogate, sims, reports)
    return report


def run_full(args: argparse.Namespace) -> dict[str, Any]:
    """--train full: wavelib.run_full in a workflow placed for it (wavelib.placement)."""
    online = args.mode == "online"
    kernels = wavelib.FULL_KERNELS
    config, sim_resources = wavelib.placement(args.executor, online, len(kernels))
    opts = {"epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": args.seed}
    with open_workflow(args, config) as wf:
        out = wavelib.run_full(
            wf,
            args.num_sims,
            args.grid_size,
            args.steps,
            online,
            args.step_compute,
            opts,
            sim_resources=sim_resources,
            kernels=kernels,
            prefix=PREFIX,
            keep_data=args.keep_data,
        )
    sims, reports = out["sims"], out["trainers"]
    for r in reports:
        del r["step_ends"]  # in out["overlap"]
    return {
        "mode": args.mode,
        "train": "full",
        "step_compute": args.step_compute,
        "batch": args.batch,
        "lr": args.lr,
        "store": args.store,
        "executor": args.executor,
        "executor_config": config,
        "simulation_resources": "cpus=0" if sim_resources is not None else "default",
        "num_sims": args.num_sims,
        "grid_size": args.grid_size,
        "steps": args.steps,
        "channels": 2,
        "bytes": args.num_sims * args.steps * 2 * args.grid_size**2 * 4,
        "pairs_stored": out["pairs_stored"],
        "wall_s": out["wall_s"],
        "overlap": out["overlap"],
        "simulations": {
            "wall_s": out["sims_wall_s"],
            "run_s": sum(s["run_s"] for s in sims),
            "put_s": sum(s["put_s"] for s in sims),
            "pairs": sum(s["pairs"] for s in sims),
        },
        "trainers": {
            "wall_s": out["train_wall_s"],
            "run_s": sum(r["run_s"] for r in reports),
            "data_s": sum(r["data_s"] for r in reports),
            "wait_s": sum(r["wait_s"] for r in reports),
            "per_kernel": reports,
        },
        "run_dir": str(wf.run_dir.path),
        "store_url": wf.store_url,
    }


def surrogate_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": wavelib.model_name(args.surrogate_kernel),
        "kernel": args.surrogate_kernel,
        "warmup": args.steps,
        "steps": args.surrogate_steps,
        "check_every": args.check_every,
        "max_error": args.max_error,
        "wait": args.surrogate_wait,
        "publish_every": args.publish_every,
    }


def surrogate_report(
    options: dict[str, Any], sims: list[dict[str, Any]], trainers: list[dict[str, Any]]
) -> dict[str, Any]:
    """Totals over the simulations of what their surrogates did, next to the options."""
    per_sim = [{"sim": s["sim"], "period": s["period"], **s["surrogate"]} for s in sims]
    errors = [e for s in per_sim for e in s["errors"]]
    published = next(t["published"] for t in trainers if t["kernel"] == options["kernel"])
    fallbacks = sum(s["fallbacks"] for s in per_sim)
    steps = sum(s["surrogate_steps"] for s in per_sim)
    exact_steps = sum(s["exact_steps"] for s in per_sim)
    exact_s = sum(s["exact_s"] for s in per_sim)
    surrogate_s = sum(s["surrogate_s"] for s in per_sim)
    avoided_s = sum(s["avoided_s"] or 0.0 for s in per_sim)
    return {
        **options,
        "surrogate_steps": steps,
        "exact_steps": exact_steps,
        "checks": len(errors),
        "checks_passed": len(errors) - fallbacks,
        "pass_rate": (len(errors) - fallbacks) / len(errors) if errors else None,
        "fallbacks": fallbacks,
        "mean_check_error": sum(errors) / len(errors) if errors else None,
        "max_check_error": max(errors, default=None),
        "max_final_error": max(s["final_error"] for s in per_sim),
        "setup_s": sum(s["setup_s"] for s in per_sim),
        "waited_s": sum(s["waited_s"] for s in per_sim),
        # time, summed over the simulations: the exact steps (the warm-ups), the surrogate's
        # steps (model, boundary, checks, fallbacks), what those would have cost exactly
        "exact_s": exact_s,
        "exact_step_s": exact_s / exact_steps if exact_steps else None,
        "surrogate_s": surrogate_s,
        "surrogate_step_s": surrogate_s / steps if steps else None,
        "model_s": sum(s["model_s"] for s in per_sim),
        "avoided_s": avoided_s,
        "saved_s": avoided_s - surrogate_s,
        "versions_used": sorted({v for s in per_sim for v in s["versions"]}),
        "versions_published": published,
        "sims_switching_version": sum(len(s["versions"]) > 1 for s in per_sim),
        "per_sim": per_sim,
    }


def table(report: dict[str, Any]) -> str:
    sims, tr = report["simulations"], report["trainers"]
    puts, reads = ("appends", "stream reads") if report["mode"] == "online" else ("puts", "gets")
    mib = report["bytes"] / 2**20
    samples = "pairs of" if report["channels"] == 2 else f"samples of {report['channels']} x"
    lines = [
        f"wave: mode={report['mode']} store={report['store']} executor={report['executor']}: "
        f"{report['num_sims']} simulations x {report['steps']} {samples} "
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
    if report["train"] == "full":
        lines += full_lines(report)
    lines.append(f"total {report['wall_s']:.2f} s; pairs in the store: {report['pairs_stored']}")
    if "surrogate" in report:
        lines += ["", *surrogate_table(report["surrogate"])]
    return "\n".join(lines)


def full_lines(report: dict[str, Any]) -> list[str]:
    """--train full: how it trained, the final losses, the phases and the overlap."""
    tr = report["trainers"]
    losses = ", ".join(f"k{r['kernel']} {r['loss']:.3g}" for r in tr["per_kernel"])
    compute = ", ".join(f"k{r['kernel']} {r['train_s']:.2f} s" for r in tr["per_kernel"])
    overlap = report["overlap"]
    return [
        f"training: full, {tr['per_kernel'][0]['epochs']} epoch(s) of whole frames in batches "
        f"of {report['batch']} pairs, Adam lr {report['lr']:g}; simulation steps wait "
        f"{report['step_compute']:g} s each (simulations' resources: "
        f"{report['simulation_resources']})",
        f"final loss (MSE of the trained model on every pair): {losses}",
        f"phases: simulations {report['simulations']['wall_s']:.2f} s, training "
        f"{tr['wall_s']:.2f} s from the trainers' start (training steps' compute: {compute})"
        + (
            ""
            if overlap is None
            else f"; overlap {overlap:.0%} of the training steps done "
            "before the last simulation ended"
        ),
        "",
    ]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _versions(versions: list[int]) -> str:
    """Sorted version numbers with runs collapsed: 1-5,8."""
    runs: list[list[int]] = []
    for v in versions:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"


def surrogate_table(sur: dict[str, Any]) -> list[str]:
    lines = [
        f"surrogate {sur['model']}: {sur['warmup']} exact warm-up steps, then {sur['steps']} "
        f"steps per simulation; exact check every {sur['check_every']} surrogate steps, "
        f"fallback above {sur['max_error']:g} relative L2 error",
        "",
        "| sim | period | surrogate steps | exact steps | checks | fallbacks | max check error "
        "| final error | versions used |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in sur["per_sim"]:
        lines.append(
            f"| {s['sim']} | {s['period']:.1f} | {s['surrogate_steps']} | {s['exact_steps']} | "
            f"{s['checks']} | {s['fallbacks']} | {_num(s['max_check_error'])} | "
            f"{_num(s['final_error'])} | {_versions(s['versions'])} |"
        )
    lines.append(
        f"| total | | {sur['surrogate_steps']} | {sur['exact_steps']} | {sur['checks']} | "
        f"{sur['fallbacks']} | {_num(sur['max_check_error'])} | "
        f"{_num(sur['max_final_error'])} | {_versions(sur['versions_used'])} |"
    )
    lines += [
        "",
        f"versions published: {_versions(sur['versions_published'])}; "
        f"simulations that switched version mid-run: {sur['sims_switching_version']}; "
        f"mean check error {_num(sur['mean_check_error'])}",
        "",
        f"checks passed: {sur['checks_passed']}/{sur['checks']}"
        + (f" ({sur['pass_rate']:.1%})" if sur["checks"] else ""),
    ]
    if sur["surrogate_steps"] and sur["exact_step_s"] is not None:
        saved = sur["saved_s"]
        lines.append(
            f"time: {sur['surrogate_steps']} surrogate steps took {sur['surrogate_s']:.2f} s "
            f"({1e3 * sur['surrogate_step_s']:.1f} ms a step, model calls "
            f"{sur['model_s']:.2f} s; checks and fallbacks included); the exact steps they "
            f"replaced would have taken {sur['avoided_s']:.2f} s "
            f"({1e3 * sur['exact_step_s']:.1f} ms a step, measured over the warm-ups): "
            + (f"saved {saved:.2f} s" if saved >= 0 else f"cost {-saved:.2f} s more")
            + f"; break-even at an exact step of {1e3 * sur['surrogate_step_s']:.1f} ms"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print(table(report))
    path = Path(report["run_dir"]) / "wave-report.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"report: {path}; records: simai status {report['run_dir']}")


if __name__ == "__main__":
    main()
