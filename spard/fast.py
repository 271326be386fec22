"""Fast inference on a GPU: the model's arithmetic regrouped into fewer, larger kernels (`fused`,
with the Triton kernels of `spard.kernels`), compiled by `torch.compile` with the weights frozen as
constants, and replayed as one CUDA graph.

    fast = GraphedSampler(model, "np", batch_size=1, num_samples=50)   # fp16 by default
    futures = fast(history)            # [B, t_his, D] -> [B, S, T, D], no host sync inside

One graph is captured per input size; inputs are copied into static buffers and the output
buffer is reused by the next call (clone it to keep it). The weights are read when the sampler is
built: build it again after they change.

Precision: 'fp16' (default) and 'bf16' run the matrix products and keep the residual streams in
that dtype, with LayerNorm, softmax and the DCT arithmetic in float32 (its products in TF32), and
the feed-forward GELU in cuBLAS's tanh form; 'fp32' and 'tf32' keep everything in float32.
Measured on trained CMU checkpoints (docs/performance.md), fp16 changes ADE/FDE by at most
0.1 %; bf16, with three fewer mantissa bits, by up to 3 % for onestep.
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .model import SPARD
from .nets import Denoiser, NoisePredictor
from .nets.denoiser import Stylization, timestep_embedding
from .nets.gcn import GCN
from .samplers import get_sampler


PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose fp32, tf32, bf16 or fp16")


def autocast(precision: str, device_type: str):
    """Autocast context for a precision name: 'fp32' or 'tf32' (none), 'bf16' or 'fp16'."""
    check_precision(precision)
    if precision in ("bf16", "fp16"):
        return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def float32_products(precision: str):
    """CUDA float32 matrix products in TF32 while a precision other than 'fp32' is in use (under
    'bf16'/'fp16' these are the DCT products, which autocast leaves in float32); 'fp32' leaves
    `torch.backends.cuda.matmul.allow_tf32` as it is. Set around a call, not inside a compiled function."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = before if precision == "fp32" else True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


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
    """A `GCN` in eval mode as `kernels.graph_conv` layers (one kernel each on a GPU): bias and
    BatchNorm folded into one per-(node, feature) `scale` and `shift`, dropout gone."""

    def __init__(self, gcn: GCN):
        super().__init__()
        self.residual, self.blocks = gcn.residual, len(gcn.gcbs)
        convs = [(gcn.gc1, gcn.bn1)] + [c for b in gcn.gcbs for c in ((b.gc1, b.bn1), (b.gc2, b.bn2))] + [(gcn.gc7, None)]
        with torch.no_grad():
            for i, (gc, bn) in enumerate(convs):
                nodes, out = gc.att.shape[0], gc.weight.shape[1]
                if bn is None:  # gc7: bias only
                    scale, shift = torch.ones(nodes, out, device=gc.bias.device), gc.bias.expand(nodes, out)
                else:  # BN(att @ x @ W + bias) = (att @ x @ W) * scale + shift
                    scale = (bn.weight * torch.rsqrt(bn.running_var + bn.eps)).view(nodes, out)
                    shift = bn.bias.view(nodes, out) + (gc.bias - bn.running_mean.view(nodes, out)) * scale
                for name, t in (("weight", gc.weight), ("att", gc.att), ("scale", scale), ("shift", shift)):
                    self.register_buffer(f"{name}{i}", t.detach().clone().contiguous())

    def conv(self, i: int, x: torch.Tensor, dtype: torch.dtype, residual=None, last=False) -> torch.Tensor:
        w, att, scale, shift = (getattr(self, f"{n}{i}") for n in ("weight", "att", "scale", "shift"))
        return kernels.graph_conv(x, w.to(dtype), att.to(dtype), scale, shift, residual, tanh=not last,
                                  out_dtype=torch.float32 if last else dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, nodes, in] -> [N, nodes, out] float32
        dtype = compute_dtype(x.device.type)
        y = self.conv(0, x.to(dtype), dtype)  # gc1
        for b in range(self.blocks):  # residual blocks of two convolutions
            y = self.conv(2 + 2 * b, self.conv(1 + 2 * b, y, dtype), dtype, residual=y)
        return self.conv(1 + 2 * self.blocks, y, dtype, residual=x if self.residual else None, last=True)  # gc7


