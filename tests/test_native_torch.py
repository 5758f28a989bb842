"""Surrogates in a C or Fortran program's own process (native/torch: libsimai_torch) against
models Python publishes.

The session builds and installs libsimai with libsimai_torch once (LibTorch from the torch
wheel), then the test programs in native/torch/tests/ (C, C++ through simai_torch.hpp, and
Fortran) as a user's project would (find_package(simai COMPONENTS torch)). The C program takes
commands on stdin, so each test
publishes versions between its calls: outputs equal Python's Surrogate on the same version,
newer versions are swapped in without a restart, and refusals are codes, never a crash.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import simai
from simai.models import publish_model
from simai.models.registry import model_key

NATIVE = Path(__file__).resolve().parent.parent / "native"
# the test batch of native/torch/tests/surrogate.c and surrogate.f90: x[i, j] = i/2 + j/4 - 1
BATCH = (np.arange(4)[:, None] * 0.5 + np.arange(2)[None, :] * 0.25 - 1).astype(np.float32)
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="session")
def torch_native(tmp_path_factory) -> SimpleNamespace:
    """libsimai and libsimai_torch installed into a temporary prefix, and the test programs
    built against them through find_package(simai COMPONENTS torch)."""
    torch = pytest.importorskip("torch", reason="libsimai_torch needs the torch wheel")
    torch_cmake = Path(torch.utils.cmake_prefix_path)
    if not (torch_cmake / "Torch" / "TorchConfig.cmake").exists():
        pytest.skip(f"this torch has no CMake files under {torch_cmake}")
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("libsimai_torch needs cmake and a C++ compiler (apt-get install cmake g++)")
    root = tmp_path_factory.mktemp("native-torch")
    prefix, build, tests = root / "prefix", root / "build", root / "tests"

    def step(*cmd: str | Path) -> None:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"

    # Debug without -g: LibTorch's headers make debug info slow to write
    step("cmake", "-S", NATIVE, "-B", build, f"-DCMAKE_INSTALL_PREFIX={prefix}",
         f"-DCMAKE_PREFIX_PATH={torch_cmake}", "-DCMAKE_BUILD_TYPE=Debug",
         "-DCMAKE_CXX_FLAGS_DEBUG=-O0", "-DCMAKE_C_FLAGS_DEBUG=-O0")  # fmt: skip
    step("cmake", "--build", build, "-j2")
    step("cmake", "--install", build)
    step("cmake", "-S", NATIVE / "torch" / "tests", "-B", tests,
         f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Debug")  # fmt: skip
    step("cmake", "--build", tests, "-j2")
    fortran = tests / "surrogate_fortran"
    return SimpleNamespace(
        check=tests / "surrogate_check",
        cpp=tests / "surrogate_cpp",
        fortran=fortran if fortran.exists() else None,
    )


@pytest.fixture
def store(local_store_url):
    s = simai.open_store(local_store_url)
    yield s
    s.close()


def _linear(w0: float, w1: float, bias: float):
    """A scripted nn.Linear(2, 1): y = w0 x0 + w1 x1 + bias."""
    import torch

    m = torch.nn.Linear(2, 1)
    with torch.no_grad():
        m.weight[:] = torch.tensor([[w0, w1]])
        m.bias[:] = bias
    with warnings.catch_warnings():  # torch.jit says it is deprecated; TorchScript is the format
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(m)


def _python_answer(store, version: int) -> np.ndarray:
    """What Python's Surrogate answers on BATCH with version `version` (the latest)."""
    y, answered = simai.Surrogate("lin", store, poll=0, trusted=True).call(BATCH)
    assert answered == version
    return y.ravel()


