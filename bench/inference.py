"""Inference speed of the three samplers: latency, throughput, share of the matrix-unit limit.

    python bench/inference.py --device cuda              # full table on a GPU
    python bench/inference.py --device cpu --quick       # 1 x 50 on the CPU, ddim/np ratio

Variants: `eager-fp32` (plain PyTorch, no TF32), `graph-fp32` (the same kernels replayed as one
CUDA graph), `compiled-bf16` (`spard.fast.GraphedSampler`: the fused model and its Triton kernels,
torch.compile with the weights frozen as constants, one CUDA graph, bf16 autocast), `compiled-fp16`,
`compiled-tf32`; suffixes `-unfused` (the reference model, weights not frozen: the earlier fast
path), `-autotune` (compile mode max-autotune-no-cudagraphs), `-pdl` (inductor's Triton kernels
with programmatic dependent launch too, `torch._inductor.config.triton.enable_pdl`) and `-nopdl`
(the GCN and attention kernels without it, `spard.kernels.PDL = False`).
FLOPs per sample are counted by PyTorch's FlopCounterMode on one evaluation; the fraction of the
bf16 limit divides the achieved FLOP rate by a measured 8192^3 bf16 matrix product.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import matmul_peak_tflops, table, time_fn, write
from spard import checkpoints, kernels, samplers
from spard.config import preset
from spard.fast import GraphedSampler, unfuse
from spard.samplers import SamplerOptions
from spard.model import SPARD

EVALS = {"np": 1, "onestep": 1, "ddim": 10}  # network evaluations per sample


def flops_per_sample(model: SPARD, sampler: str) -> float:
    """FLOPs of one sample: counted on a batch of 50 samples of one history, divided by 50."""
    history = torch.randn(1, model.t_his, model.dim, device=model.sqrt_etas.device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        samplers.get_sampler(sampler)(model, history, 50)
    return counter.get_total_flops() / 50


def load(args) -> SPARD:
    if args.ckpt:
        return checkpoints.load_model(args.ckpt)[0]
    torch.manual_seed(0)
    cfg = preset(args.cfg)
    cfg = dataclasses.replace(cfg, noise_predictor=dataclasses.replace(cfg.noise_predictor, noise=args.np_noise))
    return SPARD(cfg).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--cfg", default="h36m")
    p.add_argument("--ckpt", default="", help="a trained checkpoint (weights do not change the speed)")
    p.add_argument("--np_noise", type=float, default=0.0, help="a noise predictor that adds noise to its maps (--np_noise)")
    p.add_argument("--quick", action="store_true", help="1 x 50 only")
    p.add_argument("--batches", default="1,64,1024")
    p.add_argument("--variants", default="eager-fp32,graph-fp32,compiled-fp16,compiled-bf16")
    p.add_argument("--compiled_batches", default="1,1024", help="batch sizes that get the compiled variants")
    p.add_argument("--samplers", default="np,onestep,ddim")
    p.add_argument("--ddim_max_histories", type=int, default=64, help="ddim (ten evaluations) only up to this batch")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch._dynamo.config.cache_size_limit = 64
    model = load(args).to(device).eval()
    k = model.cfg.noise_predictor.k
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    variants = args.variants.split(",") if device.type == "cuda" else ["eager-fp32"]
    flops = {s: flops_per_sample(model, s) for s in EVALS}
    peak = matmul_peak_tflops(device) if device.type == "cuda" else None

    rows = []
    for b in batches:
        for sampler in args.samplers.split(","):
            for variant in variants:
                if sampler == "ddim" and b > args.ddim_max_histories:
                    continue  # ten evaluations of twice the batch: seconds per call at large batches
                if variant.startswith("compiled") and str(b) not in args.compiled_batches.split(","):
                    continue
                history = torch.randn(b, model.t_his, model.dim, device=device)
                torch._dynamo.reset()  # compile each variant afresh (compiler settings are not part of the cache key)
                started = time.perf_counter()
                if variant == "eager-fp32":
                    unfuse(model)
                    fn = lambda: samplers.get_sampler(sampler)(model, history, k)
                else:
                    compiled = variant.startswith("compiled")
                    precision, *flags = variant.split("-")[1:]
                    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
                    mode = "max-autotune-no-cudagraphs" if "autotune" in flags else "default"
                    pdl = torch._inductor.config.patch({"triton.enable_pdl": True}) if "pdl" in flags else nullcontext()
                    kernels.PDL = "nopdl" not in flags
                    with pdl:
                        fast = GraphedSampler(model, SamplerOptions(sampler, k), b, precision=precision,
                                              compile=compiled, fused=compiled and "unfused" not in flags,
                                              freeze=compiled and "unfused" not in flags, compile_mode=mode)
                    fn = lambda: fast(history)
                kernels.PDL = True
                setup = time.perf_counter() - started
                t = time_fn(fn, device, min_seconds=2.0 if b > 1 else 1.0)
                torch.backends.cuda.matmul.allow_tf32 = False
                rate = b * k / (t["median_ms"] * 1e-3)
                row = {"sampler": sampler, "histories": b, "samples": k, "variant": variant,
                       "median_ms": round(t["median_ms"], 4), "min_ms": round(t["min_ms"], 4),
                       "samples_per_s": round(rate), "setup_s": round(setup, 1),
                       "gflop_per_sample": round(flops[sampler] / 1e9, 3)}
                if peak:
                    row["tflops"] = round(rate * flops[sampler] / 1e12, 1)
                    row["pct_bf16_peak"] = round(100 * rate * flops[sampler] / 1e12 / peak, 1)
                rows.append(row)
                print(row, flush=True)
                fn = fast = None  # free the graph's memory pool before the next variant
                torch.cuda.empty_cache() if device.type == "cuda" else None
                write("inference" + ("_cpu" if device.type == "cpu" else ""),
                      {"rows": rows, "bf16_peak_tflops": peak, "flops_per_sample": flops}, args.out)

    ratios = {}
    for variant in variants:
        for b in batches:
            get = lambda s: next((r["median_ms"] for r in rows if r["sampler"] == s and r["histories"] == b
                                  and r["variant"] == variant), None)
            if get("ddim") and get("np"):
                ratios[f"{variant} {b}x{k}"] = round(get("ddim") / get("np"), 2)
    write("inference" + ("_cpu" if device.type == "cpu" else ""),
          {"rows": rows, "bf16_peak_tflops": peak, "flops_per_sample": flops, "ddim_over_np": ratios}, args.out)
    print(table(rows, ["sampler", "histories", "variant", "median_ms", "samples_per_s", "pct_bf16_peak", "setup_s"]))
    print("bf16 peak (measured):", peak, "TFLOP/s; ddim/np latency ratios:", ratios)


if __name__ == "__main__":
    main()
