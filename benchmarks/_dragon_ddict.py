"""Dragon DDict baseline for benchmarks/store.py; run as `dragon -s _dragon_ddict.py CONFIG_JSON`.

Dragon needs its own runtime and process tree, so store.py runs this file as a subprocess and
parses the one line starting with RESULT_TAG that it prints. Values travel the way a Dragon user
stores them: `ddict[key] = array` (pickled by DDict), `array = ddict[key]`. Then, in the same
session and on the same DDict, the simai dragon:// store does the same (`put`, `get`), so the
two rows measure what the wrapper costs under the same load.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench_loop  # noqa: E402

RESULT_TAG = "SIMAI_BENCH_DRAGON_JSON "


class DDictClient:
    def __init__(self, ddict: Any) -> None:
        self.d = ddict

    def prepare(self, size: int, n: int) -> None:
        pass

    def put(self, key: str, i: int, arr: Any) -> None:
        self.d[key] = arr

    def get(self, key: str, i: int) -> Any:
        return self.d[key]

    def delete(self, key: str, i: int) -> None:
        del self.d[key]

    def close(self) -> None:
        self.d.detach()


class SimaiDragonClient:
    """The simai dragon:// store on the same DDict, found by its URL."""

    def __init__(self, url: str) -> None:
        import simai

        self.s = simai.open_store(url)

    def prepare(self, size: int, n: int) -> None:
        pass

    def put(self, key: str, i: int, arr: Any) -> None:
        self.s.put(key, arr)

    def get(self, key: str, i: int) -> Any:
        return self.s.get(key)

    def delete(self, key: str, i: int) -> None:
        self.s.delete(key)

    def close(self) -> None:
        self.s.close()


def _role(role: str, ddict: Any, conn: Any, cfg: dict[str, Any], results: Any) -> None:
    client = SimaiDragonClient(ddict) if isinstance(ddict, str) else DDictClient(ddict)
    try:
        fn = _bench_loop.producer if role == "producer" else _bench_loop.consumer
        counts = {int(k): v for k, v in cfg["counts"].items()}
        res = fn(client, conn, cfg["sizes"], counts, cfg["repeat"], cfg["warmup"])
        results.put((role, "ok", res))
    except BaseException:
        results.put((role, "error", traceback.format_exc()))
        conn.close()
    finally:
        client.close()


def main() -> None:
    import multiprocessing as mp

    import dragon  # noqa: F401  (registers the "dragon" start method)
    from dragon.data.ddict import DDict

    cfg = json.loads(sys.argv[1])
    mp.set_start_method("dragon")
    ddict = DDict(1, 1, cfg["total_mem"], timeout=cfg.get("op_timeout", 60))
    url = "dragon://" + ddict.serialize()
    runs: dict[str, list[dict[str, Any]]] = {"dragon": [], "simai-dragon": []}
    out: dict[str, Any] = {}
    try:
        for _ in range(cfg["dragon_rounds"]):  # alternated, so both see the same load
            for name, handle in (("dragon", ddict), ("simai-dragon", url)):
                runs[name].append({})
                _pair(name, handle, cfg, runs[name][-1], out)
    except BaseException:
        out.setdefault("errors", []).append(traceback.format_exc())
    finally:
        ddict.destroy()
    out.update({name: _median(res) for name, res in runs.items()})
    print(RESULT_TAG + json.dumps(out), flush=True)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs of a pair: the median of each figure."""
    import statistics

    out: dict[str, Any] = {}
    for op in ("put", "get"):
        sizes = {size for run in runs for size in run.get(op, {})}
        for size in sizes:
            stats = [run[op][size] for run in runs if size in run.get(op, {})]
            out.setdefault(op, {})[size] = {
                k: statistics.median(st[k] for st in stats) for k in stats[0]
            }
    trips = [run["roundtrip_s"] for run in runs if run.get("roundtrip_s") is not None]
    if trips:
        out["roundtrip_s"] = statistics.median(trips)
    return out


def _pair(
    name: str, handle: Any, cfg: dict[str, Any], res: dict[str, Any], out: dict[str, Any]
) -> None:
    """Run the producer and the consumer on `handle` (the DDict, or simai's URL of it); their
    figures go to `res`, their errors to `out`."""
    import multiprocessing as mp

    a, b = mp.Pipe()
    results = mp.Queue()
    procs = [
        mp.Process(target=_role, args=("producer", handle, a, cfg, results)),
        mp.Process(target=_role, args=("consumer", handle, b, cfg, results)),
    ]
    for p in procs:
        p.start()
    for _ in procs:
        role, status, result = results.get(timeout=cfg["timeout"])
        if status != "ok":
            out.setdefault("errors", []).append(f"{name} {role}: {result}")
        else:
            res.update(result)
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.terminate()


if __name__ == "__main__":
    main()
