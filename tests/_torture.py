"""The store's concurrency and crash torture: many processes hammer one store for a bounded
time, then everything they were told succeeded is checked.

Every value written carries a tag, ``(writer << 40) | (slot << 32) | serial``, repeated in
every element of an int64 array whose length follows from the tag. A value read back is
*whole* when all its elements equal one tag and its length is that tag's length, and it is
*right* when the tag names a write to the key or stream index it was read from. Sizes sit on
both sides of the backends' thresholds (small values, 300 KiB, 1.6 MiB).

Run as a soak: ``python tests/_torture.py --seconds 120 local://soak file:///tmp/soak``
(a redis:// URL needs $SIMAI_STORE_PASSWORD).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

KEYS = 6
SIZES = (3, 1024, 40_000, 200_000)
STREAM = "torture/st"
BLOCKED = "torture/bb"
DROPPING = "torture/bd"
BOUND = 8
GROUP = "checker"
CRASH_KEY = "crash/c"
CRASH_STREAM = "crash/s"


def tag_of(writer: int, slot: int, serial: int) -> int:
    return (writer << 40) | (slot << 32) | serial


def length_of(tag: int) -> int:
    return SIZES[(tag * 2654435761 >> 7) % len(SIZES)]


def make(tag: int) -> np.ndarray:
    return np.full(length_of(tag), tag, dtype=np.int64)


def whole_tag(value: Any) -> int:
    """The tag of a whole value; AssertionError naming what is wrong otherwise."""
    assert isinstance(value, np.ndarray), f"got a {type(value).__name__}, not an array"
    assert value.dtype == np.int64 and value.ndim == 1 and value.size, f"bad array {value!r}"
    tag = int(value[0])
    assert (value == tag).all(), f"torn value: {np.unique(value)[:8]} in one array"
    assert value.size == length_of(tag), f"value of tag {tag:#x} has {value.size} elements"
    return tag


def slot_of(tag: int) -> int:
    return (tag >> 32) & 0xFF


# --- the worker: one process ------------------------------------------------------------------


def worker(url: str, writer: int, seconds: float, out: str) -> None:
    """Mix every store operation for `seconds`; write what was acknowledged to `out`."""
    import simai

    s = simai.open_store(url)
    rng = random.Random(writer)
    acks: dict[str, list] = {"stream": [], "blocked": [], "dropping": [], "errors": []}
    views: list[tuple[np.ndarray, int]] = []
    serial = 0
    deadline = time.monotonic() + seconds
    ops = 0

    def fresh(slot: int) -> int:
        nonlocal serial
        serial += 1
        return tag_of(writer, slot, serial)

    def check_key(value: Any, key_slot: int) -> None:
        tag = whole_tag(value)
        assert slot_of(tag) == key_slot, f"key {key_slot} holds a value written to {slot_of(tag)}"

    while time.monotonic() < deadline:
        ops += 1
        op = rng.random()
        k = rng.randrange(KEYS)
        key = f"torture/k{k}"
        try:
            if op < 0.25:
                s.put(key, make(fresh(k)))
            elif op < 0.45:
                try:
                    check_key(s.get(key), k)
                except KeyError:
                    pass
            elif op < 0.50:
                s.delete(key)
            elif op < 0.58:
                try:
                    v = s.get(key, view=True)
                except KeyError:
                    continue
                check_key(v, k)
                views.append((v, int(v[0])))
                if len(views) > 3:
                    held, tag = views.pop(0)
                    assert whole_tag(held) == tag, "a view changed while it was held"
            elif op < 0.63:
                j = (k + 1) % KEYS
                s.put_many({key: make(fresh(k)), f"torture/k{j}": make(fresh(j))})
                try:
                    a, b = s.get_many([key, f"torture/k{j}"])
                except KeyError:
                    continue
                check_key(a, k)
                check_key(b, j)
            elif op < 0.80:
                tag = fresh(KEYS)
                acks["stream"].append([s.append(STREAM, make(tag)), tag])
            elif op < 0.90:
                tag = fresh(KEYS + 1)
                acks["blocked"].append([s.append(BLOCKED, make(tag), timeout=60), tag])
            else:
                tag = fresh(KEYS + 2)
                acks["dropping"].append([s.append(DROPPING, make(tag)), tag])
        except AssertionError as e:
            acks["errors"].append(f"op {ops}: {e}")
    for held, tag in views:
        if whole_tag(held) != tag:
            acks["errors"].append("a view changed while it was held")
    acks["ops"] = ops  # type: ignore[assignment]
    s.close()
    Path(out).write_text(json.dumps(acks))


def consumer(url: str, out: str) -> None:
    """Read the "block" stream as a consumer group until it is closed; write what it read."""
    import simai

    s = simai.open_store(url)
    got = [[int(whole_tag(v)), None] for v in s.stream(BLOCKED, group=GROUP, timeout=120)]
    Path(out).write_text(json.dumps(got))


# --- the run and its checks --------------------------------------------------------------------


def _spawn(args: list[str], url: str) -> subprocess.Popen:
    env = dict(os.environ, SIMAI_STORE=url, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, __file__, *args], env=env)


def run(url: str, workers: int, seconds: float, scratch: Path) -> dict[str, Any]:
    """Run the torture on the (empty) store at `url`; return the counts checked. Raises
    AssertionError with every problem found."""
    import simai

    s = simai.open_store(url)
    s.create_stream(BLOCKED, maxlen=BOUND, policy="block")
    s.create_stream(DROPPING, maxlen=BOUND, policy="drop_oldest")
    s.stream(BLOCKED, group=GROUP, timeout=0)  # registers the group before any append
    reader = _spawn(["consumer", url, str(scratch / "consumer.json")], url)
    procs = [
        _spawn(["worker", url, str(w + 1), str(seconds), str(scratch / f"w{w}.json")], url)
        for w in range(workers)
    ]
    try:
        for p in procs:
            assert p.wait(timeout=seconds + 120) == 0, f"a worker exited with {p.returncode}"
        s.close_stream(BLOCKED)
        assert reader.wait(timeout=120) == 0, f"the consumer exited with {reader.returncode}"
    finally:
        for p in (*procs, reader):
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [json.loads((scratch / f"w{w}.json").read_text()) for w in range(workers)]
    problems = [e for log in logs for e in log["errors"]]
    counts = {"ops": sum(log["ops"] for log in logs)}

    # every acknowledged append is in the stream exactly once, at its index, whole
    s.close_stream(STREAM)
    values = [whole_tag(v) for v in s.stream(STREAM)]
    acked = {i: t for log in logs for i, t in log["stream"]}
    counts["appends"] = len(acked)
    if len(values) != len(acked):
        problems.append(f"stream holds {len(values)} values, {len(acked)} appends acknowledged")
    for i, t in acked.items():
        if i >= len(values) or values[i] != t:
            got = f"{values[i]:#x}" if i < len(values) else "nothing"
            problems.append(f"stream index {i}: appended {t:#x}, read {got}")
    for log in logs:  # each producer's values are in its order
        idx = [i for i, _ in log["stream"]]
        if idx != sorted(idx):
            problems.append("a producer's appends are out of order")

    # the "block" stream: the group read every acknowledged value once, in order, lost none
    read = [t for t, _ in json.loads((scratch / "consumer.json").read_text())]
    blocked = dict(i_t for log in logs for i_t in log["blocked"])
    counts["blocked"] = len(blocked)
    if read != [blocked[i] for i in sorted(blocked)]:
        problems.append(f"the group read {len(read)} values, {len(blocked)} were acknowledged")
    info = s.stream_info(BLOCKED)
    if info["dropped"] or info["length"] != len(blocked):
        problems.append(f"block stream info {info}")

    # the "drop_oldest" stream keeps the newest values, each the one appended at its index
    s.close_stream(DROPPING)
    dropping = dict(i_t for log in logs for i_t in log["dropping"])
    info = s.stream_info(DROPPING)
    kept = s.stream(DROPPING, start=0)
    tags = [whole_tag(v) for v in kept]
    counts["dropping"] = len(dropping)
    if info["length"] != len(dropping) or info["start"] != max(0, len(dropping) - BOUND):
        problems.append(f"drop_oldest stream info {info} after {len(dropping)} appends")
    for offset, t in enumerate(tags):
        i = kept.skipped + offset
        if dropping.get(i) != t:
            problems.append(f"drop_oldest index {i}: read {t:#x}, appended {dropping.get(i)}")

    # every key ends whole and holds a value written to it
    for k in range(KEYS):
        try:
            v = s.get(f"torture/k{k}")
        except KeyError:
            continue
        if slot_of(whole_tag(v)) != k:
            problems.append(f"key {k} ends with a value written to another key")
    s.close()
    assert not problems, "\n".join(problems[:20])
    return counts


def crash_writer(url: str, out: str) -> None:
    """Put and append until killed; log each acknowledged append (flushed) to `out`."""
    import simai

    s = simai.open_store(url)
    writer = os.getpid() & 0xFFFF
    with open(out, "a", buffering=1) as log:
        for serial in range(1, 1 << 31):
            s.put(CRASH_KEY, make(tag_of(writer, 1, serial)))
            tag = tag_of(writer, 2, serial)
            log.write(f"{s.append(CRASH_STREAM, make(tag))} {tag}\n")


def crash(url: str, kills: int, scratch: Path) -> dict[str, Any]:
    """SIGKILL a writer mid-operation `kills` times; after each kill the key holds a whole value
    and a new process can write; at the end every logged append is there."""
    import simai

    s = simai.open_store(url)
    rng = random.Random(kills)
    log = scratch / "crash.log"
    for _ in range(kills):
        p = _spawn(["crash", url, str(log)], url)
        time.sleep(0.4 + rng.random() * 0.4)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if s.exists(CRASH_KEY):
            assert slot_of(whole_tag(s.get(CRASH_KEY))) == 1
        probe = subprocess.run(
            [sys.executable, "-c", "import simai; s = simai.open_store(); s.put('crash/p', b'1');"
             "assert s.get('crash/p') == b'1'"],
            env=dict(os.environ, SIMAI_STORE=url, PYTHONPATH=os.pathsep.join(sys.path)),
            timeout=60,
        )  # fmt: skip
        assert probe.returncode == 0, "the store was not usable after a writer was killed"
    s.close_stream(CRASH_STREAM)
    values = [whole_tag(v) for v in s.stream(CRASH_STREAM)]
    acked = [tuple(map(int, line.split())) for line in log.read_text().splitlines() if line]
    for i, t in acked:
        assert i < len(values) and values[i] == t, f"acknowledged append {i} lost or altered"
    s.close()
    return {"kills": kills, "appends": len(acked), "values": len(values)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("worker", "consumer", "crash"):
        role, args = sys.argv[1], sys.argv[2:]
        if role == "worker":
            worker(args[0], int(args[1]), float(args[2]), args[3])
        elif role == "consumer":
            consumer(*args)
        else:
            crash_writer(*args)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "urls", nargs="+", help="empty stores to torture (local and file ones are destroyed after)"
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    import tempfile

    import simai

    for url in args.urls:
        with tempfile.TemporaryDirectory(prefix="simai-torture-") as scratch:
            t = time.monotonic()
            try:
                counts = run(url, args.workers, args.seconds, Path(scratch))
                counts.update(crash(url, args.kills, Path(scratch)))
            finally:
                store = simai.open_store(url)
                if hasattr(store, "destroy"):
                    store.destroy()
            print(f"{url}: passed {counts} in {time.monotonic() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
