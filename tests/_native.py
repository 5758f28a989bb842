"""The native clients built once per session, and the fixture values their test programs share.

`native_fixture` is libsimai built and installed with CMake into a temporary prefix, and the test
programs of native/tests/ built against it through find_package(simai), as a user's project
would build them. Import it into tests/conftest.py (``from _native import native_fixture``);
tests ask for `native`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

NATIVE = Path(__file__).resolve().parent.parent / "native"

# the fixture arrays: native/tests/check.c has the same table
DTYPES = ["|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8",
          "<f16", "<c8", "<c16", "<c32", ">f8", ">i4"]  # fmt: skip
SHAPES = [(), (0,), (7,), (3, 4), (2, 3, 4), (2, 1, 3, 2), (100, 50)]
JSON = {"a": [1, 2.5, "x\u00e9"], "b": None, "c": True}
LONG = "long/" + "k" * 300


def _pattern(n: int, seed: int, boolean: bool = False) -> np.ndarray:
    """The bytes of fixture value `seed`, as check.c's pattern() makes them."""
    b = ((np.arange(n, dtype=np.uint64) * 131 + seed * 7 + 1) & 0xFF).astype(np.uint8)
    return b & 1 if boolean else b


def _fixture(d: int, i: int) -> np.ndarray:
    dtype, shape = np.dtype(DTYPES[d]), SHAPES[i]
    n = int(np.prod(shape)) * dtype.itemsize
    return _pattern(n, d * len(SHAPES) + i, DTYPES[d][1] == "b").view(dtype).reshape(shape)


def _run(*args: str, env: dict | None = None, timeout: float = 30) -> str:
    """Run a test program; its stdout, or a failure showing both outputs."""
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session", name="native")
def native_fixture(tmp_path_factory) -> SimpleNamespace:
    """libsimai built and installed into a temporary prefix, and the test programs built
    against it through find_package(simai)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if shutil.which("cmake") is None or cc is None:
        pytest.skip("the native clients need cmake and a C compiler (apt-get install cmake gcc)")
    root = tmp_path_factory.mktemp("native")
    prefix, build, tests = root / "prefix", root / "build", root / "tests"
    quiet = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}

    def step(*cmd: str | Path) -> None:
        done = subprocess.run([str(c) for c in cmd], **quiet)
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}"

    # Debug: a quarter of a Release build's time, and the same code
    step("cmake", "-S", NATIVE, "-B", build, f"-DCMAKE_INSTALL_PREFIX={prefix}",
         "-DCMAKE_BUILD_TYPE=Debug")  # fmt: skip
    step("cmake", "--build", build, "-j2")
    step("cmake", "--install", build)
    step("cmake", "-S", NATIVE / "tests", "-B", tests, f"-DCMAKE_PREFIX_PATH={prefix}",
         "-DCMAKE_BUILD_TYPE=Debug")  # fmt: skip
    step("cmake", "--build", tests, "-j2")
    fortran = tests / "check_fortran"
    return SimpleNamespace(
        prefix=prefix,
        check=tests / "simai_check",
        cpp=tests / "check_cpp",
        fortran=fortran if fortran.exists() else None,
        cc=cc,
    )
