"""The adios2:// store with the real ADIOS2 library, across real processes: a simai producer
read by a plain ADIOS2 reader, a plain ADIOS2 writer (a simulation) feeding a simai consumer,
SST bounds, what BP5 adds (re-reads, groups, verification), and the clear errors for what the
engines cannot do."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

import numpy as np
import pytest
from _procs import children, no_new_children

pytest.importorskip("adios2")

from simai.store import CorruptValueError, StoreClosedError, open_store  # noqa: E402
from simai.store.adios2 import NotSupported  # noqa: E402

TIMEOUT = 60  # seconds any helper process may run; the busy CI machine is slow to import

# A simai producer: field (float64, shape changes at the end), flags (bool), meta (JSON).
PRODUCER = r"""
import sys, numpy as np
from simai.store import open_store
store = open_store(sys.argv[1])
for i in range(12):
    store.append("run/field", np.arange(15, dtype=np.float64).reshape(3, 5) + i)
store.append("run/field", np.full((2, 2), -1.0))
store.close_stream("run/field")
for i in range(3):
    store.append("run/flags", np.array([i % 2 == 0, True, False]))
store.close_stream("run/flags")
store.append("run/meta", {"step": 7, "name": "wave"})
# no close_stream, no close: the producer's exit ends the stream for its readers
"""

# A plain ADIOS2 reader, no simai: prints each step of each stream as a JSON line.
PLAIN_READER = r"""
import json, sys, adios2
root, engine = sys.argv[1], sys.argv[2]
for name in ("field", "flags", "meta"):
    io = adios2.Adios().declare_io("r")
    io.set_engine(engine)
    io.set_parameters({"OpenTimeoutSecs": "60"})
    with adios2.Stream(io, f"{root}/run/{name}", "r") as s:
        for step in s:
            v = step.read("value")
            out = {"stream": name, "step": step.current_step(),
                   "vars": sorted(step.available_variables())}
            if isinstance(v, str):
                out["text"] = v
            else:
                out.update(dtype=str(v.dtype), shape=list(v.shape), data=v.ravel().tolist())
            print(json.dumps(out), flush=True)
"""

# A simai consumer of the same streams: each value's index, dtype and contents.
SIMAI_READER = r"""
import json, sys
from simai.store import open_store
store = open_store(sys.argv[1])
for name in ("field", "flags", "meta"):
    reader = store.stream(f"run/{name}", timeout=60)
    for v in reader:
        out = {"stream": name, "index": reader.index - 1}
        if isinstance(v, dict):
            out["meta"] = v
        else:
            out.update(dtype=str(v.dtype), shape=list(v.shape), data=v.ravel().tolist())
        print(json.dumps(out), flush=True)
    assert reader.skipped == 0
store.close()
"""

# A plain ADIOS2 writer, as a simulation writes: a 2-D field and two scalars per step.
SIMULATION = r"""
import sys, numpy as np, adios2
path, engine, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
io = adios2.Adios().declare_io("sim")
io.set_engine(engine)
with adios2.Stream(io, path, "w") as s:
    for i in range(steps):
        s.begin_step()
        s.write("T", np.full((4, 6), i, dtype=np.float32))
        s.write("step", i)
        s.write("time", 0.5 * i)
        s.end_step()
"""

# A simai producer of one bounded SST stream; it records how many appends returned.
BOUNDED = r"""
import sys, os, time, numpy as np
from simai.store import open_store
url, policy, n, progress, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
store = open_store(url)
store.create_stream("s", maxlen=2, policy=policy)
for i in range(n):
    store.append("s", np.full(4, i, dtype=np.int64))
    with open(progress + ".tmp", "w") as f:
        f.write(str(i + 1))
    os.replace(progress + ".tmp", progress)
    if i == 0:
        while not os.path.exists(go):
            time.sleep(0.01)
