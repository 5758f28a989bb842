"""The digital twin's physics and surrogate: a heated rod whose diffusivity drifts.

The physical system is a 1-D heat equation on [0, 1] with 32 interior points and cold ends,
u_t = kappa(t) u_xx + s(x) (1 + sin(2 pi t / PERIOD)) + process noise: a heater near x = 0.3
cycles with a known period, and the rod's diffusivity kappa drifts from KAPPA0 to KAPPA1
over the middle of the run (the insulation ages, say). Sensors read u at every point with
Gaussian noise.

The twin's own model is the same equation with the nominal KAPPA0: it does not know about
the drift. Each step it advances its state with that model and nudges it towards the
observation (a fixed-gain, Kalman-like update). Its surrogate, a small residual MLP, maps
(state, heater phase) to the state HORIZON steps later; it is fitted online to the
assimilated states and forecasts HORIZON steps ahead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NX = 32
DX = 1.0 / (NX + 1)
X = np.arange(1, NX + 1) * DX
DT = 0.002
PERIOD = 0.4  # the heater's cycle, in time units (200 steps)
KAPPA0 = 0.1
KAPPA1 = 0.2
SOURCE = 8.0 * np.exp(-0.5 * ((X - 0.3) / 0.08) ** 2)
PROCESS_NOISE = 0.3
SPIN_UP = 500  # steps the plant runs before its sensors stream (a periodic state)
FEATURES = NX + 2  # the state and the heater's phase as (cos, sin)


def laplacian(u: np.ndarray) -> np.ndarray:
    lap = -2.0 * u
    lap[1:] += u[:-1]
    lap[:-1] += u[1:]
    return lap / DX**2


def heater(step: int) -> float:
    return 1.0 + np.sin(2 * np.pi * step * DT / PERIOD)


def advance(u: np.ndarray, step: int, kappa: float) -> np.ndarray:
    """One explicit Euler step of the rod (the twin's model with kappa = KAPPA0)."""
    return u + DT * (kappa * laplacian(u) + SOURCE * heater(step))


def kappa_at(step: int, steps: int, drift: tuple[float, float]) -> float:
    """The true diffusivity: KAPPA0, a linear ramp over [drift[0], drift[1]] (fractions of
    the run), then KAPPA1."""
    start, end = drift[0] * steps, drift[1] * steps
    ramp = np.clip((step - start) / max(end - start, 1.0), 0.0, 1.0)
    return float(KAPPA0 + (KAPPA1 - KAPPA0) * ramp)


class Plant:
    """The physical system: the true rod, with process noise, read by noisy sensors."""

    def __init__(self, seed: int, steps: int, drift: tuple[float, float], noise: float) -> None:
        self.rng = np.random.default_rng(seed)
        self.steps, self.drift, self.noise = steps, drift, noise
        self.u = np.zeros(NX)
        for n in range(-SPIN_UP, 0):
            self.u = advance(self.u, n, KAPPA0)

    def step(self, n: int) -> np.ndarray:
        """Advance to step n + 1; return the sensors' reading of it."""
        kappa = kappa_at(n, self.steps, self.drift)
        shock = np.sqrt(DT) * PROCESS_NOISE * self.rng.normal(size=NX)
        self.u = advance(self.u, n, kappa) + shock
        return self.u + self.noise * self.rng.normal(size=NX)


def features(state: np.ndarray, step: int) -> np.ndarray:
    """The surrogate's input for the assimilated state at `step`: (state, cos, sin)."""
    phase = 2 * np.pi * step * DT / PERIOD
    return np.concatenate([state, [np.cos(phase), np.sin(phase)]]).astype(np.float32)


def make_model() -> Any:
    """A residual MLP: state + MLP(state, phase), FEATURES -> 64 -> NX."""
    import torch

    class Forecaster(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n = NX
            self.net = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, 64), torch.nn.Tanh(), torch.nn.Linear(64, NX)
            )

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z[:, : self.n] + self.net(z)

    return Forecaster()


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))
