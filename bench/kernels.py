"""Where the GPU time of one sampler call goes: kernels by kind, the largest ones, and the gaps.

    python bench/kernels.py --sampler np --batch 1 --timeline       # GraphedSampler's defaults
    python bench/kernels.py --sampler np --batch 1024 --unfused --mode max-autotune-no-cudagraphs

The sampler is built as `GraphedSampler` builds it but run without the CUDA graph under
`torch.profiler`, so each kernel is seen; the graph-replay time of the same function is printed
beside the sum of kernel times (their difference is launch gaps the graph could not hide).
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from common import table, time_fn, write
from spard.config import preset
from spard.fast import GraphedSampler
from spard.samplers import SamplerOptions
from spard.model import SPARD

KINDS = [("GCN layers (spard.kernels)", ("_graph_conv_kernel",)),
         ("gemm", ("gemm", "sm90", "cutlass", "cublas", "nvjet", "mm_", "_mm", "bmm")),
         ("attention", ("flash", "fmha", "attention", "sdpa")),
         ("fused (triton)", ("triton",)),
         ("copy", ("copy", "memcpy", "memset", "cat"))]


def kind(name: str) -> str:
    low = name.lower()
    return next((k for k, keys in KINDS if any(key in low for key in keys)), "other")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sampler", default="np")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--precision", default="fp16")
    p.add_argument("--mode", default="default", help="torch.compile mode")
    p.add_argument("--unfused", action="store_true", help="the reference model, weights not frozen (earlier path)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--timeline", action="store_true", help="also print every kernel in launch order")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    model = SPARD(preset("h36m")).cuda().eval()
    history = torch.randn(args.batch, model.t_his, model.dim, device="cuda")
    build = dict(precision=args.precision, fused=not args.unfused, freeze=not args.unfused, compile_mode=args.mode)
    options = SamplerOptions(args.sampler, args.samples)
    graphed = GraphedSampler(model, options, args.batch, **build)
    replay_ms = time_fn(lambda: graphed(history), "cuda")["median_ms"]
    graphed = None
    plain = GraphedSampler(model, options, args.batch, graph=False, **build)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        plain(history)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total_us = sum(e.device_time_total for e in kernels)
    by_name, by_kind = defaultdict(lambda: [0, 0.0]), defaultdict(lambda: [0, 0.0])
    for e in kernels:
        for bucket in (by_name[e.name[:90]], by_kind[kind(e.name)]):
            bucket[0] += 1
            bucket[1] += e.device_time_total
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[: args.top]
    rows = [{"kernel": n, "calls": c, "us": round(t, 1), "pct": round(100 * t / total_us, 1)} for n, (c, t) in top]
    kinds = [{"kind": k, "calls": c, "us": round(t, 1), "pct": round(100 * t / total_us, 1)}
             for k, (c, t) in sorted(by_kind.items(), key=lambda kv: -kv[1][1])]
    summary = {"sampler": args.sampler, "batch": args.batch, "samples": args.samples, **build,
               "kernels": len(kernels), "kernel_sum_ms": round(total_us / 1e3, 4), "graph_replay_ms": round(replay_ms, 4)}
    print(summary)
    print(table(kinds, ["kind", "calls", "us", "pct"]))
    print(table(rows, ["kernel", "calls", "us", "pct"]))
    timeline = [{"i": i, "kernel": e.name[:70], "us": round(e.device_time_total, 1)}
                for i, e in enumerate(sorted(kernels, key=lambda e: e.time_range.start))]
    if args.timeline:
        print(table(timeline, ["i", "kernel", "us"]))
    tag = f"{args.sampler}_{args.batch}x{args.samples}_{args.precision}{'_unfused' if args.unfused else ''}"
    write(f"kernels_{tag}", {"summary": summary, "kinds": kinds, "top": rows, "timeline": timeline}, args.out)


if __name__ == "__main__":
    main()
