"""Tile sizes of the Triton kernels, swept at the shapes the samplers give them.

    python bench/kernel_tiles.py           # GPU; prints the best setting per shape and the default's time

`graph_conv`: feature tile x warps x pipeline stages x product first (`x @ w` as one cuBLAS
product) x rows per program (these two tried from 1,024 rows; several rows only with the product
first), for the noise predictor at one history (1 row) and the refiner at 1 x 50 (50 rows) and
1024 x 50 (51,200 rows). `attention`: warps. Times are per call inside a CUDA graph
(`common.graph_call_us`). The defaults of `spard.kernels` come from this table. The full sweep
takes several minutes on an H100; `--min_rows` limits it to the larger shapes.
"""
from __future__ import annotations

import argparse
import itertools

import torch

from common import graph_call_us, table, write
from spard import kernels

# (what, rows, nodes, features in, features out): the layers of the sampler at 1 and 1024 histories
GCN_SHAPES = [("noise predictor block", 1, 48, 256, 256), ("noise predictor gc7", 1, 48, 256, 1000),
              ("refiner block", 50, 48, 256, 256), ("refiner gc1", 50, 48, 125, 256),
              ("noise predictor block", 1024, 48, 256, 256), ("refiner block", 51200, 48, 256, 256)]
ATTENTION_ROWS = [50, 51200]  # (histories x samples) rows of 20 tokens, 8 heads of 64


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min_rows", type=int, default=0, help="sweep graph_conv only at shapes of this many rows or more")
    p.add_argument("--product_first_rows", type=int, default=1024, help="try x @ w first at this many rows or more")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    dt, dev = torch.float16, "cuda"
    rows = []
    for what, n, nodes, fin, fout in [shape for shape in GCN_SHAPES if shape[1] >= args.min_rows]:
        x = torch.randn(n, nodes, fin, device=dev, dtype=dt)
        w = torch.randn(fin, fout, device=dev, dtype=dt) / fin**0.5
        att = torch.randn(nodes, nodes, device=dev, dtype=dt) / nodes**0.5
        scale, shift = torch.rand(nodes, fout, device=dev) + 0.5, torch.randn(nodes, fout, device=dev)
        default = kernels.graph_conv_tiles(n, fout)
        times = {}
        rows_per_program = (1, 2, 4, 8) if n >= args.product_first_rows else (1,)
        for tiles in itertools.product((16, 32, 64, 128), (2, 4, 8), (2, 3), (False, True), rows_per_program):
            if tiles[3] and n < args.product_first_rows:  # two kernels a layer: only where rows are many
                continue
            if tiles[4] > 1 and not tiles[3]:  # several rows per program: with the product first only
                continue
            times[tiles] = graph_call_us(lambda: kernels.graph_conv(x, w, att, scale, shift, tiles=tiles))
        best = min(times, key=times.get)
        row = {"kernel": "graph_conv", "what": what, "rows": n, "fin": fin, "fout": fout,
               "default": "x".join(map(str, default)), "default_us": round(times[default], 1),
               "best": "x".join(map(str, best)), "best_us": round(times[best], 1),
               "all_us": {"x".join(map(str, t)): round(u, 1) for t, u in times.items()}}
        rows.append(row)
        print({k: v for k, v in row.items() if k != "all_us"}, flush=True)
    for n in ATTENTION_ROWS:
        qkv = torch.randn(n, 20, 3 * 512, device=dev, dtype=dt)
        times = {w: graph_call_us(lambda: kernels.attention(qkv, 8, warps=w)) for w in (1, 2, 4, 8)}
        best = min(times, key=times.get)
        default = kernels.attention_warps(n)
        row = {"kernel": "attention", "what": "8 heads x 20 tokens", "rows": n, "default": str(default),
               "default_us": round(times[default], 1), "best": str(best), "best_us": round(times[best], 1),
               "all_us": {str(w): round(u, 1) for w, u in times.items()}}
        rows.append(row)
        print({k: v for k, v in row.items() if k != "all_us"}, flush=True)
    print(table(rows, ["kernel", "what", "rows", "default", "default_us", "best", "best_us"]))
    write("kernel_tiles", {"rows": rows}, args.out)


if __name__ == "__main__":
    main()
