"""The dragon:// store on the real Dragon runtime.

Dragon needs its own runtime, so one test here starts ONE `dragon -s` session that runs this
file as a pytest of its own over the store contract, torture and integrity suites (their
"dragon" parameter exists only under Dragon: see conftest.py) and the workflow test below,
then checks its summary: every selected test passed, none failed or was skipped, and as many
ran as the suites have store tests. Outside Dragon, a dragon:// store is a clear error.

Run the inner session by hand with: `dragon -s tests/test_store_dragon.py -k dragon -q ...`
(PATH must start with the virtual environment's bin directory).
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import inspect
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import simai
from simai.store.dragon import DragonStore, in_dragon

ROOT = Path(__file__).resolve().parent.parent
DRAGON = shutil.which("dragon", path=str(Path(sys.executable).parent))
SUITES = ["test_store_torture", "test_store_contract", "test_store_integrity"]
"""Run in this order: the torture first, on a fresh DDict, since it measures throughput too."""
NOT_UNDER_DRAGON = {
    "tests/test_store_torture.py::test_a_writer_killed_mid_put_leaves_a_whole_value[dragon]": (
        "a process SIGKILLed while it sends to a DDict leaves a lock of Dragon's shared memory "
        "(dragon_fifolite_lock, in the manager's channel or the pool) held, and every later "
        "client of the DDict spins on it forever: Dragon's channels do not survive a killed "
        "sender, so nothing above them can"
    ),
}
"""Store tests the dragon:// backend cannot pass, and why: deselected in the inner session."""
INNER = ["dragon_test_a_workflow_streams_through_a_dragon_store"]
"""Tests of this file that run only inside the Dragon session."""


# --- outside Dragon ----------------------------------------------------------------------------


def test_outside_dragon_a_dragon_store_says_how_to_start_the_program(tmp_path, monkeypatch):
    for name in ("DRAGON_INF_PD", "DRAGON_DEFAULT_PD"):
        monkeypatch.delenv(name, raising=False)
    assert not in_dragon()
    how = r"not in one: start the program under Dragon: `dragon script.py`, or `dragon -s"
    with pytest.raises(RuntimeError, match="a dragon:// store needs the Dragon runtime.*" + how):
        simai.open_store("dragon://BV0AAAAAAAAAAwAAAAAAAIA1")
    with pytest.raises(RuntimeError, match=how):
        DragonStore.create()
    with pytest.raises(RuntimeError, match=r"Workflow\(store='dragon'\) needs the Dragon"):
        simai.Workflow("w", store="dragon", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="needs the descriptor of a DDict"):
        simai.open_store("dragon://")


# --- one Dragon session for every dragon:// test ------------------------------------------------


def _store_tests() -> int:
    """How many tests of SUITES run on each backend: their variants that take a store."""
    sys.path.insert(0, str(ROOT / "tests"))
    n = 0
    for name in SUITES:
        module = importlib.import_module(name)
        for fname, fn in vars(module).items():
            if not fname.startswith("test_") or not callable(fn):
                continue
            if not {"store", "store_url"} & set(inspect.signature(fn).parameters):
                continue
            variants = 1
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "parametrize":
                    variants *= len(mark.args[1])
            n += variants
    return n


def _pools() -> set[str]:
    return set(glob.glob("/dev/shm/DD*"))


def _mapped(paths: set[str]) -> set[str]:
    """Those of `paths` that some process maps or holds open."""
    used: set[str] = set()
    for proc in glob.glob("/proc/[0-9]*"):
        with contextlib.suppress(OSError):
            with open(f"{proc}/maps") as f:
                used.update(p for p in paths if p in f.read())
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"{proc}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"{proc}/fd/{fd}")
                    if target in paths:
                        used.add(target)
    return used


