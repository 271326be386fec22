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
On Hopper and newer GPUs they launch with programmatic dependent launch (`dependent_launch`).
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


def dependent_launch(x: torch.Tensor) -> bool:
    """Whether the kernels launch with programmatic dependent launch on `x`'s GPU (`PDL` on, a
    Hopper or newer GPU, a Triton that has it): a kernel then starts while the one before it
    finishes (a GCN layer also reads its adjacency, scale and shift then) and waits for that
    kernel's results only where it reads them. Each kernel is an operator opaque to torch.compile (`torch.ops.spard`),
    as the compiler cannot launch a kernel of its user this way."""
    return (PDL and x.is_cuda and not INTERPRET and torch.cuda.get_device_capability(x.device)[0] >= 9
            and hasattr(tl.extra.cuda, "gdc_wait"))


PDL = True  # bench/inference.py switches it off (variant -nopdl) to measure what it brings


# ------------------------------------------------------------------------------------------------ attention

def attention_reference(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """`[N, L, 3C]` (q | k | v, each head-major) -> `[N, L, C]`."""
    n, length, c3 = qkv.shape
    q, k, v = qkv.view(n, length, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)  # [N, H, L, d] each
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, c3 // 3)


def attention_warps(rows: int) -> int:
    """Warps per program of `attention`: 2 for many rows, else 4 (measured best on an H100, bench/kernel_tiles.py)."""
    return 2 if rows >= 4096 else 4


def attention(qkv: torch.Tensor, heads: int, warps: int | None = None) -> torch.Tensor:
    """Self-attention of few tokens: one program per (row, head) holds all of q, k, v and the scores.

    `warps` overrides `attention_warps` (bench/kernel_tiles.py sweeps it)."""
    n, length, c3 = qkv.shape
    c = c3 // 3
    d = c // heads
    if not available(qkv) or d != _pow2(d) or length > 128:
        return attention_reference(qkv, heads)
    return torch.ops.spard.attention(qkv.contiguous(), heads, warps or attention_warps(n), dependent_launch(qkv))


if triton is not None:
    @torch.library.custom_op("spard::attention", mutates_args=())
    def _attention_op(qkv: torch.Tensor, heads: int, warps: int, pdl: bool) -> torch.Tensor:
        n, length, c3 = qkv.shape
        c = c3 // 3
        out = torch.empty(n, length, c, device=qkv.device, dtype=qkv.dtype)
        _attention_kernel[(n, heads)](qkv, out, length, c, 1.0 / math.sqrt(c // heads), D=c // heads,
                                      LP=_pow2(length), GDC=pdl, num_warps=warps,
                                      **({"launch_pdl": True} if pdl else {}))
        return out

    @_attention_op.register_fake
    def _(qkv, heads, warps, pdl):
        return qkv.new_empty(*qkv.shape[:2], qkv.shape[2] // 3)

    @triton.jit
    def _attention_kernel(qkv, out, L, C, scale, D: tl.constexpr, LP: tl.constexpr, GDC: tl.constexpr):
        row, head = tl.program_id(0).to(tl.int64), tl.program_id(1)  # 64-bit offsets: large batches pass 2^31 elements
        if GDC:  # dependent launch: started while the product before finishes; wait for its q, k, v
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        tok = tl.arange(0, LP)
        dim = tl.arange(0, D)
        real = tok[:, None] < L
        src = qkv + row * L * 3 * C + head * D + tok[:, None] * 3 * C + dim[None, :]
        q = tl.load(src, mask=real, other=0.0)  # [LP, D]
        k = tl.load(src + C, mask=real, other=0.0)
        v = tl.load(src + 2 * C, mask=real, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale  # [LP, LP] float32
        s = tl.where(tok[None, :] < L, s, float("-inf"))
        p = tl.exp(s - tl.max(s, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        o = tl.dot(p.to(v.dtype), v)  # [LP, D]
        dst = out + row * L * C + head * D + tok[:, None] * C + dim[None, :]
        tl.store(dst, o.to(out.dtype.element_ty), mask=real)


# ------------------------------------------------------------------------------------------------ graph convolution

def graph_conv_reference(x, w, att, scale, shift, residual=None, tanh=True, out_dtype=None):
    """`act((att @ (x @ w)) * scale + shift) (+ residual)`; x `[N, P, Fin]`, w `[Fin, Fout]`, att `[P, P]`."""
    y = (att @ (x @ w)).float() * scale + shift  # [N, P, Fout]
    y = torch.tanh(y) if tanh else y
    y = y + residual.float() if residual is not None else y
    return y.to(out_dtype or x.dtype)


def graph_conv_tiles(rows: int, fout: int) -> tuple[int, int, int, bool, int]:
    """(feature tile, warps, stages, product first, rows per program) of `graph_conv`, as measured
    best on an H100 and an H200 (bench/kernel_tiles.py).

    Tiles 64 features wide, so each row's input is read by few programs; narrower, down to 16, while
    fewer than 64 programs would share the layer (a single history's noise predictor: 16 programs,
    or 63 for its last layer). From 1,024 rows on, `x @ w` first as one cuBLAS product, and each
    program takes 8 rows with 8 warps, reading the layer's `att`, `scale` and `shift` once for them
    (51,200 rows on an H200: 2.31 ms against 2.49 ms with one row a program; on an H100, 2.92 ms
    with the product in the kernel. 1,024 rows: 58.0 against 59.6 us with one row a program).
    """
    if rows >= 1024:
        return min(64, _pow2(fout)), 8, 3, True, 8
    bf = 64
    while bf > 16 and rows * -(-fout // bf) < 64:  # programs: rows x feature tiles
        bf //= 2
    return min(bf, _pow2(fout)), 4, 3, False, 1


def graph_conv(x, w, att, scale, shift, residual=None, tanh=True, out_dtype=None, tiles=None):
    """One eval-mode GCN layer per row in one kernel; `x`, `w`, `att` in one half dtype, `scale`/`shift` float32.

    With `product first`, `x @ w` is one cuBLAS product over all rows and the kernel does the rest.
    `tiles` = (feature tile, warps, stages, product first, rows per program) overrides
    `graph_conv_tiles` (bench/kernel_tiles.py sweeps it)."""
    n, p, fin = x.shape
    if not available(x) or p > 128:
        return graph_conv_reference(x, w, att, scale, shift, residual, tanh, out_dtype)
    tiles = [int(t) for t in (tiles or graph_conv_tiles(n, w.shape[1]))]
    return torch.ops.spard.graph_conv(x, w, att, scale, shift, residual, tanh, out_dtype or x.dtype, tiles,
                                      dependent_launch(x))


if triton is not None:
    @torch.library.custom_op("spard::graph_conv", mutates_args=())
    def _graph_conv_op(x: torch.Tensor, w: torch.Tensor, att: torch.Tensor, scale: torch.Tensor,
                       shift: torch.Tensor, residual: torch.Tensor | None, tanh: bool, out_dtype: torch.dtype,
                       tiles: list[int], pdl: bool) -> torch.Tensor:
        n, p, fin = x.shape
        fout = w.shape[1]
        bf, warps, stages, product_first, rows = tiles
        if rows > 1 and not product_first:
            raise ValueError(f"graph_conv tiles {tiles}: several rows per program need the product first (tiles[3] = 1)")
        out = torch.empty(n, p, fout, device=x.device, dtype=out_dtype)
        res = residual if residual is not None else x  # a placeholder, not read, when there is no residual
        if product_first:
            x = (x.reshape(n * p, fin) @ w).view(n, p, fout)  # [N, P, Fout]: the kernel reads it in place of x and w
        _graph_conv_kernel[(triton.cdiv(n, rows), triton.cdiv(fout, bf))](
            x, w.contiguous(), att.contiguous(), scale.contiguous(), shift.contiguous(), res, out,
            n, p, fin, fout, *x.stride(), *res.stride(), PP=_pow2(p), BK=64, BF=bf, ROWS=rows,
            PRODUCT_FIRST=bool(product_first), TANH=tanh, RESIDUAL=residual is not None, GDC=pdl,
            num_warps=warps, num_stages=stages, **({"launch_pdl": True} if pdl else {}))
        return out

    @_graph_conv_op.register_fake
    def _(x, w, att, scale, shift, residual, tanh, out_dtype, tiles, pdl):
        return x.new_empty(*x.shape[:2], w.shape[1], dtype=out_dtype)

    @triton.jit
    def _graph_conv_kernel(x, w, att, scale, shift, res, out, N, P, FIN, FOUT,
                           sxn, sxp, sxf, srn, srp, srf,
                           PP: tl.constexpr, BK: tl.constexpr, BF: tl.constexpr, ROWS: tl.constexpr,
                           PRODUCT_FIRST: tl.constexpr, TANH: tl.constexpr, RESIDUAL: tl.constexpr,
                           GDC: tl.constexpr):
        first, tile = tl.program_id(0).to(tl.int64) * ROWS, tl.program_id(1)  # 64-bit offsets, as in attention
        node = tl.arange(0, PP)
        feat = tile * BF + tl.arange(0, BF)
        keep = (node[:, None] < P) & (feat[None, :] < FOUT)
        # the layer's own numbers first: under dependent launch they are read while the kernel before finishes
        a = tl.load(att + node[:, None] * P + node[None, :], mask=(node[:, None] < P) & (node[None, :] < P), other=0.0)
        at = node[:, None] * FOUT + feat[None, :]
        sc = tl.load(scale + at, mask=keep, other=0.0)
        sh = tl.load(shift + at, mask=keep, other=0.0)
        if GDC:
            tl.extra.cuda.gdc_wait()  # the kernel before has finished and its writes are visible
            tl.extra.cuda.gdc_launch_dependents()
        if PRODUCT_FIRST:  # x holds x @ w already; ROWS rows share the numbers read above
            for r in range(ROWS):
                row = first + r
                live = keep & (node[:, None] < tl.where(row < N, P, 0))  # nothing past the last row
                xw = tl.load(x + row * sxn + node[:, None] * sxp + feat[None, :] * sxf, mask=live, other=0.0)
                _graph_conv_finish(tl.dot(a, xw), sc, sh, res, out, row, node, feat, at, live, P, FOUT,
                                   srn, srp, srf, TANH, RESIDUAL)
        else:  # one row: x[row] @ w[:, tile], then the rest
            acc = tl.zeros((PP, BF), dtype=tl.float32)
            for k0 in range(0, FIN, BK):
                kk = k0 + tl.arange(0, BK)
                xs = tl.load(x + first * sxn + node[:, None] * sxp + kk[None, :] * sxf,
                             mask=(node[:, None] < P) & (kk[None, :] < FIN), other=0.0)
                ws = tl.load(w + kk[:, None] * FOUT + feat[None, :],
                             mask=(kk[:, None] < FIN) & (feat[None, :] < FOUT), other=0.0)
                acc += tl.dot(xs.to(ws.dtype), ws)
            xw = acc.to(a.dtype)  # rounded between the products, as PyTorch does
            _graph_conv_finish(tl.dot(a, xw), sc, sh, res, out, first, node, feat, at, keep, P, FOUT,
                               srn, srp, srf, TANH, RESIDUAL)

    @triton.jit
    def _graph_conv_finish(y, sc, sh, res, out, row, node, feat, at, live, P, FOUT, srn, srp, srf,
                           TANH: tl.constexpr, RESIDUAL: tl.constexpr):
        """`act(y * scale + shift) (+ residual)` written to `out[row]`; y = att @ (x @ w), [PP, BF] float32."""
        y = y * sc + sh
        if TANH:
            y = 2.0 / (1.0 + tl.exp(-2.0 * y)) - 1.0
        if RESIDUAL:
            y += tl.load(res + row * srn + node[:, None] * srp + feat[None, :] * srf, mask=live, other=0.0).to(tl.float32)
        tl.store(out + row * P * FOUT + at, y.to(out.dtype.element_ty), mask=live)
