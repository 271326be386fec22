"""Residual-shift diffusion arithmetic (docs/method.md section 2), as small pure functions.

The diffusion state lives in DCT space, `[..., n_pre, D]`. `y` is the padded history's DCT (the
degraded input and the condition), `x0` the true trajectory's DCT. With `eta_t = sqrt_eta_t ** 2`:

    forward  x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) eps
    prior    x_T = y + kappa sqrt(eta_T) eps
    step     x_s = k x0_hat + m x_t + j y      (deterministic, t -> s)

Nothing here is a network: the denoiser is in `spard.nets`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import DiffusionConfig


def eta_schedule(cfg: DiffusionConfig) -> np.ndarray:
    """`sqrt_eta_t` for t = 0..S-1, float64.

    exponential (ResShift): `sqrt_eta_1 = min(eta_min / kappa, eta_min)`, geometric growth to
    `eta_end` with the step positions warped by `power`. linear: evenly spaced from `eta_min` to
    `eta_end` (the published option).
    """
    s = cfg.noise_steps
    if s < 2:
        raise ValueError(f"noise_steps must be >= 2, got {s}")
    if cfg.schedule == "exponential":
        start = min(cfg.eta_min / cfg.kappa, cfg.eta_min)
        base = math.exp(math.log(cfg.eta_end / start) / (s - 1))
        positions = np.linspace(0.0, 1.0, s) ** cfg.power * (s - 1)
        return start * np.power(np.full(s, base), positions)
    if cfg.schedule == "linear":
        return np.linspace(cfg.eta_min, cfg.eta_end, s)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose 'exponential' or 'linear'")


def sampling_timesteps(noise_steps: int, sample_steps: int) -> tuple[int, ...]:
    """Descending timesteps visited by the samplers; the first is T = noise_steps - 1, the last 0.

    All steps when `sample_steps == noise_steps` (5 -> [4, 3, 2, 1, 0]); otherwise the published
    rule: evenly strided steps from T down to 2 (truncated), then 1 and 0.
    """
    if not 1 <= sample_steps <= noise_steps:
        raise ValueError(f"sample_steps must be in [1, noise_steps={noise_steps}], got {sample_steps}")
    if sample_steps == noise_steps:
        return tuple(range(noise_steps - 1, -1, -1))
    if sample_steps == 1:
        return (noise_steps - 1,)
    if sample_steps == 2:
        return (noise_steps - 1, 0)
    stride = (noise_steps - 1) / (sample_steps - 2)
    middle = torch.arange(noise_steps - 1, 1, -stride).long().tolist()
    return (*middle, 1, 0)


@dataclass(frozen=True)
class Schedule:
    """The schedule as the samplers and losses use it (float32 tensors on the model's device).

    The sampling steps are plain integers, so sampling never waits on the device (CUDA graphs).
    """

    sqrt_etas: torch.Tensor  # [S]
    kappa: float
    timesteps: tuple[int, ...]  # sampling steps, descending

    @classmethod
    def from_config(cls, cfg: DiffusionConfig, device=None) -> "Schedule":
        sqrt_etas = torch.tensor(eta_schedule(cfg), dtype=torch.float32, device=device)
        return cls(sqrt_etas, float(cfg.kappa), sampling_timesteps(cfg.noise_steps, cfg.sample_steps))

    @property
    def etas(self) -> torch.Tensor:
        return self.sqrt_etas**2

    @property
    def t_max(self) -> int:
        """The step the samplers start from."""
        return self.timesteps[0]

    def to(self, device) -> "Schedule":
        return Schedule(self.sqrt_etas.to(device), self.kappa, self.timesteps)


def _per_sample(values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """`values[t]` shaped to broadcast against `like` (`t` scalar or one step per leading row)."""
    v = values[t]
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


def q_sample(x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor, sched: Schedule) -> torch.Tensor:
    """Forward process: `x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) eps`. Shapes `[N, n_pre, D]`, t `[N]`."""
    eta = _per_sample(sched.etas, t, x0)
    std = _per_sample(sched.kappa * sched.sqrt_etas, t, x0)
    return eta * (y - x0) + x0 + std * eps


def prior_sample(y: torch.Tensor, eps: torch.Tensor, sched: Schedule) -> torch.Tensor:
    """Start of sampling: `x_T = y + kappa sqrt(eta_T) eps` at `T = sched.t_max`."""
    return y + (sched.kappa * sched.sqrt_etas[sched.t_max]) * eps


def ddim_coefficients(sched: Schedule, t: int, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(k, m, j)` of the deterministic step t -> s (k + m + j = 1).

    `m = sqrt(eta_s / eta_t)`, `j = eta_s - sqrt(eta_s eta_t)`, `k = 1 - eta_s + sqrt(eta_s eta_t) - m`.
    """
    eta_t, eta_s = sched.etas[t], sched.etas[s]
    root = torch.sqrt(eta_t * eta_s)
    m = torch.sqrt(eta_s / eta_t)
    return 1 - eta_s + root - m, m, eta_s - root


def ddim_step(x0_hat: torch.Tensor, x_t: torch.Tensor, y: torch.Tensor, coeffs) -> torch.Tensor:
    """`x_s = k x0_hat + m x_t + j y`."""
    k, m, j = coeffs
    return x0_hat * k + m * x_t + j * y
