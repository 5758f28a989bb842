"""The wave workload: simulations of a 2D circular wave and CNN trainers fitting u_t -> u_{t+1}.

For a surrogate in the loop (`leapfrog=True`) the records carry what a wave step needs,
(u_{t-1}, u_t, kappa, u_{t+1}), and the trainers fit `make_leapfrog_model`.

Shared by `examples/wave/wave.py` and `benchmarks/wave.py`. How the data moves is a
parameter: a simulation writes its pairs through a *sink* and a trainer reads them through a
*source*, so the same simulation and training code runs on simai's store (keys or streams),
on .npy files, or on arrays handed back through futures. Sinks and sources are small
picklable objects that open what they need in the process that uses them.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

KERNELS = (3, 5, 7)
Stepper = Callable[[np.ndarray, int], np.ndarray]
"""Advances a simulation: (u_t, t) -> u_{t+1}. The default is the exact solution."""


def periods(num_sims: int, low: float = 40.0, high: float = 80.0) -> list[float]:
    """One period per simulation, evenly spread over [low, high]."""
    return [float(p) for p in np.linspace(low, high, num_sims)] if num_sims > 1 else [low]


def radius(n: int) -> np.ndarray:
    """Distance from the centre on an n x n grid over [-2pi, 2pi]^2."""
    x = np.linspace(-2 * np.pi, 2 * np.pi, n, dtype=np.float64)
    return np.hypot(x[None, :], x[:, None])


def exact(r: np.ndarray, t: float, period: float) -> np.ndarray:
    """u = sin(2r - wt) / (r + 1), w = 2pi / period, as float32."""
    return (np.sin(2 * r - (2 * np.pi / period) * t) / (r + 1)).astype(np.float32)


def kappa(period: float) -> float:
    """(c dt)^2 of a simulation: c = w / 2 is the speed of the wave sin(2r - wt), dt one step.

    The wave equation u_tt = c^2 lap(u) steps as u_{t+1} = 2 u_t - u_{t-1} + (c dt)^2
    lap(u_t) (leapfrog); a simulation knows its wave speed, as a solver knows its coefficients.
    """
    return float((np.pi / period) ** 2)


def exact_stepper(r: np.ndarray, period: float) -> Stepper:
    return lambda u, t: exact(r, t + 1, period)


def relative_error(u: np.ndarray, truth: np.ndarray) -> float:
    """||u - truth|| / ||truth|| (L2 over the grid)."""
    return float(np.linalg.norm(u - truth) / max(np.linalg.norm(truth), 1e-30))


# --- a surrogate in the loop ----------------------------------------------------------------


def model_name(kernel: int) -> str:
    """The registry name under which the trainer of kernel size `kernel` publishes."""
    return f"wave-k{kernel}"


class SurrogateStepper:
    """A Stepper that advances with the newest published CNN once warmed up, and checks itself.

    Steps before `warmup` are exact. At `warmup` it waits up to `wait` seconds for a first
    version of `model` (then steps exactly until one appears). From then on each step runs
    the newest version in this process (`simai.Surrogate`, which swaps in versions as the
    trainers publish them) on the whole grid, fed (u_{t-1}, u_t, kappa) as a
    `make_leapfrog_model` expects (the stepper keeps the state it was last given); the band
    along the edge that the convolutions' zero padding distorts is set from the exact
    solution (a Dirichlet boundary). Every `check_every` surrogate steps the new state is
    compared with the exact solution; when the relative L2 error exceeds `max_error`, the
    step falls back to the exact update: the state, and the previous state the next step
    reads, are reset to the exact ones, and the surrogate goes on from there.

    It times its steps: `exact_s` over the exact steps (the warm-up), `surrogate_s` over the
    surrogate's (the model, the boundary band, the checks and fallbacks, swapping in new
    versions), `model_s` over the model calls alone; waiting for a first version is apart.
    """

    def __init__(
        self,
        model: str,
        r: np.ndarray,
        period: float,
        kernel: int,
        warmup: int,
        check_every: int,
        max_error: float,
        wait: float,
        poll: float = 0.1,
    ) -> None:
        import torch

        import simai

        torch.set_num_threads(1)
        # trusted: the TorchScript comes from this run's own trainer, in the run's private store
        self.surrogate = simai.Surrogate(model, poll=poll, trusted=True)
        self.r, self.period, self.warmup = r, period, warmup
        self.kappa = np.full(r.shape, kappa(period), np.float32)
        self.prev = exact(r, -1, period)  # u_{t-1} of the next call
        self.check_every, self.max_error, self.wait = check_every, max_error, wait
        margin = 2 * (kernel // 2)
        band = np.ones(r.shape, bool)
        band[margin:-margin, margin:-margin] = False
        self.band, self.r_band = band, r[band]
        self.surrogate_steps = self.exact_steps = self.fallbacks = 0
        self.errors: list[float] = []  # at each check, before any fallback
        self.versions: list[int] = []  # in the order they were first used
        self.first_surrogate_step: int | None = None
        self.waited_s = self.exact_s = self.surrogate_s = self.model_s = 0.0
        self._since_check = 0
        self._waited = False
        self._next_try = 0.0
        self.poll = poll
        self.last = exact(r, 0, period), 0

    def _model_ready(self) -> bool:
        if self.surrogate.version is not None:
            return True
        if not self._waited:
            self._waited = True
            t0 = time.perf_counter()
            try:
                self.surrogate.wait_for_model(timeout=self.wait)
            except TimeoutError:
                pass
            self.waited_s = time.perf_counter() - t0
        elif time.monotonic() >= self._next_try:  # none came in time: look again now and then
            self._next_try = time.monotonic() + self.poll
            self.surrogate.refresh()
        return self.surrogate.version is not None

    def __call__(self, u: np.ndarray, t: int) -> np.ndarray:
        self.last = self._step(u, t), t + 1
        return self.last[0]

    def _step(self, u: np.ndarray, t: int) -> np.ndarray:
        prev, self.prev = self.prev, u
        if t < self.warmup or not self._model_ready():
            t0 = time.perf_counter()
            nxt = exact(self.r, t + 1, self.period)
            self.exact_s += time.perf_counter() - t0
            self.exact_steps += 1
            return nxt
        t0 = time.perf_counter()
        try:
            return self._surrogate_step(prev, u, t)
        finally:
            self.surrogate_s += time.perf_counter() - t0

    def _surrogate_step(self, prev: np.ndarray, u: np.ndarray, t: int) -> np.ndarray:
        x = np.stack([prev, u, self.kappa])[None]
        t0 = time.perf_counter()
        out, version = self.surrogate.call(x)
        self.model_s += time.perf_counter() - t0
        nxt = np.array(out[0, 0], dtype=np.float32)
        w = 2 * np.pi / self.period
        nxt[self.band] = np.sin(2 * self.r_band - w * (t + 1)) / (self.r_band + 1)
        if self.first_surrogate_step is None:
            self.first_surrogate_step = t
        if not self.versions or self.versions[-1] != version:
            self.versions.append(version)
        self.surrogate_steps += 1
        self._since_check += 1
        if self._since_check >= self.check_every:
            self._since_check = 0
            truth = exact(self.r, t + 1, self.period)
            error = relative_error(nxt, truth)
            self.errors.append(error)
            if not error <= self.max_error:  # NaN falls back too
                self.fallbacks += 1
                self.prev = exact(self.r, t, self.period)
                return truth
        return nxt

    def report(self) -> dict[str, Any]:
        """What the surrogate did, and the error of the last state it returned."""
        u, t = self.last
        exact_step_s = self.exact_s / self.exact_steps if self.exact_steps else None
        avoided_s = None if exact_step_s is None else exact_step_s * self.surrogate_steps
        return {
            "surrogate_steps": self.surrogate_steps,
            "exact_steps": self.exact_steps,
            "checks": len(self.errors),
            "fallbacks": self.fallbacks,
            "errors": self.errors,
            "max_check_error": max(self.errors, default=None),
            "final_error": relative_error(u, exact(self.r, t, self.period)),
            "versions": self.versions,
            "first_surrogate_step": self.first_surrogate_step,
            "waited_s": self.waited_s,
            "exact_s": self.exact_s,
            "exact_step_s": exact_step_s,
            "surrogate_s": self.surrogate_s,
            "model_s": self.model_s,
            "avoided_s": avoided_s,  # what the surrogate's steps would have cost done exactly
            "saved_s": None if avoided_s is None else avoided_s - self.surrogate_s,
        }


# --- where a simulation's pairs go ---------------------------------------------------------


def pair_key(prefix: str, sim: int, step: int) -> str:
    return f"{prefix}/sim{sim:03d}/pair{step:02d}"


def stream_name(prefix: str, sim: int) -> str:
    return f"{prefix}/sim{sim:03d}"


class StoreSink:
    """Writes into the run's store ($SIMAI_STORE), or the store at `url`: one key per pair,
    or one stream per sim."""

    def __init__(self, prefix: str = "wave", stream: bool = False, url: str | None = None) -> None:
        self.prefix, self.stream, self.url = prefix, stream, url

    def open(self, sim: int) -> Callable[[int, np.ndarray], Any]:
        import simai

        self.store = store = simai.open_store(self.url)
        if self.stream:
            name = stream_name(self.prefix, sim)
            return lambda step, pair: store.append(name, pair)
        return lambda step, pair: store.put(pair_key(self.prefix, sim, step), pair)

    def close(self, sim: int) -> None:
        if self.stream:
            self.store.close_stream(stream_name(self.prefix, sim))


class NpySink:
    """np.save of one .npy file per pair into a directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def open(self, sim: int) -> Callable[[int, np.ndarray], None]:
        return lambda step, pair: np.save(npy_path(self.directory, sim, step), pair)

    def close(self, sim: int) -> None:
        pass