def _end_group(proc: subprocess.Popen) -> bool:
    """End what is left of `proc`'s process group, SIGINT first (Dragon's own teardown), and
    return whether it is gone."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(DRAGON is None, reason="dragonhpc is not installed (no `dragon` command)")
@pytest.mark.skipif(in_dragon(), reason="already inside Dragon: the dragon tests run directly")
def test_the_store_contract_holds_on_dragon(tmp_path):
    """The contract, torture and integrity suites on dragon://, and a workflow, in ONE
    `dragon -s` session; it leaves no process and no shared memory behind."""
    expected = _store_tests() - len(NOT_UNDER_DRAGON) + len(INNER)
    files = [f"tests/{name}.py" for name in SUITES]
    inner = [f"tests/test_store_dragon.py::{name}" for name in INNER]
    deselect = [arg for node in NOT_UNDER_DRAGON for arg in ("--deselect", node)]
    cmd = [DRAGON, "-s", str(Path(__file__).resolve()), "-q", "-p", "no:cacheprovider"]
    cmd += ["-o", "python_functions=test_* dragon_test_*", "-k", "dragon", *deselect]
    cmd += ["--basetemp", str(tmp_path / "inner"), *files, *inner]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("SIMAI_STORE", None)
    pools = _pools()
    # Its own process group, so that the whole runtime can be ended; not its own session:
    # under start_new_session the Dragon runtime starts and never runs the program.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    try:
        out, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        out, _ = proc.communicate()
        pytest.fail("the dragon -s session did not end within 900 s:\n" + out[-6000:])
    finally:
        gone = _end_group(proc)
        new = _pools() - pools
        left = new - _mapped(new)  # ours: no live process uses them
        for path in left:
            with contextlib.suppress(OSError):
                os.unlink(path)
    shown = "\n".join(line for line in out.splitlines() if "dragon-config" not in line)
    start = shown.find("= FAILURES =")
    tail = shown[max(start - 200, 0) :][:12000] if start >= 0 else shown[-6000:]
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*) in [\d.]+s", out, re.M)
    assert summary, f"no pytest summary from the dragon -s session:\n{tail}"
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary[-1])}
    assert counts.get("passed") == expected, f"{counts}, expected {expected} passed:\n{tail}"
    for bad in ("failed", "error", "errors", "skipped", "xfailed", "xpassed"):
        assert bad not in counts, f"{counts}:\n{tail}"
    assert proc.returncode == 0, tail
    assert gone, "processes of the dragon -s session outlived it"
    assert not left, f"the dragon -s session left shared memory behind: {sorted(left)}"


# --- inside the Dragon session ----------------------------------------------------------------


def producer(n: int) -> None:
    store = simai.open_store()
    store.create_stream("samples", maxlen=4, policy="block")
    for i in range(n):
        store.append("samples", np.full(16, i, np.float32), timeout=60)
    store.close_stream("samples")


def consumer() -> None:
    store = simai.open_store()
    store.create_stream("samples", maxlen=4, policy="block")
    seen = [int(v[0]) for v in store.stream("samples", group="trainer", timeout=60)]
    store.put("seen", np.array(seen))


def dragon_test_a_workflow_streams_through_a_dragon_store(tmp_path):
    """Workflow(store="dragon") under Dragon: a DDict for the run, found by its components
    through $SIMAI_STORE, destroyed at the end."""
    with simai.Workflow("dragon", store="dragon", run_dir=tmp_path / "run") as wf:
        assert wf.store_url.startswith("dragon://")
        assert os.environ["SIMAI_STORE"] == wf.store_url
        sim = wf.start(producer, 20)
        train = wf.start(consumer)
        assert sim.wait(120) == "done" and train.wait(120) == "done"
        store = wf.store()
        np.testing.assert_array_equal(store.get("seen"), np.arange(20))
        assert store.stream_info("samples")["dropped"] == 0
        store.close()
    with pytest.raises(ConnectionError, match="cannot attach"):
        simai.open_store(wf.store_url)
    with pytest.raises(
        RuntimeError,
        match=r"could not create a DDict of total_mem=1 bytes .*"
        r"give more memory",
    ):
        DragonStore.create(total_mem=1)
    with pytest.raises(RuntimeError, match=r"did not answer within timeout=0.0001 s") as e:
        DragonStore.create(timeout=0.0001)
    assert "give more memory" not in str(e.value)


if __name__ == "__main__":  # `dragon -s tests/test_store_dragon.py PYTEST-ARGS`
    sys.exit(pytest.main(sys.argv[1:]))
