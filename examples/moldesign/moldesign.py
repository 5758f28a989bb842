"""Molecular design: steer real xTB simulations towards the QM9 molecules with the highest IP.

    python examples/moldesign/moldesign.py                     # greedy vs random, budget 200
    python examples/moldesign/moldesign.py --policy ucb --seed 3
    python examples/moldesign/moldesign.py --search-space full # all 130,831 QM9 molecules
    python examples/moldesign/moldesign.py --store redis --executor parsl

Each simulation is SMILES -> RDKit 3D geometry -> vertical ionization potential from xTB
(chem.py); a k-nearest-neighbours model on Morgan fingerprints, retrained in the background
as results arrive, ranks the molecules not yet simulated, and simai.steer keeps every worker
busy with the best-ranked ones. With --compare (the default) the random baseline runs next
on the same budget and seed. Writes, under --out: one CSV per policy with every simulation
(failures included, with the reason), a plot of the best IP found against simulations done
and against time, and summary.json with the workers' busy fraction and idle time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # xTB single-threaded; workers inherit it

import argparse  # noqa: E402
import csv  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from chem import KNN, Fingerprints, ionization_potential, warm_up  # noqa: E402
from qm9 import search_space  # noqa: E402

import simai  # noqa: E402
from simai.steer import Result, Steering, SteeringOptions  # noqa: E402

HERE = Path(__file__).resolve().parent
GROUND_TRUTH = HERE / "data" / "ground_truth.csv"
CSV_FIELDS = [
    "order",
    "qm9_index",
    "smiles",
    "ip_ev",
    "ok",
    "error",
    "batch",
    "model_version",
    "started_s",
    "ended_s",
    "duration_s",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=200, help="successful simulations")
    parser.add_argument("--initial", type=int, default=20, help="random picks before a model")
    parser.add_argument("--batch-size", type=int, default=10, help="new results per retrain")
    parser.add_argument("--policy", default="greedy", choices=["greedy", "ucb", "random"])
    parser.add_argument(
        "--mode",
        default="async",
        choices=["async", "batch"],
        help="async: workers never wait once a model exists (random picks fill the wait for "
        "the first one); batch: train, score, run the top batch, wait, repeat",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the random baseline on the same budget and seed (default: yes)",
    )
    parser.add_argument(
        "--search-space",
        default="subset",
        help="'subset' (the committed 10,000 QM9 molecules), 'full' (all of QM9), "
        "or a CSV with qm9_index,smiles columns",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N candidates")
    parser.add_argument("--backend", default="tblite", choices=["tblite", "xtb"])
    parser.add_argument("--sim-walltime", type=float, default=120.0, help="seconds per xTB run")
    parser.add_argument("--store", default="local", choices=["local", "file", "redis"])
    parser.add_argument("--executor", default="local", choices=["local", "parsl"])
    parser.add_argument("--cores", type=int, default=None, help="simulation workers")
    parser.add_argument("--out", type=Path, default=Path("runs/moldesign"))
    parser.add_argument("--run-dir", type=Path, default=None, help="default: <out>/run")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: <out>/cache")
    parser.add_argument("--resume", action="store_true", help="continue a stopped run")
    parser.add_argument("--quiet", action="store_true", help="no live progress display")
    args = parser.parse_args(argv)
    for name in ("budget", "initial", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.budget < args.initial:
        parser.error(f"--budget ({args.budget}) is below --initial ({args.initial})")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    usable = len(os.sched_getaffinity(0))
    if args.cores is not None and not 1 <= args.cores <= usable:
        parser.error(f"--cores must be between 1 and the {usable} cores this process may use")
    return args


def executor_config(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    cores = args.cores or len(os.sched_getaffinity(0))
    if args.executor == "parsl":
        from simai.launch.parsl import default_config

        return {"config": default_config(cores, run_dir=run_dir / "parsl")}
    return {"cores": cores} if args.cores else {}


def write_csv(path: Path, rows: list[tuple[int, str]], results: list[Result], t0: float) -> None:
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, CSV_FIELDS, lineterminator="\n")
        out.writeheader()
        for n, r in enumerate(results, 1):
            out.writerow(
                {
                    "order": n,
                    "qm9_index": rows[r.index][0],
                    "smiles": r.candidate,
                    "ip_ev": "" if r.value is None else f"{r.value:.6f}",
                    "ok": int(r.ok),
                    "error": r.error or "",
                    "batch": r.batch,
                    "model_version": r.model_version,
                    "started_s": "" if r.started is None else f"{r.started - t0:.3f}",
                    "ended_s": "" if r.ended is None else f"{r.ended - t0:.3f}",
                    "duration_s": "" if r.duration is None else f"{r.duration:.4f}",
                }
            )


def best_so_far(results: list[Result], t0: float) -> tuple[list[int], list[float], list[float]]:
    """(successful simulations done, seconds since start, best IP so far), in end order."""
    n, seconds, best = [], [], []
    top = float("-inf")
    for r in sorted((r for r in results if r.ok), key=lambda r: r.ended or 0.0):
        top = max(top, r.value)  # type: ignore[arg-type]
        n.append(len(n) + 1)
        seconds.append((r.ended or t0) - t0)
        best.append(top)
    return n, seconds, best


def plot(path: Path, curves: dict[str, dict], title: str, true_best: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for policy, c in curves.items():
        ax1.step(c["n"], c["best"], where="post", label=policy)
        ax2.step(c["seconds"], c["best"], where="post", label=policy)
    for ax in (ax1, ax2):
        if true_best is not None:
            ax.axhline(true_best, color="grey", ls="--", lw=1, label="best in search space")
        ax.grid(alpha=0.3)
    ax1.set_xlabel("successful simulations")
    ax2.set_xlabel("seconds since the loop started")
    ax1.set_ylabel("best ionization potential found (eV)")
    ax1.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def true_best(rows: list[tuple[int, str]]) -> float | None:
    """The highest IP in the search space, if the ground-truth table covers all of it."""
    if not GROUND_TRUTH.exists():
        return None
    with open(GROUND_TRUTH, newline="") as f:
        ip = {int(r["qm9_index"]): r["ip_ev"] for r in csv.DictReader(f)}
    if any(i not in ip for i, _ in rows):
        return None
    values = [float(ip[i]) for i, _ in rows if ip[i]]
    return max(values) if values else None


def steer(
    wf: simai.Workflow,
    ai: simai.Executor,
    policy: str,
    rows: list[tuple[int, str]],
    knn: KNN,
    args: argparse.Namespace,
    log,
) -> tuple[dict[str, Any], dict[str, list]]:
    """One policy's steering run: writes its CSV; returns its summary and best-so-far curve."""
    smiles = [s for _, s in rows]
    steering = Steering(
        smiles,
        functools.partial(ionization_potential, backend=args.backend),
        knn.train,
        knn.predict,
        policy=policy,
        options=SteeringOptions(
            budget=args.budget,
            initial=args.initial,
            batch_size=args.batch_size,
            seed=args.seed,
            name=policy,
            sim_walltime=args.sim_walltime,
            mode=args.mode,
            # async as the committed results were measured: no idle wait for the first model
            random_fill=args.mode == "async",
        ),
        workflow=wf,
        ai_executor=ai,
    )
    t0 = time.time()
    ok, best = 0, None
    for r in steering:
        if not r.ok:
            log(f"[{policy}] failed: {r.candidate!r}: {r.error}")
            continue
        ok += 1
        if best is None or r.value > best.value:
            best = r
            simai.log_metric(f"best_ip_ev:{policy}", best.value, step=ok)
        simai.log_metric(f"model_version:{policy}", steering.model_version, step=ok)
        if ok % 50 == 0:
            log(
                f"[{policy}] {ok} simulations, best {best.value:.3f} eV ({best.candidate}), "
                f"model v{steering.model_version}"
            )
    results = steering.results
    stats = steering.stats
    t0 = min([r.started for r in results if r.started] + [t0])
    csv_path = args.out / f"{policy}.csv"
    write_csv(csv_path, rows, results, t0)
    n, seconds, best = best_so_far(results, t0)
    top = steering.best(10)
    summary = {
        "csv": csv_path.name,
        "simulations_ok": sum(r.ok for r in results),
        "simulations_failed": sum(not r.ok for r in results),
        "failures": [{"smiles": r.candidate, "error": r.error} for r in results if not r.ok],
        "best": [{"smiles": r.candidate, "ip_ev": r.value} for r in top],
        "top10_mean_ev": sum(r.value for r in top) / len(top) if top else None,
        "trainings": steering.trainings,
        "stats": stats,
    }
    if top:
        log(
            f"[{policy}] {stats['simulations_done']} simulations ok, "
            f"{stats['simulations_failed']} failed, {stats['retrains']} retrains, "
            f"wall {stats['wall_time']:.1f} s; workers busy "
            f"{100 * stats['busy_fraction']:.1f}% ({stats['slots']} slots, idle "
            f"{stats['idle_time']:.1f} slot-s); best {top[0].value:.3f} eV {top[0].candidate}"
        )
    else:
        log(f"[{policy}] no successful simulation")
    return summary, {"n": n, "seconds": seconds, "best": best}


