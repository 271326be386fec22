"""`SPARD`: the two networks plus the fixed arithmetic around them (DCT basis, eta schedule).

The schedule and the DCT are not parameters: they are rebuilt from the config, never stored in a
checkpoint. Model space is `[B, frames, D]`, joints flattened joint-major, xyz-minor, root dropped.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import Config
from .dct import pad_indices, to_dct
from .diffusion import Schedule
from .nets import Denoiser, NoisePredictor


class SPARD(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.denoiser = Denoiser(cfg.denoiser, dim=d.dim, t_his=d.t_his, t_total=d.t_total)
        self.noise_predictor = NoisePredictor(cfg.noise_predictor, dim=d.dim, n_pre=cfg.denoiser.n_pre)
        s = Schedule.from_config(cfg.diffusion)
        self.register_buffer("sqrt_etas", s.sqrt_etas, persistent=False)
        self.timesteps = s.timesteps  # plain ints
        pad = pad_indices(d.t_his, d.t_pred, cfg.denoiser.padding)
        self.register_buffer("pad_index", pad, persistent=False)  # [T] history frame per window frame

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.sqrt_etas, float(self.cfg.diffusion.kappa), self.timesteps)

    @property
    def t_his(self) -> int:
        return self.cfg.data.t_his

    @property
    def t_pred(self) -> int:
        return self.cfg.data.t_pred

    @property
    def n_pre(self) -> int:
        return self.cfg.denoiser.n_pre

    @property
    def dim(self) -> int:
        """D = 3J, features per frame."""
        return self.cfg.data.dim

    def condition(self, history: torch.Tensor) -> torch.Tensor:
        """`y`: the DCT of the padded history, `[B, t_his, D]` -> `[B, n_pre, D]`."""
        return to_dct(history[:, self.pad_index], self.denoiser.dct, self.n_pre)

    def encode(self, traj: torch.Tensor) -> torch.Tensor:
        """`x0`: the DCT of the whole trajectory, `[B, T, D]` -> `[B, n_pre, D]`."""
        return to_dct(traj, self.denoiser.dct, self.n_pre)


def to_model_space(poses: torch.Tensor) -> torch.Tensor:
    """`[..., frames, J+1, 3]` (joint 0 = root) -> `[..., frames, 3J]` (root dropped, flattened)."""
    return poses[..., 1:, :].flatten(-2)


def from_model_space(traj: torch.Tensor) -> torch.Tensor:
    """`[..., frames, 3J]` -> `[..., frames, J, 3]`."""
    return traj.unflatten(-1, (-1, 3))
