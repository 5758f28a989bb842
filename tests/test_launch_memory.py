"""Huge pages for tasks' large allocations, and tasks of cpus=0 that take no core."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

import simai
from simai.launch import Command, LocalExecutor, Resources
from simai.launch.memory import (
    HUGE_PAGES_ENV,
    huge_pages_default,
    huge_pages_env,
    huge_pages_setting,
    thp_mode,
)
from simai.workflow import Records

MODE = thp_mode()
THP = MODE in ("always", "madvise")
needs_thp = pytest.mark.skipif(not THP, reason=f"the kernel gives no huge pages (THP {MODE})")
needs_madvise = pytest.mark.skipif(
    MODE != "madvise", reason=f"only THP madvise tells opted-out memory apart (THP {MODE})"
)


@pytest.fixture(autouse=True)
def default_switch(monkeypatch):
    monkeypatch.delenv(HUGE_PAGES_ENV, raising=False)
    for var in ("THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES"):
        monkeypatch.delenv(var, raising=False)


def anon_huge_kib_after_torch_alloc() -> int:
    """Allocate and touch a 64 MiB tensor; the process's AnonHugePages in KiB."""
    import torch

    tensor = torch.ones(16 << 20)
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                kib = int(line.split()[1])
                break
    del tensor
    return kib


def allocator_env() -> dict[str, str | None]:
    return {var: os.environ.get(var) for var in ("THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES")}


def priority_and_cores() -> tuple[int, list[int]]:
    return os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0))


# -- the settings ----------------------------------------------------------------------------


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert thp_mode(str(path)) == "madvise"
    path.write_text("[always] madvise never\n")
    assert thp_mode(str(path)) == "always"
    assert thp_mode(str(tmp_path / "missing")) is None


def test_setting_follows_the_wish_and_the_kernel():
    assert huge_pages_setting(True, "madvise") == "on"
    assert huge_pages_setting(True, "always") == "on"
    assert huge_pages_setting(True, "never") == "unavailable"
    assert huge_pages_setting(True, None) == "unavailable"
    assert huge_pages_setting(False, "madvise") == "off"


def test_switch_values():
    assert huge_pages_default({}) is True
    for on in ("1", "on", "YES", "true "):
        assert huge_pages_default({HUGE_PAGES_ENV: on}) is True
    for off in ("0", "off", "No", "false"):
        assert huge_pages_default({HUGE_PAGES_ENV: off}) is False
    assert huge_pages_default({HUGE_PAGES_ENV: " "}) is True
    with pytest.raises(ValueError, match=r"must be on \(1, on, yes, true\) or off.*'maybe'"):
        huge_pages_default({HUGE_PAGES_ENV: "maybe"})


def test_env_keeps_what_the_user_set():
    assert huge_pages_env({}) == {
        "THP_MEM_ALLOC_ENABLE": "1",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }
    assert huge_pages_env({"THP_MEM_ALLOC_ENABLE": "0"}) == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"
    }
    assert huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == {
        "THP_MEM_ALLOC_ENABLE": "1",
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
    }
    assert "GLIBC_TUNABLES" not in huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})


def test_bad_values_are_refused():
    with pytest.raises(TypeError, match="huge_pages must be True or False"):
        Resources(huge_pages="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Resources.cpus must be"):
        Resources(cpus=-1)


def test_a_bad_switch_is_refused_when_the_executor_starts(monkeypatch):
    monkeypatch.setenv(HUGE_PAGES_ENV, "maybe")
    with pytest.raises(ValueError, match="SIMAI_HUGE_PAGES"):
        LocalExecutor(cores=1)


# -- real processes ----------------------------------------------------------------------------


@needs_thp
def test_a_task_allocating_a_large_tensor_gets_huge_pages():
    with LocalExecutor(cores=1) as ex:
        assert ex.submit(anon_huge_kib_after_torch_alloc).result(timeout=120) > 0


@needs_madvise
def test_a_task_that_opts_out_gets_none():
    with LocalExecutor(cores=1) as ex:
        off = ex.submit(anon_huge_kib_after_torch_alloc, resources=Resources(huge_pages=False))
        on = ex.submit(anon_huge_kib_after_torch_alloc)
        assert off.result(timeout=120) == 0
        assert on.result(timeout=120) > 0


