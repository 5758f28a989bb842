"""MPI launcher command lines: ``mpiexec`` (Open MPI, MPICH/Hydra) or Slurm's ``srun``.

Everything here is a pure function of its arguments except :func:`detect_launcher`,
which looks at the environment and ``PATH`` (and asks ``mpiexec --version`` once).
Open MPI refuses to run as root or to put more ranks than cores on a node unless
``OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`` and
``OMPI_MCA_rmaps_base_oversubscribe=1`` are set; simai never sets them for you.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from simai.checks import check_int

__all__ = ["MpiLauncher", "detect_launcher", "launch_argv", "mpiexec_flavour"]

Flavour = Literal["openmpi", "mpich", "srun"]


@dataclass(frozen=True)
class MpiLauncher:
    """Which launcher to run (``flavour``), where it is, and extra arguments to add."""

    flavour: Flavour
    executable: str
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.flavour not in ("openmpi", "mpich", "srun"):
            raise ValueError(f"unknown MPI launcher flavour {self.flavour!r}")


@functools.lru_cache(maxsize=16)
def mpiexec_flavour(executable: str) -> Flavour:
    """``"openmpi"`` or ``"mpich"`` from the output of ``executable --version``."""
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise FileNotFoundError(f"cannot run MPI launcher {executable!r}: {exc}") from exc
    text = (out.stdout + out.stderr).lower()
    if "open mpi" in text or "openrte" in text or "open-mpi" in text:
        return "openmpi"
    if "hydra" in text or "mpich" in text or "intel(r) mpi" in text:
        return "mpich"
    raise ValueError(f"cannot tell which MPI {executable!r} is from its --version output")


def detect_launcher(env: Mapping[str, str] | None = None) -> MpiLauncher:
    """The launcher to use here.

    ``SIMAI_MPI_LAUNCHER`` (a path or name of ``mpiexec``/``mpirun``/``srun``) wins; inside a
    Slurm allocation (``SLURM_JOB_ID`` set) ``srun``; otherwise ``mpiexec`` or ``mpirun``
    found on ``PATH``.
    """
    env = os.environ if env is None else env
    path = env.get("PATH")
    chosen = env.get("SIMAI_MPI_LAUNCHER")
    if chosen:
        exe = shutil.which(chosen, path=path)
        if exe is None:
            raise FileNotFoundError(f"SIMAI_MPI_LAUNCHER={chosen!r} is not an executable")
        if os.path.basename(exe) == "srun":
            return MpiLauncher("srun", exe, ("--mpi=pmix",))
        return MpiLauncher(mpiexec_flavour(exe), exe)
    if env.get("SLURM_JOB_ID"):
        exe = shutil.which("srun", path=path)
        if exe is not None:
            return MpiLauncher("srun", exe, ("--mpi=pmix",))
    for name in ("mpiexec", "mpirun"):
        exe = shutil.which(name, path=path)
        if exe is not None:
            return MpiLauncher(mpiexec_flavour(exe), exe)
    raise FileNotFoundError(
        "no MPI launcher found: install Open MPI or MPICH (mpiexec on PATH), run inside a "
        "Slurm allocation (srun), or set SIMAI_MPI_LAUNCHER"
    )


def launch_argv(
    launcher: MpiLauncher,
    argv: Sequence[str],
    ranks: int,
    *,
    ranks_per_node: int | None = None,
    cpus_per_rank: int = 1,
    gpus_per_rank: int = 0,
    hosts: Sequence[str] | None = None,
) -> list[str]:
    """The full command line that starts ``argv`` as ``ranks`` MPI ranks."""
    check_int("ranks", ranks, 1)
    if not argv:
        raise ValueError("argv is empty")
    hosts = list(hosts) if hosts else []
    out = [launcher.executable, *launcher.extra_args]
    if launcher.flavour == "srun":
        out += ["-n", str(ranks)]
        if ranks_per_node:
            out += [f"--ntasks-per-node={ranks_per_node}"]
            out += [f"--nodes={math.ceil(ranks / ranks_per_node)}"]
        if cpus_per_rank > 1:
            out += [f"--cpus-per-task={cpus_per_rank}"]
        if gpus_per_rank:
            out += [f"--gpus-per-task={gpus_per_rank}"]
        if hosts:
            out += [f"--nodelist={','.join(hosts)}"]
    elif launcher.flavour == "openmpi":
        out += ["-n", str(ranks)]
        if ranks_per_node:
            mapping = f"ppr:{ranks_per_node}:node"
        else:
            mapping = "slot"
        if cpus_per_rank > 1:
            mapping += f":PE={cpus_per_rank}"
        if ranks_per_node or cpus_per_rank > 1:
            out += ["--map-by", mapping]
        if hosts:
            slots = ranks_per_node or math.ceil(ranks / len(hosts))
            out += ["--host", ",".join(f"{h}:{slots}" for h in hosts)]
    else:
        out += ["-n", str(ranks)]
        if ranks_per_node:
            out += ["-ppn", str(ranks_per_node)]
        if hosts:
            out += ["-hosts", ",".join(hosts)]
    return out + [str(a) for a in argv]
