"""Write the fixed, seeded 10,000-molecule QM9 subset the moldesign results are scored on.

    python examples/moldesign/make_subset.py     # -> examples/moldesign/data/qm9-subset-10k.csv

Reads QM9 from the qm9pack wheel (never the network) and draws the subset with numpy's
seeded generator, so the same seed and qm9pack version give the same file.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from qm9 import SUBSET, qm9_smiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=SUBSET)
    args = parser.parse_args()
    rows = qm9_smiles()
    if not 0 < args.size <= len(rows):
        parser.error(f"--size must be between 1 and {len(rows)}, got {args.size}")
    pick = np.sort(np.random.default_rng(args.seed).choice(len(rows), args.size, replace=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["qm9_index", "smiles"])
        out.writerows(rows[i] for i in pick)
    print(f"{args.size} of {len(rows)} QM9 molecules (seed {args.seed}) -> {args.out}")


if __name__ == "__main__":
    main()
