"""Two hand-written GPU kernels (Triton) for the inference path, each with a PyTorch twin.

The denoiser attends over only `n_pre` (20) tokens and its GCNs work on `[48 nodes x F]` tiles per
row. General-purpose kernels serve these shapes badly: a flash-attention kernel pads 20 tokens to
64 x 128 tiles (a fifth of the time of a large batch), and a graph convolution is two matrix
products plus an elementwise pass (three kernels per layer, two fifths of all kernels at one history).

    attention(qkv, heads)                        # [N, L, 3C] -> [N, L, C], softmax(q k^T / sqrt(d)) v
    graph_conv(x, w, att, scale, shift, ...)     # [N, P, Fin] -> [N, P, Fout]

`graph_conv` is one GCN layer in eval mode: `act((att @ (x @ w)) * scale + shift) (+ residual)`,
with the layer's bias and BatchNorm folded into `scale` and `shift` ([P, Fout]). The kernels run
for bf16/fp16 CUDA tensors when Triton is installed (`available`); everything else takes the twin.
Tests run the kernels in Triton's interpreter on the CPU (tests/test_fast.py).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the PyTorch twins serve
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available(x: torch.Tensor) -> bool:
    """Whether the Triton kernels can take `x` (half precision, on a GPU or in the interpreter)."""
    return triton is not None and x.dtype in (torch.bfloat16, torch.float16) and (x.is_cuda or INTERPRET)


def _pow2(n: int, least: int = 16) -> int:
    return max(least, 1 << (n - 1).bit_length())


# ------------------------------------------------------------------------------------------------ attention

def attention_reference(qkv: torch.Tensor, heads: int, stylize=None) -> torch.Tensor:
    """`[N, L, 3C]` (q | k | v, each head-major) -> `[N, L, C]`; `stylize` as in `attention`."""
    n, length, c3 = qkv.shape
    q, k, v = qkv.view(n, length, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)  # [N, H, L, d] each
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, c3 // 3)
    if stylize is None:
        return y
    mod, weight, bias, eps = stylize
    scale, shift = mod[:, None].float().chunk(2, dim=-1)  # [N, 1, C] each
    return F.silu(F.layer_norm(y.float(), (y.shape[-1],), weight, bias, eps) * (1 + scale) + shift).to(y.dtype)


def attention_warps(rows: int) -> int:
    """Warps per program of `attention`: 2 for many rows, else 4 (measured best on an H100, bench/kernel_tiles.py)."""
    return 2 if rows >= 4096 else 4


def attention(qkv: torch.Tensor, heads: int, stylize=None, warps: int | None = None) -> torch.Tensor:
    """Self-attention of few tokens: one program per row holds q, k, v and the scores of every head.

    `stylize` = (mod `[N, 2C]` = scale | shift, LayerNorm weight `[C]`, bias `[C]`, eps) also applies
    a stylization's input step to the result, `silu(layernorm(y) * (1 + scale) + shift)`, before
    writing it: the LayerNorm needs every head of a token, which this program holds.
    `warps` overrides `attention_warps` (bench/kernel_tiles.py sweeps it)."""
    n, length, c3 = qkv.shape
    c = c3 // 3
    d = c // heads
    if not available(qkv) or d != _pow2(d) or heads != _pow2(heads, 1) or length > 128:
        return attention_reference(qkv, heads, stylize)
    qkv = qkv.contiguous()
    out = torch.empty(n, length, c, device=qkv.device, dtype=qkv.dtype)
    mod, weight, bias, eps = stylize if stylize is not None else (qkv, qkv, qkv, 0.0)  # placeholders, not read
    warps = warps or attention_warps(n)
    _attention_kernel[(n,)](qkv, out, mod, weight, bias, length, c, mod.stride(0), 1.0 / math.sqrt(d), eps,
                            H=heads, D=d, LP=_pow2(length), STYLIZE=stylize is not None, num_warps=warps)
    return out


if triton is not None:
    @triton.jit
    def _attention_kernel(qkv, out, mod, weight, bias, L, C, smod, scale, eps,
                          H: tl.constexpr, D: tl.constexpr, LP: tl.constexpr, STYLIZE: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # 64-bit offsets: large batches pass 2^31 elements
        head = tl.arange(0, H)[:, None, None]
        tok = tl.arange(0, LP)[None, :, None]
        dim = tl.arange(0, D)[None, None, :]
        real = tok < L
        src = qkv + row * L * 3 * C + tok * 3 * C + head * D + dim  # [H, LP, D]
        q = tl.load(src, mask=real, other=0.0)
        k = tl.load(src + C, mask=real, other=0.0)
        v = tl.load(src + 2 * C, mask=real, other=0.0)
        s = tl.dot(q, tl.permute(k, (0, 2, 1))) * scale  # [H, LP, LP] float32
        s = tl.where(tl.arange(0, LP)[None, None, :] < L, s, float("-inf"))
        p = tl.exp(s - tl.max(s, axis=2)[:, :, None])
        p = p / tl.sum(p, axis=2)[:, :, None]
        y = tl.dot(p.to(v.dtype), v)  # [H, LP, D] float32
        if STYLIZE:  # LayerNorm over the C = H x D features of each token, then modulation and SiLU
            mean = tl.sum(tl.sum(y, axis=2), axis=0) / C  # [LP]
            centred = y - mean[None, :, None]
            var = tl.sum(tl.sum(centred * centred, axis=2), axis=0) / C
            feat = head * D + dim  # [H, 1, D]
            y = centred * tl.rsqrt(var + eps)[None, :, None] * tl.load(weight + feat) + tl.load(bias + feat)
            y = y * (1.0 + tl.load(mod + row * smod + feat).to(tl.float32)) + tl.load(mod + row * smod + C + feat).to(tl.float32)
            y = y / (1.0 + tl.exp(-y))
        tl.store(out + row * L * C + tok * C + head * D + dim, y.to(out.dtype.element_ty), mask=real)


# ------------------------------------------------------------------------------------------------ graph convolution

def graph_conv_reference(x, w, att, scale, shift, residual=None, tanh=True, out_dtype=None):
    """`act((att @ (x @ w)) * scale + shift) (+ residual)`; x `[N, P, Fin]`, w `[Fin, Fout]`, att `[P, P]`."""
    y = (att @ (x @ w)).float() * scale + shift  # [N, P, Fout]
    y = torch.tanh(y) if tanh else y
    y = y + residual.float() if residual is not None else y
    return y.to(out_dtype or x.dtype)


def graph_conv_tiles(rows: int, fout: int) -> tuple[int, int, int, int]:
    """(feature tile, warps, stages, rows per program) of `graph_conv`, as measured best on an H100
    (bench/kernel_tiles.py).

    Tiles 64 features wide, so each row's input is read by few programs; 128 wide when there are
    rows enough to fill the GPU anyway; narrower, down to 16, while fewer than 64 programs would
    share the layer (a single history's noise predictor: 16 programs, or 63 for its last layer).
    """
    bf = 128 if rows >= 8192 else 64
    while bf > 16 and rows * -(-fout // bf) < 64:  # programs: rows x feature tiles
        bf //= 2
    return min(bf, _pow2(fout)), 4, 3, 1


def graph_conv(x, w, att, scale, shift, residual=None, tanh=True, out_dtype=None, tiles=None):
    """One eval-mode GCN layer per row in one kernel; `x`, `w`, `att` in one half dtype, `scale`/`shift` float32.

    A program computes one feature tile of `R` consecutive rows (`R` > 1: each tile of `w` read
    once for several rows). `tiles` = (feature tile, warps, stages, R) overrides `graph_conv_tiles`
    (bench/kernel_tiles.py sweeps it)."""
    n, p, fin = x.shape
    fout = w.shape[1]
    if not available(x) or p > 128:
        return graph_conv_reference(x, w, att, scale, shift, residual, tanh, out_dtype)
    out = torch.empty(n, p, fout, device=x.device, dtype=out_dtype or x.dtype)
    res = residual if residual is not None else x  # a placeholder, not read, when there is no residual
    bf, warps, stages, r = tiles or graph_conv_tiles(n, fout)
    _graph_conv_kernel[(triton.cdiv(n, r), triton.cdiv(fout, bf))](
        x, w.contiguous(), att.contiguous(), scale.contiguous(), shift.contiguous(), res, out,
        n, p, fin, fout, *x.stride(), *res.stride(),
        PP=_pow2(p), BK=64, BF=bf, R=r, TANH=tanh, RESIDUAL=residual is not None, num_warps=warps, num_stages=stages)
    return out


if triton is not None:
    @triton.jit
    def _graph_conv_kernel(x, w, att, scale, shift, res, out, N, P, FIN, FOUT,
                           sxn, sxp, sxf, srn, srp, srf,
                           PP: tl.constexpr, BK: tl.constexpr, BF: tl.constexpr, R: tl.constexpr,
                           TANH: tl.constexpr, RESIDUAL: tl.constexpr):
        # R rows stacked as one [R * PP, ...] tile: position i is node i % PP of row first + i // PP
        first, tile = tl.program_id(0).to(tl.int64) * R, tl.program_id(1)  # 64-bit offsets, as in attention
        pos = tl.arange(0, R * PP)
        row, node = first + pos // PP, pos % PP
        real = (node < P) & (row < N)
        feat = tile * BF + tl.arange(0, BF)
        acc = tl.zeros((R * PP, BF), dtype=tl.float32)
        for k0 in range(0, FIN, BK):  # x[rows] @ w[:, tile]
            kk = k0 + tl.arange(0, BK)
            xs = tl.load(x + row[:, None] * sxn + node[:, None] * sxp + kk[None, :] * sxf,
                         mask=real[:, None] & (kk[None, :] < FIN), other=0.0)
            ws = tl.load(w + kk[:, None] * FOUT + feat[None, :], mask=(kk[:, None] < FIN) & (feat[None, :] < FOUT),
                         other=0.0)
            acc += tl.dot(xs.to(ws.dtype), ws)
        i = tl.arange(0, PP)
        a = tl.load(att + i[:, None] * P + i[None, :], mask=(i[:, None] < P) & (i[None, :] < P), other=0.0)
        # att @ (x @ w) per row, rounded between the products as PyTorch does
        if R == 1:
            y = tl.dot(a, acc.to(a.dtype))  # [PP, BF] float32
        else:
            per_row = tl.reshape(acc.to(a.dtype), (R, PP, BF))
            y = tl.reshape(tl.dot(tl.broadcast_to(a[None, :, :], (R, PP, PP)), per_row), (R * PP, BF))
        keep = real[:, None] & (feat[None, :] < FOUT)
        at = node[:, None] * FOUT + feat[None, :]
        y = y * tl.load(scale + at, mask=keep, other=0.0) + tl.load(shift + at, mask=keep, other=0.0)
        if TANH:
            y = 2.0 / (1.0 + tl.exp(-2.0 * y)) - 1.0
        if RESIDUAL:
            y += tl.load(res + row[:, None] * srn + node[:, None] * srp + feat[None, :] * srf, mask=keep,
                         other=0.0).to(tl.float32)
        tl.store(out + row[:, None] * P * FOUT + at, y.to(out.dtype.element_ty), mask=keep)
