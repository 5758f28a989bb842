"""A simulation component streams samples to a trainer component while tasks run beside them.

    python examples/coupled.py                   # node-local store, cores shared
    python examples/coupled.py --store redis --store-cores 1   # Redis shard pinned to core 0

Run it twice with `simai run --resume examples/coupled.py` to see finished tasks recalled.
"""

import argparse

import numpy as np

import simai


def simulation(steps: int) -> None:
    store = simai.open_store()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = rng.uniform(-3, 3, 64).astype(np.float32)
        store.append("samples", np.stack([x, np.sin(x)]))
    store.close_stream("samples")


def trainer() -> None:
    store = simai.open_store()
    count, error = 0, 0.0
    for batch in store.stream("samples", timeout=60):
        count += batch.shape[1]
        error += float(np.abs(batch[1] - np.sin(batch[0])).sum())
    store.put("trainer/summary", {"samples": count, "error": error})
    print(f"trainer consumed {count} samples", flush=True)


@simai.task
def evaluate(seed: int) -> float:
    return float(np.random.default_rng(seed).normal())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="local", choices=["local", "file", "redis"])
    parser.add_argument("--store-cores", type=int, default=0)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    options = simai.WorkflowOptions(store_cores=args.store_cores)
    with simai.Workflow("coupled", store=args.store, options=options) as wf:
        sim = wf.start(simulation, args.steps, restart="on-failure", max_restarts=2)
        train = wf.start(trainer, resources=simai.Resources(cpus=1))
        scores = [evaluate(s) for s in range(8)]
        print(f"tasks done: mean score {np.mean([f.result() for f in scores]):.3f}")
        sim.wait()
        train.wait()
        print("trainer summary:", wf.store().get("trainer/summary"))
        print(f"records: simai status {wf.run_dir.path}")


if __name__ == "__main__":
    main()
