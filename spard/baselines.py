"""Trivial predictors for reference rows in result tables, with the samplers' signature.

They ignore the networks (the model only gives the sizes) and return one future per history,
repeated `num_samples` times, so every metric is computed the same way as for the samplers.
"""
from __future__ import annotations

import torch

from .model import SPARD


def zero_velocity(model: SPARD, history: torch.Tensor, num_samples: int = 1, **_) -> torch.Tensor:
    """The last observed pose held: `[B, t_his, D]` -> `[B, S, T, D]`."""
    future = history[:, -1:].expand(-1, model.t_pred, -1)
    return torch.cat([history, future], dim=1)[:, None].expand(-1, num_samples, -1, -1)


def constant_velocity(model: SPARD, history: torch.Tensor, num_samples: int = 1, **_) -> torch.Tensor:
    """The last observed velocity (last two frames) continued: `[B, t_his, D]` -> `[B, S, T, D]`."""
    if history.shape[1] < 2:
        raise ValueError(f"constant_velocity needs at least 2 observed frames for a velocity, t_his is "
                         f"{history.shape[1]}")
    velocity = history[:, -1] - history[:, -2]  # [B, D]
    steps = torch.arange(1, model.t_pred + 1, device=history.device, dtype=history.dtype)
    future = history[:, -1:] + steps[None, :, None] * velocity[:, None]
    return torch.cat([history, future], dim=1)[:, None].expand(-1, num_samples, -1, -1)


BASELINES = {"zero_velocity": zero_velocity, "constant_velocity": constant_velocity}
