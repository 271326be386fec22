"""Evaluation: run a sampler over the test (or validation) windows and gather the eight metrics.

`Protocol` holds what is fixed for a set of windows (ground truth, multimodal ground truth, APDE
and CMD references, FID classifier) and is computed once. `evaluate` shards windows over
distributed ranks in fixed blocks whose noise depends only on the seed and the block, so one
process and N processes give exactly the same numbers.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from . import distributed as dist
from . import metrics
from .data.dataset import Dataset
from .fast import autocast, float32_products
from .model import SPARD, to_model_space
from .samplers import get_sampler

METRIC_ORDER = ("APD", "APDE", "ADE", "FDE", "MMADE", "MMFDE", "FID", "CMD")


@dataclass
class Protocol:
    windows: torch.Tensor  # [N, T, D] model space
    labels: torch.Tensor  # [N] class ids
    gt_multi: list[torch.Tensor]  # N x [M_i, t_pred, D]
    gt_apd: torch.Tensor  # [N] APDE reference (0: no reference)
    cmd_reference: torch.Tensor  # [C] m/frame, NaN: none
    t_his: int
    fid_classifier: metrics.ClassifierForFID | None = None

    def __len__(self) -> int:
        return self.windows.shape[0]


def multimodal_apd(gt_multi: list[torch.Tensor]) -> torch.Tensor:
    """APD of each multimodal ground-truth set, 0 for singletons (the `mmapd_GT.csv` quantity)."""
    return torch.stack([metrics.apd(m[None].double()).float()[0] for m in gt_multi])


def make_protocol(dataset: Dataset, t_his: int, threshold: float, *, split: str = "test",
                  fid_classifier: metrics.ClassifierForFID | None = None, device="cpu") -> Protocol:
    poses = dataset.test_windows if split == "test" else dataset.val_windows
    labels = dataset.test_labels if split == "test" else dataset.val_labels
    if len(poses) == 0:
        raise ValueError(f"the {split} split of '{dataset.name}' has no window; check the data and t_his/t_pred")
    windows = to_model_space(torch.as_tensor(poses, dtype=torch.float32)).to(device)
    labels = torch.as_tensor(labels, dtype=torch.long)
    gt_multi = metrics.multimodal_futures(windows, t_his, threshold)
    if split == "test" and dataset.mmapd is not None:
        if len(dataset.mmapd) != len(windows):
            raise ValueError(f"mmapd_GT.csv has {len(dataset.mmapd)} rows but there are {len(windows)} test windows; "
                             f"use the file that belongs to this segments_test.csv")
        gt_apd = torch.as_tensor(dataset.mmapd, dtype=torch.float64)
    else:
        gt_apd = multimodal_apd(gt_multi).double()
    if split == "test" and dataset.cmd_reference is not None:
        reference = torch.as_tensor(dataset.cmd_reference, dtype=torch.float64)
    else:
        reference = metrics.cmd_reference_from_gt(windows[:, t_his:], labels, len(dataset.classes))
    return Protocol(windows, labels, gt_multi, gt_apd.to(device), reference, t_his, fid_classifier)


def _block_noise_generator(seed: int, block: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + block)


@torch.no_grad()
def evaluate(model: SPARD, protocol: Protocol, sampler: str, *, num_samples: int = 50, batch_size: int = 16,
             seed: int = 0, progress: bool = True, precision: str = "fp32", **sampler_options) -> dict:
    """Metrics of `sampler` on the protocol's windows, averaged the published way (formats.md section 4).

    `precision` 'bf16' or 'fp16' runs the sampler under that autocast, its float32 products in TF32
    (`spard.fast.float32_products`); the metrics stay in float32.
    Returns the eight metrics (FID None without a classifier) plus `seconds_per_window`.
    """
    sample = get_sampler(sampler)
    model.eval()
    device = protocol.windows.device
    t_his = protocol.t_his
    blocks = list(range(math.ceil(len(protocol) / batch_size)))
    mine = blocks[dist.rank()::dist.world_size()]
    meter = metrics.MetricMeter()
    motion, pred_features, gt_features = [], [], []
    elapsed = 0.0
    for block in tqdm(mine, desc=f"eval {sampler}", unit="batch", disable=not (progress and dist.is_main())):
        index = torch.arange(block * batch_size, min((block + 1) * batch_size, len(protocol)))
        traj = protocol.windows[index]  # [B, T, D]
        gt = traj[:, t_his:]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(precision, device.type), float32_products(precision):
            pred = sample(model, traj[:, :t_his], num_samples, generator=_block_noise_generator(seed, block, device),
                          **sampler_options)[:, :, t_his:].float()  # [B, S, t_pred, D]
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - start
        gt_multi = [protocol.gt_multi[i] for i in index.tolist()]
        apd = metrics.apd(pred)
        meter.update(index=index.double(), APD=apd, ADE=metrics.ade(pred, gt), FDE=metrics.fde(pred, gt),
                     MMADE=metrics.mmade(pred, gt_multi), MMFDE=metrics.mmfde(pred, gt_multi),
                     APDE=metrics.apde(apd, protocol.gt_apd[index]))
        motion.append(metrics.motion_per_frame(pred).cpu())
        if protocol.fid_classifier is not None:
            pred_features.append(protocol.fid_classifier.features(pred.flatten(0, 1)).cpu())
            gt_features.append(protocol.fid_classifier.features(gt).cpu())

    gathered = dist.gather_objects((meter.state(), motion, pred_features, gt_features, elapsed))
    total = metrics.MetricMeter()
    all_motion, all_pred_f, all_gt_f = [], [], []
    for state, m, pf, gf, _ in gathered:
        if state:
            total.merge(state)
        all_motion += m
        all_pred_f += pf
        all_gt_f += gf
    result = {name: total.mean(name) for name in ("APD", "APDE", "ADE", "FDE", "MMADE", "MMFDE")}
    # motion rows follow the merged per-window values, so the labels come from the same index list
    labels = protocol.labels[total.values("index").long()]
    result["CMD"] = metrics.cmd(torch.cat(all_motion), labels, protocol.cmd_reference)
    result["FID"] = metrics.fid(torch.cat(all_gt_f), torch.cat(all_pred_f)) if all_pred_f else None
    result["seconds_per_window"] = sum(g[-1] for g in gathered) / len(protocol)
    return {name: result[name] for name in METRIC_ORDER + ("seconds_per_window",)}


def format_metrics(result: dict) -> str:
    """The published print-out: eight lines `NAME  : (value)`, FID as n/a when not available."""
    lines = []
    for name in METRIC_ORDER:
        value = result.get(name)
        lines.append(f"{name:<6}: " + ("(n/a)" if value is None else f"({value:.4f})"))
    return "\n".join(lines)
