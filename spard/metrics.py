"""Evaluation metrics of the stochastic motion prediction protocol, as the published SPARD computes them.

Layout (docs/metrics.md): predictions `pred [B, S, t_pred, D]` (S samples per window), ground-truth
future `gt [B, t_pred, D]`, D = 3J flattened joint-major, xyz-minor (root joint dropped). Distances
are L2 norms of the whole flattened D-vector of a frame (not MPJPE). Per-window metrics return `[B]`
in the input dtype (float32, like the published code); averages over windows and the CMD / FID
reductions are done in float64.

Per window:   apd, ade, fde, mmade, mmfde, apde   -> [B]
Over windows: published_mean / MetricMeter (NaN and exact zeros left out), cmd, fid   -> float
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn
from torch import Tensor

from .torch_files import UnreadableTorchFile, load_tensors


def _expect(x: Tensor, dims: str, name: str) -> None:
    """One-line ValueError unless `x` has as many dimensions as `dims` names ("B, S, t_pred, D")."""
    if x.dim() != len(dims.split(",")):
        raise ValueError(f"{name}: expected [{dims}], got {list(x.shape)}")


def _expect_pair(pred: Tensor, gt: Tensor) -> None:
    _expect(pred, "B, S, t_pred, D", "pred")
    _expect(gt, "B, t_pred, D", "gt")
    b, _, t, d = pred.shape
    if gt.shape != (b, t, d):
        raise ValueError(f"gt: expected [{b}, {t}, {d}] to match pred, got {list(gt.shape)}")


# ------------------------------------------------------------------------------------------------
# Per-window metrics -> [B]

def apd(pred: Tensor, block: int | None = None) -> Tensor:
    """Average pairwise distance: 2/(S(S-1)) * sum_{s<s'} ||vec(x_s) - vec(x_s')||; NaN (n/a) when S = 1: one
    future has no pair (the published meter counted it as 0).

    vec() flattens a whole sample (t_pred * D numbers). torch.cdist as published (for S > 25 it
    uses the matmul form |a|^2 + |b|^2 - 2ab). `block`: at most that many rows of the S x S distances
    at a time (memory B x block x S instead of B x S x S, for many futures; the sum in float64).
    """
    _expect(pred, "B, S, t_pred, D", "pred")
    b, s = pred.shape[:2]
    if s == 1:
        return pred.new_full((b,), float("nan"))
    flat = pred.reshape(b, s, -1)  # [B, S, t_pred*D]
    if block is None or s <= block:
        dist = torch.cdist(flat, flat)  # [B, S, S]
        i, j = torch.triu_indices(s, s, offset=1, device=pred.device)
        return dist[:, i, j].mean(-1)
    total = torch.zeros(b, dtype=torch.float64, device=pred.device)
    later = torch.arange(s, device=pred.device)
    square = torch.linalg.vector_norm(flat, dim=-1).square()  # [B, S]: cdist's matmul form, no copy of the rows
    for lo in range(0, s, block):
        rows = later[lo:lo + block]
        dot = flat[:, lo:lo + block] @ flat.transpose(1, 2)  # [B, block, S]
        dist = (square[:, lo:lo + block, None] + square[:, None] - 2 * dot).clamp_min(0).sqrt()
        total += (dist * (later[None] > rows[:, None])).sum((1, 2), dtype=torch.float64)  # pairs s < s' only
    return (total / (s * (s - 1) / 2)).to(pred.dtype)


def ade(pred: Tensor, gt: Tensor) -> Tensor:
    """Average displacement error of the best sample: min_s (1/t_pred) sum_t ||x_{s,t} - y_t||."""
    _expect_pair(pred, gt)
    err = torch.linalg.vector_norm(pred - gt[:, None], dim=-1)  # [B, S, t_pred]
    return err.mean(-1).min(-1).values


def fde(pred: Tensor, gt: Tensor) -> Tensor:
    """Final displacement error of the best sample: min_s ||x_{s,T} - y_T|| (last frame)."""
    _expect_pair(pred, gt)
    err = torch.linalg.vector_norm(pred[:, :, -1] - gt[:, None, -1], dim=-1)  # [B, S]
    return err.min(-1).values


def _multimodal(pred: Tensor, gt_multi: Sequence[Tensor], final_only: bool) -> Tensor:
    _expect(pred, "B, S, t_pred, D", "pred")
    b, _, t, d = pred.shape
    if len(gt_multi) != b:
        raise ValueError(f"gt_multi: expected a list of {b} tensors [M_i, {t}, {d}], got {len(gt_multi)}")
    out = pred.new_full((b,), math.nan)
    for i, futures in enumerate(gt_multi):  # futures [M, t_pred, D]
        if futures.dim() != 3 or futures.shape[1:] != (t, d):
            raise ValueError(f"gt_multi[{i}]: expected [M, {t}, {d}], got {list(futures.shape)}")
        if futures.shape[0] < 2:  # only the window itself: no multimodal GT
            continue
        futures = futures.to(pred)
        if final_only:
            err = torch.linalg.vector_norm(pred[i, None, :, -1] - futures[:, None, -1], dim=-1)  # [M, S]
        else:
            err = torch.linalg.vector_norm(pred[i, None] - futures[:, None], dim=-1).mean(-1)  # [M, S]
        out[i] = err.min(-1).values.mean()
    return out


def mmade(pred: Tensor, gt_multi: Sequence[Tensor]) -> Tensor:
    """Multimodal ADE: (1/M) sum_m min_s (1/t_pred) sum_t ||x_{s,t} - y^m_t||; NaN when M = 1.

    gt_multi: B tensors [M_i, t_pred, D], the futures of the windows whose last observed pose is
    close to this one (itself included, see `multimodal_futures`).
    """
    return _multimodal(pred, gt_multi, final_only=False)


def mmfde(pred: Tensor, gt_multi: Sequence[Tensor]) -> Tensor:
    """Multimodal FDE: (1/M) sum_m min_s ||x_{s,T} - y^m_T||; NaN when M = 1."""
    return _multimodal(pred, gt_multi, final_only=True)


def apde(apd_values: Tensor, gt_apd: Tensor) -> Tensor:
    """APD error |APD - gt_APD| (gt_APD from mmapd_GT.csv); NaN where gt_APD == 0.

    dtype follows torch promotion, as published (float64 when gt_apd is float64).
    """
    _expect(apd_values, "B", "apd_values")
    if gt_apd.shape != apd_values.shape:
        raise ValueError(f"gt_apd: expected {list(apd_values.shape)}, got {list(gt_apd.shape)}")
    gt_apd = gt_apd.to(apd_values.device)
    err = (apd_values - gt_apd).abs()
    return torch.where(gt_apd == 0, torch.full_like(err, math.nan), err)


# ------------------------------------------------------------------------------------------------
# Multimodal ground truth (docs/metrics.md)

def multimodal_mask(last_poses: Tensor, threshold: float, chunk: int = 1024) -> Tensor:
    """mask[i, j] = ||p_i - p_j|| < threshold (strict, float64 like scipy pdist, diagonal True).

    last_poses: [N, D], the last observed pose of every test window. Computed in row blocks, so
    memory is O(chunk * N).
    """
    _expect(last_poses, "N, D", "last_poses")
    poses = last_poses.double()
    rows = [
        torch.cdist(block, poses, compute_mode="donot_use_mm_for_euclid_dist") < threshold
        for block in poses.split(chunk)
    ]
    return torch.cat(rows)  # [N, N]


def multimodal_futures(trajectories: Tensor, t_his: int, threshold: float) -> list[Tensor]:
    """gt_multi[i] = futures (frames t_his..) of all windows j with ||p_i - p_j|| < threshold.

    trajectories: [N, T, D] all test windows in protocol order; p = frame t_his - 1. Members keep
    index order and include i itself. Returns N tensors [M_i, t_pred, D].
    """
    _expect(trajectories, "N, T, D", "trajectories")
    mask = multimodal_mask(trajectories[:, t_his - 1], threshold).to(trajectories.device)
    futures = trajectories[:, t_his:]  # [N, t_pred, D]
    return [futures[row] for row in mask]


# ------------------------------------------------------------------------------------------------
# Averaging over windows (docs/metrics.md)

def published_mean(values: Tensor) -> float:
    """sum(nan_to_num(v)) / #(nan_to_num(v) != 0): NaN and exact zeros are left out.

    0.0 when nothing is counted (the published meter's initial value). The sum is exact (math.fsum
    over float64), so the result does not depend on order or batching; the published meter sums
    each batch in float32, which can differ in the 7th significant digit.
    """
    v = torch.nan_to_num(values.detach().flatten()).double().cpu()
    count = int(torch.count_nonzero(v))
    return math.fsum(v.tolist()) / count if count else 0.0


class MetricMeter:
    """Per-window values of named metrics, reduced with `published_mean` at the end.

    It keeps the values (not running sums), so the result is independent of batching, and meters
    of several processes merge exactly: gather each `state()` (e.g. all_gather_object) and `merge`.
    """

    def __init__(self) -> None:
        self._chunks: dict[str, list[Tensor]] = {}

    def update(self, **values: Tensor) -> None:
        """update(APD=[B], ADE=[B], ...): append one batch of per-window values."""
        for name, v in values.items():
            self._chunks.setdefault(name, []).append(v.detach().flatten().cpu())

    def values(self, name: str) -> Tensor:
        """All per-window values of one metric, in update order."""
        return torch.cat(self._chunks[name])

    def state(self) -> dict[str, Tensor]:
        return {name: self.values(name) for name in self._chunks}

    def merge(self, other: MetricMeter | dict[str, Tensor]) -> MetricMeter:
        """Append another meter (or its `state()`) to this one; returns self."""
        state = other.state() if isinstance(other, MetricMeter) else other
        self.update(**state)
        return self

    def mean(self, name: str) -> float:
        return published_mean(self.values(name))

    def means(self) -> dict[str, float]:
        return {name: self.mean(name) for name in self._chunks}


# ------------------------------------------------------------------------------------------------
# CMD, cumulative motion distribution distance (docs/metrics.md)

def motion_per_frame(pred: Tensor) -> Tensor:
    """v_b(t) = (1/S) sum_s (1/J) sum_j ||x_{s,t+1,j} - x_{s,t,j}||, t = 1..t_pred-1 -> [B, t_pred-1].

    Joints are the D/3 xyz triplets; predicted frames only (no jump from the last observation).
    """
    _expect(pred, "B, S, t_pred, D", "pred")
    joints = pred.unflatten(-1, (-1, 3))  # [B, S, t_pred, J, 3]
    step = torch.linalg.vector_norm(joints[:, :, 1:] - joints[:, :, :-1], dim=-1)  # [B, S, t_pred-1, J]
    return step.mean(1).mean(-1)


def cmd(motion: Tensor, labels: Tensor, reference: Tensor | Sequence[float]) -> float:
    """CMD = sum_c (n_c/N) sum_{t=1}^{t_pred-1} (t_pred - t) |M_c(t) - ref_c|, M_c = class mean of v.

    motion: [N, t_pred-1] from `motion_per_frame`; labels: [N] class ids; reference: [C].
    The published code skips classes without windows and keeps N = all windows in the weights;
    a NaN reference would make its result NaN. Here classes with a NaN reference (no GT windows
    in `cmd_reference_from_gt`) are skipped as well, N unchanged; NaN (not available) when no class
    with windows has a reference.
    """
    labels = torch.as_tensor(labels)
    _expect(motion, "N, t_pred-1", "motion")
    _expect(labels, "N", "labels")
    if labels.shape[0] != motion.shape[0]:
        raise ValueError(f"labels: expected [{motion.shape[0]}], got {list(labels.shape)}")
    motion = motion.detach().double().cpu()
    labels = labels.detach().cpu()
    reference = torch.as_tensor(reference, dtype=torch.float64).cpu()
    n, steps = motion.shape
    weights = torch.arange(steps, 0, -1, dtype=torch.float64)  # t_pred - t for t = 1..t_pred-1
    total, counted = 0.0, 0
    for c, ref in enumerate(reference.tolist()):
        members = labels == c
        n_c = int(members.sum())
        if n_c == 0 or math.isnan(ref):
            continue
        class_motion = motion[members].mean(0)  # [t_pred-1]
        total += n_c / n * float((weights * (class_motion - ref).abs()).sum())
        counted += 1
    return total if counted else math.nan


def cmd_reference_from_gt(gt_future: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """ref_c = mean over the class's windows and frames of v_b(t) of the GT future -> [C] float64.

    For datasets without a published table. NaN for classes without windows. (The published
    tables were computed offline, by code that is not published.)
    """
    _expect(gt_future, "N, t_pred, D", "gt_future")
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != gt_future.shape[:1]:
        raise ValueError(f"labels: expected [{gt_future.shape[0]}], got {list(labels.shape)}")
    motion = motion_per_frame(gt_future[:, None]).double().mean(-1).cpu()  # [N]
    ref = torch.full((num_classes,), math.nan, dtype=torch.float64)
    for c in range(num_classes):
        members = labels == c
        if members.any():
            ref[c] = motion[members].mean()
    return ref


# ------------------------------------------------------------------------------------------------
# FID (docs/metrics.md)

class ClassifierForFID(nn.Module):
    """Human3.6M action classifier whose 30-d tanh layer gives the FID features.

    GRU(48 -> 128, 2 layers, seq-first) -> last time step -> linear1 128 -> 30 -> tanh (features)
    -> linear2 30 -> 15 (logits). Parameter names match the published checkpoint.

    Input: motion [B, t_pred, D] (our layout; the published module takes [B, D, t_pred]).
    Initial hidden state: zeros by default, so a window's features depend on its motion alone
    (reproducible, and independent of batching and device). The published code draws
    randn(2, B, 128) at every call: pass `random_h0=True` (optionally with a `generator`).
    """

    def __init__(self, input_size: int = 48, hidden_size: int = 128, num_layers: int = 2,
                 num_classes: int = 15, feature_size: int = 30):
        super().__init__()
        self.recurrent = nn.GRU(input_size, hidden_size, num_layers)
        self.linear1 = nn.Linear(hidden_size, feature_size)
        self.linear2 = nn.Linear(feature_size, num_classes)

    def initial_hidden(self, batch: int, device: torch.device, random_h0: bool = False,
                       generator: torch.Generator | None = None) -> Tensor:
        shape = (self.recurrent.num_layers, batch, self.recurrent.hidden_size)  # [layers, B, H]
        if random_h0:
            return torch.randn(shape, device=device, generator=generator)
        return torch.zeros(shape, device=device)

    def features(self, motion: Tensor, random_h0: bool = False,
                 generator: torch.Generator | None = None) -> Tensor:
        """tanh(linear1(GRU output at the last frame)) -> [B, 30]."""
        _expect(motion, "B, t_pred, D", "motion")
        if motion.shape[-1] != self.recurrent.input_size:
            raise ValueError(f"motion: expected D = {self.recurrent.input_size}, got {list(motion.shape)}")
        h0 = self.initial_hidden(motion.shape[0], motion.device, random_h0, generator)
        out, _ = self.recurrent(motion.transpose(0, 1).float(), h0)  # [t_pred, B, H]
        return torch.tanh(self.linear1(out[-1]))

    def forward(self, motion: Tensor, random_h0: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
        """Class logits [B, 15]."""
        return self.linear2(self.features(motion, random_h0, generator))


def load_fid_classifier(path, device: str | torch.device = "cpu") -> ClassifierForFID:
    """Load the published h36m_classifier.pth ({'model': state_dict}, saved on cuda:0), in eval mode.

    Read with `torch.load(weights_only=True)`: tensors and plain containers only, anything else refused
    unread. Every refusal is a one-line FileNotFoundError / ValueError.
    """
    path, fix = Path(path), "give the published h36m_classifier.pth (docs/data.md), or no classifier"
    if not path.is_file():
        raise FileNotFoundError(f"FID classifier {path} not found: {fix}")
    try:
        state = load_tensors(path, device)
    except UnreadableTorchFile as e:
        if e.code:
            raise ValueError(f"FID classifier {path} holds {e.code}, which could run code; refusing to "
                             f"unpickle it: {fix}") from None
        raise ValueError(f"FID classifier {path} is corrupt or truncated ({e.detail}): {fix}") from None
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"FID classifier {path} holds no 'model' state dict; {fix}")
    model = ClassifierForFID()
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as e:  # missing or unexpected keys, shapes, non-tensors
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise ValueError(f"FID classifier {path} does not fit ClassifierForFID ({lines[-1][:160]}); {fix}") from None
    return model.to(device).eval()


def fid(gt_features: Tensor, pred_features: Tensor, eps: float = 1e-6) -> float:
    """Frechet distance ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) between two feature sets.

    gt_features [N, F], pred_features [M, F]; means and unbiased covariances in float64. If
    sqrtm(S1 S2) is not finite, retry with eps*I added to both covariances; a negligible
    imaginary part is dropped, one above 1e-3 on the diagonal raises ValueError.
    """
    _expect(gt_features, "N, F", "gt_features")
    _expect(pred_features, "M, F", "pred_features")
    if gt_features.shape[1] != pred_features.shape[1]:
        raise ValueError(f"pred_features: expected F = {gt_features.shape[1]}, got {list(pred_features.shape)}")
    a = gt_features.detach().double().cpu().numpy()
    b = pred_features.detach().double().cpu().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    sigma1 = np.atleast_2d(np.cov(a, rowvar=False))
    sigma2 = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(sigma1.shape[0])
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"fid: imaginary component {np.abs(covmean.imag).max()} in sqrtm")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