def test_tasks_and_commands_get_the_switches_and_opt_out(tmp_path, monkeypatch):
    argv = [sys.executable, "-c", "import os; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"]
    with LocalExecutor(cores=1, log_dir=tmp_path) as ex:
        default = ex.submit(allocator_env).result(timeout=60)
        opted_out = ex.submit(allocator_env, resources=Resources(huge_pages=False))
        opted_out = opted_out.result(timeout=60)
        command_on = ex.submit_command(Command(argv, stdout=tmp_path / "on.txt")).result(60)
        off_cmd = Command(argv, stdout=tmp_path / "off.txt", huge_pages=False)
        ex.submit_command(off_cmd).result(timeout=60)
    if THP:
        assert default == {"THP_MEM_ALLOC_ENABLE": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
        assert (tmp_path / "on.txt").read_text().strip() == "1"
    else:
        assert default == {"THP_MEM_ALLOC_ENABLE": None, "GLIBC_TUNABLES": None}
    assert command_on.returncode == 0
    assert opted_out == {"THP_MEM_ALLOC_ENABLE": None, "GLIBC_TUNABLES": None}
    assert (tmp_path / "off.txt").read_text().strip() == "None"

    monkeypatch.setenv(HUGE_PAGES_ENV, "0")
    with LocalExecutor(cores=1) as ex:
        assert ex.submit(allocator_env).result(timeout=60) == {
            "THP_MEM_ALLOC_ENABLE": None,
            "GLIBC_TUNABLES": None,
        }


def test_records_say_which_setting_each_task_ran_with(tmp_path):
    with simai.Workflow("hp", run_dir=tmp_path / "run", resume=False) as wf:
        wf.submit(allocator_env).result(timeout=60)
        wf.submit(allocator_env, resources=Resources(huge_pages=False)).result(timeout=60)
        wf.start(Command([sys.executable, "-c", "pass"]), name="quiet").wait(timeout=60)
    with Records(tmp_path / "run" / "records.db", readonly=True) as records:
        rows = records.tasks_table(name="allocator_env")
        component = [e for e in records.events() if e["kind"] == "component"][0]
    settings = sorted(json.loads(r["resources"])["huge_pages"] for r in rows)
    on = "on" if THP else "unavailable"
    assert settings == sorted(["off", on])
    assert json.loads(component["resources"])["huge_pages"] == on


# -- cpus=0: tasks that mostly wait -------------------------------------------------------------


def wait_for_files(directory: str, count: int, timeout: float) -> int:
    """Hold a core until ``count`` files exist in ``directory``; how many it saw."""
    deadline = time.monotonic() + timeout
    while len(os.listdir(directory)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(os.listdir(directory))


def check_in(directory: str, name: str) -> tuple[int, list[int]]:
    Path(directory, name).touch()
    return priority_and_cores()


def overlap(directory: str, name: str) -> int:
    """How many of these tasks run at once, as this one saw it."""
    mine = Path(directory, name)
    mine.touch()
    time.sleep(0.4)
    seen = len(os.listdir(directory))
    time.sleep(0.1)
    mine.unlink()
    return seen


def test_waiting_tasks_run_beside_a_task_holding_every_core(tmp_path):
    """On one core held by a task, tasks of cpus=0 still run (the holder waits for them),
    on the executor's cores, niced."""
    core = sorted(os.sched_getaffinity(0))[:1]
    with LocalExecutor(cores=core) as ex:
        holder = ex.submit(wait_for_files, str(tmp_path), 4, 60)
        waiting = [
            ex.submit(check_in, str(tmp_path), f"t{i}", resources=Resources(cpus=0))
            for i in range(3)
        ]
        command = Command(
            [sys.executable, "-c", f"open({str(tmp_path / 'cmd')!r}, 'w')"], cpus_per_rank=0
        )
        done = ex.submit_command(command)
        assert holder.result(timeout=90) == 4
        for future in waiting:
            nice, cores = future.result(timeout=30)
            assert nice >= 10 and cores == core
        assert done.result(timeout=30).returncode == 0


def test_waiting_tasks_are_bounded_per_core(tmp_path):
    core = sorted(os.sched_getaffinity(0))[:1]
    with LocalExecutor(cores=core) as ex:
        futures = [
            ex.submit(overlap, str(tmp_path), f"t{i}", resources=Resources(cpus=0))
            for i in range(10)
        ]
        seen = [f.result(timeout=120) for f in futures]
    assert max(seen) <= 4
