"""examples/moldesign: the chemistry (real RDKit, tblite, xtb) and a small real run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simai.workflow.records import Records

pytest.importorskip("rdkit")
pytest.importorskip("tblite")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "moldesign"
SCRIPT = EXAMPLE / "moldesign.py"
BAD_SMILES = "C1CC(N"  # RDKit cannot parse it
NO_GEOMETRY = "C1CC23CCC(CO2)C13"  # a QM9 cage that ETKDG cannot embed

sys.path.insert(0, str(EXAMPLE))
try:
    import chem
    import qm9
finally:
    sys.path.remove(str(EXAMPLE))


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread():
    """xTB runs single-threaded, as in the example (two threads here are slow and erratic)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


def test_ionization_potential_of_benzene_is_sane_and_repeatable():
    first = chem.ionization_potential("c1ccccc1")
    assert 9.0 < first < 10.0  # xtb --vip: 9.498 eV (experiment 9.24 eV)
    assert chem.ionization_potential("c1ccccc1") == first
    assert chem.ionization_potential("C1=CC=CC=C1") == first  # same molecule, other SMILES
    assert chem.ionization_potential("N#CC#N") > first  # cyanogen binds its electrons tighter


@pytest.mark.skipif(shutil.which("xtb") is None, reason="Debian's xtb program is not installed")
def test_tblite_backend_agrees_with_xtb_program():
    for smiles in ("CCO", "O=C1NC(=O)C=C1"):
        ours = chem.ionization_potential(smiles)
        theirs = chem.ionization_potential(smiles, backend="xtb")
        assert abs(ours - theirs) < 1e-3, (smiles, ours, theirs)


def test_failures_raise_clear_errors(monkeypatch):
    with pytest.raises(chem.SmilesError, match="cannot parse"):
        chem.ionization_potential(BAD_SMILES)
    with pytest.raises(chem.SmilesError, match="not a SMILES"):
        chem.ionization_potential("")
    with pytest.raises(chem.EmbeddingError, match="no 3D geometry"):
        chem.ionization_potential(NO_GEOMETRY)
    with pytest.raises(ValueError, match="backend"):
        chem.ionization_potential("C", backend="gaussian")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(chem.XTBError, match="not on PATH"):
        chem.ionization_potential("C", backend="xtb")


def test_fingerprint_cache_and_knn_match_scikit_learn(tmp_path):
    from sklearn.neighbors import KNeighborsRegressor

    smiles = [s for _, s in qm9.load_subset()[:300]] + [BAD_SMILES]
    fps, cached = chem.Fingerprints.build(smiles, tmp_path)
    assert not cached
    again, cached = chem.Fingerprints.build(smiles, tmp_path)
    assert cached and again.npy == fps.npy
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".npy", ".smi"]
    assert not fps([BAD_SMILES]).any()  # no fingerprint for what does not parse
    with pytest.raises(KeyError, match="not in the fingerprint cache"):
        fps(["CCCCCCCCCCCCCCCC"])

    knn = chem.KNN(fps)
    y = np.random.default_rng(0).normal(size=100)
    model = knn.train(list(zip(smiles[:100], y, strict=True)))
    mean, std = knn.predict(model, smiles[100:])
    ref = KNeighborsRegressor(n_neighbors=4, weights="distance", metric="jaccard")
    ref.fit(fps(smiles[:100]), y)
    x = fps(smiles[100:])
    np.testing.assert_allclose(mean, ref.predict(x), atol=1e-6)
    _, idx = ref.kneighbors(x)
    np.testing.assert_allclose(std, y[idx].std(axis=1), atol=1e-9)
    with pytest.raises(ValueError, match="no successful"):
        knn.train([(smiles[0], None)])


def write_space(path: Path, n_good: int) -> list[str]:
    rows = qm9.load_subset()[:n_good] + [(900001, BAD_SMILES), (900002, NO_GEOMETRY)]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["qm9_index", "smiles"])
        out.writerows(rows)
    return [s for _, s in rows]


