"""The noise predictor of stage 3, "adaptive sampling" (docs/method.md section 4).

A GCN over the D coordinate nodes reads the condition's `n_pre` coefficients and writes K noise
maps, `eps_k = alpha * tanh(.)`, each `[n_pre, D]`: with the published settings the K futures are a
deterministic function of the history. With `noise` > 0 each map is the centre of a Gaussian,
`eps_k + noise * z`, z ~ N(0, I) drawn afresh: the futures are random and there can be any number
of them (`sample` cycles through the K maps).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import NoisePredictorConfig
from .gcn import GCN


class NoisePredictor(nn.Module):
    def __init__(self, cfg: NoisePredictorConfig, dim: int, n_pre: int):
        """`dim` = D nodes, `n_pre` coefficients per node in and per noise map out."""
        super().__init__()
        self.cfg = cfg
        self.model = GCN(n_pre, cfg.hidden, n_pre * cfg.k, nodes=dim, layers=cfg.layers,
                         dropout=cfg.dropout, residual=False)

    def forward(self, y_cond: torch.Tensor) -> torch.Tensor:
        """`[B, n_pre, D]` -> `[B, K, n_pre, D]`."""
        b, n, d = y_cond.shape
        maps = self.cfg.alpha * torch.tanh(self.model(y_cond.transpose(1, 2)))  # [B, D, K * n_pre]
        return maps.view(b, d, self.cfg.k, n).permute(0, 2, 3, 1)

    def sample(self, maps: torch.Tensor, num: int, z: torch.Tensor | None) -> torch.Tensor:
        """`num` noise maps per history from the K `maps` `[B, K, n_pre, D]`: maps 0, 1, .., K-1, 0, ..
        each plus `noise * z` (`z` `[B, num, n_pre, D]`, needed when `noise` > 0) -> `[B, num, n_pre, D]`."""
        k = maps.shape[1]
        if self.cfg.noise == 0:
            if num > k:
                raise ValueError(f"the np sampler gives at most K={k} futures without --np_noise, asked for {num}")
            return maps[:, :num]
        if z is None:
            raise ValueError(f"a noise predictor with --np_noise {self.cfg.noise} needs noise draws z [B, num, n_pre, D]")
        # training asks for the K maps themselves: no index tensor then, whose backward adds atomically on a GPU, in
        # no fixed order, which can change which map wins a window's minimum from one run to the next
        picked = maps if num == k else maps[:, torch.arange(num, device=maps.device) % k]  # [B, num, n_pre, D]
        return picked + self.cfg.noise * z

