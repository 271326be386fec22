"""Graph convolution over the D coordinate nodes with a learnable adjacency (LTD-style).

Features live on nodes: `[B, nodes, features]`. Used by the denoiser's refiner (features = DCT
coefficients of the whole trajectory) and by the noise predictor (features = condition coefficients).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as tdist
from torch import nn

from .fusable import Fusable


class GraphConv(nn.Module):
    """`att @ (x @ weight) + bias`, with `att` a learned `[nodes, nodes]` adjacency."""

    def __init__(self, in_features: int, out_features: int, nodes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.att = nn.Parameter(torch.empty(nodes, nodes))
        self.bias = nn.Parameter(torch.empty(out_features))
        bound = 1.0 / math.sqrt(out_features)
        for p in (self.weight, self.att, self.bias):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, nodes, in] -> [B, nodes, out]
        return self.att @ (x @ self.weight) + self.bias

    @torch.no_grad()
    def folded(self, bn: "NodeBatchNorm | None") -> tuple[torch.Tensor, torch.Tensor]:
        """`(scale, shift)` `[nodes, out]` with `bn(self(x)) = (att @ x @ weight) * scale + shift` in eval
        mode (bias and BatchNorm folded; without a BatchNorm, scale 1 and shift the bias)."""
        nodes, out = self.att.shape[0], self.weight.shape[1]
        if bn is None:
            return torch.ones(nodes, out, device=self.bias.device), self.bias.expand(nodes, out).clone()
        scale = (bn.weight * torch.rsqrt(bn.running_var + bn.eps)).view(nodes, out)
        return scale, bn.bias.view(nodes, out) + (self.bias - bn.running_mean.view(nodes, out)) * scale


class NodeBatchNorm(nn.BatchNorm1d):
    """BatchNorm over every (node, feature) pair, as one `nodes * features` channel vector.

    With `sync` set (the trainer does so under torchrun), training-mode statistics are those of
    the global batch across ranks, gradients included, so data parallelism equals one process.
    PyTorch's SyncBatchNorm does this on GPUs only; this works with any backend.
    """

    sync = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, nodes, f]
        flat = x.flatten(1)
        if self.sync and self.training and tdist.is_initialized() and tdist.get_world_size() > 1:
            return self._synced(flat).view_as(x)
        return super().forward(flat).view_as(x)

    def _synced(self, flat: torch.Tensor) -> torch.Tensor:
        from ..distributed import sum_over_ranks  # with torch.compiler's machinery: only under torchrun

        # the count made on the device (`new_full`), not copied from the host: a captured CUDA graph replays copies
        total = sum_over_ranks(torch.cat([flat.sum(0), flat.new_full((1,), flat.shape[0])]))
        n = total[-1]
        mean = total[:-1] / n
        var = sum_over_ranks((flat - mean).square().sum(0)) / n  # biased, for normalising; two passes, no cancellation
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
            self.num_batches_tracked.add_(1)
        return (flat - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class GCBlock(nn.Module):
    """Two graph convolutions, each followed by BatchNorm, tanh and dropout; residual."""

    def __init__(self, features: int, nodes: int, dropout: float):
        super().__init__()
        self.gc1 = GraphConv(features, features, nodes)
        self.bn1 = NodeBatchNorm(nodes * features)
        self.gc2 = GraphConv(features, features, nodes)
        self.bn2 = NodeBatchNorm(nodes * features)
        self.do = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.do(torch.tanh(self.bn1(self.gc1(x))))
        y = self.do(torch.tanh(self.bn2(self.gc2(y))))
        return x + y


class GCN(Fusable):
    """gc1 -> BN/tanh/dropout -> `layers` residual blocks -> gc7 (+ input when `residual`)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, nodes: int, layers: int,
                 dropout: float, residual: bool):
        super().__init__()
        if residual and in_features != out_features:
            raise ValueError(f"a residual GCN needs in_features == out_features, got {in_features} and {out_features}")
        self.residual = residual
        self.gc1 = GraphConv(in_features, hidden, nodes)
        self.bn1 = NodeBatchNorm(nodes * hidden)
        self.gcbs = nn.ModuleList(GCBlock(hidden, nodes, dropout) for _ in range(layers))
        self.gc7 = GraphConv(hidden, out_features, nodes)
        self.do = nn.Dropout(dropout)
        self.fused = None  # spard.fast.FusedGCN while fused

    def convolutions(self) -> list[tuple[GraphConv, NodeBatchNorm | None]]:
        """Every convolution in order with the BatchNorm after it: gc1, two per block, gc7 (none)."""
        return [(self.gc1, self.bn1)] + [c for b in self.gcbs for c in ((b.gc1, b.bn1), (b.gc2, b.bn2))] + [(self.gc7, None)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, nodes, in] -> [B, nodes, out]
        if self.fused is not None:
            return self.fused(x, self.residual)
        y = self.do(torch.tanh(self.bn1(self.gc1(x))))
        for block in self.gcbs:
            y = block(y)
        y = self.gc7(y)
        return x + y if self.residual else y
