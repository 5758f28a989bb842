"""Open a report in headless Chromium: its DOM after load, console errors, a screenshot.

For the report's tests, its benchmark and the documentation screenshot. Each call uses a
fresh profile directory (removed after) and Chromium's process group is killed on timeout,
so nothing outlives the call.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)


def find_chromium() -> str | None:
    """The Chromium executable on PATH, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Opened:
    """What Chromium made of a page: ``dom`` (with ``--dump-dom``), the ``console`` lines it
    logged, those that are errors, and the seconds the browser process took."""

    dom: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _run(args: list[str], timeout: float) -> tuple[str, str, float]:
    with tempfile.TemporaryDirectory(prefix="simai-chromium-") as profile:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*args[:1], *FLAGS, f"--user-data-dir={profile}", *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TimeoutError(f"chromium did not finish within {timeout:g} s") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with status {proc.returncode}: {err[-2000:]}")
    return out, err, seconds


def _console(err: str) -> tuple[list[str], list[str]]:
    lines = [ln for ln in err.splitlines() if ":CONSOLE" in ln]
    errors = [ln for ln in lines if "Uncaught" in ln or "ERROR:CONSOLE" in ln]
    return lines, errors


def open_page(
    page: str | os.PathLike[str],
    *,
    screenshot: str | os.PathLike[str] | None = None,
    size: tuple[int, int] = (1280, 2000),
    timeout: float = 120.0,
    chromium: str | None = None,
) -> Opened:
    """Load ``page`` (an HTML file) in headless Chromium.

    Without ``screenshot``: returns the DOM after load (in a window of ``size``) and the
    console. With it: writes a PNG of the top ``size`` pixels there instead (``dom`` is
    empty). ``seconds`` is the whole browser process's time.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    url = Path(page).absolute().as_uri()
    window = f"--window-size={size[0]},{size[1]}"
    if screenshot is None:
        out, err, seconds = _run([exe, "--dump-dom", window, url], timeout)
    else:
        shot = Path(screenshot).absolute()
        shot.unlink(missing_ok=True)
        out, err, seconds = _run([exe, f"--screenshot={shot}", window, url], timeout)
        if not shot.is_file():
            raise RuntimeError(f"chromium wrote no screenshot to {shot}: {err[-2000:]}")
        out = ""
    console, errors = _console(err)
    return Opened(out, console, errors, seconds)
