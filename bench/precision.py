"""Accuracy of half-precision inference: the metrics of each sampler in float32 (the reference
model) against the fast path's arithmetic (`spard.fast.fuse`: Triton kernels, half-precision
residual streams) under bf16 and fp16 autocast, and the reference model under bf16 autocast.

    python bench/precision.py --ckpt results/.../np/np_ckpt.pt --data_dir <cmu_h36m> --device cuda

The same noise is used for every precision (fixed per evaluation block), so the difference is the
arithmetic alone. The bar: ADE and FDE change by less than 0.5 %.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from common import table, write
from spard import checkpoints
from spard.data import load_dataset
from spard.evaluate import evaluate, make_protocol
from spard.fast import fuse, unfuse
from spard.samplers import SamplerOptions

VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", True), "fp16": ("fp16", True), "bf16-unfused": ("bf16", False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="an np-stage checkpoint (evaluates onestep and np)")
    p.add_argument("--base_ckpt", default="", help="optionally a base checkpoint, to add ddim")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch_size", type=int, default=256,
                   help="histories per evaluation block; 256 x 50 samples takes the fast path's large-batch kernels")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    model, _ = checkpoints.load_model(args.ckpt)
    cfg = dataclasses.replace(model.cfg, data=dataclasses.replace(model.cfg.data, data_dir=args.data_dir))
    dataset = load_dataset(cfg.data)
    protocol = make_protocol(dataset, cfg.data.t_his, cfg.data.multimodal_threshold, device=args.device)
    runs = [("np", model.to(args.device)), ("onestep", model)]
    if args.base_ckpt:
        runs.append(("ddim", checkpoints.load_model(args.base_ckpt)[0].to(args.device)))
    rows = []
    for sampler, m in runs:
        result = {name: evaluate(fuse(m) if fused else unfuse(m), protocol, SamplerOptions(sampler),
                                 batch_size=args.batch_size, progress=False, precision=prec)
                  for name, (prec, fused) in VARIANTS.items()}
        for metric in ("ADE", "FDE", "MMADE", "MMFDE", "APD"):
            a = result["fp32"][metric]
            row = {"sampler": sampler, "metric": metric, "fp32": round(a, 5)}
            for name in list(VARIANTS)[1:]:
                row[name] = round(result[name][metric], 5)
                row[f"{name} change %"] = round(100 * (result[name][metric] - a) / a, 3)
            rows.append(row)
    write("precision", {"rows": rows, "ckpt": args.ckpt, "windows": len(protocol), "batch_size": args.batch_size},
          args.out)
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
