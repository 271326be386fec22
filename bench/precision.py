"""Accuracy of bf16 inference: the metrics of each sampler in float32 and under bf16 autocast.

    python bench/precision.py --ckpt results/.../np/np_ckpt.pt --data_dir <cmu_h36m> --device cuda

The same noise is used for both precisions (fixed per evaluation block), so the difference is the
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="an np-stage checkpoint (evaluates onestep and np)")
    p.add_argument("--base_ckpt", default="", help="optionally a base checkpoint, to add ddim")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--device", default="cuda")
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
        result = {prec: evaluate(m, protocol, sampler, progress=False, precision=prec) for prec in ("fp32", "bf16")}
        for metric in ("ADE", "FDE", "MMADE", "MMFDE", "APD"):
            a, b = result["fp32"][metric], result["bf16"][metric]
            rows.append({"sampler": sampler, "metric": metric, "fp32": round(a, 5), "bf16": round(b, 5),
                         "change_pct": round(100 * (b - a) / a, 3)})
    write("precision", {"rows": rows, "ckpt": args.ckpt, "windows": len(protocol)}, args.out)
    print(table(rows, ["sampler", "metric", "fp32", "bf16", "change_pct"]))


if __name__ == "__main__":
    main()
