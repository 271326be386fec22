"""ONNX deployment on the CPU: export the np and onestep predictors, check onnxruntime against
PyTorch, and time both runtimes for 1 history x 50 samples in the same run.

    python bench/onnx_cpu.py                    # full-size Human3.6M model, random weights
    python bench/onnx_cpu.py --ckpt results/demo/np     # and a trained model, rows of both in one file
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import table, write
from spard import checkpoints, samplers
from spard.config import preset
from spard.export import check, export_onnx, latency
from spard.model import SPARD


def torch_latency(model: SPARD, sampler: str, repeats: int) -> float:
    history = torch.randn(1, model.t_his, model.dim)
    run = lambda: samplers.get_sampler(sampler)(model, history, 50, generator=torch.Generator().manual_seed(0))
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="",
                   help="also a trained np-stage checkpoint (file or stage folder), beside the full-size random model")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="threads for both runtimes (0: their defaults)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {"h36m, random weights": SPARD(preset("h36m")).eval()}
    if args.ckpt:
        from spard.runs import find_checkpoint
        models["checkpoint " + args.ckpt] = checkpoints.load_model(find_checkpoint(args.ckpt))[0].eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            params = sum(p.numel() for p in model.parameters())
            for sampler in ("np", "onestep"):
                path = export_onnx(model, sampler, Path(tmp) / f"{sampler}.onnx")
                diff = check(path, model, sampler, num_samples=50)
                ort = latency(path, model, sampler, num_samples=50, repeats=args.repeats, threads=args.threads)
                pt = torch_latency(model, sampler, args.repeats)
                rows.append({"model": name, "parameters": params, "sampler": sampler,
                             "onnxruntime_ms": round(ort * 1e3, 1), "pytorch_ms": round(pt * 1e3, 1),
                             "max_rel_diff": f"{diff:.1e}", "threads": args.threads or "default"})
                print(rows[-1], flush=True)
    write("onnx_cpu", {"rows": rows}, args.out)
    print(table(rows, ["model", "sampler", "onnxruntime_ms", "pytorch_ms", "max_rel_diff", "threads"]))


if __name__ == "__main__":
    main()
