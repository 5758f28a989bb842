"""An MPI simulation in Fortran (or C) whose kernel a surrogate, retrained as it runs, takes over.

    python examples/native/native.py                      # Fortran, 2 ranks
    python examples/native/native.py --language c --points 512 --steps 2000

The simulation (`sim.f90`, the same in `sim.c`) steps a 1-D heat equation split over MPI
ranks, launched as a workflow component with `simai.Command([...], ranks=N)`. For its first
`--warmup` steps every rank runs the exact stencil and appends its subdomain to the stream
`heat/samples` through libsimai's Fortran module; the trainer (a Python component) fits the
stencil, `nn.Linear(3, 1)` on (u_{i-1}, u_i, u_{i+1}) -> new u_i, by least squares on all
samples so far and publishes a TorchScript version every `--publish-every` entries. From then
on the simulation steps with the newest version, in its own process through
libsimai_torch's Fortran module (new versions swapped in at most every `--poll` seconds);
every `--check-every` surrogate steps it runs the exact stencil too, appends that sample, and
falls back to the exact step when the surrogate's update is off by more than `--max-error`
(relative L2 of u_new - u), as `examples/wave --surrogate` does. Each rank logs the versions
it used and puts a report in the store; this script prints them.

The first run builds libsimai with LibTorch (the torch wheel's) into `<out>/native-prefix`
(about a minute; later runs reuse it; `--native-prefix` names another install), then the
two programs with CMake into `<out>/build`, through `find_package(simai COMPONENTS fortran
torch)`. It needs cmake, gfortran, gcc, g++ and MPI (Debian: `apt-get install cmake gfortran
g++ libopenmpi-dev openmpi-bin`). As root, Open MPI needs OMPI_ALLOW_RUN_AS_ROOT: this script
passes it (and oversubscription) to the command, as a user who means it does.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np

import simai

HERE = Path(__file__).resolve().parent
NATIVE = HERE.parents[1] / "native"
STREAM, MODEL = "heat/samples", "heat"
# Open MPI refuses to run as root, or more ranks than cores, without these (simai never sets
# them); one LibTorch thread a rank, as the ranks share the cores.
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMP_NUM_THREADS": "1",
}


def cmake(*args: str | Path) -> None:
    """Run cmake, raising with its output when it fails."""
    done = subprocess.run(["cmake", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"cmake {' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}")


def install_native(prefix: Path, build: Path) -> None:
    """libsimai, its Fortran module and libsimai_torch into `prefix`, unless already there."""
    if (prefix / "lib" / "cmake" / "simai" / "simaiConfig.cmake").exists():
        return
    import torch

    print(f"building libsimai with LibTorch into {prefix} (about a minute, once)", flush=True)
    torch_prefix = f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"
    cmake("-S", NATIVE, "-B", build, f"-DCMAKE_INSTALL_PREFIX={prefix}", torch_prefix,
          "-DCMAKE_BUILD_TYPE=Release")  # fmt: skip
    cmake("--build", build, "-j2")
    cmake("--install", build)


def build_programs(prefix: Path, build: Path) -> Path:
    """heat_fortran and heat_c built against the install at `prefix`; their directory."""
    cmake("-S", HERE, "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release")
    cmake("--build", build, "-j2")
    return build


def fit(rows: np.ndarray):
    """nn.Linear(3, 1) with the least-squares stencil of rows (u_{i-1}, u_i, u_{i+1}, new u_i)."""
    import torch

    a = np.hstack([rows[:, :3], np.ones((len(rows), 1))])
    coef, *_ = np.linalg.lstsq(a, rows[:, 3], rcond=None)
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight[:] = torch.tensor(coef[:3]).reshape(1, 3)
        model.bias[:] = float(coef[3])
    return model, float(np.sqrt(np.mean((a @ coef - rows[:, 3]) ** 2)))


def trainer(publish_every: int) -> None:
    """Fit the stencil to every sample so far and publish it as a version, after the first
    entry and then every `publish_every`, until the stream ends (the driver closes it when
    the simulation has ended)."""
    import torch

    from simai.models import publish_model

    torch.set_num_threads(1)
    store = simai.open_store()
    rows: list[np.ndarray] = []
    published = 0
    for entry in store.stream(STREAM, timeout=120):
        rows.append(entry)
        if len(rows) % publish_every == 0 or len(rows) == 1:
            model, rmse = fit(np.concatenate(rows))
            publish_model(store, MODEL, model, step=len(rows), metrics={"rmse": rmse})
            published += 1
    store.put("heat/trainer", {"entries": len(rows), "versions": published})


def spans(versions: list[int]) -> str:
    """Versions in order, runs of consecutive ones shortened: "1, 4-9"."""
    runs: list[list[int]] = []
    for v in versions:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs) or "-"


def report(reports: list[dict], trainer: dict) -> str:
    """The per-rank table, and the trainer's line."""
    head = f"{'rank':>4} {'steps':>6} {'appended':>8} {'surrogate':>9} {'checks':>6} "
    head += f"{'passed':>6} {'fallbacks':>9} {'errors':>6}  versions used"
    lines = [head]
    for r in reports:
        lines.append(
            f"{r['rank']:>4} {r['steps']:>6} {r['appended']:>8} {r['surrogate_calls']:>9} "
            f"{r['checks']:>6} {r['passed']:>6} {r['fallbacks']:>9} {r['errors']:>6}  "
            + spans(r["versions"])
        )
    lines.append(f"trainer: {trainer['versions']} versions from {trainer['entries']} entries")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> tuple[list[dict], dict, Path]:
    """Build what is missing, run the workflow; the ranks' reports, the trainer's, and the
    simulation's log (where the ranks log the versions they used)."""
    out = Path(args.out).resolve()
    prefix = Path(args.native_prefix).resolve() if args.native_prefix else out / "native-prefix"
    install_native(prefix, out / "native-build")
    exe = build_programs(prefix, out / "build") / f"heat_{args.language}"
    argv = [exe, args.points, args.steps, args.warmup, args.check_every, args.max_error, args.poll]
    sim = simai.Command([str(a) for a in argv], ranks=args.ranks, env=MPI_ENV, name="heat")
    with simai.Workflow("native", run_dir=out / "run") as wf:
        train = wf.start(trainer, args.publish_every, resources=simai.Resources(cpus=0))
        heat = wf.start(sim)
        heat.wait()
        store = wf.store()
        store.close_stream(STREAM)  # Fortran has no close: the stream ends with the program
        train.wait()
        reports = [store.get(f"heat/report/{r}") for r in range(args.ranks)]
        return reports, store.get("heat/trainer"), Path(heat.log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--language", default="fortran", choices=["fortran", "c"])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--points", type=int, default=64, help="cells per rank")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20, help="exact steps before the surrogate")
    parser.add_argument("--check-every", type=int, default=10)
    parser.add_argument("--max-error", type=float, default=1e-2)
    parser.add_argument("--poll", type=float, default=0.0, help="seconds between version checks")
    parser.add_argument("--publish-every", type=int, default=8, help="entries per version")
    parser.add_argument("--out", default="runs/native", help="build and run directory")
    parser.add_argument("--native-prefix", help="an install of native/ with libsimai_torch")
    args = parser.parse_args()
    reports, trained, log = run(args)
    print(f"heat in {args.language}: {args.ranks} ranks x {args.points} cells, {args.steps} steps")
    print(report(reports, trained))
    print(f"versions as the ranks logged them: {log}")


if __name__ == "__main__":
    main()