class FusedNoisePredictor(nn.Module):
    """`NoisePredictor` with its GCN fused (same function)."""

    def __init__(self, predictor: NoisePredictor):
        super().__init__()
        self.cfg = predictor.cfg
        self.gcn = FusedGCN(predictor.model)

    def forward(self, y_cond: torch.Tensor) -> torch.Tensor:  # [B, n_pre, D] -> [B, K, n_pre, D]
        b, n, d = y_cond.shape
        maps = self.cfg.alpha * torch.tanh(self.gcn(y_cond.transpose(1, 2)))  # [B, D, K * n_pre]
        return maps.view(b, d, self.cfg.k, n).permute(0, 2, 3, 1)


class FusedDenoiser(nn.Module):
    """`Denoiser`'s function with its arithmetic regrouped for inference; same weights, same outputs
    up to rounding (checked against the reference in tests/test_fast.py):

    - q, k and v of each block come from one matrix product (weights concatenated), and attention
      over the few tokens is one kernel (`kernels.attention`);
    - in half precision on a GPU, the feed-forward GELU is applied by the matrix product before it
      (`linear_gelu`);
    - the attention's residual is added by its output product (`add_linear`); that product's bias
      is carried to the two places that read the sum next: the feed-forward's first bias (as
      `W1 @ b`) and the feed-forward's output bias;
    - the time embedding (an MLP of the step `t`) is a table over the schedule's steps, computed
      once in float32;
    - the 2 x num_layers scale/shift projections of the embedding are one product;
    - the refiner's way back to time, history write-back and forward DCT (three T x T products and
      a concatenation) is one small product, `into_refiner @ [history; coeffs]` with
      `into_refiner = [dct[:r, :t_his] | lift]` and
      `lift = dct[:r, t_his:] @ idct[t_his:, :n_pre]` precomputed;
    - the GCN refiner is a `FusedGCN`;
    - under autocast, the residual streams are kept in the autocast dtype (float32 in the reference).

    The condition and joint embeddings, LayerNorms and output projections are the reference modules, shared.
    """

    def __init__(self, den: Denoiser, steps: int):
        """`steps`: the diffusion steps `t` the samplers may ask for (0 to steps - 1)."""
        super().__init__()
        self.den, self.cfg = den, den.cfg
        self.gcn = FusedGCN(den.gcn)
        blocks = den.temporal_decoder_blocks
        with torch.no_grad():
            qkv = [torch.cat([b.sa_block.query.weight, b.sa_block.key.weight, b.sa_block.value.weight]) for b in blocks]
            self.register_buffer("qkv_weight", torch.stack(qkv))  # [L, 3C, C]
            mods = [layer.emb_layers[1] for layer in self.stylizations()]
            self.register_buffer("mod_weight", torch.cat([m.weight for m in mods]))  # [2L * 2C, C]
            self.register_buffer("mod_bias", torch.cat([m.bias for m in mods]))  # [2L * 2C]
            t_his, n, r = den.cfg.t_his, den.cfg.n_pre, den.cfg.refine_n_pre
            dct64, idct64 = den.dct.double(), den.idct.double()
            lift = dct64[:r, t_his:] @ idct64[t_his:, :n]  # [r, n_pre]: coefficients -> refiner's DCT of the future
            # [history; coeffs] -> the refiner's DCT of the whole trajectory, history written back
            self.register_buffer("into_refiner", torch.cat([dct64[:r, :t_his], lift], dim=1).float())  # [r, t_his + n_pre]
            every_t = torch.arange(steps, device=den.dct.device)
            self.register_buffer("time_table", den.time_embed(timestep_embedding(every_t, self.cfg.latent_dim)))  # [steps, C]
            carried = [b.sa_block.proj_out.out_linear.bias for b in blocks]  # the attention output's bias, per block
            self.register_buffer("ffn_in_bias", torch.stack([b.ffn.linear1.bias + b.ffn.linear1.weight @ c
                                                             for b, c in zip(blocks, carried)]))  # [L, ff]
            self.register_buffer("ffn_out_bias", torch.stack([b.ffn.proj_out.out_linear.bias + c
                                                              for b, c in zip(blocks, carried)]))  # [L, C]

    def stylizations(self) -> list[Stylization]:
        return [s for b in self.den.temporal_decoder_blocks for s in (b.sa_block.proj_out, b.ffn.proj_out)]

    @property
    def dct(self) -> torch.Tensor:  # read by SPARD.condition and SPARD.encode
        return self.den.dct

    def embedding(self, t: torch.Tensor, y_cond: torch.Tensor | None, keep_cond: torch.Tensor | None) -> torch.Tensor:
        """`Denoiser.embedding`, its time term read from `time_table`."""
        return self.den.add_condition(self.time_table[t], y_cond, keep_cond)  # [N, C]

    def transformer(self, x_t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # [N, n, D], [N, C]
        den, cfg = self.den, self.cfg
        n, length = x_t.shape[:2]
        mods = F.linear(F.silu(emb), self.mod_weight, self.mod_bias).view(n, -1, 2 * cfg.latent_dim)  # [N, 2L, 2C]
        styles = self.stylizations()
        h = den.joint_embed(x_t) + den.sequence_embedding[:length]  # [N, n, C]
        h = h.to(compute_dtype(x_t.device.type))
        half = len(den.temporal_decoder_blocks) // 2
        skips = []
        for i, block in enumerate(den.temporal_decoder_blocks):
            if i < half:
                skips.append(h)
            qkv = F.linear(block.sa_block.norm(h), self.qkv_weight[i])  # [N, n, 3C]
            y = styles[2 * i].modulate(kernels.attention(qkv.to(h.dtype), cfg.num_heads), mods[:, 2 * i])
            x = add_linear(h, F.silu(y), styles[2 * i].out_linear.weight)  # h + attention, its bias carried on
            ffn = block.ffn
            y = styles[2 * i + 1].modulate(ffn.linear2(linear_gelu(x, ffn.linear1.weight, self.ffn_in_bias[i])),
                                           mods[:, 2 * i + 1])
            x = x + F.linear(F.silu(y), styles[2 * i + 1].out_linear.weight, self.ffn_out_bias[i])
            h = x if i < half else x + skips.pop()
        return den.out(h)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y_cond: torch.Tensor | None, history: torch.Tensor,
                keep_cond: torch.Tensor | None = None) -> torch.Tensor:
        """Same signature and result as `Denoiser.forward`: `[N, n_pre, D]` ... -> `[N, T, D]`."""
        coeffs = self.transformer(x_t, self.embedding(t, y_cond, keep_cond))  # [N, n, D]
        with torch.autocast(x_t.device.type, enabled=False):  # the DCT arithmetic in float32, as in the reference
            full = self.into_refiner @ torch.cat([history.float(), coeffs.float()], dim=1)  # [N, r, D]
        refined = self.gcn(full.transpose(1, 2)).transpose(1, 2)  # [N, r, D] float32
        with torch.autocast(x_t.device.type, enabled=False):
            return self.den.idct[:, : refined.shape[1]] @ refined  # [N, T, D]


