"""The noise predictor of stage 3, "adaptive sampling" (method.md section 4).

A GCN over the D coordinate nodes reads the condition's `n_pre` coefficients and writes K noise
maps, `eps_k = alpha * tanh(.)`, each `[n_pre, D]`: the K futures become a deterministic function of
the history.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import NoisePredictorConfig
from .gcn import GCN


class NoisePredictor(nn.Module):
    def __init__(self, cfg: NoisePredictorConfig):
        super().__init__()
        self.cfg = cfg
        self.model = GCN(cfg.n_pre, cfg.hidden, cfg.n_pre * cfg.k, nodes=cfg.input_feats, layers=cfg.layers,
                         dropout=cfg.dropout, residual=False)

    def forward(self, y_cond: torch.Tensor) -> torch.Tensor:
        """`[B, n_pre, D]` -> `[B, K, n_pre, D]`."""
        b, n, d = y_cond.shape
        maps = self.cfg.alpha * torch.tanh(self.model(y_cond.transpose(1, 2)))  # [B, D, K * n_pre]
        return maps.view(b, d, self.cfg.k, n).permute(0, 2, 3, 1)
