"""Fast inference on a GPU: the model's arithmetic regrouped into fewer, larger kernels (with the
Triton kernels of `spard.kernels`), compiled by `torch.compile` with the weights frozen as
constants, and replayed as one CUDA graph.

    fast = GraphedSampler(model, SamplerOptions("np", 50), batch_size=1)   # fp16 by default
    futures = fast(history)            # [B, t_his, D] -> [B, S, T, D], no host sync inside

`fuse(model)` gives the model's fusable modules (`spard.nets.fusable`) their fused forms: the
modules' own `forward` then computes the same function with the regrouped arithmetic below, from
the same weights (folded copies of some, made now and dropped as soon as the model trains or loads
weights). `unfuse(model)` takes them away. One graph is captured per input size; inputs are copied
into static buffers and the output buffer is reused by the next call (clone it to keep it).

Precision (`spard.precision`): 'fp16' (default) and 'bf16' run the matrix products and keep the
residual streams in that dtype, with LayerNorm, softmax and the DCT arithmetic in float32 (its
products in TF32), and the feed-forward GELU in cuBLAS's tanh form; 'fp32' and 'tf32' keep
everything in float32. Measured on trained CMU checkpoints (docs/performance.md), fp16 changes
ADE/FDE by at most 0.1 %; bf16, with three fewer mantissa bits, by up to 3 % for onestep.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels, precision as precisions
from .model import SPARD
from .nets.denoiser import Denoiser
from .nets.gcn import GCN
from .samplers import SamplerOptions


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`gelu(F.linear(x, weight, bias))`. Half precision on a GPU: one cuBLAS product with the GELU
    applied as it writes, in its tanh form (at most 4.7e-4 from the exact GELU; the accuracy check in
    docs/performance.md includes it). Otherwise the exact GELU, as in the reference."""
    if not (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)):
        return F.gelu(F.linear(x, weight, bias))
    flat = torch._addmm_activation(bias.to(x.dtype), x.reshape(-1, x.shape[-1]), weight.to(x.dtype).t(), use_gelu=True)
    return flat.view(*x.shape[:-1], -1)


