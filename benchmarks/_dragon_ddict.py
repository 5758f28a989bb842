"""Dragon DDict baseline for benchmarks/store.py; run as `dragon -s _dragon_ddict.py CONFIG_JSON`.

Dragon needs its own runtime and process tree, so store.py runs this file as a subprocess and
parses the one line starting with RESULT_TAG that it prints. Values travel the way a Dragon user
stores them: `ddict[key] = array` (pickled by DDict), `array = ddict[key]`.
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


def _role(role: str, ddict: Any, conn: Any, cfg: dict[str, Any], results: Any) -> None:
    client = DDictClient(ddict)
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
    out: dict[str, Any] = {}
    try:
        a, b = mp.Pipe()
        results = mp.Queue()
        procs = [
            mp.Process(target=_role, args=("producer", ddict, a, cfg, results)),
            mp.Process(target=_role, args=("consumer", ddict, b, cfg, results)),
        ]
        for p in procs:
            p.start()
        for _ in procs:
            role, status, res = results.get(timeout=cfg["timeout"])
            if status != "ok":
                out.setdefault("errors", []).append(f"{role}: {res}")
            else:
                out.update(res)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    except BaseException:
        out.setdefault("errors", []).append(traceback.format_exc())
    finally:
        ddict.destroy()
    print(RESULT_TAG + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
