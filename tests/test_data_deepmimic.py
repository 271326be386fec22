"""The embedded DeepMimic dataset: urdf kinematics, units, floor, split and the assembled Dataset.

Needs pybullet's data folder (`pybullet_data`, inside the pybullet wheel): the tests fail in CI (`CI` set)
when it is missing and are skipped elsewhere, with the reason.
"""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
from conftest import missing

from spard.config import DataConfig
from spard.data import deepmimic as dm
from spard.data.skeletons import root_relative

FPS, T_HIS, T_PRED = 30.0, 15, 30
WALKS = ("humanoid3d_walk", "humanoid3d_run", "walker/0walk_forward", "walker/turn_left0", "walker/turn_left1",
         "walker/turn_right0", "walker/turn_right1")


def _cfg(**kw) -> DataConfig:
    base = DataConfig(name="deepmimic", data_dir="", fps=FPS, t_his=T_HIS, t_pred=T_PRED, num_joints=17)
    return dataclasses.replace(base, **kw)


@pytest.fixture(scope="module")
def root():
    if importlib.util.find_spec("pybullet_data") is None:
        missing("pybullet_data is missing: pip install pybullet (its wheel ships the DeepMimic clips)")
    return dm.find_pybullet_data()


@pytest.fixture(scope="module")
def humanoid(root):
    return dm.read_humanoid(root / "humanoid" / "humanoid.urdf")


@pytest.fixture(scope="module")
def motions(root, humanoid):
    """name -> Motion for every clip."""
    return {p.relative_to(root / "data" / "motions").with_suffix("").as_posix(): dm.read_motion(p, humanoid)
            for _, p in dm.clip_files(root)}


@pytest.fixture(scope="module")
def clips(motions, humanoid):
    """name -> [L, J+1, 3] absolute positions at FPS (loops tiled)."""
    return {name: dm.clip_positions(m, humanoid, FPS) for name, m in motions.items()}


@pytest.fixture(scope="module")
def dataset(root):
    return dm.load_deepmimic(_cfg())


def test_files_and_classes(root):
    files = dm.clip_files(root)
    assert len(files) == 20
    assert sorted({a for a, _ in files}) == sorted(
        ["backflip", "cartwheel", "crawl", "dance_a", "dance_b", "getup_facedown", "getup_faceup", "jump",
         "kick", "punch", "roll", "run", "spin", "spinkick", "walk"])


def test_urdf_in_metres(humanoid):
    names = dm.skeleton().names
    offset = dict(zip(names, humanoid.offsets))
    assert offset["right_knee"] == pytest.approx([0.0, -1.686184 * 0.25, 0.0])
    assert offset["right_hip"][2] > 0 > offset["left_hip"][2]  # +z is the right side
    assert set(humanoid.axis) == dm.REVOLUTE
    for axis in humanoid.axis.values():
        assert axis == pytest.approx([0.0, 0.0, 1.0])
    # end points: leaf joints fixed in their link, offset = the point in the link's frame
    assert offset["right_toe"] == pytest.approx([0.134, -0.05, 0.0], abs=1e-3)
    assert offset["head"] == pytest.approx([0.0, 0.2775, 0.0], abs=1e-3)


def test_skeleton():
    sk = dm.skeleton()
    assert sk.num_joints == 17 and len(sk.names) == 18 and sk.names[0] == "pelvis"
    assert all(0 <= p < j for j, p in enumerate(sk.parents) if j) and sk.parents[0] == -1
    assert [sk.names[i].replace("left_", "") for i in sk.left] == [sk.names[i].replace("right_", "") for i in sk.right]


def test_heading_of_a_yaw():
    yaw = np.random.default_rng(0).uniform(-3, 3, 10)
    assert np.allclose(dm.heading(dm.yaw_quat(yaw)), yaw)


def test_bone_lengths_constant(clips, humanoid):
    parents = dm.skeleton().parents
    for name, poses in clips.items():
        bones = np.linalg.norm(poses[:, 1:] - poses[:, parents[1:]], axis=-1)  # [L, J]
        assert bones.std(0).max() < 1e-3, name
    thigh = np.linalg.norm(clips["humanoid3d_walk"][:, 2] - clips["humanoid3d_walk"][:, 1], axis=-1)
    assert thigh == pytest.approx(np.linalg.norm(humanoid.offsets[2]), abs=1e-5)  # point 2: right knee


def test_z_up_and_feet_on_floor(clips):
    sk = dm.skeleton()
    feet = [sk.names.index(n) for n in ("right_ankle", "right_toe", "left_ankle", "left_toe")]
    head, pelvis = sk.names.index("head"), 0
    for name in WALKS:
        poses = clips[name]
        assert abs(poses[:, feet, 2].min()) < 0.05, name
        assert np.all(poses[:, head, 2] > poses[:, pelvis, 2]), name
        assert np.all(poses[:, pelvis, 2] > poses[:, feet, 2].max(1)), name
    for name, poses in clips.items():  # no clip sinks into the floor or floats above it
        assert -0.08 < poses[..., 2].min() < 0.05, name


def test_standing_height_and_left_right(clips):
    sk = dm.skeleton()
    pose = clips["humanoid3d_walk"][0]
    height = pose[sk.names.index("head"), 2] - pose[[4, 8], 2].min()
    assert 1.5 < height < 1.8
    # facing +x at the start, the left hip is at +y (x forward, y left, z up)
    assert pose[sk.names.index("left_hip"), 1] > pose[sk.names.index("right_hip"), 1]


