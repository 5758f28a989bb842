"""The process that hosts one component: `python -m simai.workflow._runner SPEC`.

It loads the component (a pickled function call, or an argv to run as a child), writes its
pid, beats a heartbeat file, and turns a stop request (a file, so it works on any node of
a shared filesystem) or SIGTERM into a graceful exit: SystemExit in the main thread, so the
component's `finally` blocks and context managers run.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def _rank() -> int:
    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def main(spec_path: str) -> int:
    with open(spec_path, "rb") as f:
        spec = pickle.load(f)
    base = Path(spec["control"])
    rank = _rank()
    child: subprocess.Popen | None = None

    def on_term(signum: int, frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            return
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    if rank == 0:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        Path(f"{base}.pid").write_text(json.dumps(info))

        def beat() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            heartbeat = Path(f"{base}.heartbeat")
            stop = Path(f"{base}.stop")
            while True:
                heartbeat.touch()
                if stop.exists():
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                time.sleep(spec["interval"])

        threading.Thread(target=beat, daemon=True, name="simai-heartbeat").start()
    if spec.get("argv"):
        child = subprocess.Popen(spec["argv"])
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                child.send_signal(signal.SIGINT)
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]
    fn, args, kwargs = pickle.loads(spec["call"])
    fn(*args, **kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
