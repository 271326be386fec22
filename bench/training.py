"""Training throughput of the three stages (windows per second), ours against a per-item reference.

    python bench/training.py --device cuda --data_dir <cmu_h36m folder>
    torchrun --nproc_per_node 2 bench/training.py --device cuda --data_dir ...   # data parallel

`reference`: windows built one at a time on the CPU (numpy + scipy rotation, a DataLoader with
batch 64, the published pipeline's way), float32 without TF32, plain Adam. Ours: the whole dataset
on the GPU, windows cut there, TF32, fused Adam; `bf16` adds autocast, `-compile` torch.compile,
`-graphs` torch.compile with CUDA graphs (mode reduce-overhead), `-stepgraph` torch.compile with the
whole step (all-reduce and Adam included) as one CUDA graph (`--compile step-graph`; its first
11 steps run eagerly, so warm-up is at least 13 steps). `total_s` includes compilation.
All variants run the same Trainer step with the published sizes (h = 10, batch 64).

`--profile_steps N` then profiles N more steps of each run (rank 0's profile is kept): wall time
per step, GPU kernel time (NCCL's apart) and the host's largest operations, to tell a GPU-bound
step from one that waits on the host. `--ddp_options` passes keyword arguments to
DistributedDataParallel:

    torchrun --nproc_per_node 2 bench/training.py --device cuda --data_dir ... --stages distill \
        --variants ours-bf16-graphs --batch_size 128 --profile_steps 5 --ddp_options '{"bucket_cap_mb": 200}'
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from common import table, write
from spard import distributed as dist
from spard.config import preset
from spard.data import ReferenceWindows, load_dataset
from spard.data.windows import Batch
from spard.model import SPARD
from spard.runs import make_logger
from spard.step_graph import WARMUP as STEP_GRAPH_WARMUP
from spard.train import Trainer

# full Human3.6M: 150 training sequences of about 2,800 frames (50 Hz); stride 10
H36M_WINDOWS_PER_EPOCH = 150 * (2800 - 125 + 1) // 10
PUBLISHED_EPOCHS = {"base": 1000, "distill": 1000, "np": 100}


def measure(trainer: Trainer, steps: int, warmup: int, reference: ReferenceWindows | None) -> tuple[int, float]:
    """(windows, seconds) of `steps` optimiser steps after `warmup` steps; windows of all ranks."""
    cfg, dev = trainer.cfg, trainer.device
    trainer.stage.train_modes(trainer.model)
    b = cfg.train.batch_size
    if reference is not None:  # one process, whole batches built on the CPU
        loader = torch.utils.data.DataLoader(reference, batch_size=b, shuffle=True, num_workers=0, drop_last=True)
        source = (Batch(p.to(dev, non_blocking=True), 0, len(p), len(p)) for _ in range(10**6) for p in loader)
    else:  # this rank's slice of each global batch
        source = (batch for _ in range(10**6) for batch in trainer.windows.batches(
            b, trainer.generator, drop_last=True, rank=dist.rank(), world_size=dist.world_size()))
    windows = 0
    for i in range(warmup + steps):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dist.barrier()
            start = time.perf_counter()
        batch = next(source)
        trainer.train_step(batch.poses, trainer.draws_for(batch), batch.global_size)
        windows += batch.global_size if i >= warmup else 0
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    return windows, time.perf_counter() - start


def profile_steps(trainer: Trainer, steps: int) -> dict:
    """Where `steps` training steps of this rank spend their time (milliseconds per step). Kernel
    times are summed, so GPU-bound steps show `kernel_ms` close to `step_ms`; host operations are
    inclusive (a caller's time holds its callees')."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        _, seconds = measure(trainer, steps, 0, None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    host = defaultdict(float)
    for e in events:
        if e.get("cat") in ("cpu_op", "user_annotation"):  # operators, and named ranges (compiled graphs, DDP's reducer)
            host[e["name"]] += e.get("dur", 0.0)
    per_step = lambda us: round(us / 1e3 / steps, 3)
    top = sorted(host.items(), key=lambda kv: -kv[1])[:8]
    return {"steps": steps, "step_ms": round(1e3 * seconds / steps, 3),
            "kernel_ms": per_step(sum(e["dur"] for e in kernels)) if cuda else None,
            "nccl_kernel_ms": per_step(sum(e["dur"] for e in kernels if "nccl" in e["name"].lower())) if cuda else None,
            "kernels": len(kernels) // steps if cuda else None,
            "host_ops_ms": {name[:80]: per_step(us) for name, us in top}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data_dir", required=True, help="a Human3.6M-format folder (e.g. the CMU benchmark)")
    p.add_argument("--stages", default="base,distill,np")
    p.add_argument("--variants", default="reference,ours-tf32,ours-bf16")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--small", action="store_true", help="a tiny model (to check the script on a CPU)")
    p.add_argument("--batch_size", type=int, default=64, help="global batch (split over the ranks)")
    p.add_argument("--profile_steps", type=int, default=0, help="then profile this many steps of each run")
    p.add_argument("--ddp_options", default="{}", help="JSON: keyword arguments of DistributedDataParallel")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    try:
        ddp_options = json.loads(args.ddp_options)
    except ValueError as e:
        p.error(f"--ddp_options is not JSON ({e}); pass e.g. '{{\"bucket_cap_mb\": 200}}'")
    device = dist.setup(args.device)
    cfg = preset("h36m")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=args.data_dir),
                              train=dataclasses.replace(cfg.train, batch_size=args.batch_size))
    if args.small:
        cfg = dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, latent_dim=32, ff_size=64,
                                  num_layers=2, num_heads=2, gcn_hidden=16, gcn_layers=1),
                                  noise_predictor=dataclasses.replace(cfg.noise_predictor, hidden=16, layers=1))
    dataset = load_dataset(cfg.data)
    log = make_logger(None, quiet=True)
    rows = []
    world = dist.world_size()
    variants = [v for v in args.variants.split(",") if world == 1 or v != "reference"]
    for stage in args.stages.split(","):
        for variant in variants:
            precision = "bf16" if "bf16" in variant else "fp32" if variant == "reference" else "tf32"
            mode = {"graphs": "reduce-overhead", "compile": "default", "stepgraph": "step-graph"}.get(
                variant.rsplit("-", 1)[-1], "none")
            tc = dataclasses.replace(cfg.train, precision=precision, compile=mode)
            run_cfg = dataclasses.replace(cfg, train=tc)
            torch.manual_seed(0)
            model = SPARD(run_cfg)
            trainer = Trainer(run_cfg, stage, model, dataset, run_dir=None, out_dir=None, device=device, logger=log,
                              progress=False, fused_adam=variant != "reference", ddp_options=ddp_options)
            ref = ReferenceWindows(dataset.train, cfg.data.t_total, cfg.data.stride, cfg.data.aug, cfg.data.rota_prob,
                                   seed=0) if variant == "reference" else None
            started = time.perf_counter()
            warmup = max(args.warmup, STEP_GRAPH_WARMUP + 2) if mode == "step-graph" else args.warmup
            windows, seconds = measure(trainer, args.steps, warmup, ref)
            row = {"stage": stage, "variant": variant, "gpus": world, "global_batch": args.batch_size,
                   "windows": windows, "windows_per_s": round(windows / seconds),
                   "total_s": round(time.perf_counter() - started, 1)}
            if world > 1:
                row["ddp_options"] = ddp_options
            if args.profile_steps and ref is None:
                row["profile"] = profile_steps(trainer, args.profile_steps)
            rows.append(row)
            if dist.is_main():
                print(row, flush=True)
            del trainer, model
            if device.type == "cuda":
                torch.cuda.empty_cache()

    summary = {}
    for stage in args.stages.split(","):
        rates = {r["variant"]: r["windows_per_s"] for r in rows if r["stage"] == stage}
        best = max(rates.values())
        summary[stage] = {"best_windows_per_s": best, "over_reference": round(best / rates["reference"], 2)
                          if "reference" in rates else None,
                          "projected_published_schedule_hours": round(
                              PUBLISHED_EPOCHS[stage] * H36M_WINDOWS_PER_EPOCH / best / 3600, 2)}
    if dist.is_main():
        name = "training" + ("_cpu" if device.type == "cpu" else "") + (f"_{world}gpu" if world > 1 else "")
        write(name, {"rows": rows, "summary": summary, "h36m_windows_per_epoch": H36M_WINDOWS_PER_EPOCH}, args.out)
        print(table(rows, ["stage", "variant", "gpus", "windows_per_s", "total_s"]))
        print(summary)
    dist.teardown()


if __name__ == "__main__":
    main()