def fused(model: SPARD) -> SPARD:
    """A shallow copy of `model` (modules shared) with `FusedDenoiser` and `FusedNoisePredictor`;
    eval mode, inference only, weights read now."""
    out = copy.copy(model.eval())
    out._modules = {**model._modules, "denoiser": FusedDenoiser(model.denoiser, len(model.sqrt_etas)),
                    "noise_predictor": FusedNoisePredictor(model.noise_predictor)}
    return out


class GraphedSampler:
    """`sampler(model, history, S)` for fixed `[batch_size, t_his, D]` inputs, compiled and graph-captured."""

    def __init__(self, model: SPARD, sampler: str, batch_size: int, num_samples: int, *, precision: str = "fp16",
                 compile: bool = True, graph: bool = True, fuse: bool = True, freeze: bool = True,
                 warmup: int = 3, compile_mode: str = "default"):
        check_precision(precision)  # now, before any compiling
        model = model.eval()
        self.model = fused(model) if fuse else model
        self.name, self.precision = sampler, precision
        self.num_samples = num_samples
        device = model.sqrt_etas.device
        d, n = model.cfg.denoiser.input_feats, model.n_pre
        self.history = torch.randn(batch_size, model.t_his, d, device=device)
        self.noise = torch.randn(num_samples, batch_size, n, d, device=device)
        sample = get_sampler(sampler)

        def run(history, noise):
            with autocast(precision, device.type):
                extra = {} if sampler == "np" else {"noise": noise}
                return sample(self.model, history, num_samples, **extra).float()

        self.fn = torch.compile(run, mode=compile_mode, dynamic=False) if compile else run
        self.graph = None
        # freezing: the compiler treats the weights as constants (casts to bf16 and the like done once)
        frozen = torch._inductor.config.patch(freezing=True) if compile and freeze else contextlib.nullcontext()
        with torch.no_grad(), frozen, float32_products(precision):
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
        """`[B, t_his, D]` (and noise `[S, B, n_pre, D]` for ddim/onestep) -> `[B, S, T, D]`."""
        self.history.copy_(history)
        if noise is not None:
            self.noise.copy_(noise)
        elif self.name != "np":
            self.noise.normal_()
        if self.graph is not None:
            self.graph.replay()
            return self.out
        with float32_products(self.precision):
            return self.fn(self.history, self.noise)
