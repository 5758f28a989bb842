"""Native clients benchmark: the workload of store.py from C, and a surrogate call from C.

Builds native/ (Release, with libsimai_torch from the torch wheel) into a cache directory
under the temporary directory once, then the C programs in benchmarks/native/ against it
(find_package(simai COMPONENTS torch)). Each round runs, one after another: the C client on
the node-local store (get into a reused buffer, into a new one simai_get_alloc allocates, and
into the caller's own malloc'd one), the Python client (store.py's producer and consumer
processes), glibc's memcpy in C (the copy the issue's targets compare with: into a reused
buffer, and into new ones allocated those two ways), then a small TorchScript MLP called from
C through libsimai_torch and from Python's simai.Surrogate. Every process, C and Python, runs
with the environment simai gives a task it launches (huge pages for large allocations,
simai/launch/memory.py; --bare-env leaves it out). Prints a Markdown report with the issue's
targets.

    .venv/bin/python benchmarks/native.py --out benchmarks/results/native.md
    .venv/bin/python benchmarks/native.py --sizes 8K,1M --rounds 1 --n-small 200
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import store as sb  # noqa: E402  (benchmarks/store.py: its loops, rows and report helpers)

HERE = Path(__file__).resolve().parent
NATIVE = HERE.parent / "native"
MODEL_STORE_URL = "local://bench-surrogate"
MODEL = "bench-mlp"

# name -> (label in the table, what is measured)
ROWS: dict[str, tuple[str, str]] = {
    "c": ("simai C", "libsimai: simai_put_array / simai_get_array into one reused buffer"),
    "c-alloc": (
        "simai C, new buffer",
        "libsimai: simai_put_array / simai_get_alloc + simai_free for every get (a new buffer "
        "libsimai allocates, advised to use huge pages), as Python's get returns a new array",
    ),
    "c-new": (
        "simai C, malloc buffer",
        "libsimai: simai_put_array / malloc + simai_get_array + free for every get: the "
        "caller's own new buffer",
    ),
    "python": ("simai Python", "simai.open_store(url).put / get(key) (store.py's `local` row)"),
    "memcpy": (
        "memcpy",
        "C memcpy (glibc's) into n preallocated, touched slots (put) and out of them into one "
        "reused buffer (get), in each process, no handoff: the limit of a copy through the "
        "cache; libsimai's puts from 256 KiB stream past the cache and can pass it",
    ),
    "memcpy-alloc": (
        "memcpy, new buffer",
        "as memcpy, but every get copies into a new buffer allocated as simai_get_alloc "
        "allocates a fresh one (advised to use huge pages: malloc up to 32 MiB, whole aligned "
        "huge pages above), freed after; simai_free keeps the last one above 32 MiB for the "
        "next get, this row does not",
    ),
    "memcpy-new": (
        "memcpy, malloc buffer",
        "as memcpy, but every get copies into a new malloc'd buffer, freed after",
    ),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- building ----------------------------------------------------------------------------------


def build(cache: Path) -> Path:
    """Install native/ (Release, with libsimai_torch) under `cache` and build the benchmark's C
    programs against it; return their directory. Later runs rebuild only what changed."""
    import torch

    prefix, lib, progs = cache / "prefix", cache / "build", cache / "bench"

    def step(*cmd: str | Path) -> None:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{shlex.join(map(str, cmd))} failed:\n{done.stdout}{done.stderr}")

    log(f"--- building native/ into {cache} (minutes the first time)")
    step("cmake", "-S", NATIVE, "-B", lib, f"-DCMAKE_INSTALL_PREFIX={prefix}",
         f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", "-DCMAKE_BUILD_TYPE=Release",
         "-DSIMAI_FORTRAN=OFF")  # fmt: skip
    step("cmake", "--build", lib, "-j2")
    step("cmake", "--install", lib)
    step("cmake", "-S", HERE / "native", "-B", progs, f"-DCMAKE_PREFIX_PATH={prefix}",
         "-DCMAKE_BUILD_TYPE=Release")  # fmt: skip
    step("cmake", "--build", progs, "-j2")
    return progs


# --- environment -------------------------------------------------------------------------------


def task_env() -> dict[str, str]:
    """The variables simai adds to the environment of a task it launches (a simai.Command or a
    Python task): huge pages for large allocations, where the kernel gives them
    (simai/launch/memory.py); those already set are left out."""
    from simai.launch.memory import huge_pages_default, huge_pages_env, huge_pages_setting, thp_mode

    if huge_pages_setting(huge_pages_default(), thp_mode()) != "on":
        return {}
    return huge_pages_env(os.environ)


def env_line(extra: dict[str, str], bare: bool) -> str:
    from simai.launch.memory import thp_mode

    if extra:
        added = ", ".join(f"`{k}={v}`" for k, v in extra.items())
        how = f"with what simai adds to a task it launches: {added}"
    elif bare:
        how = "without what simai adds to a task it launches (--bare-env)"
    else:
        how = "as simai launches a task, which adds nothing here"
    return f"every process (C and Python) runs {how}; kernel THP mode {thp_mode()}"


def glibc_streaming() -> str:
    """Where glibc's memcpy starts to stream past the cache (its non-temporal threshold, set from
    the cache sizes the CPU reports), as ld.so lists it."""
    for loader in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"):
        try:
            done = subprocess.run([loader, "--list-tunables"], capture_output=True, text=True)
        except OSError:
            continue
        for line in done.stdout.splitlines():
            if line.startswith("glibc.cpu.x86_non_temporal_threshold:"):
                return f"from {sb.fmt_size(int(line.split()[1], 16))} up"
    return "threshold unknown"


def shm_dir() -> str:
    """Where local:// stores live, and its file system."""
    base = os.environ.get("SIMAI_SHM_DIR", "/dev/shm")
    fs = "?"
    try:
        mounts = [ln.split() for ln in Path("/proc/mounts").read_text().splitlines()]
        real = os.path.realpath(base)
        best = max((m for m in mounts if real == m[1] or real.startswith(m[1].rstrip("/") + "/")),
                   key=lambda m: len(m[1]), default=None)  # fmt: skip
        fs = best[2] if best else fs
    except OSError:
        pass
    return f"`{base}`, {fs}"


