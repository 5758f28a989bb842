"""Processes a test started, for the no-orphans checks."""

from __future__ import annotations

import time

import psutil


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def no_new_children(before: set[int], timeout: float = 10.0) -> bool:
    """True once every process this test started has ended (zombies count as ended)."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid in children() - before:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def eventually(condition, timeout=10.0):
    """Poll ``condition`` until true (a killed process may take a moment to die)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
