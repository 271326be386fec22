"""Metrics: oracle vectors of the published code (met_*), hand-computable cases, FID and its classifier."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

from conftest import missing, shared_path
from spard import metrics as M
from spard.data.amass import AMASS_CMD_REFERENCE, AMASS_TEST_CLASSES
from spard.data.h36m import H36M_CLASSES, H36M_CMD_REFERENCE

RTOL = 1e-5
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def oracle_dir() -> Path:
    """The oracle folder: $SPARD_ORACLE_DIR when set, else shared/data/oracle."""
    folder = os.environ.get("SPARD_ORACLE_DIR")
    if not folder:
        return shared_path("data", "oracle")
    if not Path(folder).exists():
        missing(f"SPARD_ORACLE_DIR={folder} does not exist")
    return Path(folder)


@pytest.fixture(scope="module")
def oracle() -> dict[str, np.ndarray]:
    with np.load(oracle_dir() / "vectors.npz") as v:
        return {k: v[k] for k in v.files if k.startswith("met_")}


def close(got, want, rtol=RTOL):
    """Relative error <= rtol, NaN in the same places."""
    got = np.asarray(torch.as_tensor(got).double().cpu())
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0, equal_nan=True)


def t(x, device="cpu"):
    return torch.as_tensor(x, device=device)


# ------------------------------------------------------------------------------------------------
# Oracle vectors

def oracle_gt_multi(oracle, device="cpu"):
    windows = t(oracle["met_windows"], device)[:, :, 1:].flatten(2)  # [N, 125, 48], root dropped
    return M.multimodal_futures(windows, t_his=25, threshold=0.5)


def test_oracle_metric_space(oracle):
    windows = t(oracle["met_windows"])[:, :, 1:].flatten(2)
    assert torch.equal(windows[:, 25:], t(oracle["met_gt"]))


def test_oracle_multimodal_mask(oracle):
    windows = t(oracle["met_windows"])[:, :, 1:].flatten(2)
    mask = M.multimodal_mask(windows[:, 24], 0.5)
    np.testing.assert_array_equal(mask.numpy(), oracle["met_mm_mask"])
    np.testing.assert_array_equal(mask.sum(1).numpy(), oracle["met_mm_count"])
    gt_multi = oracle_gt_multi(oracle)
    for row, futures in zip(oracle["met_mm_mask"], gt_multi):
        np.testing.assert_array_equal(futures.numpy(), oracle["met_gt"][row])


@pytest.mark.parametrize("device", DEVICES)
def test_oracle_per_window_metrics(oracle, device):
    pred, gt = t(oracle["met_pred"], device), t(oracle["met_gt"], device)
    gt_multi = oracle_gt_multi(oracle, device)
    apd = M.apd(pred)
    got = {
        "APD": apd,
        "ADE": M.ade(pred, gt),
        "FDE": M.fde(pred, gt),
        "MMADE": M.mmade(pred, gt_multi),
        "MMFDE": M.mmfde(pred, gt_multi),
        "APDE": M.apde(apd, t(oracle["met_gt_apd_mock"], device)),
    }
    for name, values in got.items():
        assert values.shape == (6,) and values.dtype == torch.float32 and values.device.type == device
        close(values, oracle[f"met_{name}"])
        close(M.published_mean(values), oracle[f"met_{name}_avg"])


@pytest.mark.parametrize("device", DEVICES)
def test_oracle_cmd(oracle, device):
    motion = M.motion_per_frame(t(oracle["met_pred"], device))
    assert motion.shape == (6, 99)
    close(motion, oracle["met_cmd_motion"])
    close(M.cmd(motion, t(oracle["met_act"]), H36M_CMD_REFERENCE), oracle["met_CMD"])


def test_h36m_cmd_reference_is_published_table(oracle):
    np.testing.assert_array_equal(np.array(H36M_CMD_REFERENCE), oracle["met_cmd_ref_mean_motion_per_class"])
    assert len(H36M_CMD_REFERENCE) == len(H36M_CLASSES) == 15
    assert len(AMASS_CMD_REFERENCE) == len(AMASS_TEST_CLASSES) == 7


def test_oracle_meter_batches_and_merge(oracle):
    ade = M.ade(t(oracle["met_pred"]), t(oracle["met_gt"]))
    one, a, b = M.MetricMeter(), M.MetricMeter(), M.MetricMeter()
    one.update(ADE=ade)
    a.update(ADE=ade[:2])
    a.update(ADE=ade[2:3])
    b.update(ADE=ade[3:])
    merged = M.MetricMeter().merge(b).merge(a.state())  # shards gathered in any order
    assert merged.mean("ADE") == one.mean("ADE")
    close(one.mean("ADE"), oracle["met_ADE_avg"])


# ------------------------------------------------------------------------------------------------
# Hand-computable cases

def test_apd_two_samples():
    pred = torch.zeros(1, 2, 2, 3)
    pred[0, 1, 0, 0], pred[0, 1, 1, 1] = 3.0, 4.0  # flattened distance 5
    assert M.apd(pred).tolist() == [5.0]


def test_apd_three_samples():
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, 1, 0, 0], pred[0, 2, 0, 1] = 1.0, 2.0  # pair distances 1, 2, sqrt(5)
    close(M.apd(pred), [(3 + math.sqrt(5)) / 3])


def test_apd_of_one_sample_is_not_a_number():
    """One future has no pair: n/a (NaN, which the averaging leaves out), not a diversity of 0."""
    assert torch.isnan(M.apd(torch.randn(4, 1, 10, 6))).all()


def test_apd_many_samples_matches_pdist():
    pred = torch.randn(2, 50, 10, 6)
    want = [pdist(p.reshape(50, -1).double().numpy()).mean() for p in pred]
    close(M.apd(pred), want, rtol=1e-4)


def test_ade_fde():
    gt = torch.zeros(1, 2, 3)
    pred = torch.tensor([[[[3.0, 4, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 2]]]])  # errors (5, 0), (1, 2)
    assert M.ade(pred, gt).tolist() == [1.5]
    assert M.fde(pred, gt).tolist() == [0.0]


def test_mmade_mmfde():
    pred = torch.tensor([[[[0.0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 4]]]]).repeat(2, 1, 1, 1)
    futures = torch.tensor([[[0.0, 0, 0], [0, 0, 1]], [[0, 0, 3], [0, 0, 4]]])  # [M=2, 2, 3]
    gt_multi = [futures, futures[:1]]
    # future 0: sample errors (0, 1) -> ADE 0.5 / (0, 3) -> 1.5; future 1: (3, 4) -> 3.5 / (3, 0) -> 1.5
    mm = M.mmade(pred, gt_multi)
    assert mm[0].item() == (0.5 + 1.5) / 2 and math.isnan(mm[1].item())
    mf = M.mmfde(pred, gt_multi)  # last frame: future 0 -> min(1, 3) = 1; future 1 -> min(4, 0) = 0
    assert mf[0].item() == 0.5 and math.isnan(mf[1].item())


def test_apde_nan_where_gt_zero():
    out = M.apde(torch.tensor([5.0, 3.0]), torch.tensor([4.0, 0.0]))
    assert out[0].item() == 1.0 and math.isnan(out[1].item())


def test_published_mean_skips_nan_and_zero():
    assert M.published_mean(torch.tensor([1.0, math.nan, 0.0, 3.0])) == 2.0
    assert M.published_mean(torch.tensor([math.nan, 0.0])) == 0.0


def test_meter_is_independent_of_sharding():
    values = torch.rand(1000) * 10.0 ** torch.randint(-4, 4, (1000,))
    values[::7] = math.nan
    whole = M.MetricMeter()
    whole.update(x=values)
    shards = [M.MetricMeter() for _ in range(3)]
    for i, chunk in enumerate(values.split(64)):
        shards[i % 3].update(x=chunk)
    merged = M.MetricMeter()
    for shard in reversed(shards):
        merged.merge(shard)
    assert merged.values("x").shape == (1000,)
    assert merged.mean("x") == whole.mean("x") == M.published_mean(values)
    assert merged.means() == {"x": whole.mean("x")}


def test_multimodal_mask_strict_and_chunked():
    poses = torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [0.25, 0, 0], [2, 0, 0]])
    mask = M.multimodal_mask(poses, 0.5)
    assert not mask[0, 1] and mask[0, 2] and mask[1, 2] and mask.diagonal().all()
    assert mask.equal(mask.T)
    x = torch.randn(40, 6)
    want = squareform(pdist(x.double().numpy())) < 3.0
    np.testing.assert_array_equal(M.multimodal_mask(x, 3.0, chunk=7).numpy(), want)


def test_motion_per_frame():
    pred = torch.zeros(1, 2, 3, 6)  # 1 window, 2 samples, 3 frames, 2 joints
    pred[0, 0, :, :3] = torch.tensor([[0.0, 0, 0], [3, 4, 0], [6, 8, 0]])  # joint 0 of sample 0 moves 5/frame
    assert M.motion_per_frame(pred).tolist() == [[1.25, 1.25]]  # mean over joints 2.5, over samples 1.25


def test_cmd_weights_and_skipped_classes():
    motion = torch.tensor([[2.0, 3.0], [7.0, 7.0]])  # t_pred = 3: weights 2, 1
    labels = torch.tensor([0, 1])
    # class 0: 2*|2-1| + 1*|3-1| = 4, weight 1/2; class 1: NaN reference; class 2: no window
    assert M.cmd(motion, labels, [1.0, math.nan, 5.0]) == 2.0


def test_cmd_reference_from_gt():
    steps = torch.arange(4.0)[:, None] * torch.tensor([0.3, 0.4, 0.0, 0.0, 0.0, 0.0])  # joint 0 at 0.5/frame
    gt = torch.stack([steps, 2 * steps, torch.zeros(4, 6)])  # [N=3, t_pred=4, D=6]
    ref = M.cmd_reference_from_gt(gt, torch.tensor([0, 0, 2]), num_classes=3)
    close(ref[[0, 2]], [(0.25 + 0.5) / 2, 0.0])
    assert math.isnan(ref[1].item())
    assert M.cmd(M.motion_per_frame(gt[:, None]), torch.tensor([0, 0, 2]), ref) < 1e-6  # constant speeds


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"pred: expected \[B, S, t_pred, D\], got \[2, 3\]"):
        M.apd(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="gt: expected"):
        M.ade(torch.zeros(2, 5, 10, 6), torch.zeros(2, 9, 6))
    with pytest.raises(ValueError, match="gt_multi"):
        M.mmade(torch.zeros(2, 5, 10, 6), [torch.zeros(1, 10, 6)])
    with pytest.raises(ValueError, match="labels"):
        M.cmd(torch.zeros(3, 9), torch.zeros(2, dtype=torch.long), H36M_CMD_REFERENCE)
    with pytest.raises(ValueError, match="pred_features"):
        M.fid(torch.zeros(5, 30), torch.zeros(5, 29))


# ------------------------------------------------------------------------------------------------
# FID

def test_fid_identical_sets_is_zero():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert abs(M.fid(x, x)) < 1e-6


def test_fid_shifted_sets_is_squared_shift():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    shift = torch.arange(8.0) / 4
    assert M.fid(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    a, b = torch.randn(2, 20000, 8, generator=torch.Generator().manual_seed(1))  # independent draws
    assert M.fid(a, b + shift) == pytest.approx(float(shift @ shift), abs=0.2)


@pytest.fixture(scope="module")
def classifier():
    return M.load_fid_classifier(shared_path("data", "protocol", "h36m", "h36m_classifier.pth"))


def test_fid_classifier_loads_published_weights(classifier):
    path = shared_path("data", "protocol", "h36m", "h36m_classifier.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    assert set(state) == set(classifier.state_dict())
    for name, value in classifier.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert not classifier.training


@pytest.mark.parametrize("device", DEVICES)
def test_fid_classifier_features(classifier, device):
    model = classifier.to(device)
    motion = torch.randn(4, 100, 48, generator=torch.Generator().manual_seed(0)).mul(0.2).to(device)
    with torch.no_grad():
        feats = model.features(motion)
        assert feats.shape == (4, 30) and feats.abs().max() < 1
        assert torch.equal(feats, model.features(motion))  # zeros initial state: deterministic
        tol = 1e-6 if device == "cpu" else 1e-3  # cuDNN's GRU may use TF32 and batch-dependent kernels
        assert torch.allclose(feats[1:2], model.features(motion[1:2]), atol=tol)  # batch-independent
        assert model(motion).shape == (4, 15)
        gen = lambda: torch.Generator(device).manual_seed(0)
        noisy = model.features(motion, random_h0=True, generator=gen())
        assert torch.equal(noisy, model.features(motion, random_h0=True, generator=gen()))
        assert not torch.equal(noisy, feats)
    with pytest.raises(ValueError, match="expected D = 48"):
        model.features(torch.zeros(2, 100, 63, device=device))
    classifier.to("cpu")