def npy_path(directory: str, sim: int, step: int) -> str:
    return os.path.join(directory, f"sim{sim:03d}-pair{step:02d}.npy")


class ListSink:
    """Keeps the pairs in memory; the simulation returns them (the futures pattern)."""

    def open(self, sim: int) -> Callable[[int, np.ndarray], None]:
        self.pairs: list[np.ndarray] = []
        return lambda step, pair: self.pairs.append(pair)

    def close(self, sim: int) -> None:
        pass


def simulate(
    sim: int,
    period: float,
    grid_size: int,
    steps: int,
    sink: Any,
    stepper: Stepper | None = None,
    record: int | None = None,
    leapfrog: bool = False,
    compute_s: float = 0.0,
) -> dict[str, Any]:
    """Advance one simulation `steps` steps, writing each pair (u_t, u_{t+1}) to `sink`.

    Each pair is a float32 array of shape (2, n, n); with `leapfrog`, each record is
    (u_{t-1}, u_t, kappa, u_{t+1}) of shape (4, n, n): the inputs of a leapfrog step, the
    simulation's constant kappa as a field, then the target (u_{-1} is the exact solution,
    as a two-level solver starts from two states). `stepper` replaces the exact update
    (a surrogate plugs in here); the default evaluates the exact solution. Only the first
    `record` steps (default: all) write pairs; the sink is closed after them, so that
    consumers see the end of the data while the simulation goes on. `compute_s` emulates a
    costlier solver: each step first sleeps that long (the simulation waits, as one waiting on
    a device or on MPI peers would). Returns timings: run_s (the whole call), put_s (time
    inside the sink), pairs, and ended_at (time.time() at the end, to line up with other
    processes).
    """
    t0 = time.perf_counter()
    r = radius(grid_size)
    step_fn = stepper or exact_stepper(r, period)
    record = steps if record is None else min(record, steps)
    write = sink.open(sim)
    put_s = 0.0
    u = exact(r, 0, period)
    prev = exact(r, -1, period)
    channels = 4 if leapfrog else 2

    def close() -> float:
        t1 = time.perf_counter()
        sink.close(sim)
        return time.perf_counter() - t1

    if record == 0:
        put_s += close()
    for t in range(steps):
        if compute_s:
            time.sleep(compute_s)
        if t >= record:
            u = step_fn(u, t)
            continue
        pair = np.empty((channels, grid_size, grid_size), np.float32)
        if leapfrog:  # (u_{t-1}, u_t, kappa, u_{t+1})
            pair[0], pair[1], pair[2] = prev, u, kappa(period)
        else:  # (u_t, u_{t+1})
            pair[0] = u
        pair[-1] = step_fn(u, t)
        prev, u = u, pair[-1]
        t1 = time.perf_counter()
        write(t, pair)
        put_s += time.perf_counter() - t1
        if t + 1 == record:
            put_s += close()
    result = {"sim": sim, "period": period, "pairs": record, "put_s": put_s}
    result["run_s"] = time.perf_counter() - t0
    result["ended_at"] = time.time()
    if isinstance(sink, ListSink):
        result["data"] = sink.pairs
    return result


