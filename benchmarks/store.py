"""Store benchmark: a producer process hands float32 arrays to a consumer process.

Every simai store backend runs side by side with the baselines a user would otherwise pick:
np.copyto into preallocated shared memory (the memory-bandwidth limit), raw redis-py against the
same redis-server, np.save/np.load on /dev/shm, and Dragon's DDict (run under `dragon -s` in its
own process tree). Prints a Markdown table and the ratios the store issue sets as targets.
The "-uncounted" backends are the same stores with operation counting off
(simai.store.counters), each run right after its counted twin, so one run compares them; the
steadier measure of what counting costs is `_profile_store.py --counting`.

    .venv/bin/python benchmarks/store.py --out benchmarks/results/store.md
    .venv/bin/python benchmarks/store.py --quick --backends local,copyto
    .venv/bin/python benchmarks/store.py --backends local,local-uncounted,file,file-uncounted
    .venv/bin/python benchmarks/store.py --scale --out benchmarks/results/store-scale.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import multiprocessing as mp
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench_loop  # noqa: E402
import _store_scale  # noqa: E402

HERE = Path(__file__).resolve().parent
KIB, MIB = 1024, 1024 * 1024
DEFAULT_SIZES = "8K,1M,16M,64M"
FILE_STORE_DIR = "/dev/shm/simai-bench-file"
LOCAL_STORE_URL = "local://bench"
SIMAI_BACKENDS = (
    "local",
    "local-out",
    "local-view",
    "local-unverified",
    "file",
    "redis",
    "local-uncounted",
    "file-uncounted",
    "redis-uncounted",
)
UNCOUNTED = "; store operation counting off (SIMAI_STORE_COUNTERS=0), to measure its cost"

# name -> (label in the table, description for the notes)
BACKENDS: dict[str, tuple[str, str]] = {
    "copyto": (
        "np.copyto",
        "np.copyto of each array into its own preallocated array, in each process: the "
        "memory-bandwidth limit for the bytes a store moves (the targets' baseline)",
    ),
    "copyto-cached": (
        "np.copyto, one cached buffer",
        "np.copyto into one preallocated array over and over: the limit while everything "
        "stays in the CPU's cache (the targets' baseline before 2026-12; context)",
    ),
    "lmdb": (
        "LMDB",
        "py-lmdb on /dev/shm (writemap, no sync): put in a write transaction, get copies the "
        "value out of a read transaction (the embedded-database anchor)",
    ),
    "copyto-shm": (
        "np.copyto via shm",
        "producer np.copyto into preallocated /dev/shm slots, consumer np.copyto out of them",
    ),
    "local": ("simai local", f"simai.open_store({LOCAL_STORE_URL!r}); get(key) copies"),
    "local-uncounted": ("simai local uncounted", "simai local" + UNCOUNTED),
    "local-out": (
        "simai local get(out=)",
        "same store; get(key, out=buffer) copies into a preallocated array, as np.copyto does",
    ),
    "local-view": ("simai local view", "same store; get(key, view=True), zero-copy"),
    "local-unverified": (
        "simai local unverified",
        "simai local with its checksums switched off in the benchmark's processes (by patching "
        "simai.store.codec), to measure what verifying every read costs",
    ),
    "npy": ("np.save/np.load", "np.save / np.load of .npy files on /dev/shm"),
    "file": ("simai file", f"simai.open_store('file://{FILE_STORE_DIR}')"),
    "file-uncounted": ("simai file uncounted", "simai file" + UNCOUNTED),
    "redis-py": ("redis-py", "redis.Redis().set/get, default (hiredis) packer"),
    "redis": ("simai redis", "simai.open_store('redis://127.0.0.1:PORT')"),
    "redis-uncounted": ("simai redis uncounted", "simai redis" + UNCOUNTED),
    "dragon": ("Dragon DDict", "dragon.data.ddict.DDict(1 manager), d[key] = arr under dragon -s"),
    "simai-dragon": (
        "simai dragon",
        "simai.open_store('dragon://...') on the same DDict, in the same dragon -s session "
        "right after the DDict rows: put(key, arr), get(key) copies and verifies",
    ),
}
DRAGON_BACKENDS = ("dragon", "simai-dragon")
"""Both run in one `dragon -s` session (run_dragon), whichever of them is asked for."""


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": KIB, "M": MIB, "G": 1024 * MIB}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMG" else t
    try:
        size = int(float(num) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 8K, 1M, 64M") from None
    if size < 8 or size % 4:
        raise argparse.ArgumentTypeError(f"size {text!r} must be a multiple of 4 bytes, >= 8")
    return size


def fmt_size(size: int) -> str:
    for unit, mult in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= mult and size % mult == 0:
            return f"{size // mult} {unit}"
    return f"{size} B"


def op_counts(sizes: list[int], quick: bool, hi: int | None = None) -> dict[int, int]:
    """Arrays per repetition: about 128 MiB moved per repetition (32 MiB in quick mode)."""
    budget, lo, top = (32 * MIB, 2, 200) if quick else (128 * MIB, 4, 1000)
    return {s: max(lo, min(hi or top, budget // s)) for s in sizes}


DRAGON_MAX_OPS = 200
"""Dragon DDict takes milliseconds per small op: fewer small arrays per repetition there."""


# --- clients (built inside the producer and consumer processes) ---------------------------------


class CopytoClient:
    """np.copyto of array i into slot i of n preallocated arrays and back out, in each process.

    The memory-bandwidth limit the targets refer to: the same bytes a store holding n arrays
    moves, but no allocation, no page faults, no cross-process handoff (the consumer copies
    its own preallocated slots, so no check). `cached=True` copies into one array over and
    over instead, which stays in the CPU's cache for small sizes.
    """

    verify = False

    def __init__(self, cfg: dict[str, Any], cached: bool = False) -> None:
        self.cached = cached
        self.slots: list[np.ndarray] = []
        self.dst = np.zeros(0, dtype=np.float32)

    def prepare(self, size: int, n: int) -> None:
        self.slots = [_bench_loop.payload(size) for _ in range(1 if self.cached else n)]
        self.dst = np.zeros(size // 4, dtype=np.float32)

    def put(self, key: str, i: int, arr: np.ndarray) -> None:
        np.copyto(self.slots[0 if self.cached else i], arr)

    def get(self, key: str, i: int) -> np.ndarray:
        np.copyto(self.dst, self.slots[0 if self.cached else i])
        return self.dst

    def delete(self, key: str, i: int) -> None:
        pass

    def close(self) -> None:
        self.slots = []


class LmdbClient:
    """py-lmdb used the way its documentation shows, on /dev/shm, with the settings simai's
    node-local store uses (writemap, no sync): the embedded-database anchor."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        import lmdb

        vfs = os.statvfs(cfg["lmdb_dir"])
        self.env = lmdb.open(
            cfg["lmdb_dir"], map_size=vfs.f_blocks * vfs.f_frsize, writemap=True, sync=False,
            metasync=False, readahead=False, meminit=False, max_readers=1024,
        )  # fmt: skip

    def prepare(self, size: int, n: int) -> None:
        pass

    def put(self, key: str, i: int, arr: np.ndarray) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key.encode(), arr)

    def get(self, key: str, i: int) -> np.ndarray:
        with self.env.begin(buffers=True) as txn:
            return np.frombuffer(txn.get(key.encode()), np.float32).copy()

    def delete(self, key: str, i: int) -> None:
        with self.env.begin(write=True) as txn:
            txn.delete(key.encode())

    def close(self) -> None:
        self.env.close()