class Program:
    """surrogate_check URL lin POLL TRUSTED, driven one command at a time."""

    def __init__(self, exe: Path, url: str, poll: float, trusted: bool = True) -> None:
        self.proc = subprocess.Popen(
            [str(exe), url, "lin", str(poll), "1" if trusted else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.opened = self.line()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 30) -> str:
        return self.lines.get(timeout=timeout)

    def send(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.line()

    def answer(self, command: str = "run") -> tuple[int, np.ndarray]:
        """(version, outputs) of a call that must succeed."""
        words = self.send(command).split()
        assert words[0] == "ok", words
        return int(words[1]), np.array([float(w) for w in words[2:]], np.float32)

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def program(torch_native, store):
    made: list[Program] = []

    def start(poll: float = 0.0, trusted: bool = True) -> Program:
        made.append(Program(torch_native.check, store.url, poll, trusted))
        return made[-1]

    yield start
    for p in made:
        p.close()


# --- a C program runs what Python publishes ------------------------------------------------


def test_c_answers_as_python_does(program, store) -> None:
    publish_model(store, "lin", _linear(1.0, 2.0, 0.5))
    c = program(poll=1.0)
    assert c.opened == "open SIMAI_OK"
    assert c.send("wait 10") == "ok 1"
    version, y = c.answer()
    assert version == 1
    np.testing.assert_allclose(y, _python_answer(store, 1), rtol=1e-6)
    np.testing.assert_allclose(y, BATCH @ [1.0, 2.0] + 0.5, rtol=1e-6)


def test_c_swaps_in_newer_versions_while_it_calls(program, store) -> None:
    publish_model(store, "lin", _linear(1.0, 2.0, 0.5))
    c = program(poll=0.2)
    assert c.answer()[0] == 1
    publish_model(store, "lin", _linear(-1.0, 3.0, -0.25))
    # calls every 10 ms until version 2 answers: no call fails, versions only go up
    words = c.send("until 2 20").split()
    assert words[:2] == ["ok", "2"], words
    np.testing.assert_allclose(np.array(words[2:], np.float32), _python_answer(store, 2), rtol=1e-6)


def test_c_checks_for_versions_only_every_poll_seconds(program, store) -> None:
    publish_model(store, "lin", _linear(1.0, 2.0, 0.5))
    c = program(poll=3600)
    assert c.answer()[0] == 1
    publish_model(store, "lin", _linear(-1.0, 3.0, -0.25))
    assert c.answer()[0] == 1  # not due for a check
    assert c.send("refresh") == "ok 1"  # a check now swaps it in
    version, y = c.answer()
    assert version == 2
    np.testing.assert_allclose(y, _python_answer(store, 2), rtol=1e-6)
    assert c.send("refresh") == "ok 0"


# --- refusals are codes ----------------------------------------------------------------------


def test_untrusted_load_is_refused(program, store) -> None:
    publish_model(store, "lin", _linear(1.0, 2.0, 0.5))
    c = program(trusted=False)
    assert c.opened.startswith("open SIMAI_ERR_PERMISSION model 'lin' would be loaded from ")
    assert "trusted=1" in c.opened


def test_missing_model_is_not_found_until_published(program, store) -> None:
    c = program()
    assert c.send("run").startswith("err SIMAI_ERR_NOT_FOUND no loadable version of model")
    assert c.send("wait 0.2").startswith("err SIMAI_ERR_TIMEOUT")
    # a wait without limit wakes when Python publishes
    c.proc.stdin.write("wait -1\n")  # type: ignore[union-attr]
    c.proc.stdin.flush()  # type: ignore[union-attr]
    publish_model(store, "lin", _linear(1.0, 2.0, 0.5))
    assert c.line() == "ok 1"
    assert c.answer()[0] == 1


def test_versions_that_cannot_load_are_skipped_and_the_held_one_answers(program, store) -> None:
    import torch

    publish_model(store, "lin", _linear(1.0, 2.0, 0.5))
    c = program()
    _, before = c.answer()
    # version 2: a state_dict, which needs Python's class; version 3: damaged TorchScript
    publish_model(store, "lin", (torch.nn.Linear(2, 1).state_dict(), "torch.nn:Linear"))
    assert c.send("refresh").startswith("err SIMAI_ERR_UNSUPPORTED model 'lin' version 2 is not")
    version, y = c.answer()
    assert version == 1 and y.tolist() == before.tolist()
    v = 1 + store.append(model_key("lin", "versions"), {"producer": "test", "time": 0})
    meta = {"name": "lin", "version": v, "format": "torchscript", "metrics": {"version": 99}}
    store.put(model_key("lin", "data", v), b"not a TorchScript archive")
    store.put(model_key("lin", "meta", v), meta)
    store.put(model_key("lin", "latest"), meta)
    assert c.send("refresh").startswith("err SIMAI_ERR_CORRUPT model 'lin' version 3: LibTorch")
    assert c.answer()[0] == 1  # checked on every call (poll 0), skipped for good
    assert publish_model(store, "lin", _linear(-1.0, 3.0, -0.25)) == 4
    version, y = c.answer()
    assert version == 4
    np.testing.assert_allclose(y, _python_answer(store, 4), rtol=1e-6)


def test_bad_batches_are_codes(program, store) -> None:
    publish_model(store, "lin", _linear(1.0, 2.0, 0.5))
    c = program()
    wide = c.send("wide")
    assert wide.startswith("err SIMAI_ERR_INVALID model 'lin' version 1 refused the batch: ")
    assert "4x3 and 2x1" in wide
    assert c.send("small").startswith("err SIMAI_ERR_TOO_SMALL the model's output has 4 floats")
    assert c.answer()[0] == 1


# --- Fortran ---------------------------------------------------------------------------------


def test_fortran_runs_a_real4_batch_and_swaps_versions(torch_native, store) -> None:
    if torch_native.fortran is None:
        pytest.skip("no Fortran compiler: apt-get install gfortran")
    publish_model(store, "lin", _linear(1.0, 2.0, 0.5))
    proc = subprocess.Popen(
        [str(torch_native.fortran), store.url, "lin"], stdout=subprocess.PIPE, text=True, env=ENV
    )
    first = proc.stdout.readline().split()  # type: ignore[union-attr]
    assert first[0] == "1", first
    # x(4, 2) in Fortran is the batch of shape (4, 2) in Python
    np.testing.assert_allclose(np.array(first[1:], float), _python_answer(store, 1), rtol=1e-6)
    publish_model(store, "lin", _linear(-1.0, 3.0, -0.25))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    second = out.split()
    assert second[0] == "2", out
    np.testing.assert_allclose(np.array(second[1:], float), _python_answer(store, 2), rtol=1e-6)


# --- C++ (simai_torch.hpp) -----------------------------------------------------------------------


def test_cpp_threads_see_every_version_python_publishes_while_they_call(torch_native, store):
    """Two C++ threads call one simai::surrogate every 5 ms while Python publishes versions 2
    to 4: no call fails, each answer is its version's model, versions only go up."""
    weights = {1: (1.0, 2.0, 0.5), 2: (-1.0, 3.0, -0.25), 3: (0.5, -0.5, 1.0), 4: (2.0, 0.0, -1.0)}
    publish_model(store, "lin", _linear(*weights[1]))
    proc = subprocess.Popen(
        [str(torch_native.cpp), store.url, "lin", "0.05", "4", "60"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert proc.stdout.readline().split() == ["first", "1"]  # type: ignore[union-attr]
    for v in (2, 3, 4):
        time.sleep(0.3)  # calls run meanwhile
        assert publish_model(store, "lin", _linear(*weights[v])) == v
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    lines = [line.split() for line in out.splitlines()]
    assert not [w for w in lines if w[0] == "err"], out
    seen: dict[str, list[int]] = {"0": [], "1": []}
    for w in lines:
        if w[0] == "v":
            version = int(w[2])
            w0, w1, bias = weights[version]
            y = np.array(w[3:], np.float32)
            np.testing.assert_allclose(y, BATCH @ [w0, w1] + bias, rtol=1e-6, atol=1e-6)
            seen[w[1]].append(version)
    for thread, versions in seen.items():  # printed on each change: strictly up, ending at 4
        assert versions == sorted(set(versions)) and versions[-1] == 4, (thread, out)
    last = {w[0]: w[1:] for w in lines}
    assert int(last["calls"][0]) >= 2 * len(weights) and last["held"] == ["4"]
    assert last["wide"] == ["SIMAI_ERR_INVALID"]
    y4 = [np.array(w[3:], np.float32) for w in lines if w[0] == "v" and w[2] == "4"][0]
    np.testing.assert_allclose(y4, _python_answer(store, 4), rtol=1e-6)
