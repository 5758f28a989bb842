"""examples/native end to end: a Fortran (and a C) MPI simulation appends its subdomains from
every rank, a Python trainer publishes versions, the simulation steps with them through
libsimai_torch, checks them against the exact kernel and falls back as it reports."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import children, no_new_children

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "native" / "native.py"
RANKS, STEPS, WARMUP, CHECK_EVERY = 2, 120, 10, 10

pytest.importorskip("torch", reason="the example's trainer and libsimai_torch need torch")
for tool in ("mpiexec", "cmake", "gfortran", "cc", "c++"):
    if shutil.which(tool) is None:
        pytest.skip(
            f"the native example needs {tool} (apt-get install cmake gfortran g++ "
            "libopenmpi-dev openmpi-bin)",
            allow_module_level=True,
        )

ROW = re.compile(r"^ +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)  (.+)$", re.M)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """One build and run directory: the first run builds libsimai, later runs reuse it."""
    return tmp_path_factory.mktemp("native-example")


def run_example(out: Path, *options: str) -> str:
    before = children()
    args = ["--out", out, "--steps", STEPS, "--warmup", WARMUP, "--check-every", CHECK_EVERY]
    proc = subprocess.run(
        [sys.executable, SCRIPT, *map(str, args), *options],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert no_new_children(before)
    return proc.stdout


def expand(span: str) -> range:
    """The versions of one span of the report: "4" or "4-9"."""
    first, _, last = span.partition("-")
    return range(int(first), int(last or first) + 1)


def check_report(out: str, *, fallback: bool) -> None:
    """Every rank did its steps and appended, used published versions, checked them and fell
    back exactly when told; the trainer read every entry."""
    trainer = re.search(r"^trainer: (\d+) versions from (\d+) entries$", out, re.M)
    assert trainer is not None, out
    published, entries = map(int, trainer.groups())
    assert published >= 1
    rows = ROW.findall(out)
    assert [int(r[0]) for r in rows] == list(range(RANKS)), out
    surrogate_steps = STEPS - WARMUP
    for _, steps, appended, calls, checks, passed, fallbacks, errors, versions in rows:
        assert int(steps) == STEPS and int(errors) == 0 and int(calls) == surrogate_steps
        assert int(checks) == surrogate_steps // CHECK_EVERY
        assert int(appended) == WARMUP + int(checks)  # warm-up steps, then each check's step
        assert int(passed) + int(fallbacks) == int(checks)
        assert int(fallbacks) == (int(checks) if fallback else 0)
        assert versions != "-", out  # the rank stepped with some published version
        used = [v for part in versions.split(", ") for v in expand(part)]
        assert used == sorted(set(used)) and 1 <= used[0] and used[-1] <= published
    assert entries == sum(int(r[2]) for r in rows)
    log = Path(re.search(r"logged them: (\S+)", out).group(1)).read_text()
    assert re.search(r"heat rank 1 step \d+: model version \d+", log), log


@pytest.mark.timeout(180)
def test_fortran_steps_with_the_published_surrogate(out):
    check_report(run_example(out, "--language", "fortran"), fallback=False)


@pytest.mark.timeout(120)
def test_c_falls_back_when_the_checks_fail(out):
    # float32 surrogate outputs are never within 1e-9 of the exact float64 update
    check_report(run_example(out, "--language", "c", "--max-error", "1e-9"), fallback=True)
