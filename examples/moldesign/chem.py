"""Chemistry of the moldesign example: SMILES to a vertical ionization potential, and a KNN model.

The simulation is SMILES -> 3D geometry (RDKit ETKDG, seeded, then MMFF94) -> vertical
ionization potential from IPEA1-xTB single points of the neutral molecule and its cation at
that geometry. That is exactly what ``xtb --vip`` computes (it switches to the IPEA1
parametrization and applies xtb's empirical 4.8455 eV shift); the default backend computes it
in-process with tblite (about twice as fast, no files), ``backend="xtb"`` runs Debian's xtb
program in a private temporary directory. Both agree to 1 meV.

The model is the Parsl tutorial's: k nearest neighbours (Jaccard distance, weighted by inverse
distance) on Morgan fingerprints, which are computed once for the whole search space and
cached in a ``.npy`` file named by a hash of the candidate list.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "ChemError",
    "EmbeddingError",
    "Fingerprints",
    "KNN",
    "KNNModel",
    "SmilesError",
    "XTBError",
    "fingerprint",
    "geometry",
    "ionization_potential",
    "jaccard_distances",
    "warm_up",
]

HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.52917721067
XTB_IP_SHIFT_EV = 4.8455  # xtb's empirical IPEA shift (xtb/src/main/property.F90)
FP_BITS, FP_RADIUS = 256, 4  # the Parsl tutorial's fingerprint


class ChemError(RuntimeError):
    """A simulation that cannot give an ionization potential; the message says why."""


class SmilesError(ChemError, ValueError):
    """RDKit cannot parse the SMILES."""


class EmbeddingError(ChemError):
    """RDKit found no 3D geometry for the molecule."""


class XTBError(ChemError):
    """The xTB calculation failed (did not converge, crashed, or printed no IP)."""


def _molecule(smiles: str):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    if not isinstance(smiles, str) or not smiles.strip():
        raise SmilesError(f"not a SMILES string: {smiles!r}")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise SmilesError(f"RDKit cannot parse SMILES {smiles!r}")
    return mol


def geometry(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers and coordinates (Angstrom) of one conformer: seeded ETKDG, then MMFF94
    (UFF where MMFF lacks parameters). The same SMILES and seed give the same geometry."""
    from rdkit.Chem import AllChem

    mol = AllChem.AddHs(_molecule(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise EmbeddingError(f"RDKit ETKDG found no 3D geometry for {smiles!r}")
    try:
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=1000)
        else:
            AllChem.UFFOptimizeMolecule(mol, maxIters=1000)
    except Exception as e:  # RDKit raises plain RuntimeError/ValueError from C++
        raise EmbeddingError(f"force-field relaxation failed for {smiles!r}: {e}") from e
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    positions = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    return numbers, positions


def _ip_tblite(numbers: np.ndarray, positions: np.ndarray, smiles: str) -> float:
    from tblite.interface import Calculator

    energies = []
    for charge, unpaired in ((0, numbers.sum() % 2), (1, (numbers.sum() - 1) % 2)):
        try:
            calc = Calculator(
                "IPEA1-xTB",
                numbers,
                positions / BOHR_ANGSTROM,
                charge=float(charge),
                uhf=int(unpaired),
            )
            calc.set("verbosity", 0)
            energies.append(calc.singlepoint().get("energy"))
        except Exception as e:  # tblite raises RuntimeError with its own message
            state = "cation" if charge else "neutral"
            raise XTBError(f"tblite IPEA1-xTB failed on the {state} of {smiles!r}: {e}") from e
    return (energies[1] - energies[0]) * HARTREE_EV - XTB_IP_SHIFT_EV


_SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}