# --- where a trainer's pairs come from ------------------------------------------------------


class Reads:
    """Time a trainer spends getting data, split into moving it and waiting for producers."""

    def __init__(self) -> None:
        self.data_s = 0.0
        self.wait_s = 0.0
        self.count = 0


class StoreKeysSource:
    """Every pair by key from the run's store, in a shuffled order each epoch.

    `view=True` reads zero-copy (read-only) where the backend can: the trainer then touches
    only the crops it trains on."""

    def __init__(self, prefix: str, num_sims: int, steps: int, view: bool = False) -> None:
        self.prefix, self.num_sims, self.steps, self.view = prefix, num_sims, steps, view

    def epoch(self, epoch: int, rng: random.Random, reads: Reads) -> Iterator[np.ndarray]:
        import simai

        store = simai.open_store()
        keys = [
            pair_key(self.prefix, s, t) for s in range(self.num_sims) for t in range(self.steps)
        ]
        rng.shuffle(keys)
        for key in keys:
            t0 = time.perf_counter()
            pair = store.get(key, view=self.view)
            reads.data_s += time.perf_counter() - t0
            reads.count += 1
            yield pair


class StoreStreamSource:
    """Each simulation's stream in the run's store (or the store at `url`), read while it is
    written.

    The first epoch takes whichever stream has an unread pair: it tries each reader without
    waiting and, when none had one, waits a moment on the oldest unfinished stream; so the
    trainer consumes while simulations run. Later epochs re-read the complete streams, simulations
    in a shuffled order. Time spent on a try that found nothing, or waiting, counts as
    waiting, not data movement.
    """

    def __init__(
        self, prefix: str, num_sims: int, timeout: float = 600.0, url: str | None = None
    ) -> None:
        self.prefix, self.num_sims, self.timeout, self.url = prefix, num_sims, timeout, url

    def epoch(self, epoch: int, rng: random.Random, reads: Reads) -> Iterator[np.ndarray]:
        import simai

        store = simai.open_store(self.url)
        names = [stream_name(self.prefix, s) for s in range(self.num_sims)]
        if epoch > 0:
            rng.shuffle(names)
            for name in names:
                it = store.stream(name, timeout=self.timeout)
                while True:
                    t0 = time.perf_counter()
                    pair = next(it, None)
                    reads.data_s += time.perf_counter() - t0
                    if pair is None:
                        break
                    reads.count += 1
                    yield pair
            return
        readers = {name: store.stream(name, timeout=0) for name in names}
        found, since = True, time.monotonic()
        while readers:
            if not found and time.monotonic() - since > self.timeout:
                raise TimeoutError(f"no simulation appended to its stream in {self.timeout} s")
            # after a pass that found nothing, the oldest unfinished stream waits a moment
            wait, found = (0.0 if found else 0.05), False
            for name, it in list(readers.items()):
                it.timeout, wait = wait, 0.0
                t0 = time.perf_counter()
                try:
                    pair = next(it, None)
                except TimeoutError:
                    reads.wait_s += time.perf_counter() - t0
                    continue
                reads.data_s += time.perf_counter() - t0
                found, since = True, time.monotonic()
                if pair is None:
                    del readers[name]
                    continue
                reads.count += 1
                yield pair


