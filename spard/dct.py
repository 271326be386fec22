"""The motion representation (docs/method.md section 1): orthonormal DCT over time and LastFrame padding.

A trajectory is `[B, T, D]` (frames x flattened joint coordinates). The diffusion state is its
first `n_pre` DCT coefficients, `[B, n_pre, D]`.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def dct_matrix(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal DCT-II matrix `[n, n]` (row k = coefficient, column i = frame) and its inverse.

    `dct[k, i] = w_k cos(pi (i + 1/2) k / n)`, `w_0 = sqrt(1/n)`, `w_k = sqrt(2/n)`. Built in float64
    and inverted numerically (as published), then cast to float32.
    """
    if n < 1:
        raise ValueError(f"DCT size must be >= 1, got {n}")
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    w = np.where(k == 0, math.sqrt(1.0 / n), math.sqrt(2.0 / n))
    dct = w * np.cos(math.pi * (i + 0.5) * k / n)  # [n, n] float64
    idct = np.linalg.inv(dct)
    return torch.from_numpy(dct).float(), torch.from_numpy(idct).float()


def pad_indices(t_his: int, t_pred: int, mode: str = "LastFrame") -> torch.Tensor:
    """Frames of the history that fill a window of `t_his + t_pred` frames.

    LastFrame: `[0, 1, .., t_his-1]` then `t_his-1` repeated `t_pred` times (published default).
    Repeat: the history tiled, `[0, .., t_his-1, 0, .., t_his-1, ...]`.
    """
    if t_his < 1 or t_pred < 0:
        raise ValueError(f"need t_his >= 1 and t_pred >= 0, got t_his={t_his}, t_pred={t_pred}")
    if mode == "LastFrame":
        return torch.tensor(list(range(t_his)) + [t_his - 1] * t_pred, dtype=torch.long)
    if mode == "Repeat":
        return torch.arange(t_his + t_pred) % t_his
    raise ValueError(f"unknown padding {mode!r}; choose LastFrame or Repeat")


def to_dct(traj: torch.Tensor, dct: torch.Tensor, n: int) -> torch.Tensor:
    """First `n` DCT coefficients of a trajectory: `[B, T, D]` -> `[B, n, D]` (always float32)."""
    with torch.autocast(traj.device.type, enabled=False):
        return dct[:n] @ traj.float()


def from_dct(coeffs: torch.Tensor, idct: torch.Tensor) -> torch.Tensor:
    """Trajectory from its first `n` coefficients (the rest zero): `[B, n, D]` -> `[B, T, D]` (float32)."""
    with torch.autocast(coeffs.device.type, enabled=False):
        return idct[:, : coeffs.shape[-2]] @ coeffs.float()