# --- store rows --------------------------------------------------------------------------------


def run_c(progs: Path, name: str, cfg: dict[str, Any], timeout: float) -> sb.Outcome:
    """One run of store_bench (it forks its own consumer) as an Outcome of store.py."""
    backend = {"c": "simai", "c-new": "simai-new", "c-alloc": "simai-alloc"}.get(name)
    spec = f"{backend}:{sb.LOCAL_STORE_URL}" if backend else name
    sizes = [f"{s}:{cfg['counts'][str(s)]}" for s in cfg["sizes"]]
    cmd = [progs / "store_bench", spec, str(cfg["repeat"]), str(cfg["warmup"]), *sizes]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return sb.Outcome(name, error=f"no result within {timeout:.0f} s")
    if done.returncode:
        return sb.Outcome(name, error=done.stderr.strip() or f"exit status {done.returncode}")
    res = json.loads(done.stdout)
    if res["roundtrip_s"] < 0:
        del res["roundtrip_s"]
    return sb._merge(name, res)


def run_store_row(progs: Path, name: str, cfg: dict[str, Any], timeout: float) -> sb.Outcome:
    sb.empty_store("local", cfg)
    if name == "python":
        return sb.run_pair("local", cfg, timeout)
    return run_c(progs, name, cfg, timeout)


# --- surrogate rows ----------------------------------------------------------------------------