class NpySource:
    """np.load of every .npy pair file in a directory, in a shuffled order each epoch
    (`mmap=True`: mapped read-only instead of read)."""

    def __init__(self, directory: str, num_sims: int, steps: int, mmap: bool = False) -> None:
        self.directory, self.num_sims, self.steps, self.mmap = directory, num_sims, steps, mmap

    def epoch(self, epoch: int, rng: random.Random, reads: Reads) -> Iterator[np.ndarray]:
        paths = [
            npy_path(self.directory, s, t) for s in range(self.num_sims) for t in range(self.steps)
        ]
        rng.shuffle(paths)
        for path in paths:
            t0 = time.perf_counter()
            pair = np.load(path, mmap_mode="r" if self.mmap else None)
            reads.data_s += time.perf_counter() - t0
            reads.count += 1
            yield pair


class ListSource:
    """Pairs already in this process's memory (they arrived as task arguments)."""

    def __init__(self, pairs: list[np.ndarray]) -> None:
        self.pairs = pairs

    def epoch(self, epoch: int, rng: random.Random, reads: Reads) -> Iterator[np.ndarray]:
        order = list(range(len(self.pairs)))
        rng.shuffle(order)
        for i in order:
            reads.count += 1
            yield self.pairs[i]


# --- the trainer ----------------------------------------------------------------------------


