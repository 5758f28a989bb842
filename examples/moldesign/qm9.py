"""The moldesign search spaces: QM9's SMILES from the qm9pack wheel, and the committed subset.

qm9pack ships the QM9 table inside its wheel; its own loader imports the long-gone
``pkg_resources``, so the CSV files are read here directly (SMILES and index columns only).
Nothing is fetched from the network.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

__all__ = ["SUBSET", "load_subset", "qm9_smiles", "search_space"]

SUBSET = Path(__file__).resolve().parent / "data" / "qm9-subset-10k.csv"


def _qm9_data_dir() -> Path:
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the qm9pack package is not installed (pip install qm9pack); it holds the QM9 table"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (data / "qm9_part1.csv").exists():
        raise FileNotFoundError(f"qm9pack's data folder {data} holds no qm9_part1.csv")
    return data


def qm9_smiles() -> list[tuple[int, str]]:
    """Every (QM9 index, SMILES) in qm9pack's table, in index order (130,831 molecules)."""
    import pandas as pd

    data = _qm9_data_dir()
    parts = [pd.read_csv(data / f"qm9_part{i}.csv", usecols=["Index", "SMILES"]) for i in (1, 2, 3)]
    table = pd.concat(parts, ignore_index=True).sort_values("Index")
    return [(int(i), str(s)) for i, s in zip(table["Index"], table["SMILES"], strict=True)]


def load_subset(path: str | Path = SUBSET) -> list[tuple[int, str]]:
    """(QM9 index, SMILES) rows of a subset file written by make_subset.py."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no search-space file {path} (make it with make_subset.py)")
    with open(path, newline="") as f:
        rows = [(int(r["qm9_index"]), r["smiles"]) for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"search-space file {path} holds no molecules")
    return rows


def search_space(name: str) -> list[tuple[int, str]]:
    """``"subset"`` (the committed 10,000), ``"full"`` (all of QM9), or a subset CSV path."""
    if name == "subset":
        return load_subset()
    if name == "full":
        return qm9_smiles()
    return load_subset(name)