def _switch_off_verification() -> None:
    """Make simai's node-local store skip every checksum in this process (the benchmark's own
    patch, applied only in its producer and consumer processes)."""
    from simai.store import codec, local

    def hash_while(payload: Any, seed: int, work: Any) -> tuple[int, Any]:
        return 0, work()

    codec.hash_while = hash_while  # type: ignore[assignment]
    codec.check = lambda checksum, digest: None  # type: ignore[assignment]
    codec.verify = lambda head, checksum, payload: None  # type: ignore[assignment]
    local.xxh3_64_intdigest = lambda data, seed=0: 0  # type: ignore[assignment]


class CopytoShmClient:
    """Producer copies into slot i of a preallocated /dev/shm array; consumer copies it out."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.path = cfg["shm_path"]
        self.map: mmap.mmap | None = None
        self.slots: list[np.ndarray] = []
        self.dst = np.zeros(0, dtype=np.float32)

    def prepare(self, size: int, n: int) -> None:
        self.slots = []
        if self.map is None:
            with open(self.path, "r+b") as f:
                self.map = mmap.mmap(f.fileno(), 0)
        whole = np.frombuffer(self.map, dtype=np.float32, count=n * size // 4)
        self.slots = list(whole.reshape(n, size // 4))
        self.dst = np.zeros(size // 4, dtype=np.float32)

    def put(self, key: str, i: int, arr: np.ndarray) -> None:
        np.copyto(self.slots[i], arr)

    def get(self, key: str, i: int) -> np.ndarray:
        np.copyto(self.dst, self.slots[i])
        return self.dst

    def delete(self, key: str, i: int) -> None:
        pass

    def close(self) -> None:
        self.slots = []


class NpyClient:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.dir = cfg["npy_dir"]

    def _path(self, key: str) -> str:
        return os.path.join(self.dir, key.replace("/", "_") + ".npy")

    def prepare(self, size: int, n: int) -> None:
        pass

    def put(self, key: str, i: int, arr: np.ndarray) -> None:
        np.save(self._path(key), arr)

    def get(self, key: str, i: int) -> np.ndarray:
        return np.load(self._path(key))

    def delete(self, key: str, i: int) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        pass


class RedisPyClient:
    def __init__(self, cfg: dict[str, Any]) -> None:
        import redis

        self.r = redis.Redis(
            host="127.0.0.1", port=cfg["redis_port"], password=os.environ["SIMAI_STORE_PASSWORD"]
        )

    def prepare(self, size: int, n: int) -> None:
        pass

    def put(self, key: str, i: int, arr: np.ndarray) -> None:
        self.r.set(key, memoryview(arr).cast("B"))

    def get(self, key: str, i: int) -> np.ndarray:
        return np.frombuffer(self.r.get(key), dtype=np.float32)

    def delete(self, key: str, i: int) -> None:
        self.r.delete(key)

    def close(self) -> None:
        self.r.close()


class SimaiClient:
    def __init__(
        self,
        cfg: dict[str, Any],
        url: str,
        view: bool = False,
        out: bool = False,
        counted: bool = True,
    ):
        import simai
        from simai.store import counters

        counters.configure(enabled=counted)
        self.s = simai.open_store(url)
        self.view = view
        self.out: np.ndarray | None = np.empty(0, np.float32) if out else None

    def prepare(self, size: int, n: int) -> None:
        if self.out is not None:
            self.out = np.empty(size // 4, np.float32)

    def put(self, key: str, i: int, arr: np.ndarray) -> None:
        self.s.put(key, arr)

    def get(self, key: str, i: int) -> np.ndarray:
        if self.out is not None:
            return self.s.get(key, out=self.out)
        return self.s.get(key, view=self.view)

    def delete(self, key: str, i: int) -> None:
        self.s.delete(key)

    def close(self) -> None:
        self.s.close()


def make_client(name: str, cfg: dict[str, Any]) -> _bench_loop.Client:
    if name in ("copyto", "copyto-cached"):
        return CopytoClient(cfg, cached=name == "copyto-cached")
    if name == "lmdb":
        return LmdbClient(cfg)
    if name == "copyto-shm":
        return CopytoShmClient(cfg)
    if name == "npy":
        return NpyClient(cfg)
    if name == "redis-py":
        return RedisPyClient(cfg)
    counted = not name.endswith("-uncounted")
    name = name.removesuffix("-uncounted")
    if name == "local-unverified":
        return SimaiClient(cfg, LOCAL_STORE_URL)
    if name in ("local", "local-out", "local-view"):
        view, out = name == "local-view", name == "local-out"
        return SimaiClient(cfg, LOCAL_STORE_URL, view=view, out=out, counted=counted)
    if name == "file":
        return SimaiClient(cfg, f"file://{FILE_STORE_DIR}", counted=counted)
    if name == "redis":
        return SimaiClient(cfg, f"redis://127.0.0.1:{cfg['redis_port']}", counted=counted)
    raise ValueError(f"unknown backend {name!r}")


def _role_main(role: str, name: str, cfg: dict[str, Any], peer: Any, results: Any) -> None:
    """Entry point of the producer and consumer processes."""
    try:
        if name == "local-unverified":
            _switch_off_verification()
        client = make_client(name, cfg)
        try:
            fn = _bench_loop.producer if role == "producer" else _bench_loop.consumer
            counts = {int(k): v for k, v in cfg["counts"].items()}
            res = fn(client, peer, cfg["sizes"], counts, cfg["repeat"], cfg["warmup"])
        finally:
            client.close()
        results.send(("ok", res))
    except BaseException:
        peer.close()
        results.send(("error", traceback.format_exc()))


# --- orchestration ---------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    rows: dict[int, dict[str, float]] = field(default_factory=dict)
    roundtrip_s: float | None = None
    error: str | None = None
    seconds: float = 0.0


def _merge(name: str, res: dict[str, Any]) -> Outcome:
    out = Outcome(name)
    for size, st in res.get("put", {}).items():
        out.rows.setdefault(int(size), {}).update(
            put_gbps=st["gbps"], put_lat=st["lat_s"], n=st.get("per_rep")
        )
    for size, st in res.get("get", {}).items():
        out.rows.setdefault(int(size), {}).update(get_gbps=st["gbps"], get_lat=st["lat_s"])
    out.roundtrip_s = res.get("roundtrip_s")
    return out


def combine(name: str, rounds: list[Outcome]) -> Outcome:
    """One outcome from several rounds: the median of each figure over the rounds."""
    out = Outcome(name, seconds=sum(oc.seconds for oc in rounds))
    errors = [oc.error for oc in rounds if oc.error]
    if errors:
        out.error = errors[0]
    sizes = {size for oc in rounds for size in oc.rows}
    for size in sorted(sizes):
        rows = [oc.rows[size] for oc in rounds if size in oc.rows]
        keys = {k for row in rows for k in row}
        out.rows[size] = {
            k: statistics.median([row[k] for row in rows if row.get(k) is not None])
            for k in keys
            if any(row.get(k) is not None for row in rows)
        }
    rts = [oc.roundtrip_s for oc in rounds if oc.roundtrip_s is not None]
    out.roundtrip_s = statistics.median(rts) if rts else None
    return out


def run_pair(name: str, cfg: dict[str, Any], timeout: float) -> Outcome:
    """Run one producer and one consumer process for backend `name`; never leaves them behind."""
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    results = []
    procs = []
    for role, peer in (("producer", a), ("consumer", b)):
        r_recv, r_send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_role_main, args=(role, name, cfg, peer, r_send), daemon=True)
        p.start()
        r_send.close()
        procs.append(p)
        results.append(r_recv)
    a.close()
    b.close()
    merged: dict[str, Any] = {}
    errors = []
    deadline = time.monotonic() + timeout
    try:
        for role, conn in zip(("producer", "consumer"), results, strict=True):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                errors.append(f"{role}: no result within {timeout:.0f} s")
                break
            try:
                status, res = conn.recv()
            except EOFError:
                errors.append(f"{role}: process died without a result")
                continue
            if status == "ok":
                merged.update(res)
            else:
                errors.append(f"{role}: {res}")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    out = _merge(name, merged)
    if errors:
        out.error = "\n".join(errors)
    return out


def empty_store(name: str, cfg: dict[str, Any]) -> None:
    """Start backend `name`'s run with an empty store, as every run of every backend does: a
    store that earlier runs left full of freed pages would send each put to pages the new
    producer has never touched (a page fault per 4 KiB)."""
    if name.startswith("local"):
        import simai

        simai.open_store(LOCAL_STORE_URL).destroy()
    elif name.startswith("file"):
        shutil.rmtree(FILE_STORE_DIR, ignore_errors=True)
    elif name == "lmdb":
        shutil.rmtree(cfg["lmdb_dir"], ignore_errors=True)
        os.mkdir(cfg["lmdb_dir"], 0o700)


def probe_simai(name: str, cfg: dict[str, Any]) -> str | None:
    """Why backend `name` cannot run now (not importable or failing a put/get), else None."""
    try:
        if name == "local-unverified":
            _switch_off_verification()
        client = make_client(name, cfg)
        try:
            arr = np.arange(4, dtype=np.float32)
            client.prepare(arr.nbytes, 1)
            client.put("bench/probe", 0, arr)
            if not np.array_equal(client.get("bench/probe", 0), arr):
                return "probe put/get returned a different array"
            client.delete("bench/probe", 0)
        finally:
            client.close()
    except Exception as e:
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None


def run_dragon(
    cfg: dict[str, Any], timeout: float, max_ops: int, rounds: int
) -> dict[str, Outcome]:
    """Run the DDict baseline and simai's dragon:// store on it under `dragon -s`, in one
    session, alternated `rounds` times, and parse its JSON line: an outcome for each of
    DRAGON_BACKENDS (the medians over rounds)."""

    def failed(why: str) -> dict[str, Outcome]:
        return {name: Outcome(name, error=why) for name in DRAGON_BACKENDS}

    exe = shutil.which("dragon", path=str(Path(sys.executable).parent))
    if exe is None:
        return failed("`dragon` not found next to this Python: pip install dragonhpc")
    dcfg = dict(cfg)
    dcfg["counts"] = {k: min(v, max_ops) for k, v in cfg["counts"].items()}
    biggest = max(s * dcfg["counts"][str(s)] for s in cfg["sizes"])
    dcfg["total_mem"] = max(256 * MIB, 3 * biggest)
    dcfg["timeout"] = timeout
    dcfg["dragon_rounds"] = rounds
    limit = 2 * rounds * timeout + 60
    env = {k: v for k, v in os.environ.items() if k != "SIMAI_STORE_PASSWORD"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [exe, "-s", str(HERE / "_dragon_ddict.py"), json.dumps(dcfg)]
    shm_before = set(os.listdir("/dev/shm"))
    # Its own process group (so a timeout can end the whole tree), but not its own session:
    # under start_new_session the Dragon runtime starts and then never runs the script.
    proc = subprocess.Popen(
        cmd,
        cwd=tempfile.gettempdir(),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    try:
        text, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return failed(f"dragon -s did not finish within {limit:.0f} s")
    finally:
        _kill_group(proc)
        for name in set(os.listdir("/dev/shm")) - shm_before:
            if name.startswith("DD"):  # Dragon's pools and log rings, left if it was killed
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join("/dev/shm", name))
    tag = "SIMAI_BENCH_DRAGON_JSON "
    lines = [ln for ln in text.splitlines() if ln.startswith(tag)]
    if not lines:
        tail = "\n".join(text.splitlines()[-15:])
        return failed(f"dragon -s exited {proc.returncode} without results:\n{tail}")
    res = json.loads(lines[-1][len(tag) :])
    outs = {name: _merge(name, res.get(name, {})) for name in DRAGON_BACKENDS}
    errors = res.get("errors", [])
    shared = [e for e in errors if not e.startswith(tuple(n + " " for n in DRAGON_BACKENDS))]
    for name, out in outs.items():
        mine = [e for e in errors if e.startswith(name + " ")] + shared
        if mine or not out.rows:
            out.error = "\n".join(mine or ["no results"])
    return outs


def _kill_group(proc: subprocess.Popen) -> None:
    """End what is left of the process group of `proc`: SIGINT (Dragon's clean teardown) first."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # helpers of the group may outlive the head briefly
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class RedisServer:
    """A password-protected redis-server on 127.0.0.1, configured through a 0600 file.

    The fallback for when simai.store.redis_server is not importable.
    """

    how = "redis-server with a 0600 config file (benchmark's own starter)"

    def __init__(self) -> None:
        self.password = secrets.token_urlsafe(24)
        self.dir = tempfile.mkdtemp(prefix="simai-bench-redis-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = os.path.join(self.dir, "redis.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                f"port {self.port}\nbind 127.0.0.1\nrequirepass {self.password}\n"
                f'save ""\nappendonly no\ndir {self.dir}\nprotected-mode yes\n'
            )
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.proc = subprocess.Popen(
            [exe, conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        r = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                r.close()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class SimaiRedisServer:
    """One shard from simai.store.redis_server.RedisServers (same server for both clients)."""

    how = "simai.store.redis_server.RedisServers(shards=1), its default jemalloc settings"

    def __init__(self) -> None:
        from simai.store.redis_server import RedisServers

        self.servers = RedisServers(shards=1)
        self.port = self.servers.shards[0].port
        self.password = self.servers.password

    def stop(self) -> None:
        self.servers.stop()


def start_redis() -> RedisServer | SimaiRedisServer:
    try:
        import simai.store.redis_server  # noqa: F401
    except ImportError:
        return RedisServer()
    return SimaiRedisServer()


def _shown_python() -> str:
    """The interpreter as the user would type it: relative when inside the working directory."""
    rel = os.path.relpath(sys.executable)
    return sys.executable if rel.startswith("..") else rel


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024**2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for mod in ("redis", "hiredis", "dragon"):
        try:
            from importlib.metadata import version

            info[mod] = version({"dragon": "dragonhpc"}.get(mod, mod))
        except Exception:
            info[mod] = "not installed"
    try:
        info["redis-server"] = (
            subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=5)
            .stdout.split()[2]
            .removeprefix("v=")
        )
    except Exception:
        info["redis-server"] = "not found"
    return info


# --- report ---------------------------------------------------------------------------------


def _g(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _lat(x: float | None) -> str:
    if x is None:
        return "–"
    us = x * 1e6
    if us < 1000:
        return f"{us:.3g} µs"
    return f"{us / 1000:.3g} ms"


def render(outcomes: dict[str, Outcome], sizes: list[int], header: list[str]) -> str:
    lines = list(header)
    lines += [
        "",
        "## Producer process → consumer process",
        "",
        "GB/s = 1e9 bytes/s, median over repetitions of (bytes moved / time spent in the ops); "
        "latency = median time of one put (in the producer) or one get (in the consumer); "
        "arrays = distinct keys put then got per repetition (overwritten every repetition).",
        "",
        "| size | backend | arrays | put GB/s | get GB/s | put latency | get latency |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        for name, oc in outcomes.items():
            row = oc.rows.get(size)
            if not row:
                continue
            n = int(row["n"]) if row.get("n") else "–"
            lines.append(
                f"| {fmt_size(size)} | {BACKENDS[name][0]} | {n} "
                f"| {_g(row.get('put_gbps'))} | {_g(row.get('get_gbps'))} "
                f"| {_lat(row.get('put_lat'))} | {_lat(row.get('get_lat'))} |"
            )
    rts = {n: oc.roundtrip_s for n, oc in outcomes.items() if oc.roundtrip_s is not None}
    if rts:
        lines += [
            "",
            "## 8 KiB put + get round trip (one process, median)",
            "",
            "| backend | round trip |",
            "| --- | ---: |",
        ]
        lines += [f"| {BACKENDS[n][0]} | {_lat(t)} |" for n, t in rts.items()]
    lines += ["", "## Targets", ""] + ratio_lines(outcomes, sizes)
    failed = {n: oc.error for n, oc in outcomes.items() if oc.error}
    if failed:
        lines += ["", "## Backends that did not run (or failed)", ""]
        for n, err in failed.items():
            lines += [f"- **{BACKENDS[n][0]}**:", "", "  ```"]
            lines += ["  " + ln for ln in err.strip().splitlines()[-12:]]
            lines += ["  ```"]
    lines += ["", "## Backends", ""]
    lines += [f"- {BACKENDS[n][0]}: {BACKENDS[n][1]}" for n in outcomes]
    return "\n".join(lines) + "\n"


def ratio_lines(outcomes: dict[str, Outcome], sizes: list[int]) -> list[str]:
    """One line per target: measured ratio, target, and whether it is met."""

    def requested(name: str) -> bool:
        return name in outcomes

    def val(name: str, size: int, metric: str) -> float | None:
        oc = outcomes.get(name)
        return oc.rows.get(size, {}).get(metric) if oc else None

    out = ["| target | size | ratio | goal | met |", "| --- | --- | ---: | ---: | :---: |"]

    def add(what: str, size: int, num_name: str, den_name: str, metric: str, goal: float | None):
        num, den = val(num_name, size, metric), val(den_name, size, metric)
        label = fmt_size(size) if size else "–"
        want = f"≥ {goal:g}×" if goal is not None else "(context)"
        if not requested(num_name) or not requested(den_name):
            return
        if num is None or den is None or den == 0:
            out.append(f"| {what} | {label} | n/a | {want} | n/a |")
            return
        r = num / den
        met = "–" if goal is None else ("yes" if r >= goal else "NO")
        out.append(f"| {what} | {label} | {r:.2f}× | {want} | {met} |")

    for size in (s for s in sizes if s in (MIB, 16 * MIB, 64 * MIB)):
        for op in ("put", "get"):
            add(
                f"simai local {op} / np.copyto {op}",
                size,
                "local",
                "copyto",
                f"{op}_gbps",
                0.7,
            )
        add("simai local get(out=) / np.copyto get", size, "local-out", "copyto", "get_gbps", 0.7)
        for op in ("put", "get"):
            add(
                f"simai local {op} / np.copyto, one cached buffer {op}",
                size,
                "local",
                "copyto-cached",
                f"{op}_gbps",
                None,
            )
            add(f"simai local {op} / LMDB {op}", size, "local", "lmdb", f"{op}_gbps", None)
        for op in ("put", "get"):
            add(
                f"simai local {op} / np.copyto via shm {op}",
                size,
                "local",
                "copyto-shm",
                f"{op}_gbps",
                None,
            )
    rt = outcomes["local"].roundtrip_s if "local" in outcomes else None
    rt_lmdb = outcomes["lmdb"].roundtrip_s if "lmdb" in outcomes else None
    if rt is not None and rt_lmdb:
        r = rt / rt_lmdb
        out.append(
            f"| simai local 8 KiB put+get round trip / LMDB's ({rt * 1e6:.3g} µs / "
            f"{rt_lmdb * 1e6:.3g} µs) | 8 KiB | {r:.2f}× | ≤ 2× | {'yes' if r <= 2 else 'NO'} |"
        )
    for size in sizes:
        for op in ("put", "get"):
            add(
                f"verification: simai local {op} / unverified {op}",
                size,
                "local",
                "local-unverified",
                f"{op}_gbps",
                0.95 if size == 16 * MIB else None,
            )
    for size in sizes:
        goal = 3.0 if size >= 64 * MIB else 10.0
        for op in ("put", "get"):
            add(
                f"simai local {op} / Dragon DDict {op}",
                size,
                "local",
                "dragon",
                f"{op}_gbps",
                goal,
            )
    for size in sizes:
        for op in ("put", "get"):
            add(
                f"simai dragon {op} / Dragon DDict {op} (same session)",
                size,
                "simai-dragon",
                "dragon",
                f"{op}_gbps",
                0.9,
            )
    for size in sizes:
        for op in ("put", "get"):
            add(
                f"simai redis {op} / redis-py {op}",
                size,
                "redis",
                "redis-py",
                f"{op}_gbps",
                1.0,
            )
    for kind in ("local", "file", "redis"):
        for size in sizes:
            for op in ("put", "get"):
                add(
                    f"simai {kind} {op} counted / uncounted",
                    size,
                    kind,
                    f"{kind}-uncounted",
                    f"{op}_gbps",
                    0.95,
                )
        rt_on = outcomes[kind].roundtrip_s if kind in outcomes else None
        rt_off = (
            outcomes[f"{kind}-uncounted"].roundtrip_s if f"{kind}-uncounted" in outcomes else None
        )
        if rt_on and rt_off:
            r = rt_off / rt_on
            out.append(
                f"| simai {kind} 8 KiB round trip rate counted / uncounted | 8 KiB | {r:.2f}× "
                f"| ≥ 0.95× | {'yes' if r >= 0.95 else 'NO'} |"
            )
    if 16 * MIB in sizes:
        add(
            "simai redis put / redis-py put",
            16 * MIB,
            "redis",
            "redis-py",
            "put_gbps",
            4.0,
        )
    for size in sizes:
        for op in ("put", "get"):
            add(
                f"simai file {op} / np.{'save' if op == 'put' else 'load'}",
                size,
                "file",
                "npy",
                f"{op}_gbps",
                0.9,
            )
    return out


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"array sizes (default {DEFAULT_SIZES})")
    p.add_argument(
        "--repeat", type=int, default=None, help="timed repetitions a round (default 3; quick 2)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds over all backends, interleaved in time so that load from other processes "
        "hits every backend alike; figures are medians over rounds; Dragon's rounds run in one "
        "dragon -s session, DDict and simai dragon alternated (default 3; quick 1)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default 1)")
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated subset of {','.join(BACKENDS)} (default all)",
    )
    p.add_argument("--quick", action="store_true", help="fewer arrays and repetitions")
    p.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    p.add_argument("--timeout", type=float, default=120, help="seconds per backend (default 120)")
    p.add_argument(
        "--dragon-ops",
        type=int,
        default=None,
        help=f"at most this many arrays per repetition on Dragon's backends (default "
        f"{DRAGON_MAX_OPS}; quick {DRAGON_MAX_OPS // 2}): a small DDict op takes milliseconds",
    )
    p.add_argument(
        "--scale",
        action="store_true",
        help="instead of the table: how the node-local store's costs grow with its size (1k to "
        "1M keys), and large reads by a fresh process against np.load and np.copyto",
    )
    p.add_argument(
        "--files-dir",
        default=os.getcwd(),
        help="a disk directory for the .npy baseline of --scale (default: the current one)",
    )
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()})
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if not args.sizes:
        p.error("--sizes is empty")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        p.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if args.repeat is None:
        args.repeat = 2 if args.quick else 3
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.dragon_ops is None:
        args.dragon_ops = DRAGON_MAX_OPS // 2 if args.quick else DRAGON_MAX_OPS
    if args.repeat < 1 or args.rounds < 1 or args.warmup < 0 or args.dragon_ops < 1:
        p.error("--repeat, --rounds and --dragon-ops must be >= 1, --warmup >= 0")
    return args


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop everything