def run(args: argparse.Namespace, log=print) -> dict[str, Any]:
    """Run the chosen policy (and the random baseline with --compare); return the summary."""
    rows = search_space(args.search_space)
    if args.limit is not None:
        rows = rows[: args.limit]
    smiles = [s for _, s in rows]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    fingerprints, cached = Fingerprints.build(smiles, args.cache_dir or out / "cache", log=log)
    fp_s = time.monotonic() - t
    log(
        f"{len(smiles)} candidates; fingerprints {'read from' if cached else 'written to'} "
        f"{fingerprints.npy} in {fp_s:.1f} s"
    )
    knn = KNN(fingerprints)
    policies = [args.policy]
    if args.compare and args.policy != "random":
        policies.append("random")
    run_dir = args.run_dir or out / "run"
    summary: dict[str, Any] = {
        "search_space": args.search_space,
        "candidates": len(smiles),
        "budget": args.budget,
        "initial": args.initial,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "backend": args.backend,
        "store": args.store,
        "executor": args.executor,
        "fingerprints_s": fp_s,
        "fingerprints_cached": cached,
        "policies": {},
    }
    curves: dict[str, dict] = {}
    # the model gets its own worker, and every worker is warmed (imports done, tables loaded)
    # before steering starts: the loop's busy fraction then measures steering, not start-up
    with simai.LocalExecutor(cores=1, prestart=1) as ai:
        t = time.monotonic()
        warm = ai.submit(knn.warm)
        knn.warm()  # here too: models come back through this process, unpickled by sklearn
        warm.result()
        summary["ai_warmup_s"] = time.monotonic() - t
        log(f"model worker ready in {summary['ai_warmup_s']:.1f} s")
        with (
            simai.Workflow(
                "moldesign",
                store=args.store,
                executor=args.executor,
                options=simai.WorkflowOptions(executor_config=executor_config(args, run_dir)),
                run_dir=run_dir,
                resume=args.resume or None,
            ) as wf,
            simai.observe.progress(wf, quiet=args.quiet),
        ):
            t = time.monotonic()
            slots = args.cores or len(os.sched_getaffinity(0))
            for f in [wf.executor.submit(warm_up) for _ in range(slots)]:
                f.result()
            summary["sim_warmup_s"] = time.monotonic() - t
            log(f"{slots} simulation workers ready in {summary['sim_warmup_s']:.1f} s")
            for policy in policies:
                summary["policies"][policy], curves[policy] = steer(
                    wf, ai, policy, rows, knn, args, log
                )
    plot_path = out / "best-ip.png"
    title = f"{len(smiles)} candidates, budget {args.budget}, seed {args.seed}"
    plot(plot_path, curves, title, true_best(rows))
    summary["plot"] = plot_path.name
    summary["curves"] = curves
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"wrote {plot_path}, {out / 'summary.json'} and one CSV per policy in {out}")
    log(f"records in {run_dir}: `simai status {run_dir}`, `simai report {run_dir}`")
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args, log=lambda m: print(m, flush=True))
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as e:
        sys.exit(f"moldesign: {e}")
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped; continue with --resume", flush=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
