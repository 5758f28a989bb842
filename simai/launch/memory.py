"""Huge pages for tasks' large allocations, on by default where the kernel allows them.

Training and array code allocate and free large buffers at every step; each fresh 4 KiB page
is faulted in and zeroed by the kernel, which can take half of a trainer's CPU time. With
transparent huge pages (THP) a 2 MiB page replaces 512 faults. The kernel gives them to
memory that asks (its mode ``madvise``, the common default) or to all memory (``always``);
asking takes a switch per allocator, set in the environment of the processes simai starts:

- ``THP_MEM_ALLOC_ENABLE=1``: PyTorch's CPU allocator aligns allocations of 2 MiB and more
  to 2 MiB and advises huge pages for them;
- ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``: glibc's malloc (C, C++ and Fortran code, and
  the libraries beneath Python) advises huge pages for the memory it maps. NumPy advises
  them for its own large arrays already.

A variable the user set is left as it is. ``SIMAI_HUGE_PAGES=0`` turns the default off for
every task an executor of this process starts; ``Resources(huge_pages=False)`` turns it off
for one task. The setting a task ran with (:func:`huge_pages_setting`) is in its records.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = [
    "HUGE_PAGES_ENV",
    "huge_pages_default",
    "huge_pages_env",
    "huge_pages_setting",
    "thp_mode",
]

#: the environment switch of the default: 0 turns huge pages off for every task
HUGE_PAGES_ENV = "SIMAI_HUGE_PAGES"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
_ON, _OFF = ("1", "on", "yes", "true"), ("0", "off", "no", "false")
_TORCH = "THP_MEM_ALLOC_ENABLE"
_GLIBC = "GLIBC_TUNABLES"
_GLIBC_HUGE = "glibc.malloc.hugetlb"


def thp_mode(path: str = THP_ENABLED) -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise`` or ``never``), or
    None where the kernel does not say (not Linux, or no THP)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def huge_pages_default(environ: Mapping[str, str] | None = None) -> bool:
    """Whether tasks get huge pages unless they opt out: ``$SIMAI_HUGE_PAGES``, on when unset
    or empty.

    Raises ValueError for a value that is neither on (1, on, yes, true) nor off (0, off, no,
    false), so that a typo does not silently keep the default.
    """
    value = (os.environ if environ is None else environ).get(HUGE_PAGES_ENV, "")
    word = value.strip().lower()
    if not word or word in _ON:
        return True
    if word in _OFF:
        return False
    raise ValueError(
        f"{HUGE_PAGES_ENV} must be on (1, on, yes, true) or off (0, off, no, false), not {value!r}"
    )


def huge_pages_setting(wanted: bool, mode: str | None) -> str:
    """What a task that ``wanted`` huge pages runs with, on a kernel of THP ``mode``
    (:func:`thp_mode`): ``on``, ``off`` (it or the default opted out) or ``unavailable``
    (the kernel's mode is ``never``, or it has none)."""
    if not wanted:
        return "off"
    return "on" if mode in ("always", "madvise") else "unavailable"


def huge_pages_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``environ`` (a process's environment) to switch huge pages
    on; those the user set already are left out, and glibc's other tunables are kept."""
    extra = {}
    if _TORCH not in environ:
        extra[_TORCH] = "1"
    tunables = environ.get(_GLIBC, "")
    if _GLIBC_HUGE not in tunables:
        extra[_GLIBC] = f"{tunables}:{_GLIBC_HUGE}=1" if tunables else f"{_GLIBC_HUGE}=1"
    return extra
