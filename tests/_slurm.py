"""A real single-node Slurm for the tests, started once per session by scripts/slurm.sh.

Import the fixture into tests/conftest.py (``from _slurm import slurm_cluster_fixture``); tests
then ask for ``slurm_cluster``. It skips only when slurmctld is not installed; a cluster that is
installed but fails to start fails the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm.sh"
SLURM_DIR = Path(os.environ.get("SIMAI_SLURM_DIR", "/tmp/simai-slurm"))
_ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"}


@dataclass(frozen=True)
class SlurmCluster:
    """Where the test cluster is and the environment its clients need."""

    partition: str
    node: str
    conf: Path
    cpus: int
    env: dict[str, str] = field(repr=False)

    def run(self, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (sbatch, srun, ...) against this cluster."""
        kw.setdefault("env", self.env)
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)

    def wait_job(self, job_id: str, timeout: float = 60) -> tuple[str, int]:
        """Poll until the job ends; return its final state and exit code.

        Faster than ``sbatch --wait``, which polls at 2 s, 4 s, 8 s ...
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.run("scontrol", "-o", "show", "job", job_id).stdout
            fields = dict(item.partition("=")[::2] for item in shown.split())
            state = fields.get("JobState", "")
            if state and state not in _ACTIVE:
                return state, int(fields.get("ExitCode", "0:0").split(":")[0])
            time.sleep(0.1)
        raise TimeoutError(f"Slurm job {job_id} still not finished after {timeout} s")


def slurm_installed() -> bool:
    """True when the Slurm daemons exist (they live in /usr/sbin, often not on PATH)."""
    return shutil.which("slurmctld") is not None or Path("/usr/sbin/slurmctld").exists()


def _script(command: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SIMAI_SLURM_DIR=str(SLURM_DIR))
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    return subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=120
    )


def _conf_value(conf: Path, key: str, node_line: bool = False) -> str:
    for line in conf.read_text().splitlines():
        if node_line and line.startswith("NodeName="):
            for item in line.split():
                name, _, value = item.partition("=")
                if name == key:
                    return value
        elif line.startswith(key + "="):
            return line.split("=", 1)[1]
    raise KeyError(f"{key} not found in {conf}")


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture() -> Iterator[SlurmCluster]:
    """Start the private Slurm for the session, point SLURM_CONF at it, stop it at the end.

    A cluster that was already running (started by hand or by another session) is used and
    left running.
    """
    if not slurm_installed():
        pytest.skip("Slurm is not installed (run: scripts/slurm.sh install)")
    already_running = _script("status").returncode == 0
    started = _script("start")
    if started.returncode != 0:
        pytest.fail(f"scripts/slurm.sh start failed:\n{started.stderr}", pytrace=False)
    conf = SLURM_DIR / "slurm.conf"
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        partition = _conf_value(conf, "PartitionName").split()[0]
        yield SlurmCluster(
            partition=partition,
            node=socket.gethostname().split(".")[0],
            conf=conf,
            cpus=int(_conf_value(conf, "CPUs", node_line=True)),
            env=dict(os.environ),
        )
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if not already_running:
            stopped = _script("stop")
            if stopped.returncode != 0:
                print(f"scripts/slurm.sh stop failed:\n{stopped.stderr}")