def make_model(kernel: int) -> Any:
    """Conv2d(1, 8, k) -> tanh -> Conv2d(8, 1, k), 'same' padding."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, kernel, padding=kernel // 2),
        torch.nn.Tanh(),
        torch.nn.Conv2d(8, 1, kernel, padding=kernel // 2),
    )


def make_leapfrog_model(kernel: int) -> Any:
    """A leapfrog step with a learned spatial operator, for records (u_{t-1}, u_t, kappa).

    u_{t+1} = 2 u_t - u_{t-1} + kappa * CNN(u_{t-1}, u_t), the CNN being make_model's
    Conv2d(2, 8, k) -> tanh -> Conv2d(8, 1, k): the wave equation's update with the CNN in
    the place of the Laplacian. The operator is the same for every simulation (kappa carries
    the wave speed), so a version fitted to the first simulations' data serves all of them;
    a CNN that sees u_t alone cannot tell which way the wave travels nor how fast.
    """
    import torch

    class LeapfrogCNN(torch.nn.Module):
        def __init__(self, kernel: int) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(2, 8, kernel, padding=kernel // 2),
                torch.nn.Tanh(),
                torch.nn.Conv2d(8, 1, kernel, padding=kernel // 2),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            prev, u, kappa = x[:, 0:1], x[:, 1:2], x[:, 2:3]
            return 2 * u - prev + kappa * self.net(x[:, 0:2])

    return LeapfrogCNN(kernel)


class Adam:
    """Adam (Kingma and Ba), for plain tensors: creating a torch.optim optimizer imports
    torch._dynamo, seconds of start-up in every trainer process for nothing used here."""

    def __init__(self, params: list[Any], lr: float, betas=(0.9, 0.999), eps=1e-8) -> None:
        import torch

        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        scale = self.lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(m, v.sqrt().add_(self.eps), value=-scale)


def train(
    kernel: int,
    source: Any,
    epochs: int,
    patch: int = 64,
    patches: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    publish: Callable[[Any, int, int, float], None] | None = None,
    publish_every: int | None = None,
    publish_first: int | None = None,
    build_model: Callable[[int], Any] = make_model,
) -> dict[str, Any]:
    """Fit the CNN of kernel size `kernel` to every pair `source` yields, `epochs` times.

    `build_model(kernel)` makes the model: it reads a record's channels but the last (u_t of
    a pair), and the last is its target (u_{t+1}).

    Each pair gives one optimizer step on `patches` random `patch` x `patch` crops (the net
    is convolutional, so crops train it for the whole grid at a fraction of the cost); the
    loss is the MSE away from the crop border that zero padding distorts. Pairs are read one
    at a time, so a trainer never holds the whole data set. `publish(model, epoch, step,
    loss)` runs after each epoch, every `publish_every` steps, and after the first
    `publish_first` steps (a model registry plugs in here; `loss` is the mean since the last
    call). Returns timings (run_s from after
    `import torch` and building the model and optimizer: startup_s) and losses.
    """
    t_import = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed + kernel)
    rng = random.Random(seed + kernel)
    model = build_model(kernel)
    opt = Adam(list(model.parameters()), lr=lr)
    t0 = time.perf_counter()
    margin = 2 * (kernel // 2)
    reads = Reads()
    losses, per_epoch = [], []
    train_s = 0.0
    step = published = 0
    since = [0.0, 0]  # loss sum and count since the last publish

    def publish_now(epoch: int) -> None:
        nonlocal published
        if publish is not None and step > published:
            publish(model, epoch, step, since[0] / max(since[1], 1))
            published, since[:] = step, [0.0, 0]

    for epoch in range(epochs):
        total, count = 0.0, 0
        for pair in source.epoch(epoch, rng, reads):
            t1 = time.perf_counter()
            n = pair.shape[-1]
            size = min(patch, n)
            crops = np.empty((patches, pair.shape[0], size, size), np.float32)
            for j in range(patches):
                y, x = rng.randrange(n - size + 1), rng.randrange(n - size + 1)
                crops[j] = pair[:, y : y + size, x : x + size]
            inp = torch.from_numpy(np.ascontiguousarray(crops[:, :-1]))
            target = torch.from_numpy(np.ascontiguousarray(crops[:, -1:]))
            out = model(inp)
            inner = (..., slice(margin, size - margin), slice(margin, size - margin))
            loss = torch.nn.functional.mse_loss(out[inner], target[inner])
            model.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()
            total += value
            count += 1
            step += 1
            since[0] += value
            since[1] += 1
            train_s += time.perf_counter() - t1
            if (publish_every and step % publish_every == 0) or step == publish_first:
                publish_now(epoch)
        losses.append(total / max(count, 1))
        per_epoch.append(count)
        publish_now(epoch)
    return {
        "kernel": kernel,
        "epochs": epochs,
        "pairs_per_epoch": per_epoch,
        "losses": losses,
        "loss": losses[-1] if losses else math.nan,
        "data_s": reads.data_s,
        "wait_s": reads.wait_s,
        "train_s": train_s,
        "run_s": time.perf_counter() - t0,
        "startup_s": t0 - t_import,
    }


# --- full training (`--train full`): what users run -------------------------------------------

FULL_KERNELS = (3, 5)
"""The trainers of `--train full`: one per kernel size, a core each."""


def huge_pages_given() -> dict[str, Any]:
    """The allocators' huge page switches this process was started with (simai sets them
    for its tasks and components unless SIMAI_HUGE_PAGES=0, see simai.launch.memory), and
    whether PyTorch will use huge pages."""
    given = {v: os.environ.get(v) for v in ("THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES")}
    return {"given": given, "torch": given["THP_MEM_ALLOC_ENABLE"] == "1"}


def _batches(pairs: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    group: list[np.ndarray] = []
    for pair in pairs:
        group.append(pair)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def train_full(
    kernel: int,
    source: Any,
    epochs: int = 1,
    batch: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Fit make_model(kernel) as a user would: `epochs` passes over every pair `source`
    yields, whole frames, `batch` pairs a step, torch.optim.Adam, float32, one thread.

    Then the final loss: the trained model's MSE on every pair, averaged over the pairs, in a
    second pass over `source` (each pair is (u_t, u_{t+1}) of one simulation and step, so
    input and target always match). `ready()` runs once torch is imported and the model and
    optimizer exist (start-up: seconds, torch.optim imports torch._dynamo). Returns the
    final loss, the pairs per epoch, timings (startup_s; train_s, the training steps'
    compute; data_s and wait_s, reading and waiting for producers, both passes; eval_s; run_s
    from after start-up), the minor page faults of the training pass (minflt), each training
    step's end (step_ends, time.time()) and the huge-page settings it ran with.
    """
    import resource

    t_import = time.perf_counter()
    huge = huge_pages_given()
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed + kernel)
    rng = random.Random(seed + kernel)
    model = make_model(kernel)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if ready is not None:
        ready()
    t0 = time.perf_counter()

    def tensors(group: list[np.ndarray]) -> tuple[Any, Any]:
        # copies: a read may be a read-only view, and a batch is one array
        x = np.stack([pair[:-1] for pair in group]).astype(np.float32, copy=False)
        y = np.stack([pair[-1:] for pair in group]).astype(np.float32, copy=False)
        return torch.from_numpy(x), torch.from_numpy(y)

    reads = Reads()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train_s = 0.0
    losses, per_epoch, step_ends = [], [], []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for group in _batches(source.epoch(epoch, rng, reads), batch):
            t1 = time.perf_counter()
            x, y = tensors(group)
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(group)
            count += len(group)
            train_s += time.perf_counter() - t1
            step_ends.append(time.time())
        losses.append(total / max(count, 1))
        per_epoch.append(count)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    t2 = time.perf_counter()
    evals = Reads()
    squared, pairs = 0.0, 0
    with torch.no_grad():
        for group in _batches(source.epoch(epochs, rng, evals), batch):
            x, y = tensors(group)
            squared += float((model(x) - y).double().pow(2).mean(dim=(1, 2, 3)).sum())
            pairs += len(group)
    eval_s = time.perf_counter() - t2 - evals.data_s - evals.wait_s
    return {
        "kernel": kernel,
        "train": "full",
        "epochs": epochs,
        "batch": batch,
        "pairs_per_epoch": per_epoch,
        "steps": len(step_ends),
        "losses": losses,
        "loss": squared / pairs if pairs else math.nan,
        "eval_pairs": pairs,
        "data_s": reads.data_s + evals.data_s,
        "eval_data_s": evals.data_s,
        "wait_s": reads.wait_s + evals.wait_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "run_s": time.perf_counter() - t0,
        "startup_s": t0 - t_import,
        "minflt": faults,
        "step_ends": step_ends,
        "huge_pages": huge,
    }


