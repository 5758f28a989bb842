"""Concurrency and crash torture on every backend (see _torture.py): many processes for a
bounded time, then every acknowledged write is checked; and a writer SIGKILLed mid-put."""

from __future__ import annotations

import _torture


def test_concurrent_processes_lose_and_alter_nothing(store_url, tmp_path):
    # a Dragon DDict manager takes milliseconds per operation: the same work needs longer there
    seconds = 12 if store_url.startswith("dragon://") else 4
    counts = _torture.run(store_url, workers=4, seconds=seconds, scratch=tmp_path)
    assert counts["appends"] > 50 and counts["blocked"] > 10 and counts["dropping"] > 10


def test_a_writer_killed_mid_put_leaves_a_whole_value(store_url, tmp_path):
    counts = _torture.crash(store_url, kills=6, scratch=tmp_path)
    assert counts["appends"] > 0