def test_frame_rate_and_lengths(motions, clips, humanoid):
    assert clips["humanoid3d_walk"].shape == (int(dm.LOOP_SECONDS * FPS), 18, 3)
    assert clips["humanoid3d_walk"].dtype == np.float32
    punch = motions["humanoid3d_punch"]
    assert len(clips["humanoid3d_punch"]) == int(np.floor(punch.times[-1] * FPS + 1e-6)) + 1
    assert len(dm.clip_positions(punch, humanoid, 2 * FPS)) == int(np.floor(punch.times[-1] * 2 * FPS + 1e-6)) + 1
    # the walk advances ~1.2 m per 1.27 s cycle: ~1 m/s whatever the rate
    for fps in (FPS, 2 * FPS):
        root = dm.clip_positions(motions["humanoid3d_walk"], humanoid, fps)[:, 0, :2]
        speed = np.linalg.norm(root[-1] - root[0]) / ((len(root) - 1) / fps)
        assert 0.8 < speed < 1.2, fps


def test_loops_are_seamless(motions, humanoid):
    for name, m in motions.items():
        if not m.loop:
            continue
        one = dm.points(dm.resample(m, FPS), humanoid)
        tiled = dm.points(dm.resample(dm.tile(dm.close_loop(m), 3), FPS), humanoid)

        def max_step(p):
            rel = p[:, 1:] - p[:, :1]
            steps = np.linalg.norm(np.diff(rel, axis=0), axis=-1)  # [L-1, J]
            return steps.max(), np.linalg.norm(np.diff(p[:, 0], axis=0), axis=-1).max()

        (joints1, root1), (joints3, root3) = max_step(one), max_step(tiled)
        assert joints3 < 1.1 * joints1 + 0.01 and root3 < 1.2 * root1 + 0.01, name


def test_split_ranges():
    parts = dm.split_ranges(600, 0.1)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [420, 60, 120]
    assert parts["train"].stop == parts["val"].start and parts["val"].stop == parts["test"].start == 480
    with pytest.raises(ValueError):
        dm.split_ranges(600, 0.9)


def test_split_partitions_each_clip(dataset, clips):
    by_name: dict[str, dict[str, np.ndarray]] = {}
    for part in ("train", "val", "test"):
        for clip in getattr(dataset, part):
            assert clip.key[1] == part
            by_name.setdefault(clip.key[0], {})[part] = clip.poses
    assert set(by_name) == set(clips)
    for name, parts in by_name.items():  # the parts are consecutive, disjoint time ranges of the clip
        joined = np.concatenate([parts[p] for p in ("train", "val", "test") if p in parts])
        assert np.array_equal(joined, root_relative(clips[name], name)), name
        assert set(parts) == ({"train", "val", "test"} if len(parts) > 1 else {"train"})


def test_split_is_deterministic(dataset):
    again = dm.load_deepmimic(_cfg())
    assert np.array_equal(again.test_windows, dataset.test_windows)
    assert np.array_equal(again.val_windows, dataset.val_windows)
    assert [c.key for c in again.train] == [c.key for c in dataset.train]


def test_every_action_in_train(dataset):
    assert {c.label for c in dataset.train} == set(range(len(dataset.classes)))
    assert all(len(c.poses) >= T_HIS + T_PRED for c in dataset.train)  # each gives a training window


def test_dataset(dataset):
    T, C = T_HIS + T_PRED, len(dataset.classes)
    assert dataset.name == "deepmimic" and dataset.fps == FPS and dataset.mmapd is None
    assert dataset.skeleton.num_joints == 17
    assert dataset.test_windows.shape[1:] == (T, 18, 3) and len(dataset.test_windows) > 0
    assert dataset.test_windows.dtype == np.float32 and dataset.test_labels.dtype == np.int64
    assert dataset.val_windows.shape[1:] == (T, 18, 3) and len(dataset.val_windows) > 0
    assert len(dataset.test_labels) == len(dataset.test_windows) and len(dataset.val_labels) == len(dataset.val_windows)
    # the published rule: per test clip, starts 0, t_his, 2 t_his, ...
    expected = sum(len(range(0, len(c.poses) - T + 1, T_HIS)) for c in dataset.test)
    assert len(dataset.test_windows) == expected
    first = dataset.test[0]
    assert np.array_equal(dataset.test_windows[1], first.poses[T_HIS:T_HIS + T])
    # root absolute, joints root-relative
    assert np.abs(dataset.test_windows[:, :, 1:]).max() < 1.2
    assert np.all(dataset.test_windows[:, :, 0, 2] > 0.05)
    # CMD reference: finite exactly for the classes with test windows
    assert dataset.cmd_reference.shape == (C,)
    tested = np.isin(np.arange(C), dataset.test_labels)
    assert np.all(np.isfinite(dataset.cmd_reference[tested])) and np.all(np.isnan(dataset.cmd_reference[~tested]))
    assert np.all(dataset.cmd_reference[tested] > 0)
    assert dataset.notes


def test_a_test_only_load_gives_the_test_protocol_of_a_full_load(dataset):
    test = dm.load_deepmimic(_cfg(), splits=("test",))
    assert test.classes == dataset.classes and test.train == test.val == [] and len(test.val_windows) == 0
    for field in ("test_windows", "test_labels", "cmd_reference"):
        np.testing.assert_array_equal(getattr(test, field), getattr(dataset, field))


def test_cmd_reference_is_the_mean_motion_of_each_class_test_windows(dataset):
    future = dataset.test_windows[:, T_HIS:, 1:].astype(np.float64)  # [N, t_pred, J, 3]
    motion = np.linalg.norm(np.diff(future, axis=1), axis=-1).mean(axis=(1, 2))  # [N]
    for c in np.unique(dataset.test_labels):
        assert dataset.cmd_reference[c] == pytest.approx(motion[dataset.test_labels == c].mean(), rel=1e-6)


def test_wrong_joint_count(root):
    with pytest.raises(ValueError, match="17 joints"):
        dm.load_deepmimic(_cfg(num_joints=14))