def run_example(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_small_run_writes_csvs_plot_and_failures(tmp_path):
    """The budget is every candidate, so all are simulated and both failures are met; a failed
    candidate is replaced, and the loop ends when none is left."""
    good = 30
    smiles = write_space(tmp_path / "space.csv", good)
    out = tmp_path / "out"
    proc = run_example(
        tmp_path,
        *("--search-space", str(tmp_path / "space.csv"), "--budget", str(len(smiles))),
        *("--initial", "8", "--batch-size", "6", "--seed", "1", "--out", str(out)),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    for policy in ("greedy", "random"):
        with open(out / f"{policy}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["smiles"] for r in rows) == sorted(smiles)
        ok = [r for r in rows if r["ok"] == "1"]
        assert len(ok) == good and all(6.0 < float(r["ip_ev"]) < 20.0 for r in ok)
        failed = {r["smiles"]: r["error"] for r in rows if r["ok"] == "0"}
        assert failed.keys() == {BAD_SMILES, NO_GEOMETRY}
        assert "SmilesError" in failed[BAD_SMILES] and "cannot parse" in failed[BAD_SMILES]
        assert "EmbeddingError" in failed[NO_GEOMETRY]
        assert all(r["ip_ev"] == "" for r in rows if r["ok"] == "0")
        assert [int(r["order"]) for r in rows] == list(range(1, len(rows) + 1))
        assert all(float(r["duration_s"]) > 0 and float(r["ended_s"]) > 0 for r in rows)
        s = summary["policies"][policy]
        assert s["simulations_ok"] == good and s["simulations_failed"] == 2
        assert 0 < s["stats"]["busy_fraction"] <= 1 and s["stats"]["idle_time"] >= 0
        assert s["best"][0]["ip_ev"] == pytest.approx(max(float(r["ip_ev"]) for r in ok), abs=1e-6)
        assert f"[{policy}] {good} simulations ok, 2 failed" in proc.stdout
        assert "workers busy" in proc.stdout
    greedy = summary["policies"]["greedy"]
    assert greedy["trainings"], "the greedy loop never trained a model"
    assert all(int(r["model_version"]) == 0 for r in csv.DictReader(open(out / "random.csv")))
    png = (out / "best-ip.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert len(summary["curves"]["greedy"]["best"]) == good
    assert summary["curves"]["greedy"]["best"] == sorted(summary["curves"]["greedy"]["best"])
    # the run's records hold the progress metrics, and its report is written from them
    with Records(out / "run" / "records.db", readonly=True) as records:
        best_ip = [m["value"] for m in records.metrics("best_ip_ev:greedy")]
    assert best_ip == sorted(best_ip) and best_ip[-1] == pytest.approx(greedy["best"][0]["ip_ev"])
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "simai.cli",
            "report",
            str(out / "run"),
            "-o",
            str(tmp_path / "r.html"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert "best_ip_ev:greedy" in (tmp_path / "r.html").read_text()


def test_bad_options_are_refused(tmp_path):
    proc = run_example(tmp_path, "--budget", "5", "--initial", "10")
    assert proc.returncode != 0 and "below --initial" in proc.stderr
    (tmp_path / "empty.csv").write_text("qm9_index,smiles\n")
    proc = run_example(tmp_path, "--search-space", str(tmp_path / "empty.csv"))
    assert proc.returncode != 0 and "holds no molecules" in proc.stderr
    proc = run_example(tmp_path, "--search-space", str(tmp_path / "missing.csv"))
    assert proc.returncode != 0 and "no search-space file" in proc.stderr


def test_ctrl_c_stops_everything_and_resume_finishes_the_run(tmp_path):
    import psutil
    from _procs import alive, eventually

    write_space(tmp_path / "space.csv", 60)
    out = tmp_path / "out"
    argv = [sys.executable, str(SCRIPT), "--search-space", str(tmp_path / "space.csv")]
    argv += ["--budget", "40", "--initial", "8", "--no-compare", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    saved = out / "run" / "steer" / "greedy" / "results.jsonl"
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert eventually(lambda: saved.exists() and len(saved.read_text().splitlines()) >= 5, 120)
        started = psutil.Process(proc.pid).children(recursive=True)
        assert started, "the example started no worker processes"
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout
    assert "continue with --resume" in stdout
    assert all(eventually(lambda p=p: not alive(p.pid)) for p in started)
    before = saved.read_text().splitlines()
    assert 5 <= len(before) < 42

    done = run_example(tmp_path, *argv[2:], "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert saved.read_text().splitlines()[: len(before)] == before  # kept, not rerun
    with open(out / "greedy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(r["ok"] == "1" for r in rows) == 40
    assert len({r["smiles"] for r in rows}) == len(rows)  # nothing simulated twice


def test_batch_mode_picks_from_a_model_after_the_initial_ones(tmp_path):
    """--mode batch: after the random initial picks, every batch is the top of a model that
    was trained on all results so far, so budget - initial picks carry a model version."""
    write_space(tmp_path / "space.csv", 60)
    out = tmp_path / "out"
    proc = run_example(
        tmp_path,
        *("--search-space", str(tmp_path / "space.csv"), "--budget", "16", "--no-compare"),
        *("--initial", "4", "--batch-size", "4", "--mode", "batch", "--out", str(out)),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "greedy.csv", newline="") as f:
        versions = [int(r["model_version"]) for r in csv.DictReader(f) if r["ok"] == "1"]
    assert len(versions) == 16
    assert sorted(versions) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4, versions
