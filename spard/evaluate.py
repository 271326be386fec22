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
from .model import SPARD, to_model_space
from .precision import autocast, float32_products
from .samplers import SamplerOptions

METRIC_ORDER = ("APD", "APDE", "ADE", "FDE", "MMADE", "MMFDE", "FID", "CMD")
WINDOW_METRICS = ("APD", "APDE", "ADE", "FDE", "MMADE", "MMFDE")  # averaged over windows (the others: over sets)


@dataclass
class Protocol:
    windows: torch.Tensor  # [N, T, D] model space
    labels: torch.Tensor  # [N] class ids
    gt_multi: list[torch.Tensor]  # N x [M_i, t_pred, D]
    gt_apd: torch.Tensor  # [N] APDE reference (0: no reference)
    cmd_reference: torch.Tensor  # [C] m/frame, NaN: none
    t_his: int
    classes: list[str]  # class names (id = index)
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
    return Protocol(windows, labels, gt_multi, gt_apd.to(device), reference, t_his, list(dataset.classes),
                    fid_classifier)


def _block_noise_generator(seed: int, block: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + block)


@torch.no_grad()
def evaluate(model: SPARD, protocol: Protocol, options: SamplerOptions, *, batch_size: int = 16, seed: int = 0,
             progress: bool = True, precision: str = "fp32", on_batch=None) -> dict:
    """Metrics of the sampler `options` names on the protocol's windows, averaged the published way
    (docs/metrics.md).

    `precision` (`spard.precision`) 'bf16' or 'fp16' runs the sampler under that autocast, its float32
    products in TF32; the metrics stay in float32.
    `on_batch(index [B], futures [B, S, t_pred, D])`, when given, sees every block's futures.
    Returns the eight metrics (None when not available), `seconds_per_window` and `per_class`.
    """
    model.eval()
    device = protocol.windows.device
    t_his = protocol.t_his
    blocks = list(range(math.ceil(len(protocol) / batch_size)))
    mine = blocks[dist.rank()::dist.world_size()]
    meter = metrics.MetricMeter()
    motion, pred_features, gt_features = [], [], []
    elapsed, broken = 0.0, 0
    for block in tqdm(mine, desc=f"eval {options.name}", unit="batch", disable=not (progress and dist.is_main())):
        index = torch.arange(block * batch_size, min((block + 1) * batch_size, len(protocol)))
        traj = protocol.windows[index]  # [B, T, D]
        gt = traj[:, t_his:]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(precision, device.type), float32_products(precision):
            pred = options.sample(model, traj[:, :t_his], generator=_block_noise_generator(seed, block, device))
            pred = pred[:, :, t_his:].float()  # [B, S, t_pred, D]
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - start
        if on_batch is not None:
            on_batch(index, pred)
        gt_multi = [protocol.gt_multi[i] for i in index.tolist()]
        apd = metrics.apd(pred)
        values = dict(APD=apd, ADE=metrics.ade(pred, gt), FDE=metrics.fde(pred, gt),
                      MMADE=metrics.mmade(pred, gt_multi), MMFDE=metrics.mmfde(pred, gt_multi),
                      APDE=metrics.apde(apd, protocol.gt_apd[index]))
        moved = metrics.motion_per_frame(pred)  # [B, t_pred - 1]
        # a window is broken when its futures are not finite, or so large that a metric overflows to inf
        bad = ~torch.isfinite(pred.flatten(1)).all(1) | torch.isinf(torch.stack([*values.values(), *moved.T], 1)).any(1)
        broken += int(bad.sum())
        moved = moved.cpu()
        meter.update(index=index.double(), **values)
        motion.append(moved)
        if protocol.fid_classifier is not None:
            pred_features.append(protocol.fid_classifier.features(pred.flatten(0, 1)).cpu())
            gt_features.append(protocol.fid_classifier.features(gt).cpu())

    gathered = dist.gather_objects((meter.state(), motion, pred_features, gt_features, elapsed, broken))
    broken = sum(g[-1] for g in gathered)
    if broken:
        raise ValueError(f"{broken} of {len(protocol)} windows got non-finite (NaN or inf) futures, or futures so far "
                         f"off that a metric overflows, from the {options.name} sampler: the model is broken (did its "
                         f"training diverge?); no metric computed")
    total = metrics.MetricMeter()
    all_motion, all_pred_f, all_gt_f = [], [], []
    for state, m, pf, gf, _, _ in gathered:
        if state:
            total.merge(state)
        all_motion += m
        all_pred_f += pf
        all_gt_f += gf
    result = {name: _mean(total.values(name)) for name in WINDOW_METRICS}
    # motion rows follow the merged per-window values, so the labels come from the same index list
    labels = protocol.labels[total.values("index").long()]
    motion = torch.cat(all_motion)
    cmd = metrics.cmd(motion, labels, protocol.cmd_reference)
    result["CMD"] = None if math.isnan(cmd) else cmd  # n/a without a reference
    result["FID"] = metrics.fid(torch.cat(all_gt_f), torch.cat(all_pred_f)) if all_pred_f else None
    result["seconds_per_window"] = sum(g[-2] for g in gathered) / len(protocol)
    out = {name: result[name] for name in METRIC_ORDER + ("seconds_per_window",)}
    out["per_class"] = _per_class(total, labels, motion, protocol)
    return out


def _mean(values: torch.Tensor) -> float | None:
    """The published average (NaN and exact zeros left out); None (n/a) when no window could be measured
    (all NaN: no multimodal ground truth, no APDE reference), 0 when every value is 0 (identical futures)."""
    return None if torch.isnan(values).all() else metrics.published_mean(values)


def _per_class(total: metrics.MetricMeter, labels: torch.Tensor, motion: torch.Tensor, protocol: Protocol) -> dict:
    """`{class: {windows, APD, ..., CMD}}` for every class with test windows (CMD: that class's own term)."""
    out = {}
    for c, name in enumerate(protocol.classes):
        members = labels == c
        if not members.any():
            continue
        row = {"windows": int(members.sum())}
        row.update({m: _mean(total.values(m)[members]) for m in WINDOW_METRICS})
        cmd = metrics.cmd(motion[members], torch.zeros(int(members.sum()), dtype=torch.long),
                          protocol.cmd_reference[c:c + 1])
        row["CMD"] = None if math.isnan(cmd) else cmd
        out[name] = row
    return out


def format_metrics(result: dict) -> str:
    """The published print-out: eight lines `NAME  : (value)` (n/a when not available), then a table per class."""
    lines = []
    for name in METRIC_ORDER:
        value = result.get(name)
        lines.append(f"{name:<6}: " + ("(n/a)" if value is None else f"({value:.4f})"))
    rows = result.get("per_class") or {}
    if rows:
        width = max(len("class"), *map(len, rows))
        columns = WINDOW_METRICS + ("CMD",)
        lines += ["", f"{'class':<{width}} {'windows':>7} " + " ".join(f"{c:>7}" for c in columns)]
        for name, row in rows.items():
            cells = " ".join(f"{'n/a':>7}" if row[c] is None else f"{row[c]:>7.4f}" for c in columns)
            lines.append(f"{name:<{width}} {row['windows']:>7} {cells}")
    return "\n".join(lines)
