"""Training windows: the published stride + jitter rule, rotation, tensor path == per-item reference path."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import shared_path

from spard.config import preset
from spard.data import H36M, ReferenceWindows, TrainWindows, load_dataset
from spard.data.dataset import Clip
from spard.data.windows import window_starts

T, STRIDE, AUG = 25, 4, 2
LENGTHS = [40, 60, 10, 33, 25]  # one clip too short, one exactly a window


def make_clips(lengths=LENGTHS, seed=0) -> list[Clip]:
    """Random-walk skeletons whose root x encodes (clip, frame) as 1000 clip + frame."""
    rng = np.random.default_rng(seed)
    clips = []
    for c, n in enumerate(lengths):
        poses = np.cumsum(rng.normal(0, 0.05, (n, 17, 3)), axis=0).astype(np.float32)  # [L, J+1, 3]
        poses[:, 0, 0] = 1000 * c + np.arange(n)
        clips.append(Clip(("S1", f"take {c}"), 0, poses))
    return clips


def test_window_count_follows_the_published_formula():
    starts = sum(max(n - T + 1, 0) for n in LENGTHS)
    assert len(window_starts(LENGTHS, T)) == starts == 16 + 36 + 0 + 9 + 1
    windows = TrainWindows(make_clips(), T, STRIDE, AUG, 1.0)
    assert len(windows) == starts // STRIDE == len(ReferenceWindows(make_clips(), T, STRIDE, AUG, 1.0))


def test_windows_never_cross_a_clip():
    windows = TrainWindows(make_clips(), T, STRIDE, AUG, 0.0)
    items = torch.arange(len(windows)).repeat_interleave(2 * AUG + 1)  # every item with every offset
    offsets = torch.arange(-AUG, AUG + 1).repeat(len(windows))
    code = windows.windows(items, offsets, torch.zeros_like(items))[:, :, 0, 0]  # [B, T] root x
    clip, frame = code // 1000, code % 1000
    assert (clip == clip[:, :1]).all() and (frame.diff(dim=1) == 1).all()
    first = windows.windows(torch.tensor([0]), torch.tensor([-AUG]), torch.tensor([0]))[0, 0, 0, 0]
    assert first == 0  # the clamp at the start of the list


def test_rotation_keeps_bone_lengths_and_height():
    windows = TrainWindows(make_clips(), T, STRIDE, AUG, 1.0)
    items = torch.arange(len(windows))
    plain = windows.windows(items, torch.zeros_like(items), torch.zeros_like(items))
    turned = windows.windows(items, torch.zeros_like(items), 7 * items + 13)
    assert not torch.allclose(plain, turned)
    torch.testing.assert_close(turned[..., 2], plain[..., 2], rtol=0, atol=0)  # z is the rotation axis
    parents = torch.tensor(H36M.parents[1:])  # joints 1..16 are root-relative: bones from the absolute root are not
    for traj in (plain, turned):
        traj[:, :, 0] = 0
    bone = lambda x: (x[:, :, 1:] - x[:, :, parents]).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(bone(turned), bone(plain), rtol=0, atol=1e-5)


def test_quarter_turn_is_x_to_y():
    windows = TrainWindows(make_clips(), T, STRIDE, 0, 1.0)
    plain = windows.windows(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]))
    turned = windows.windows(torch.tensor([0]), torch.tensor([0]), torch.tensor([90]))
    torch.testing.assert_close(turned[..., 0], -plain[..., 1], atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(turned[..., 1], plain[..., 0], atol=1e-4, rtol=1e-6)


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", devices())
def test_tensor_path_equals_reference_path(device):
    clips = make_clips()
    fast = TrainWindows(clips, T, STRIDE, AUG, 1.0, device=device)
    slow = ReferenceWindows(clips, T, STRIDE, AUG, 1.0)
    gen = torch.Generator(device).manual_seed(0)
    items = torch.arange(len(fast), device=device).repeat(3)
    offsets, degrees = fast.draw(len(items), gen)
    got = fast.windows(items, offsets, degrees).cpu()
    want = np.stack([slow.window(i, o, d) for i, o, d in zip(items.tolist(), offsets.tolist(), degrees.tolist())])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)  # float32 rounding
    assert slow[3].shape == (T, 17, 3)


@pytest.mark.parametrize("device", devices())
def test_an_epoch_visits_every_item_once(device):
    windows = TrainWindows(make_clips(), T, STRIDE, 0, 0.0, device=device)
    batches = [b.poses for b in windows.batches(4, torch.Generator(device).manual_seed(1))]
    assert [len(b) for b in batches] == [4, 4, 4] + [len(windows) - 12]
    assert batches[0].shape[1:] == (T, 17, 3) and batches[0].device.type == device
    starts = torch.cat(batches)[:, 0, 0, 0].cpu()  # root x code of the first frame
    items = torch.arange(len(windows), device=device)
    everything = windows.windows(items, torch.zeros_like(items), torch.zeros_like(items))
    assert sorted(starts.tolist()) == sorted(everything[:, 0, 0, 0].tolist())
    assert len(list(windows.batches(4, torch.Generator(device), drop_last=True))) == 3


def test_draw_ranges():
    windows = TrainWindows(make_clips(), T, STRIDE, AUG, 1.0)
    offsets, degrees = windows.draw(5000, torch.Generator().manual_seed(0))
    assert offsets.min() == -AUG and offsets.max() == AUG and degrees.min() == 0 and degrees.max() == 359
    windows.rota_prob = 0.0
    assert (windows.draw(100, torch.Generator())[1] == 0).all()


def test_ranks_get_disjoint_slices_of_the_same_global_batch():
    windows = TrainWindows(make_clips(), T, 1, AUG, 1.0)
    whole = [b.poses for b in windows.batches(8, torch.Generator().manual_seed(3))]
    shards = [list(windows.batches(8, torch.Generator().manual_seed(3), rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    full = [b for b in whole if len(b) >= 3]  # a last batch smaller than world_size is dropped
    for k, batch in enumerate(full):
        parts = [s[k] for s in shards]
        bounds = [(r * len(batch) // 3, (r + 1) * len(batch) // 3) for r in range(3)]
        assert [(p.lo, p.hi) for p in parts] == bounds and all(p.global_size == len(batch) for p in parts)
        torch.testing.assert_close(torch.cat([p.poses for p in parts]), batch)


def test_cmu_training_windows():
    folder = shared_path("data", "cmu_h36m")
    ds = load_dataset(replace(preset("h36m").data, data_dir=str(folder)))
    windows = TrainWindows(ds.train, 125, 10, 5, 1.0)
    assert len(windows) == sum(len(c.poses) - 124 for c in ds.train) // 10
    batch = next(windows.batches(64, torch.Generator().manual_seed(0))).poses
    assert batch.shape == (64, 125, 17, 3) and batch.dtype == torch.float32
