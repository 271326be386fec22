"""The denoiser `f(x_t, t, y or none, history) -> trajectory` (docs/method.md section 3).

1. A transformer over the `n_pre` DCT tokens, every sub-block modulated AdaLN-style by
   `emb = MLP(sinusoid(t)) + Linear(flatten(y))` (the `y` term left out when the condition is
   dropped), with U-Net skips from the first half of the blocks to the second.
2. Back to time, the observed frames written over the first `t_his` frames.
3. A GCN refiner in full-DCT space (global residual), and back to time.

Parameter names follow the published state dict, so published checkpoints load by a prefix swap.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DenoiserConfig
from ..dct import dct_matrix, from_dct, to_dct
from .fusable import Fusable
from .gcn import GCN


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding `[N] -> [N, dim]`: cosines first, then sines."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def zero_init(layer: nn.Linear) -> nn.Linear:
    """Start a residual branch at zero (the published initialisation): each block begins as identity."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Stylization(nn.Module):
    """`out_layers(LayerNorm(h) * (1 + scale) + shift)`, scale and shift read from the embedding."""

    def __init__(self, latent: int, emb_dim: int, dropout: float):
        super().__init__()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * latent))
        self.norm = nn.LayerNorm(latent)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero_init(nn.Linear(latent, latent)))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # [N, L, C], [N, E]
        return self.modulated(h, self.emb_layers(emb))

    @property
    def modulation(self) -> nn.Linear:
        """The projection of the embedding to scale | shift (after SiLU)."""
        return self.emb_layers[1]

    def modulated(self, h: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:  # [N, L, C], [N, 2C]
        """The block given its embedding projection `mod` = scale | shift."""
        return self.out_layers(self.modulate(h, mod))

    @property
    def out_linear(self) -> nn.Linear:
        """The last layer of `out_layers` (after SiLU and dropout)."""
        return self.out_layers[2]

    def modulate(self, h: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """`LayerNorm(h) * (1 + scale) + shift`, the input of `out_layers`."""
        scale, shift = mod[:, None].chunk(2, dim=-1)  # [N, 1, C] each
        return self.norm(h) * (1 + scale) + shift


class SelfAttention(nn.Module):
    """Multi-head self-attention over the tokens (one LayerNorm feeds q, k and v), residual."""

    def __init__(self, latent: int, heads: int, dropout: float, emb_dim: int):
        super().__init__()
        if latent % heads:
            raise ValueError(f"latent_dims ({latent}) must be divisible by num_heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.norm = nn.LayerNorm(latent)
        self.query = nn.Linear(latent, latent, bias=False)
        self.key = nn.Linear(latent, latent, bias=False)
        self.value = nn.Linear(latent, latent, bias=False)
        self.proj_out = Stylization(latent, emb_dim, dropout)

    def qkv_weight(self) -> torch.Tensor:
        """q, k and v as one `[3C, C]` projection."""
        return torch.cat([self.query.weight, self.key.weight, self.value.weight])

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # [N, L, C]
        n, length, c = x.shape
        h = self.norm(x)
        q, k, v = (lin(h).view(n, length, self.heads, c // self.heads).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))  # [N, H, L, C/H]
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(n, length, c)
        return x + self.proj_out(y, emb)


class FeedForward(nn.Module):
    def __init__(self, latent: int, ff_size: int, dropout: float, emb_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(latent, ff_size)
        self.linear2 = zero_init(nn.Linear(ff_size, latent))
        self.dropout = nn.Dropout(dropout)
        self.proj_out = Stylization(latent, emb_dim, dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        y = self.linear2(self.dropout(F.gelu(self.linear1(x))))
        return x + self.proj_out(y, emb)


class Block(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.sa_block = SelfAttention(cfg.latent_dim, cfg.num_heads, cfg.dropout, cfg.latent_dim)
        self.ffn = FeedForward(cfg.latent_dim, cfg.ff_size, cfg.dropout, cfg.latent_dim)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.sa_block(x, emb), emb)

    def stylizations(self) -> tuple[Stylization, Stylization]:
        return self.sa_block.proj_out, self.ffn.proj_out

    @torch.no_grad()
    def fusion(self) -> dict[str, torch.Tensor]:
        """What this block's fused form (`spard.fast.FusedDenoiser`) computes from, derived from its weights:
        q | k | v as one projection, the two modulations as one, and the attention output's bias carried to
        where the sum is read next (the feed-forward's first bias, as `W1 @ b`, and its output bias)."""
        attn, ffn = self.stylizations()
        carried = attn.out_linear.bias  # [C]
        return {"qkv_weight": self.sa_block.qkv_weight(),  # [3C, C]
                "mod_weight": torch.cat([attn.modulation.weight, ffn.modulation.weight]),  # [2 * 2C, C]
                "mod_bias": torch.cat([attn.modulation.bias, ffn.modulation.bias]),  # [2 * 2C]
                "ffn_in_bias": self.ffn.linear1.bias + self.ffn.linear1.weight @ carried,  # [ff]
                "ffn_out_bias": ffn.out_linear.bias + carried}  # [C]


class Denoiser(Fusable):
    """Predicts the whole time-domain trajectory `[N, T, D]` from the noisy DCT state."""

    def __init__(self, cfg: DenoiserConfig, dim: int, t_his: int, t_total: int):
        """`dim` = D = 3J features per frame, `t_his` observed frames, `t_total` = T frames of a window."""
        super().__init__()
        self.cfg, self.dim, self.t_his, self.t_total = cfg, dim, t_his, t_total
        self.refine_n_pre = cfg.refine_n_pre or t_total  # the refiner spans the whole window unless told otherwise
        c, d, n = cfg.latent_dim, dim, cfg.n_pre
        self.sequence_embedding = nn.Parameter(torch.randn(n, c))
        self.joint_embed = nn.Linear(d, c)
        self.cond_embed = nn.Linear(d * n, c)
        self.time_embed = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, c))
        self.temporal_decoder_blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.out = nn.Linear(c, d)
        self.gcn = GCN(self.refine_n_pre, cfg.gcn_hidden, self.refine_n_pre, nodes=d, layers=cfg.gcn_layers,
                       dropout=cfg.gcn_dropout, residual=True)
        dct, idct = dct_matrix(t_total)
        self.register_buffer("dct", dct, persistent=False)  # [T, T]
        self.register_buffer("idct", idct, persistent=False)  # [T, T]
        self.fused = None  # spard.fast.FusedDenoiser while fused

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """`MLP(sinusoid(t))`: `[N]` -> `[N, C]`."""
        return self.time_embed(timestep_embedding(t, self.cfg.latent_dim))

    def embedding(self, t: torch.Tensor, y_cond: torch.Tensor | None, keep_cond: torch.Tensor | None) -> torch.Tensor:
        """`MLP(sinusoid(t)) + Linear(flatten(y))`; rows with `keep_cond` False get no condition term."""
        time = self.fused.time_table[t] if self.fused is not None else self.time_embedding(t)
        return self.add_condition(time, y_cond, keep_cond)

    def add_condition(self, emb: torch.Tensor, y_cond: torch.Tensor | None, keep_cond: torch.Tensor | None) -> torch.Tensor:
        """The time embedding `[N, C]` plus the condition term (none for rows with `keep_cond` False)."""
        if y_cond is None:
            return emb
        cond = self.cond_embed(y_cond.flatten(1))  # [N, C]
        if keep_cond is not None:
            cond = cond * keep_cond[:, None].to(cond.dtype)
        return emb + cond

    def transformer(self, x_t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """`[N, n_pre, D]` -> `[N, n_pre, D]` (DCT coefficients of the trajectory)."""
        h = self.joint_embed(x_t) + self.sequence_embedding[: x_t.shape[1]]  # [N, n_pre, C]
        blocks = self.temporal_decoder_blocks
        if self.fused is None:
            block = lambda i, h: blocks[i](h, emb)  # noqa: E731
        else:
            h, block = self.fused.blocks(self, h, emb)
        half = len(blocks) // 2
        skips = []
        for i in range(len(blocks)):  # U-Net skips from the first half of the blocks to the second
            if i < half:
                skips.append(h)
                h = block(i, h)
            else:
                h = block(i, h) + skips.pop()
        return self.out(h)

    def refine(self, coeffs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Coefficients `[N, n_pre, D]` -> time `[N, T, D]`, history written back, GCN-refined.

        The DCT arithmetic runs in float32 even under autocast; only the GCN may run in bf16.
        """
        if self.fused is not None:
            full = self.fused.into_refiner(history, coeffs)  # [N, r, D]
        else:
            traj = from_dct(coeffs, self.idct)  # [N, T, D]
            traj = torch.cat([history.float(), traj[:, history.shape[1]:]], dim=1)
            full = to_dct(traj, self.dct, self.refine_n_pre)  # [N, r, D]
        refined = self.gcn(full.transpose(1, 2)).transpose(1, 2)  # [N, r, D]
        return from_dct(refined, self.idct)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y_cond: torch.Tensor | None, history: torch.Tensor,
                keep_cond: torch.Tensor | None = None) -> torch.Tensor:
        """x_t `[N, n_pre, D]`, t `[N]`, y_cond `[N, n_pre, D]` or None, history `[N, t_his, D]` -> `[N, T, D]`."""
        emb = self.embedding(t, y_cond, keep_cond)
        return self.refine(self.transformer(x_t, emb), history)
