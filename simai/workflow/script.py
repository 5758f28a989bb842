"""Running a user's workflow script in this process, as ``simai run`` and Slurm jobs do."""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from simai.workflow.workflow import ENV_RESUME


def script_path(script: str | os.PathLike[str]) -> Path:
    """The absolute path of a workflow script, or FileNotFoundError if there is none."""
    path = Path(script).absolute()
    if not path.is_file():
        raise FileNotFoundError(f"no workflow script {str(script)!r}")
    return path


def run_script(
    script: str | os.PathLike[str], args: Sequence[str] = (), *, resume: bool = False
) -> int:
    """Run `script` with `args` as ``python SCRIPT ARGS...`` would, in this process, and
    return its exit status (what it passed to ``sys.exit``, or 0).

    ``resume=True`` has every Workflow it opens continue its run ($SIMAI_RESUME). What the
    script raises, other than SystemExit, goes to the caller.
    """
    path = script_path(script)
    if resume:
        os.environ[ENV_RESUME] = "1"
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(path.resolve().parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