store.close_stream("s")
store.close()
"""


@contextmanager
def processes(*argvs: list[str]) -> Iterator[list[subprocess.Popen]]:
    """Start the helper processes; kill any still running when the block ends."""
    before = children()
    procs = []
    try:
        for argv in argvs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", *argv],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        assert no_new_children(before)


def finish(p: subprocess.Popen) -> str:
    """The stdout of `p` once it exited 0 (its stderr in the failure message otherwise)."""
    out, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 0, err[-3000:]
    return out


@pytest.fixture(params=["SST", "BP5"])
def engine(request) -> str:
    return request.param


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "streams")


def test_simai_producer_is_read_by_a_plain_adios2_reader(root, engine):
    """...and by a simai consumer at the same time (SST: the writer waits for both)."""
    url = f"adios2://{root}?engine={engine}" + ("&readers=2" if engine == "SST" else "")
    if engine == "SST":  # the readers connect while the producer runs
        readers = [PLAIN_READER, root, engine], [SIMAI_READER, url]
        with processes([PRODUCER, url], *readers) as (prod, plain, ours):
            finish(prod)
            out, mine = finish(plain), finish(ours)
    else:  # a file: the readers may come afterwards (the simai one here, in this process)
        with processes([PRODUCER, url], [PLAIN_READER, root, engine]) as (prod, plain):
            finish(prod)
            out = finish(plain)
        lines = io.StringIO()
        with redirect_stdout(lines):
            exec(SIMAI_READER.replace("sys.argv[1]", repr(url)), {})
        mine = lines.getvalue()
    simai_rows = [json.loads(line) for line in mine.splitlines()]
    assert [(r["stream"], r["index"]) for r in simai_rows] == [
        *(("field", i) for i in range(13)),
        *(("flags", i) for i in range(3)),
        ("meta", 0),
    ]
    assert simai_rows[0]["data"] == np.arange(15.0).tolist()
    assert simai_rows[12]["shape"] == [2, 2]
    assert [r["dtype"] for r in simai_rows[13:16]] == ["bool"] * 3
    assert simai_rows[13]["data"] == [True, True, False]
    assert simai_rows[16]["meta"] == {"step": 7, "name": "wave"}
    rows = [json.loads(line) for line in out.splitlines()]
    field = [r for r in rows if r["stream"] == "field"]
    assert [r["step"] for r in field] == list(range(13))
    for i, r in enumerate(field[:12]):
        assert r["dtype"] == "float64" and r["shape"] == [3, 5]
        assert r["data"] == (np.arange(15.0) + i).tolist()
        assert r["vars"] == ["simai_header", "value"]
    assert field[12]["shape"] == [2, 2] and field[12]["data"] == [-1.0] * 4
    flags = [r for r in rows if r["stream"] == "flags"]
    assert [(r["dtype"], r["data"]) for r in flags] == [
        ("uint8", [1, 1, 0]),
        ("uint8", [0, 1, 0]),
        ("uint8", [1, 1, 0]),
    ]
    (meta,) = [r for r in rows if r["stream"] == "meta"]
    assert json.loads(meta["text"]) == {"step": 7, "name": "wave"}


def test_a_plain_adios2_writer_feeds_a_simai_consumer(root, engine):
    os.makedirs(root, mode=0o700)
    store = open_store(f"adios2://{root}?engine={engine}")
    try:
        with processes([SIMULATION, f"{root}/sim", engine, "10"]) as (sim,):
            reader = store.stream("sim", timeout=TIMEOUT)
            got = list(reader)
            finish(sim)
        assert reader.skipped == 0
        assert [g["step"].item() for g in got] == list(range(10))
        for i, g in enumerate(got):
            assert sorted(g) == ["T", "step", "time"]
            assert g["T"].dtype == np.float32 and g["T"].shape == (4, 6)
            assert (g["T"] == i).all() and g["time"] == 0.5 * i
        if engine == "BP5":  # a file: read again, choosing variables and where to start
            only = open_store(f"adios2://{root}?engine=BP5&vars=T")
            fields = list(only.stream("sim", start=7))
            assert [f[0, 0] for f in fields] == [7, 8, 9] and fields[0].shape == (4, 6)
            two = open_store(f"adios2://{root}?engine=BP5", variables=["time", "step"])
            tail = list(two.stream("sim", last=2))
            assert [(t["step"].item(), t["time"].item()) for t in tail] == [(8, 4.0), (9, 4.5)]
            info = store.stream_info("sim")
            assert (info["length"], info["closed"]) == (10, True)
            with pytest.raises(KeyError, match="no variable 'nope'"):
                next(open_store(f"adios2://{root}?engine=BP5&vars=nope").stream("sim"))
    finally:
        store.close()


def appended(progress: str) -> int:
    try:
        with open(progress) as f:
            return int(f.read())
    except FileNotFoundError:
        return 0


def bounded_run(root: str, policy: str, n: int) -> tuple[list, object, list]:
    """Run BOUNDED; read its stream here, pausing after the first value (a second for
    "block", until the producer appended all for "drop_newest"); return the values, the
    reader, and the producer's progress seen at each read."""
    os.makedirs(root, mode=0o700)
    progress, go = os.path.join(root, "progress"), os.path.join(root, "go")
    store = open_store(f"adios2://{root}?engine=SST")
    seen, values = [], []
    try:
        with processes([BOUNDED, store.url, policy, str(n), progress, go]) as (prod,):
            reader = store.stream("s", timeout=TIMEOUT)
            for v in reader:
                values.append((reader.index - 1, int(v[0])))
                if len(values) == 1:
                    open(go, "w").close()
                    if policy == "block":  # the producer runs ahead as far as it may
                        time.sleep(1.0)
                    else:
                        deadline = time.monotonic() + TIMEOUT
                        while appended(progress) < n and time.monotonic() < deadline:
                            time.sleep(0.01)
                seen.append((len(values), appended(progress)))
            finish(prod)
    finally:
        store.close()
    return values, reader, seen


