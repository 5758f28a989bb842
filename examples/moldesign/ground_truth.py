"""Compute the ionization potential of every molecule in the subset: the table that scores runs.

    python examples/moldesign/ground_truth.py            # 2 processes; resumes if interrupted

Uses the very pipeline the example's simulations run (chem.ionization_potential, same seed),
one process per core. Each result is appended to ``<out>.partial`` as it arrives, so an
interrupted run picks up where it stopped; at the end the table is written sorted by QM9
index to ``data/ground_truth.csv`` (columns qm9_index, smiles, ip_ev, seconds, error: a
failed molecule has an empty ip_ev and the reason in error).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before any OpenMP library loads: xTB is single-threaded

import argparse  # noqa: E402
import csv  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from chem import ionization_potential  # noqa: E402
from qm9 import SUBSET, load_subset  # noqa: E402

FIELDS = ["qm9_index", "smiles", "ip_ev", "seconds", "error"]
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "ground_truth.csv"


def compute(row: tuple[int, str]) -> dict:
    index, smiles = row
    start = time.perf_counter()
    try:
        ip, error = f"{ionization_potential(smiles):.6f}", ""
    except Exception as e:  # every failure is kept, with its reason
        ip, error = "", f"{type(e).__name__}: {e}"
    seconds = f"{time.perf_counter() - start:.4f}"
    return {"qm9_index": index, "smiles": smiles, "ip_ev": ip, "seconds": seconds, "error": error}


def read_done(partial: Path) -> dict[int, dict]:
    if not partial.exists():
        return {}
    done = {}
    with open(partial, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("seconds"):  # a line cut short by a kill lacks its last fields
                done[int(r["qm9_index"])] = r
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=Path, default=SUBSET)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    rows = load_subset(args.subset)
    partial = args.out.with_name(args.out.name + ".partial")
    done = read_done(partial)
    todo = [r for r in rows if r[0] not in done]
    print(f"{len(rows)} molecules, {len(done)} already done, {len(todo)} to compute", flush=True)
    start = time.monotonic()
    with open(partial, "w", newline="") as f:
        out = csv.DictWriter(f, FIELDS, lineterminator="\n")
        out.writeheader()
        out.writerows(done.values())  # what an earlier run finished, without a cut-off line
        with multiprocessing.get_context("fork").Pool(args.processes) as pool:
            for n, result in enumerate(pool.imap_unordered(compute, todo, chunksize=8), 1):
                out.writerow(result)
                done[result["qm9_index"]] = result
                if n % 500 == 0 or n == len(todo):
                    f.flush()
                    rate = n / (time.monotonic() - start)
                    print(
                        f"{n}/{len(todo)} ({rate:.1f}/s, load {os.getloadavg()[0]:.2f})", flush=True
                    )
    failed = [r for r in done.values() if r["error"]]
    order = sorted(done.values(), key=lambda r: int(r["qm9_index"]))
    tmp = args.out.with_name(args.out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        out = csv.DictWriter(f, FIELDS, lineterminator="\n")
        out.writeheader()
        out.writerows(order)
    os.replace(tmp, args.out)
    partial.unlink()
    print(f"{len(order)} molecules, {len(failed)} failed -> {args.out}")
    for r in failed:
        print(f"  failed: {r['qm9_index']} {r['smiles']}: {r['error']}")
    sys.exit(0)


if __name__ == "__main__":
    main()
