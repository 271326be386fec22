"""Tile sizes of the Triton kernels, swept at the shapes the samplers give them.

    python bench/kernel_tiles.py                      # GPU; prints the best setting per shape and the default's time
    python bench/kernel_tiles.py --sections gcn       # one section: graph_conv, gcn or attention

`graph_conv` (one GCN layer): feature tile x warps x pipeline stages x product first (`x @ w` as one
cuBLAS product, tried from 1,024 rows), for the noise predictor at one history (1 row) and the
refiner at 1 x 50 (50 rows) and 1024 x 50 (51,200 rows). `gcn` (a whole GCN in one kernel):
feature tile x warps x programs per row, against one `graph_conv` per layer (`layers`), at the row
counts of 1, 16 (an evaluation block), 64 and 1024 histories. `attention`: heads per program x
warps. Times are per call inside a CUDA graph (`common.graph_call_us`). The defaults of
`spard.kernels` come from this table.
"""
from __future__ import annotations

import argparse
import itertools

import torch

from common import graph_call_us, table, write
from spard import kernels

# (what, rows, nodes, features in, features out): the layers of the sampler at 1 and 1024 histories
GCN_LAYER_SHAPES = [("noise predictor block", 1, 48, 256, 256), ("noise predictor gc7", 1, 48, 256, 1000),
                    ("refiner block", 50, 48, 256, 256), ("refiner gc1", 50, 48, 125, 256),
                    ("noise predictor block", 1024, 48, 256, 256), ("refiner block", 51200, 48, 256, 256)]
# (what, rows, features in, hidden, features out, residual): whole GCNs of the published size (6 blocks, 48 nodes)
GCN_SHAPES = [("noise predictor", 1, 20, 256, 1000, False), ("refiner", 50, 125, 256, 125, True),
              ("noise predictor", 16, 20, 256, 1000, False), ("refiner", 800, 125, 256, 125, True),
              ("noise predictor", 64, 20, 256, 1000, False), ("refiner", 3200, 125, 256, 125, True),
              ("noise predictor", 1024, 20, 256, 1000, False)]
ATTENTION_ROWS = [50, 51200]  # (histories x samples) rows of 20 tokens, 8 heads of 64
DT, DEV = torch.float16, "cuda"


def sweep(name: str, what: str, rows: int, times: dict, default, **shape) -> dict:
    """A result row: the default's time, the best setting and every time."""
    key = lambda t: "x".join(map(str, t)) if isinstance(t, tuple) else str(t)
    best = min(times, key=times.get)
    row = {"kernel": name, "what": what, "rows": rows, **shape, "default": key(default),
           "default_us": round(times[default], 1), "best": key(best), "best_us": round(times[best], 1),
           "all_us": {key(t): round(u, 1) for t, u in times.items()}}
    print({k: v for k, v in row.items() if k != "all_us"}, flush=True)
    return row


def graph_conv_rows(args) -> list[dict]:
    rows = []
    for what, n, nodes, fin, fout in [shape for shape in GCN_LAYER_SHAPES if shape[1] >= args.min_rows]:
        x = torch.randn(n, nodes, fin, device=DEV, dtype=DT)
        w = torch.randn(fin, fout, device=DEV, dtype=DT) / fin**0.5
        att = torch.randn(nodes, nodes, device=DEV, dtype=DT) / nodes**0.5
        scale, shift = torch.rand(nodes, fout, device=DEV) + 0.5, torch.randn(nodes, fout, device=DEV)
        times = {}
        for tiles in itertools.product((16, 32, 64, 128), (2, 4, 8), (2, 3), (False, True)):
            if tiles[3] and n < args.product_first_rows:  # two kernels a layer: only where rows are many
                continue
            times[tiles] = graph_call_us(lambda: kernels.graph_conv(x, w, att, scale, shift, tiles=tiles))
        rows.append(sweep("graph_conv", what, n, times, kernels.graph_conv_tiles(n, fout), fin=fin, fout=fout))
    return rows


def gcn_rows(args) -> list[dict]:
    rows = []
    nodes, blocks = 48, 6
    for what, n, fin, hidden, fout, residual in [shape for shape in GCN_SHAPES if shape[1] >= args.min_rows]:
        x = torch.randn(n, fin, nodes, device=DEV, dtype=DT).transpose(1, 2)  # [N, P, Fin] strided, as the refiner's
        sizes = kernels.gcn_sizes(fin, hidden, fout, blocks)
        weight = torch.cat([(torch.randn(a, b, device=DEV) / a**0.5).flatten() for a, b in sizes]).to(DT)
        att = (torch.randn(len(sizes), nodes, nodes, device=DEV) / nodes**0.5).to(DT)
        scale = torch.cat([torch.rand(nodes * b, device=DEV) + 0.5 for _, b in sizes])
        shift = torch.cat([torch.randn(nodes * b, device=DEV) for _, b in sizes])
        call = lambda tiles: kernels.gcn(x, weight, att, scale, shift, hidden, blocks, residual, tiles=tiles)
        times = {"layers": graph_call_us(lambda: kernels.gcn_layers(x, weight, att, scale, shift, hidden, blocks, residual))}
        for tiles in itertools.product((32, 64, 128, 256), (4, 8), (3,), (1, 2, 4, 8) if n < 16 else (1,)):
            try:
                times[tiles] = graph_call_us(lambda: call(tiles))
            except Exception as e:  # a setting the compiler cannot build (registers, shared memory): skipped
                print(f"gcn {what} {n} rows {tiles}: {type(e).__name__}", flush=True)
        rows.append(sweep("gcn", what, n, times, kernels.gcn_tiles(n) or "layers", fin=fin, fout=fout))
    return rows


def attention_rows(args) -> list[dict]:
    rows = []
    for n in ATTENTION_ROWS:
        qkv = torch.randn(n, 20, 3 * 512, device=DEV, dtype=DT)
        times = {t: graph_call_us(lambda: kernels.attention(qkv, 8, tiles=t))
                 for t in itertools.product((1, 2, 4), (1, 2, 4, 8))}
        rows.append(sweep("attention", "8 heads x 20 tokens", n, times, kernels.attention_tiles(n)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="graph_conv,gcn,attention")
    p.add_argument("--min_rows", type=int, default=0, help="sweep GCN shapes of this many rows or more")
    p.add_argument("--product_first_rows", type=int, default=1024, help="try x @ w first at this many rows or more")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    sections = {"graph_conv": graph_conv_rows, "gcn": gcn_rows, "attention": attention_rows}
    rows = [row for name in args.sections.split(",") for row in sections[name](args)]
    print(table(rows, ["kernel", "what", "rows", "default", "default_us", "best", "best_us"]))
    write("kernel_tiles", {"rows": rows}, args.out)


if __name__ == "__main__":
    main()