def test_sst_block_bound_holds_the_producer_back_and_loses_nothing(root):
    values, reader, seen = bounded_run(root, "block", 8)
    assert values == [(i, i) for i in range(8)] and reader.skipped == 0
    # the producer is never more than maxlen (2) steps ahead of what the reader took (+ 2 of
    # slack: a step in flight, an append returning as the reader looks)
    assert seen[0][1] < 8, seen  # it did not finish while the reader held back
    for took, done in seen:
        assert done <= took + 2 + 2, seen


def test_sst_drop_newest_bound_drops_and_counts_what_the_reader_missed(root):
    values, reader, seen = bounded_run(root, "drop_newest", 30)
    indices = [i for i, _ in values]
    assert all(i == v for i, v in values)  # each value is the one appended at its index
    assert indices == sorted(set(indices)) and indices[0] == 0
    assert seen[0] == (1, 30)  # all appended while the reader held back: none waited
    assert len(values) < 30  # the producer ran 29 appends ahead of a 2-step queue
    assert reader.skipped == indices[-1] + 1 - len(values)


def test_sst_refuses_what_it_cannot_do(root):
    store = open_store(f"adios2://{root}")
    try:
        assert store.url == f"adios2://{root}?engine=SST"
        with pytest.raises(NotSupported, match="drop_newest"):
            store.create_stream("s", maxlen=4, policy="drop_oldest")
        with pytest.raises(NotSupported, match="consumer positions"):
            store.stream("s", group="trainer")
        with pytest.raises(NotSupported, match="last="):
            store.stream("s", last=3)
        with pytest.raises(NotSupported, match="another process"):
            store.stream_len("s")
        with pytest.raises(NotSupported, match="timeout=None"):  # the rendezvous cannot time out
            store.append("s", np.zeros(3), timeout=1)
        with pytest.raises(TimeoutError, match="no entry 0"):  # no producer ever came
            next(store.stream("s", timeout=0.5))
    finally:
        store.close()


def test_keys_are_refused_with_the_store_to_use(root):
    store = open_store(f"adios2://{root}?engine=BP5")
    try:
        for call in (
            lambda: store.put("k", b"x"),
            lambda: store.get("k"),
            lambda: store.keys(),
            lambda: store.exists("k"),
            lambda: store.wait("k", timeout=0.1),
            lambda: store.put_many({"k": 1}),
        ):
            with pytest.raises(NotSupported, match="streams only.*redis://"):
                call()
    finally:
        store.close()


@pytest.mark.parametrize(
    "value",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array([True, False, True]),
        np.arange(5, dtype=np.float16),
        np.arange(6, dtype=">i4").reshape(2, 3),
        np.array([1 + 2j, 3 - 4j], dtype=np.complex128),
        np.arange(8, dtype=np.int8)[::2],
        np.array(2.5),
        np.zeros((0, 3), dtype=np.uint16),
        b"\x00raw bytes\xff",
        b"",
        {"a": [1, 2], "b": "text"},
    ],
    ids=[
        "f32",
        "bool",
        "f16",
        "big-endian",
        "c128",
        "strided",
        "scalar",
        "empty",
        "bytes",
        "empty-bytes",
        "json",
    ],
)
def test_bp5_round_trips_every_kind_of_value(root, value):
    store = open_store(f"adios2://{root}?engine=BP5")
    try:
        for _ in range(2):
            store.append("v", value)
        store.close_stream("v")
        got = list(store.stream("v", timeout=TIMEOUT))
        assert len(got) == 2
        for g in got:
            if isinstance(value, np.ndarray):
                assert g.dtype == value.dtype and g.shape == value.shape
                np.testing.assert_array_equal(g, value)
                assert g.flags.writeable
            else:
                assert g == value
        (ro,) = list(store.stream("v", start=1, view=True))
        if isinstance(value, np.ndarray):
            assert not ro.flags.writeable
    finally:
        store.close()