def add_linear(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x + a @ weight.T` as one matrix product that adds `x` as it writes (no bias)."""
    dtype = compute_dtype(x.device.type)
    flat = torch.addmm(x.reshape(-1, x.shape[-1]).to(dtype), a.reshape(-1, a.shape[-1]).to(dtype), weight.to(dtype).t())
    return flat.view(*x.shape[:-1], -1)


def compute_dtype(device_type: str) -> torch.dtype:
    """The dtype activations are kept in: autocast's when it is on, else float32."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.float32


class FusedGCN(nn.Module):
    """The fused form of a `GCN` in eval mode: `kernels.graph_conv` layers (one kernel each on a GPU),
    bias and BatchNorm folded into one per-(node, feature) `scale` and `shift` (`GraphConv.folded`),
    dropout gone."""

    def __init__(self, gcn: GCN):
        super().__init__()
        self.blocks = len(gcn.gcbs)
        with torch.no_grad():
            for i, (gc, bn) in enumerate(gcn.convolutions()):
                scale, shift = gc.folded(bn)
                for name, t in (("weight", gc.weight), ("att", gc.att), ("scale", scale), ("shift", shift)):
                    self.register_buffer(f"{name}{i}", t.detach().clone().contiguous(), persistent=False)

    def conv(self, i: int, x: torch.Tensor, dtype: torch.dtype, residual=None, last=False) -> torch.Tensor:
        w, att, scale, shift = (getattr(self, f"{n}{i}") for n in ("weight", "att", "scale", "shift"))
        return kernels.graph_conv(x, w.to(dtype), att.to(dtype), scale, shift, residual, tanh=not last,
                                  out_dtype=torch.float32 if last else dtype)

    def forward(self, x: torch.Tensor, residual: bool) -> torch.Tensor:  # [N, nodes, in] -> [N, nodes, out] float32
        dtype = compute_dtype(x.device.type)
        y = self.conv(0, x.to(dtype), dtype)  # gc1
        for b in range(self.blocks):  # residual blocks of two convolutions
            y = self.conv(2 + 2 * b, self.conv(1 + 2 * b, y, dtype), dtype, residual=y)
        return self.conv(1 + 2 * self.blocks, y, dtype, residual=x if residual else None, last=True)  # gc7


class FusedDenoiser(nn.Module):
    """The fused form of a `Denoiser`: what its `forward` regroups while fused (same weights, same
    outputs up to rounding; checked against the reference in tests/test_fast.py):

    - q, k and v of each block come from one matrix product, and attention over the few tokens is
      one kernel (`kernels.attention`);
    - in half precision on a GPU, the feed-forward GELU is applied by the matrix product before it
      (`linear_gelu`);
    - the attention's residual is added by its output product (`add_linear`); that product's bias
      is carried to the two places that read the sum next (`Block.fusion` derives each block's
      fused weights);
    - the time embedding (an MLP of the step `t`) is a table over the schedule's steps, computed
      once in float32;
    - the 2 x num_layers scale/shift projections of the embedding (`Stylization.modulation`) are one
      product;
    - the refiner's way back to time, history write-back and forward DCT (three T x T products and
      a concatenation) is one small product, `into_refiner @ [history; coeffs]` with
      `into_refiner = [dct[:r, :t_his] | dct[:r, t_his:] @ idct[t_his:, :n_pre]]`;
    - under autocast, the residual streams are kept in the autocast dtype (float32 in the reference).

    Everything else (embeddings, LayerNorms, modulation, output projections) is the denoiser's own.
    """

    def __init__(self, den: Denoiser, steps: int):
        """`steps`: the diffusion steps `t` the samplers may ask for (0 to steps - 1)."""
        super().__init__()
        per_block = [b.fusion() for b in den.temporal_decoder_blocks]  # what each block derives for it
        buffers = {name: torch.stack([f[name] for f in per_block]) for name in per_block[0]}  # [L, ...] each
        for name in ("mod_weight", "mod_bias"):  # all 2L modulations as one product: [2L * 2C, C], [2L * 2C]
            buffers[name] = buffers[name].flatten(0, 1)
        with torch.no_grad():
            t_his, n, r = den.t_his, den.cfg.n_pre, den.refine_n_pre
            dct64, idct64 = den.dct.double(), den.idct.double()
            lift = dct64[:r, t_his:] @ idct64[t_his:, :n]  # [r, n_pre]: coefficients -> refiner's DCT of the future
            buffers["into_refiner_matrix"] = torch.cat([dct64[:r, :t_his], lift], dim=1).float()  # [r, t_his + n_pre]
            buffers["time_table"] = den.time_embedding(torch.arange(steps, device=den.dct.device))  # [steps, C]
        for name, t in buffers.items():
            self.register_buffer(name, t.detach().clone().contiguous(), persistent=False)

    def blocks(self, den: Denoiser, h: torch.Tensor, emb: torch.Tensor):
        """`(h in the compute dtype, block(i, h))`: the fused blocks of `den` for the embedding `emb`."""
        n, c = h.shape[0], den.cfg.latent_dim
        mods = F.linear(F.silu(emb), self.mod_weight, self.mod_bias).view(n, -1, 2 * c)  # [N, 2L, 2C]
        layers = den.temporal_decoder_blocks

        def block(i: int, h: torch.Tensor) -> torch.Tensor:
            attn_style, ffn_style = layers[i].stylizations()
            qkv = F.linear(layers[i].sa_block.norm(h), self.qkv_weight[i])  # [N, n, 3C]
            y = attn_style.modulate(kernels.attention(qkv.to(h.dtype), den.cfg.num_heads), mods[:, 2 * i])
            x = add_linear(h, F.silu(y), attn_style.out_linear.weight)  # h + attention, its bias carried on
            ffn = layers[i].ffn
            y = ffn_style.modulate(ffn.linear2(linear_gelu(x, ffn.linear1.weight, self.ffn_in_bias[i])), mods[:, 2 * i + 1])
            return x + F.linear(F.silu(y), ffn_style.out_linear.weight, self.ffn_out_bias[i])

        return h.to(compute_dtype(h.device.type)), block

    def into_refiner(self, history: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        """The refiner's DCT of the trajectory, history written back: `[N, t_his, D]`, `[N, n, D]` -> `[N, r, D]`."""
        with torch.autocast(history.device.type, enabled=False):  # the DCT arithmetic in float32
            return self.into_refiner_matrix @ torch.cat([history.float(), coeffs.float()], dim=1)


def fuse(model: SPARD) -> SPARD:
    """`model` in eval mode with the fused forms attached (in place; returned for chaining)."""
    model.eval()
    model.denoiser.fused = FusedDenoiser(model.denoiser, len(model.sqrt_etas))
    for gcn in (model.denoiser.gcn, model.noise_predictor.model):
        gcn.fused = FusedGCN(gcn)
    return model


def unfuse(model: SPARD) -> SPARD:
    """`model` with its fused forms taken away: the reference arithmetic again."""
    for m in model.modules():
        if getattr(m, "fused", None) is not None:
            m.fused = None
    return model


class GraphedSampler:
    """`options.sample(model, history)` for fixed `[batch_size, t_his, D]` inputs, compiled and graph-captured.

    The model is fused in place (`fuse`) unless `fused=False`; it keeps its fused form until it trains
    or loads weights, and the captured graph keeps the weights of the time it was built.
    """

    def __init__(self, model: SPARD, options: SamplerOptions, batch_size: int, *, precision: str = "fp16",
                 compile: bool = True, graph: bool = True, fused: bool = True, freeze: bool = True,
                 warmup: int = 3, compile_mode: str = "default"):
        precisions.check(precision)  # now, before any compiling
        self.model = fuse(model) if fused else unfuse(model.eval())
        self.options, self.precision = options, precision
        device = model.sqrt_etas.device
        self.history = torch.randn(batch_size, model.t_his, model.dim, device=device)
        self.noise = torch.randn(options.num_samples, batch_size, model.n_pre, model.dim, device=device)

        def run(history, noise):
            with precisions.autocast(precision, device.type):
                return options.sample(self.model, history, noise=noise).float()

        self.fn = torch.compile(run, mode=compile_mode, dynamic=False) if compile else run
        self.graph = None
        # freezing: the compiler treats the weights as constants (casts to bf16 and the like done once)
        frozen = torch._inductor.config.patch(freezing=True) if compile and freeze else contextlib.nullcontext()
        with torch.no_grad(), frozen, precisions.float32_products(precision):
            if device.type == "cuda":
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(warmup):
                        self.out = self.fn(self.history, self.noise)
                torch.cuda.current_stream().wait_stream(stream)
                if graph:
                    self.graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(self.graph):
                        self.out = self.fn(self.history, self.noise)
            else:
                self.out = self.fn(self.history, self.noise)

    @torch.no_grad()
    def __call__(self, history: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, t_his, D]` (and noise `[S, B, n_pre, D]` for samplers that draw it) -> `[B, S, T, D]`."""
        self.history.copy_(history)
        if noise is not None:
            self.noise.copy_(noise)
        else:
            self.noise.normal_()
        if self.graph is not None:
            self.graph.replay()
            return self.out
        with precisions.float32_products(self.precision):
            return self.fn(self.history, self.noise)