def publish_mlp(sizes: tuple[int, int, int]) -> None:
    """Publish a scripted MLP (in -> hidden -> out, ReLU) as version 1 of MODEL."""
    import torch

    import simai
    from simai.models import publish_model

    torch.manual_seed(0)
    n_in, hidden, n_out = sizes
    mlp = torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_out)
    )
    with warnings.catch_warnings():  # torch.jit says it is deprecated; TorchScript is the format
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(mlp)
    s = simai.open_store(MODEL_STORE_URL)
    s.destroy()
    s = simai.open_store(MODEL_STORE_URL)
    publish_model(s, MODEL, scripted)
    s.close()


def batch(rows: int, cols: int) -> np.ndarray:
    """The batch surrogate_bench.c builds: x[i, j] = ((i * cols + j) % 97) / 97 - 0.5."""
    k = np.arange(rows * cols, dtype=np.int64) % 97
    return (k.astype(np.float32) / np.float32(97) - np.float32(0.5)).reshape(rows, cols)


def surrogate_python(rows: int, cols: int, calls: int) -> dict[str, float]:
    import simai

    sur = simai.Surrogate(MODEL, MODEL_STORE_URL, poll=3600, trusted=True)
    sur.wait_for_model(timeout=60)
    x = batch(rows, cols)
    times = []
    for c in range(-(calls // 10), calls):
        t0 = time.perf_counter_ns()
        y, version = sur.call(x)
        if c >= 0:
            times.append(time.perf_counter_ns() - t0)
    sur.store.close()
    return {
        "median_s": statistics.median(times) * 1e-9,
        "mean_s": statistics.fmean(times) * 1e-9,
        "version": version,
        "sum": float(np.sum(y, dtype=np.float64)),
    }


def surrogate_c(progs: Path, rows: int, cols: int, calls: int, threads: int) -> dict[str, float]:
    cmd = [progs / "surrogate_bench", MODEL_STORE_URL, MODEL, str(rows), str(cols), str(calls)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if done.returncode:
        raise RuntimeError(f"surrogate_bench failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


# --- report ------------------------------------------------------------------------------------


def ratio_row(what: str, size: str, num: float | None, den: float | None, goal: float) -> str:
    if not num or not den:
        return f"| {what} | {size} | n/a | ≥ {goal:g}× | n/a |"
    r = num / den
    return f"| {what} | {size} | {r:.2f}× | ≥ {goal:g}× | {'yes' if r >= goal else 'NO'} |"


def targets(oc: dict[str, sb.Outcome], sizes: list[int], sur: dict[str, list[dict]]) -> list[str]:
    def v(name: str, size: int, metric: str) -> float | None:
        return oc[name].rows.get(size, {}).get(metric) if name in oc else None

    out = ["| target | size | ratio | goal | met |", "| --- | --- | ---: | ---: | :---: |"]
    for size in sizes:
        fs = sb.fmt_size(size)
        out.append(ratio_row("C put / Python put", fs, v("c", size, "put_gbps"),
                             v("python", size, "put_gbps"), 1.0))  # fmt: skip
        out.append(ratio_row("C get, new buffer / Python get", fs, v("c-alloc", size, "get_gbps"),
                             v("python", size, "get_gbps"), 1.0))  # fmt: skip
    rt_c, rt_py = oc["c"].roundtrip_s, oc["python"].roundtrip_s
    out.append(ratio_row("8 KiB round trip: Python time / C time", "8 KiB", rt_py, rt_c, 1.0))
    for size in (s for s in sizes if s >= sb.MIB):
        fs = sb.fmt_size(size)
        for what, num, den, metric in (
            ("C put / memcpy put", "c", "memcpy", "put_gbps"),
            ("C get / memcpy get", "c", "memcpy", "get_gbps"),
            ("C get, new buffer / memcpy get, new buffer", "c-alloc", "memcpy-alloc", "get_gbps"),
            ("C get, malloc buffer / memcpy get, malloc buffer", "c-new", "memcpy-new", "get_gbps"),
        ):
            out.append(ratio_row(what, fs, v(num, size, metric), v(den, size, metric), 0.8))
    med = {k: statistics.median(r["median_s"] for r in runs) for k, runs in sur.items() if runs}
    out.append(
        ratio_row("surrogate call: Python time / C time", "–", med.get("python"), med.get("c"), 1)
    )
    return out


def render(
    oc: dict[str, sb.Outcome], sizes: list[int], sur: dict[str, list[dict]], header: list[str]
) -> str:
    lines = [*header, "", "## Producer → consumer, node-local store", ""]
    lines += [
        "| size | row | arrays/rep | put GB/s | get GB/s | put latency | get latency |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        for name, o in oc.items():
            row = o.rows.get(size)
            if not row:
                continue
            lines.append(
                f"| {sb.fmt_size(size)} | {ROWS[name][0]} | {int(row['n'])} "
                f"| {sb._g(row.get('put_gbps'))} | {sb._g(row.get('get_gbps'))} "
                f"| {sb._lat(row.get('put_lat'))} | {sb._lat(row.get('get_lat'))} |"
            )
    rts = {n: o.roundtrip_s for n, o in oc.items() if o.roundtrip_s and n in ("c", "python")}
    if rts:
        lines += ["", "## 8 KiB put + get round trip (one process, median)", ""]
        lines += ["| row | round trip |", "| --- | ---: |"]
        lines += [f"| {ROWS[n][0]} | {sb._lat(t)} |" for n, t in rts.items()]
    if any(sur.values()):
        lines += ["", "## Surrogate call (median over rounds of the median call)", ""]
        lines += ["| caller | µs / call (median) | µs / call (mean) |", "| --- | ---: | ---: |"]
        for who, label in (("c", "C, libsimai_torch"), ("python", "Python, simai.Surrogate")):
            if sur[who]:
                med = statistics.median(r["median_s"] for r in sur[who]) * 1e6
                mean = statistics.median(r["mean_s"] for r in sur[who]) * 1e6
                lines.append(f"| {label} | {med:.1f} | {mean:.1f} |")
    lines += ["", "## Targets", "", *targets(oc, sizes, sur)]
    failed = {n: o.error for n, o in oc.items() if o.error}
    if failed:
        lines += ["", "## Rows that failed", ""]
        for n, err in failed.items():
            lines += [f"- **{ROWS[n][0]}**:", "", "  ```"]
            lines += ["  " + ln for ln in err.strip().splitlines()[-12:]]
            lines += ["  ```"]
    lines += ["", "## Rows", ""]
    lines += [f"- {label}: {what}" for label, what in ROWS.values()]
    return "\n".join(lines) + "\n"


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=sb.DEFAULT_SIZES, help="array sizes (default 8K,1M,16M,64M)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, medians (default 3)")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions a run (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default 1)")
    p.add_argument(
        "--n-small", type=int, default=1000, help="most arrays a repetition (default 1000)"
    )
    p.add_argument(
        "--mlp", default="64,256,64", help="surrogate MLP in,hidden,out (default 64,256,64)"
    )
    p.add_argument("--batch", type=int, default=256, help="surrogate batch rows (default 256)")
    p.add_argument("--calls", type=int, default=2000, help="timed surrogate calls (default 2000)")
    p.add_argument(
        "--threads", type=int, default=1, help="LibTorch threads in C and Python (default 1)"
    )
    p.add_argument("--timeout", type=float, default=120, help="seconds per run (default 120)")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"simai-bench-native-{os.getuid()}",
        help="where native/ is built and installed (default: under the temporary directory)",
    )
    p.add_argument(
        "--bare-env",
        action="store_true",
        help="run every process in this one's environment, without the variables simai gives "
        "a task it launches (huge pages)",
    )
    p.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({sb.parse_size(s) for s in args.sizes.split(",") if s.strip()})
        args.mlp = tuple(int(n) for n in args.mlp.split(","))
    except (argparse.ArgumentTypeError, ValueError) as e:
        p.error(str(e))
    if len(args.mlp) != 3 or min(args.mlp) < 1:
        p.error("--mlp is three positive integers: in,hidden,out")
    if not args.sizes or min(args.rounds, args.repeat, args.n_small, args.batch, args.calls) < 1:
        p.error("--sizes must not be empty; --rounds, --repeat, --n-small, --batch, --calls >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    import simai

    started, t_all, load0 = datetime.now(UTC), time.monotonic(), os.getloadavg()[0]
    extra = {} if args.bare_env else task_env()
    os.environ.update(extra)  # every process started from here on: C programs and Python
    progs = build(args.cache)
    torch.set_num_threads(args.threads)
    counts = sb.op_counts(args.sizes, False, hi=args.n_small)
    cfg = {
        "sizes": args.sizes,
        "counts": {str(s): n for s, n in counts.items()},
        "repeat": args.repeat,
        "warmup": args.warmup,
    }
    runs: dict[str, list[sb.Outcome]] = {name: [] for name in ROWS}
    sur: dict[str, list[dict]] = {"c": [], "python": []}
    try:
        publish_mlp(args.mlp)
        for rnd in range(args.rounds):
            for name in ROWS:
                log(f"--- {ROWS[name][0]} (round {rnd + 1}/{args.rounds})")
                t0 = time.monotonic()
                oc = run_store_row(progs, name, cfg, args.timeout)
                oc.seconds = time.monotonic() - t0
                if oc.error:
                    log(f"    failed: {oc.error.strip().splitlines()[-1]}")
                runs[name].append(oc)
            shape = (args.batch, args.mlp[0])
            log(f"--- surrogate from C and from Python (round {rnd + 1}/{args.rounds})")
            sur["c"].append(surrogate_c(progs, *shape, args.calls, args.threads))
            sur["python"].append(surrogate_python(*shape, args.calls))
            c_sum, py_sum = sur["c"][-1]["sum"], sur["python"][-1]["sum"]
            if not np.isclose(c_sum, py_sum, rtol=1e-4, atol=1e-3):
                raise RuntimeError(f"C and Python outputs differ: sums {c_sum} and {py_sum}")
    finally:
        for url in (sb.LOCAL_STORE_URL, MODEL_STORE_URL):
            simai.open_store(url).destroy()
    outcomes = {name: sb.combine(name, ocs) for name, ocs in runs.items()}
    info = sb.machine_info()
    n_in, hidden, n_out = args.mlp
    header = [
        "# simai native clients benchmark",
        "",
        f"- command: `{shlex.join([sb._shown_python(), *sys.argv])}`",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}, total {time.monotonic() - t_all:.0f} s",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, Linux "
        f"{info['kernel']}; load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        f"- software: python {info['python']}, numpy {info['numpy']}, torch {torch.__version__}, "
        f"simai {simai.__version__}, libsimai built Release; glibc's memcpy streams past the "
        f"cache {glibc_streaming()}, libsimai's puts from 256 KiB",
        f"- environment: {env_line(extra, args.bare_env)}",
        f"- arrays: float32 on `local://bench` (under {shm_dir()}); per size, arrays per "
        "repetition: "
        + ", ".join(f"{sb.fmt_size(s)} ×{n}" for s, n in counts.items())
        + f"; {args.warmup} warm-up + {args.repeat} timed repetitions in each of {args.rounds} "
        "rounds over all rows, median over rounds; producer and consumer are separate "
        "processes (C: forked, each opening its own handle; Python: spawned)",
        f"- surrogate: TorchScript MLP {n_in}→{hidden}→ReLU→{n_out}, float32 batch of "
        f"{args.batch}×{n_in}, {args.calls} timed calls after {args.calls // 10} untimed, "
        f"{args.threads} LibTorch thread(s) in both, the check for newer versions put off "
        "(poll 3600 s); C and Python outputs checked equal",
    ]
    report = render(outcomes, args.sizes, sur, header)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