def test_bad_values_names_urls_and_closed_streams_are_clear_errors(root):
    with pytest.raises(ValueError, match="engine must be SST or BP5"):
        open_store(f"adios2://{root}?engine=HDF5")
    with pytest.raises(ValueError, match="unknown options"):
        open_store(f"adios2://{root}?engnie=BP5")
    with pytest.raises(ValueError, match="names no directory"):
        open_store("adios2://")
    for relative in ("adios2://streams", "adios2://host/tmp/x"):
        with pytest.raises(ValueError, match="must be absolute, adios2:///path/dir"):
            open_store(relative)
    with pytest.raises(ValueError, match="gives engine more than once"):
        open_store(f"adios2://{root}?engine=SST&engine=BP5")
    with pytest.raises(ValueError, match="readers= is for SST"):
        open_store(f"adios2://{root}?engine=BP5&readers=2")
    with pytest.raises(ValueError, match="vars= names no variable"):
        open_store(f"adios2://{root}?vars=")
    with pytest.raises(TypeError, match="params must be a dict"):
        open_store(f"adios2://{root}", params="DataTransport=WAN")
    store = open_store(f"adios2://{root}?engine=BP5")
    try:
        with pytest.raises(TypeError, match="dtype"):
            store.append("o", np.array([object()], dtype=object))
        with pytest.raises(ValueError, match="cannot name an ADIOS2 stream"):
            store.append("../escape", np.zeros(2))
        with pytest.raises(NotSupported, match="cannot be bounded"):
            store.create_stream("b", maxlen=3)
        store.append("t", np.zeros(3))
        with pytest.raises(TypeError, match="keeps its type and rank"):
            store.append("t", np.zeros(3, dtype=np.int32))
        with pytest.raises(TypeError, match="keeps its type and rank"):
            store.append("t", np.zeros((3, 1)))
        store.close_stream("t")
        with pytest.raises(ValueError, match="was closed"):
            store.append("t", np.zeros(3))
        other = open_store(store.url)
        with pytest.raises(ValueError, match="one producer"):
            other.append("t", np.zeros(3))
        other.close()
        assert store.delete_stream("t") and not store.delete_stream("t")
        store.append("t", np.zeros(3, dtype=np.int32))  # a new stream after the delete
    finally:
        store.close()
    with pytest.raises(StoreClosedError, match="is closed"):
        store.stream("t")


def test_a_dead_producers_contact_file_is_a_clear_error_not_a_timeout(root):
    """An SST producer SIGKILLed in its rendezvous leaves its contact file; a reader says so
    (and how to clear it) instead of waiting out its timeout and blaming the producer."""
    url = f"adios2://{root}?engine=SST"
    contact = os.path.join(root, "fields.sst")
    with processes([PRODUCER.replace("run/field", "fields"), url]) as (prod,):
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(contact):
            assert time.monotonic() < deadline and prod.poll() is None
            time.sleep(0.05)
        prod.kill()
        prod.wait()
    store = open_store(url)
    try:
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match=r"no writer answers .*delete_stream\('fields'\)"):
            next(store.stream("fields", timeout=30))
        assert time.monotonic() - t0 < 25
        assert store.delete_stream("fields") and not os.path.exists(contact)
    finally:
        store.close()


def test_bp5_groups_resume_and_damage_is_detected(root):
    store = open_store(f"adios2://{root}?engine=BP5")
    try:
        for i in range(6):
            store.append("g", np.full(1000, i, dtype=np.int64))
        store.close_stream("g")
        first = store.stream("g", group="trainer")
        assert [int(next(first)[0]) for _ in range(3)] == [0, 1, 2]
        first.close()
        assert store.stream_info("g")["groups"] == {"trainer": 2}
        again = store.stream("g", group="trainer")  # a restarted trainer
        assert [int(v[0]) for v in again] == [2, 3, 4, 5]
        assert store.stream_info("g")["groups"] == {"trainer": 6}
        # flip one payload byte of step 4 in the BP5 data file: the checksum catches it
        data = os.path.join(root, "g", "data.0")
        with open(data, "r+b") as f:
            raw = f.read()
            at = raw.find(np.full(1000, 4, dtype=np.int64).tobytes())
            assert at > 0
            f.seek(at + 100)
            f.write(b"\x7f")
        reader = store.stream("g", start=4)
        with pytest.raises(CorruptValueError, match="entry 4"):
            next(reader)
    finally:
        store.close()