def store_simulation(
    sim: int,
    period: float,
    grid_size: int,
    steps: int,
    online: bool,
    compute_s: float = 0.0,
    prefix: str = "wave",
    streams: str | None = None,
) -> dict[str, Any]:
    """A simulation as a simai task: its pairs into the run's store, keys or a stream (in
    the store at `streams`, if given)."""
    sink = StoreSink(prefix, stream=online, url=streams)
    return simulate(sim, period, grid_size, steps, sink, compute_s=compute_s)


def store_trainer(
    kernel: int,
    num_sims: int,
    steps: int,
    online: bool,
    opts: dict[str, Any],
    prefix: str = "wave",
    streams: str | None = None,
) -> None:
    """A `--train full` trainer as a simai component: train_full on the run's store (every
    key, or the streams while they are written, in the store at `streams` if given); says
    ready/trainer-kK once it can train and puts its report under report/trainer-kK."""
    import simai

    store = simai.open_store()
    if online:
        source: Any = StoreStreamSource(prefix, num_sims, url=streams)
    else:
        source = StoreKeysSource(prefix, num_sims, steps)
    report = train_full(
        kernel, source, ready=lambda: store.put(f"ready/trainer-k{kernel}", b"1"), **opts
    )
    store.put(f"report/trainer-k{kernel}", report)
    print(f"trainer k={kernel}: final loss {report['loss']:.3g}", flush=True)


