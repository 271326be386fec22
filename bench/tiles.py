"""The fused linear kernel against the kernels it replaces, per tile size, at the denoiser's shapes.

    python bench/tiles.py                      # 1 x 50 (1,000 token rows) and 1024 x 50 (1,024,000)

Each row times one transformer sub-block product: `kernels.linear` with its prologue and epilogue,
for several tile sizes (BM, BN, BK, warps, stages), against the same arithmetic as separate kernels
(LayerNorm, modulation and SiLU by `torch.compile`, the product by cuBLAS). Times are per call, from
a CUDA graph of 20 calls (launch gaps as inside the sampler's graph).
"""
from __future__ import annotations

import argparse

import torch

from common import table, write
from spard import kernels

TILES = [(64, 64, 64, 4, 3), (64, 128, 64, 4, 3), (128, 64, 64, 4, 3), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3)]
# (name, K, N, fused arguments): the four kinds of product of a transformer block (latent 512, ff 1024)
SHAPES = [("qkv: LN prologue", 512, 1536, {"norm": True}),
          ("stylization: LN, modulation, SiLU, residual", 512, 512, {"norm": True, "mod": True, "silu": True, "res": 1}),
          ("linear1: bias, GELU", 512, 1024, {"bias": True, "gelu": True}),
          ("linear2: bias", 1024, 512, {"bias": True})]


def per_call_us(fn, reps: int = 20) -> float:
    """Median microseconds per call, from CUDA-graph replays of `reps` calls."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(15):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) * 1e3 / reps)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1000,1024000", help="token rows (histories x samples x 20)")
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    dev, group = "cuda", 20
    rows = []
    for m in map(int, args.rows.split(",")):
        for name, k, n, use in SHAPES:
            x = torch.randn(m, k, device=dev, dtype=dtype)
            w = torch.randn(n, k, device=dev, dtype=dtype) / k**0.5
            bias = torch.randn(n, device=dev) if use.get("bias") else None
            norm = (torch.rand(k, device=dev) + 0.5, torch.randn(k, device=dev), 1e-5) if use.get("norm") else None
            mod = torch.randn(m // group, 2 * k, device=dev, dtype=dtype) * 0.1 if use.get("mod") else None
            res = (torch.randn(m, n, device=dev, dtype=dtype),) * use.get("res", 0)
            extra = dict(bias=bias, norm=norm, mod=mod, group=group, silu=bool(use.get("silu")),
                         gelu=bool(use.get("gelu")), residuals=res)
            unfused = torch.compile(kernels.linear_reference, dynamic=False)  # inductor's pointwise/norm kernels + cuBLAS
            base = per_call_us(lambda: unfused(x, w, **extra))
            flop = 2 * m * k * n
            row = {"rows": m, "product": name, "K": k, "N": n, "unfused_us": round(base, 1)}
            best = None
            for tiles in TILES:
                try:
                    us = per_call_us(lambda: kernels.linear(x, w, **extra, tiles=tiles))
                except Exception as e:  # a tile that does not fit this GPU's shared memory
                    print("tiles", tiles, "failed:", str(e).splitlines()[0][:100])
                    continue
                row["x".join(map(str, tiles))] = round(us, 1)
                if best is None or us < best[1]:
                    best = (tiles, us)
            row.update(best_tiles="x".join(map(str, best[0])), best_us=round(best[1], 1),
                       best_tflops=round(flop / best[1] / 1e6, 1), unfused_over_best=round(base / best[1], 2))
            rows.append(row)
            print(row, flush=True)
            torch._dynamo.reset()
    print(table(rows, ["rows", "product", "unfused_us", "best_tiles", "best_us", "best_tflops", "unfused_over_best"]))
    write(f"tiles_{args.dtype}", {"tiles": ["x".join(map(str, t)) for t in TILES], "rows": rows}, args.out)


if __name__ == "__main__":
    main()