def _ip_xtb(numbers: np.ndarray, positions: np.ndarray, smiles: str, timeout: float) -> float:
    exe = shutil.which("xtb")
    if exe is None:
        raise XTBError("the xtb program is not on PATH (Debian: apt-get install xtb)")
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    lines = [str(len(numbers)), smiles]
    for z, (x, y, w) in zip(numbers, positions, strict=True):
        lines.append(f"{table.GetElementSymbol(int(z))} {x:.8f} {y:.8f} {w:.8f}")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_STACKSIZE="500M")
    env.setdefault("XTBPATH", "/usr/share/xtb")
    with tempfile.TemporaryDirectory(prefix="simai-xtb-") as work:
        Path(work, "mol.xyz").write_text("\n".join(lines) + "\n")
        try:
            proc = subprocess.run(
                [exe, "mol.xyz", "--vip"],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise XTBError(f"xtb --vip ran over {timeout} s on {smiles!r}") from e
    for line in proc.stdout.splitlines():
        if line.strip().startswith("delta SCC IP (eV):"):
            return float(line.split(":")[1])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise XTBError(
        f"xtb --vip gave no IP for {smiles!r} (exit {proc.returncode}): {' | '.join(tail)}"
    )


def ionization_potential(
    smiles: str, *, backend: str = "tblite", seed: int = 0, timeout: float = 120.0
) -> float:
    """Vertical ionization potential (eV) of `smiles` at its MMFF geometry, as ``xtb --vip``.

    Raises SmilesError, EmbeddingError or XTBError saying what failed.
    """
    if backend not in ("tblite", "xtb"):
        raise ValueError(f"backend must be 'tblite' or 'xtb', got {backend!r}")
    numbers, positions = geometry(smiles, seed)
    if backend == "xtb":
        value = _ip_xtb(numbers, positions, smiles, timeout)
    else:
        value = _ip_tblite(numbers, positions, smiles)
    if not np.isfinite(value):
        raise XTBError(f"xTB gave a non-finite IP ({value}) for {smiles!r}")
    return float(value)


def warm_up() -> float:
    """Load RDKit and tblite in this process with one tiny calculation; seconds taken."""
    start = time.perf_counter()
    ionization_potential("C")
    return time.perf_counter() - start


def fingerprint(smiles: str, bits: int = FP_BITS, radius: int = FP_RADIUS) -> np.ndarray:
    """Morgan fingerprint as a bool vector; SmilesError if the SMILES does not parse."""
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    return gen.GetFingerprintAsNumPy(_molecule(smiles)).astype(bool)


def candidates_hash(smiles: Sequence[str], bits: int = FP_BITS, radius: int = FP_RADIUS) -> str:
    """A short hash naming a candidate list and fingerprint settings."""
    h = hashlib.sha256(f"morgan-{bits}-{radius}\n".encode())
    for s in smiles:
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class Fingerprints:
    """Morgan fingerprints of a candidate list, computed once and cached on disk.

    The cache is ``<cache_dir>/fingerprints-<hash>.npy`` (bit-packed rows, in candidate order)
    beside ``fingerprints-<hash>.smi`` (the candidates, one a line). Unparseable SMILES get an
    all-zero row. Only the two paths are pickled: each worker process loads them once.
    """

    _loaded: dict[str, tuple[np.ndarray, dict[str, int]]] = {}

    def __init__(self, npy: str | Path, smi: str | Path) -> None:
        self.npy, self.smi = str(npy), str(smi)

    @classmethod
    def build(
        cls, smiles: Sequence[str], cache_dir: str | Path, log=None
    ) -> tuple[Fingerprints, bool]:
        """Fingerprints of `smiles`, from the cache if there, else computed and written.

        Returns the table and whether it came from the cache.
        """
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        key = candidates_hash(smiles)
        npy, smi = cache / f"fingerprints-{key}.npy", cache / f"fingerprints-{key}.smi"
        if npy.exists() and smi.exists():
            return cls(npy, smi), True
        rows = np.zeros((len(smiles), FP_BITS // 8), dtype=np.uint8)
        for i, s in enumerate(smiles):
            try:
                rows[i] = np.packbits(fingerprint(s))
            except SmilesError:
                pass
            if log is not None and (i + 1) % 20000 == 0:
                log(f"fingerprints: {i + 1}/{len(smiles)}")
        for path, data in ((smi, "".join(s + "\n" for s in smiles)), (npy, rows)):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                if isinstance(data, str):
                    f.write(data.encode())
                else:
                    np.save(f, data)
            os.replace(tmp, path)  # readers see the whole file or none
        return cls(npy, smi), False

    def _table(self) -> tuple[np.ndarray, dict[str, int]]:
        table = self._loaded.get(self.npy)
        if table is None:
            rows = np.load(self.npy)
            index: dict[str, int] = {}
            for i, s in enumerate(Path(self.smi).read_text().splitlines()):
                index.setdefault(s, i)
            table = self._loaded[self.npy] = (rows, index)
        return table

    def __call__(self, smiles: Sequence[str]) -> np.ndarray:
        """Bool fingerprints (n, bits) of candidates of this search space."""
        rows, index = self._table()
        try:
            at = [index[s] for s in smiles]
        except KeyError as e:
            raise KeyError(f"SMILES {e.args[0]!r} is not in the fingerprint cache") from None
        return np.unpackbits(rows[at], axis=1, count=FP_BITS).astype(bool)

    def __reduce__(self):
        return (Fingerprints, (self.npy, self.smi))


def jaccard_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard distances between the rows of two bool matrices, as scikit-learn's "jaccard"
    (0 between two empty rows), by one matrix product: far faster than a per-pair metric."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    both = a32 @ b32.T
    union = a32.sum(axis=1)[:, None] + b32.sum(axis=1)[None, :] - both
    dist = 1.0 - both / np.maximum(union, 1.0)
    dist[union == 0] = 0.0
    return dist


class KNNModel:
    """A fitted model: scikit-learn's regressor on precomputed distances, and its training
    fingerprints (distances to new candidates are computed against them)."""

    def __init__(self, regressor, x: np.ndarray, y: np.ndarray) -> None:
        self.regressor, self.x, self.y = regressor, x, y


class KNN:
    """The steering model: k nearest neighbours on Morgan fingerprints (scikit-learn).

    ``train(data)`` fits on ``[(smiles, ip), ...]``; ``predict(model, smiles)`` returns the
    inverse-distance-weighted mean of the k nearest neighbours' IPs under the Jaccard distance
    (what ``KNeighborsRegressor(weights="distance", metric="jaccard")`` predicts) and the
    standard deviation of those IPs, for UCB. Distances are computed as one matrix product
    and handed to scikit-learn precomputed.
    """

    def __init__(self, fingerprints: Fingerprints, k: int = 4) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.fingerprints, self.k = fingerprints, k

    def warm(self) -> float:
        """Load scikit-learn and the fingerprint table in this process; seconds taken.

        Run once as a task on the model's worker before steering starts, so the first
        training does not pay for imports while the simulations wait for a model.
        """
        start = time.perf_counter()
        _, index = self.fingerprints._table()
        some = list(index)[: self.k + 1]
        self.predict(self.train([(s, float(i)) for i, s in enumerate(some)]), some)
        return time.perf_counter() - start

    def train(self, data: list[tuple[str, float]]) -> KNNModel:
        from sklearn.neighbors import KNeighborsRegressor

        data = [(s, v) for s, v in data if v is not None and np.isfinite(v)]
        if not data:
            raise ValueError("no successful simulations to train on")
        x = self.fingerprints([s for s, _ in data])
        y = np.array([v for _, v in data], dtype=np.float64)
        regressor = KNeighborsRegressor(
            n_neighbors=min(self.k, len(y)), weights="distance", metric="precomputed"
        )
        regressor.fit(jaccard_distances(x, x), y)
        return KNNModel(regressor, x, y)

    def predict(self, model: KNNModel, smiles: list[str]) -> tuple[np.ndarray, np.ndarray]:
        dist = jaccard_distances(self.fingerprints(smiles), model.x)
        near, idx = model.regressor.kneighbors(dist)
        y = model.y[idx]
        with np.errstate(divide="ignore"):
            weight = 1.0 / near
        exact = near == 0
        hit = exact.any(axis=1)
        weight[hit] = exact[hit]  # as scikit-learn: exact matches alone decide
        mean = (weight * y).sum(axis=1) / weight.sum(axis=1)
        return mean, y.std(axis=1)