def wait_ready(store: Any, component: Any) -> None:
    """Block until a trainer said it is ready; a trainer that failed raises ComponentFailed."""
    while True:
        try:
            store.wait(f"ready/{component.name}", timeout=1.0)
            return
        except TimeoutError:
            if component.done:
                component.wait()
                raise RuntimeError(f"{component.name} ended without becoming ready") from None


def placement(executor: str, online: bool, trainers: int) -> tuple[dict[str, Any], Any]:
    """(executor config, the simulations' resources) of a `--train full` run.

    Online, trainers and simulations run at once: each trainer holds a core (the default
    Resources(cpus=1)) and the simulations, which mostly wait, must not take one: on the
    local executor they are Resources(cpus=0) tasks (no core of their own, run beside the
    trainers at a lower CPU priority); Parsl gets a worker more per trainer. Staged keeps the
    defaults: one task per core.
    """
    import simai

    if not online:
        return {}, None
    if executor == "parsl":
        return {"workers": len(os.sched_getaffinity(0)) + trainers}, None
    return {}, simai.Resources(cpus=0)


def run_full(
    wf: Any,
    num_sims: int,
    grid_size: int,
    steps: int,
    online: bool,
    compute_s: float,
    opts: dict[str, Any],
    *,
    sim_resources: Any = None,
    kernels: tuple[int, ...] = FULL_KERNELS,
    prefix: str = "wave",
    streams: str | None = None,
    keep_data: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The `--train full` workload in an open simai Workflow `wf`.

    Staged: the simulations (tasks) put one key per pair; when all have ended, one trainer
    component per kernel gets them. Online: the trainers start first (the simulations wait
    until they are ready) and read each simulation's stream while it is written, in the run's
    store or the store at `streams` (e.g. adios2:///dir?engine=BP5). Returns the
    simulations' and trainers' reports and the phases: sims_wall_s (from their submission to
    their end), train_wall_s (from the trainers' start to their end), wall_s (all of it,
    without starting the workflow), overlap (online: the fraction of the
    training steps done before the last simulation ended), pairs_stored. The pairs are
    deleted from the store unless `keep_data`.
    """
    say = progress or (lambda what: None)
    store = wf.store()
    t0 = time.perf_counter()

    def start_trainers() -> list[Any]:
        say("trainers start")
        return [
            wf.start(
                store_trainer,
                k,
                num_sims,
                steps,
                online,
                opts,
                prefix,
                streams,
                name=f"trainer-k{k}",
                resources={"cpus": 1},
            )
            for k in kernels
        ]

    trainers = start_trainers() if online else []
    for component in trainers:
        wait_ready(store, component)
    t_trainers = t0
    say("simulations" + (" (trainers reading their streams)" if online else ""))
    t_sims = time.perf_counter()
    futures = [
        wf.submit(
            store_simulation, i, p, grid_size, steps, online, compute_s, prefix, streams,
            resources=sim_resources,
        )
        for i, p in enumerate(periods(num_sims))
    ]  # fmt: skip
    sims = [f.result() for f in futures]
    t1 = time.perf_counter()
    if not online:
        t_trainers = t1
        trainers = start_trainers()
    say("training" if not online else "training (simulations ended)")
    for component in trainers:
        component.wait()
    t2 = time.perf_counter()
    reports = [store.get(f"report/trainer-k{k}") for k in kernels]
    import simai

    data = simai.open_store(streams) if online and streams else store
    if online:
        names = [stream_name(prefix, s) for s in range(num_sims)]
        stored = sum(data.stream_len(n) for n in names)
    else:
        names = data.keys(prefix + "/")
        stored = len(names)
    if not keep_data:
        delete = data.delete_stream if online else data.delete
        for name in names:
            delete(name)
    if data is not store:
        data.close()
    store.close()
    last = max(s["ended_at"] for s in sims)
    ends = [t for r in reports for t in r["step_ends"]]
    return {
        "sims": sims,
        "trainers": reports,
        "sims_wall_s": t1 - t_sims,
        "train_wall_s": t2 - t_trainers,
        "wall_s": t2 - t0,
        "overlap": sum(t <= last for t in ends) / len(ends) if online and ends else None,
        "pairs_stored": stored,
    }
