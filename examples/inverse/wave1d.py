"""The inverse problem's physics and surrogate: a damped 1-D wave driven by a hidden source.

u_tt = c^2 u_xx - gamma u_t + exp(-(x - position)^2 / (2 width^2)) sin(2 pi t / period) on
[0, 1], u = 0 at both ends, starting at rest; leapfrog in time, second-order differences in
space (64 points, 118 steps, a few ms of numpy). The *field* a simulation returns is u at 14
sensors, sampled 16 times over t in [0, 1.5]: a 16 x 14 space-time record, flattened.

The surrogate is an MLP from the two normalised parameters to the (scaled) field. The
trainer fits it in torch; the steering loop evaluates it with `mlp_forward`, plain numpy on
its weights, so that scoring thousands of candidates needs no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NX = 64
C = 1.0
GAMMA = 1.0
WIDTH = 0.05
T_END = 1.5
X = np.linspace(0.0, 1.0, NX)
DX = X[1] - X[0]
DT = 0.8 * DX / C
STEPS = int(round(T_END / DT))
SENSORS = np.arange(4, NX - 4, 4)
SNAPSHOTS = 16
FIELD_SIZE = SNAPSHOTS * len(SENSORS)

PERIOD = (0.3, 1.0)  # the prior's bounds: where the source's period and position may lie
POSITION = (0.2, 0.8)
LOW = np.array([PERIOD[0], POSITION[0]])
HIGH = np.array([PERIOD[1], POSITION[1]])
FIELD_SCALE = 0.01  # |u| stays below about this: the network sees fields of order 1
HIDDEN = 128


def simulate(period: float, position: float) -> np.ndarray:
    """The field (SNAPSHOTS x sensors, flattened, float32) for one source."""
    source = np.exp(-0.5 * ((X - position) / WIDTH) ** 2)
    r2 = (C * DT / DX) ** 2
    damp = GAMMA * DT / 2
    prev = np.zeros(NX)
    u = np.zeros(NX)
    lap = np.zeros(NX)
    out = np.empty((SNAPSHOTS, len(SENSORS)), np.float32)
    every = STEPS // SNAPSHOTS
    for n in range(STEPS):
        lap[1:-1] = u[2:] - 2 * u[1:-1] + u[:-2]
        force = DT * DT * source * np.sin(2 * np.pi * n * DT / period)
        nxt = (2 * u - (1 - damp) * prev + r2 * lap + force) / (1 + damp)
        nxt[0] = nxt[-1] = 0.0
        prev, u = u, nxt
        if (n + 1) % every == 0 and (n + 1) // every <= SNAPSHOTS:
            out[(n + 1) // every - 1] = u[SENSORS]
    return out.ravel()


def misfit(field: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Relative squared misfit ||field - observed||^2 / ||observed||^2, over the last axis."""
    return np.sum((field - observed) ** 2, axis=-1) / np.sum(observed**2)


def candidates(resolution: float) -> list[tuple[float, float]]:
    """Every (period, position) on a grid of spacing `resolution` over the prior's box."""
    periods = np.arange(PERIOD[0], PERIOD[1] + resolution / 2, resolution)
    positions = np.arange(POSITION[0], POSITION[1] + resolution / 2, resolution)
    return [(round(float(p), 6), round(float(q), 6)) for p in periods for q in positions]


def normalise(params: np.ndarray) -> np.ndarray:
    """(period, position) rows to [-1, 1]^2, float32."""
    return ((np.asarray(params, np.float64) - LOW) / (HIGH - LOW) * 2 - 1).astype(np.float32)


def make_model() -> Any:
    """2 -> 128 -> 128 -> 128 -> FIELD_SIZE, SiLU; a torch.nn.Sequential."""
    import torch

    nn = torch.nn
    return nn.Sequential(
        nn.Linear(2, HIDDEN),
        nn.SiLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.SiLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.SiLU(),
        nn.Linear(HIDDEN, FIELD_SIZE),
    )


def numpy_weights(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (weight, bias) of each Linear layer of `model`, in order, as float32 arrays."""
    state = model.state_dict()
    names = sorted({k.rsplit(".", 1)[0] for k in state}, key=int)
    return [
        (state[f"{n}.weight"].numpy().astype(np.float32), state[f"{n}.bias"].numpy()) for n in names
    ]


def mlp_forward(weights: list[tuple[np.ndarray, np.ndarray]], params: np.ndarray) -> np.ndarray:
    """The surrogate's fields (unscaled) for (period, position) rows, in numpy."""
    h = normalise(params)
    for i, (w, b) in enumerate(weights):
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = h / (1.0 + np.exp(-h))  # SiLU
    return h * FIELD_SCALE