def main_scale(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    load0 = f"{os.getloadavg()[0]:.2f}"
    t0 = time.monotonic()
    print("--- costs as the store grows", flush=True)
    grown = _store_scale.scale("local://bench-scale")
    print("--- large reads by a fresh process", flush=True)
    read = _store_scale.fresh("local://bench-fresh", args.files_dir)
    info = machine_info()
    lines = [
        "# simai store benchmark: scale and fresh-process reads",
        "",
        f"- command: `{shlex.join([_shown_python(), *sys.argv])}`",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}, total {time.monotonic() - t0:.0f} s",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, Linux "
        f"{info['kernel']}; load average {load0} at start, {os.getloadavg()[0]:.2f} at end",
        f"- disk directory for the .npy files: {args.files_dir}",
        "",
        *_store_scale.render_scale(grown),
        "",
        *_store_scale.render_fresh(read),
    ]
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    if args.out:
        args.out.write_text(report)
        print(f"written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.scale:
        return main_scale(args)
    started = datetime.now(UTC)
    counts = op_counts(args.sizes, args.quick)
    cfg: dict[str, Any] = {
        "sizes": args.sizes,
        "counts": {str(s): n for s, n in counts.items()},
        "repeat": args.repeat,
        "warmup": args.warmup,
    }
    tmp_paths: list[str] = []
    server: RedisServer | SimaiRedisServer | None = None
    outcomes: dict[str, Outcome] = {}
    t_all = time.monotonic()
    load0 = f"{os.getloadavg()[0]:.2f}"
    try:
        if {"redis", "redis-py", "redis-uncounted"} & set(args.backends):
            server = start_redis()
            cfg["redis_port"] = server.port
            os.environ["SIMAI_STORE_PASSWORD"] = server.password
            print(f"redis-server on 127.0.0.1:{server.port}: {server.how}")
        if "copyto-shm" in args.backends:
            fd, path = tempfile.mkstemp(prefix="simai-bench-copyto-", dir="/dev/shm")
            os.ftruncate(fd, max(s * n for s, n in counts.items()))
            os.close(fd)
            cfg["shm_path"] = path
            tmp_paths.append(path)
        if "lmdb" in args.backends:
            cfg["lmdb_dir"] = tempfile.mkdtemp(prefix="simai-bench-lmdb-", dir="/dev/shm")
            tmp_paths.append(cfg["lmdb_dir"])
        if "npy" in args.backends:
            cfg["npy_dir"] = tempfile.mkdtemp(prefix="simai-bench-npy-", dir="/dev/shm")
            tmp_paths.append(cfg["npy_dir"])
        rounds: dict[str, list[Outcome]] = {name: [] for name in args.backends}
        for rnd in range(args.rounds):
            for name in args.backends:
                if rnd and (name in DRAGON_BACKENDS or rounds[name][0].error):
                    continue  # Dragon takes a minute a round; a failed backend stays failed
                if name in DRAGON_BACKENDS and rounds[name]:
                    continue  # measured with the other one, in the same dragon -s session
                t0 = time.monotonic()
                print(f"--- {BACKENDS[name][0]} (round {rnd + 1}/{args.rounds}) ...", flush=True)
                if name in DRAGON_BACKENDS:
                    both = run_dragon(cfg, args.timeout, args.dragon_ops, args.rounds)
                    oc = both[name]
                    for other in set(DRAGON_BACKENDS) - {name}:
                        if other in rounds:
                            rounds[other].append(both[other])
                else:
                    empty_store(name, cfg)
                    why = probe_simai(name, cfg) if name in SIMAI_BACKENDS else None
                    if why:
                        oc = Outcome(name, error=f"not run: {why}")
                    else:
                        oc = run_pair(name, cfg, args.timeout)
                oc.seconds = time.monotonic() - t0
                rounds[name].append(oc)
                if oc.error:
                    err = oc.error.strip().replace("\n", "\n    ")
                    print(f"    {name} failed or skipped:\n    {err}")
                print(f"    {oc.seconds:.1f} s", flush=True)
        outcomes = {name: combine(name, ocs) for name, ocs in rounds.items()}
    finally:
        if server is not None:
            server.stop()
        for path in tmp_paths:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)
        shutil.rmtree(FILE_STORE_DIR, ignore_errors=True)
        if set(SIMAI_BACKENDS) & set(args.backends):
            with contextlib.suppress(Exception):
                import simai

                simai.open_store(LOCAL_STORE_URL).destroy()
    info = machine_info()
    load1 = f"{os.getloadavg()[0]:.2f}"
    header = [
        "# simai store benchmark",
        "",
        f"- command: `{shlex.join([_shown_python(), *sys.argv])}`",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}, total {time.monotonic() - t_all:.0f} s",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, "
        f"Linux {info['kernel']}; load average {load0} at start, {load1} at end",
        "- software: "
        + ", ".join(
            f"{k} {info[k]}"
            for k in ("python", "numpy", "redis-server", "redis", "hiredis", "dragon")
        ),
        "- arrays: float32; per size, arrays per repetition: "
        + ", ".join(f"{fmt_size(s)} ×{n}" for s, n in counts.items())
        + f" (Dragon at most {args.dragon_ops}); "
        + f"{args.warmup} warm-up + {args.repeat} timed repetitions in each of {args.rounds} "
        + "rounds over all backends (Dragon: the rounds run in one dragon -s session, DDict "
        + "and simai dragon alternated), median over rounds; "
        + "producer and consumer are separate processes started with spawn",
    ]
    report = render(outcomes, args.sizes, header)
    print()
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: servers and processes stopped", file=sys.stderr)
        sys.exit(130)
