"""Human3.6M-format reader and test protocol: the real CMU capture, the published CSVs, and error cases."""
from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
from conftest import shared_path, write_gsps

from spard.config import preset
from spard.data import H36M, load_dataset
from spard.data.dataset import Clip
from spard.data.h36m import H36M_CLASSES, H36M_CMD_REFERENCE
from spard.data.protocol import cut, read_mmapd, read_segments, rule_starts, segment_starts
from spard.data.skeletons import H36M_KEPT


def h36m_cfg(data_dir, **overrides):
    return replace(preset("h36m").data, data_dir=str(data_dir), **overrides)


def tiny_cfg(data_dir, **overrides):
    return h36m_cfg(data_dir, train_splits=("S1",), test_splits=("S9",), **overrides)


@pytest.fixture(scope="module")
def cmu():
    folder = shared_path("data", "cmu_h36m")
    raw = np.load(folder / "data_3d_h36m.npz", allow_pickle=True)["positions_3d"].item()
    return folder, raw, load_dataset(h36m_cfg(folder))


def write_npz(path, lengths: dict[str, dict[str, int]], seed=0):
    """A GSPS-format file with random-walk positions; `lengths[subject][action]` frames each."""
    rng = np.random.default_rng(seed)
    data = {s: {a: np.cumsum(rng.normal(0, 0.01, (n, 32, 3)), axis=0).astype(np.float32) + 1 for a, n in acts.items()}
            for s, acts in lengths.items()}
    np.savez_compressed(path, positions_3d=data)
    return data


TINY = {"S1": {"Walk 1": 300, "Walk 2": 260, "Sit 1": 280, "Sit": 240}, "S9": {"Walk": 200, "Sit 3": 180}}


# --- the real CMU capture in the Human3.6M format -------------------------------------------------

def test_cmu_test_windows_follow_the_segments_csv(cmu):
    folder, raw, ds = cmu
    rows = read_segments(folder / "segments_test.csv")
    assert ds.test_windows.shape == (166, 125, 17, 3) and ds.test_windows.dtype == np.float32
    assert len(rows) == 166
    for k in (0, 1, 82, 83, 165):  # CSV order, frames pred_init - 25 .. pred_init + 99
        (subject, action), first = rows[k].key, rows[k].pred_init - 25
        expected = raw[subject][action][first:first + 125, H36M_KEPT]
        np.testing.assert_array_equal(ds.test_windows[k, :, 0], expected[:, 0])  # root keeps its world position
        np.testing.assert_allclose(ds.test_windows[k, :, 1:], expected[:, 1:] - expected[:, :1], atol=1e-6)


def test_cmu_classes_and_references_come_from_classes_json(cmu):
    folder, _, ds = cmu
    spec = json.loads((folder / "classes.json").read_text())
    assert ds.classes == spec["classes"]
    assert np.bincount(ds.test_labels, minlength=len(ds.classes)).tolist() == spec["test_windows_per_class"]
    assert np.isnan(ds.cmd_reference[ds.classes.index("Running")])
    np.testing.assert_allclose(ds.cmd_reference[0], spec["mean_motion_per_class"][0])
    assert ds.mmapd.shape == (166,) and (ds.mmapd == 0).sum() == spec["mmapd_zero_windows"]


def test_cmu_splits_skeleton_and_notes(cmu):
    _, _, ds = cmu
    assert ds.skeleton is H36M and ds.skeleton.num_joints == 16
    assert H36M.parents[11] == H36M.parents[14] == 8  # shoulders re-parented to the thorax
    assert {c.key[0] for c in ds.train + ds.val} <= {"S1", "S5", "S6", "S7", "S8"}
    assert {c.key[0] for c in ds.test} == {"S9", "S11"}
    assert ds.val and not {c.key for c in ds.val} & {c.key for c in ds.train}
    assert all(len(c.poses) >= 125 for c in ds.train + ds.val + ds.test)
    assert len(ds.val_windows) == len(ds.val_labels) > 0
    notes = " | ".join(ds.notes)
    assert "skipped 9 train sequences shorter than 125 frames" in notes
    assert "skipped 3 test sequences shorter than 125 frames" in notes and "S11/Running 2 (79)" in notes


def test_cmu_segments_equal_the_published_rule(cmu):
    _, _, ds = cmu
    windows, labels = cut(ds.test, rule_starts(ds.test, 25, 125), 125, 17)
    np.testing.assert_array_equal(windows, ds.test_windows)
    np.testing.assert_array_equal(labels, ds.test_labels)


# --- the published protocol files ------------------------------------------------------------------

def test_published_h36m_segments_parse_and_follow_the_rule():
    rows = read_segments(shared_path("data", "protocol", "h36m", "segments_test.csv"))
    assert len(rows) == 5168
    assert (rows[0].key, rows[0].pred_init) == (("S9", "Directions 1"), 25)
    assert (rows[-1].key, rows[-1].pred_init) == (("S11", "WalkTogether"), 1250)
    assert sum(r.key[0] == "S9" for r in rows) == 3041
    # sequences of those lengths give the same windows, in the same order, by the published rule
    length = {}
    for r in rows:
        length[r.key] = r.pred_init + 100
    clips = [Clip(key, 0, np.zeros((n, 1, 3), np.float32)) for key, n in length.items()]
    assert segment_starts(rows, clips, 25, 125) == rule_starts(clips, 25, 125)


def test_published_h36m_mmapd_parses():
    mmapd = read_mmapd(shared_path("data", "protocol", "h36m", "mmapd_GT.csv"))
    assert mmapd.shape == (5168,) and (mmapd == 0).sum() == 73
    np.testing.assert_allclose(mmapd[0], 9.17753768327269)


# --- synthetic files: defaults and errors ----------------------------------------------------------

def test_classes_default_to_sorted_categories_and_rule_windows(tmp_path):
    raw = write_npz(tmp_path / "data_3d_h36m.npz", TINY)
    ds = load_dataset(tiny_cfg(tmp_path, val_fraction=0.3))
    assert ds.classes == ["Sit", "Walk"] and ds.mmapd is None
    # no published table: each class's mean joint displacement per frame over its test windows' futures
    future = ds.test_windows[:, 25:, 1:].astype(np.float64)  # [N, t_pred, J, 3]
    motion = np.linalg.norm(np.diff(future, axis=1), axis=-1).mean(axis=(1, 2))  # [N]
    expected = [motion[ds.test_labels == c].mean() for c in range(2)]
    np.testing.assert_allclose(ds.cmd_reference, expected, rtol=1e-6)
    assert [c.key for c in ds.test] == [("S9", "Walk"), ("S9", "Sit 3")]
    assert len(ds.test_windows) == 4 + 3  # starts 0, 25, ... while the window fits
    assert ds.test_labels.tolist() == [1] * 4 + [0] * 3
    np.testing.assert_allclose(ds.test_windows[1, 0, 0], raw["S9"]["Walk"][25, 0])
    assert [c.key for c in ds.val] == [("S1", "Walk 2"), ("S1", "Sit")]  # per class from the end, never a first clip
    assert ds.val_windows.shape == (6 + 5, 125, 17, 3)


def test_the_published_categories_get_the_published_ids_and_cmd_reference(tmp_path):
    takes = {name + " 1": 130 for name in reversed(H36M_CLASSES)}
    write_npz(tmp_path / "data_3d_h36m.npz", {"S1": takes, "S9": takes})
    ds = load_dataset(tiny_cfg(tmp_path))
    assert ds.classes == list(H36M_CLASSES) and ds.cmd_reference.tolist() == list(H36M_CMD_REFERENCE)
    assert ds.test_labels.tolist() == list(reversed(range(15)))


def test_data_dir_may_name_the_file(tmp_path):
    write_npz(tmp_path / "other.npz", TINY)
    ds = load_dataset(tiny_cfg(tmp_path / "other.npz"))
    assert len(ds.test_windows) == 7


def one_line_error(kind, match, cfg):
    with pytest.raises(kind, match=match) as err:
        load_dataset(cfg)
    assert "\n" not in str(err.value)


def test_errors_for_bad_files(tmp_path):
    one_line_error(FileNotFoundError, "prepare_data_h36m.*--data_dir", h36m_cfg(tmp_path / "missing"))
    np.savez(tmp_path / "data_3d_h36m.npz", poses=np.zeros(3))
    one_line_error(ValueError, "no 'positions_3d'", h36m_cfg(tmp_path))
    raw = write_npz(tmp_path / "data_3d_h36m.npz", TINY)
    raw["S1"]["Sit"][7, 3, 1] = np.nan
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d=raw)
    one_line_error(ValueError, "S1/Sit contains NaN", tiny_cfg(tmp_path))
    raw["S1"]["Sit"] = raw["S1"]["Sit 1"][:, :17]
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d=raw)
    one_line_error(ValueError, r"S1/Sit has shape \[280, 17, 3\]", tiny_cfg(tmp_path))


def test_errors_for_splits_that_give_no_window(tmp_path):
    write_npz(tmp_path / "data_3d_h36m.npz", {"S1": {"Walk": 100}, "S9": {"Walk": 200}, "S11": {"Walk": 90}})
    one_line_error(ValueError, "every training sequence .* shorter than a window of 125", tiny_cfg(tmp_path))
    one_line_error(ValueError, "no test window", h36m_cfg(tmp_path, train_splits=("S9",), test_splits=("S11",)))
    one_line_error(ValueError, "subject 'S7' is not in", h36m_cfg(tmp_path, train_splits=("S7",)))
    one_line_error(ValueError, "num_joints is 21 but h36m has 16", tiny_cfg(tmp_path, num_joints=21))


@pytest.mark.parametrize("row, match", [
    # rows that name nothing in the data
    ("S12,Walk,0,25,124", "line 3 .*'S12' is not in the test split"),
    ("S9,Run,0,25,124", "line 3 .*S9 has no sequence 'Run'"),
    ("S9,Walk,150,175,274", r"line 3 .*frames 150..274 lie outside the sequence's 200 frames"),
    ("S9,Walk,x,y,z", "line 3 .*pred_init 'y' is not an integer"),
    # rows that are not windows of this protocol (t_his, t_pred), or repeat one
    ("S9,Walk,25,50,99", r"line 3 .*pred_end 99 is not pred_init \+ t_pred - 1 = 149, the row is made for t_pred 50"),
    ("S9,Walk,30,50,149", r"line 3 .*init 30 is not pred_init - t_his = 25, the row is made for t_his 20"),
    ("S9,Walk,0,25,124", r"line 3 .*the same window as line 2; each window must be listed once"),
    ("S9,Walk,0,25,1e3", r"line 3 .*pred_end '1e3' is not an integer"),
])
def test_bad_segment_rows_are_refused_in_one_line(tmp_path, row, match):
    write_npz(tmp_path / "data_3d_h36m.npz", TINY)
    (tmp_path / "segments_test.csv").write_text(f"subject,action,init,pred_init,pred_end\nS9,Walk,0,25,124\n{row}\n")
    one_line_error(ValueError, match, tiny_cfg(tmp_path))


def test_mmapd_must_match_the_test_windows(tmp_path):
    write_npz(tmp_path / "data_3d_h36m.npz", TINY)
    (tmp_path / "mmapd_GT.csv").write_text("id,gt_APD\n0,1.5\n1,0.0\n")
    one_line_error(ValueError, "2 rows for 7 test windows", tiny_cfg(tmp_path))


def test_a_segments_file_of_another_t_pred_is_refused(tmp_path):
    write_npz(tmp_path / "data_3d_h36m.npz", TINY)
    (tmp_path / "segments_test.csv").write_text("subject,action,init,pred_init,pred_end\nS9,Walk,0,25,124\n")
    assert len(load_dataset(tiny_cfg(tmp_path)).test_windows) == 1
    one_line_error(ValueError, r"line 2 .*pred_end 124 is not pred_init \+ t_pred - 1 = 74, the row is made for "
                               r"t_pred 100", tiny_cfg(tmp_path, t_pred=50))


def test_classes_json_must_be_unambiguous(tmp_path):
    write_npz(tmp_path / "data_3d_h36m.npz", TINY)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": ["Walk", "Sit", "Walk"], "mean_motion_per_class": [0.1, 0.2, 0.3]}))
    one_line_error(ValueError, r"classes\.json: class 'Walk' is listed twice; list each class once", tiny_cfg(tmp_path))
    classes.write_text('{"classes": ["Walk", "Sit"], "classes": ["Sit", "Walk"]}')
    one_line_error(ValueError, r"classes\.json: key 'classes' appears twice in one object", tiny_cfg(tmp_path))
    classes.write_text('{"classes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_line_error(ValueError, r"classes\.json is nested too deeply to be the expected JSON", tiny_cfg(tmp_path))
    classes.write_text(json.dumps({"classes": ["Walk", "Sit"], "mean_motion_per_class": [0.25, None]}))
    ds = load_dataset(tiny_cfg(tmp_path))
    assert ds.classes == ["Walk", "Sit"] and ds.test_labels.tolist() == [0] * 4 + [1] * 3
    np.testing.assert_array_equal(ds.cmd_reference, [0.25, np.nan])
    for motion, shown in (("[-0.5, 0.2]", "-0.5"), ("[NaN, 0.2]", "nan"), ("[1e999, 0.2]", "inf"), ("[0, 0.2]", "0"),
                          ('["0.1", 0.2]', "'0.1'")):  # a reference is a positive number (m/frame) or null
        classes.write_text('{"classes": ["Walk", "Sit"], "mean_motion_per_class": ' + motion + "}")
        one_line_error(ValueError, rf"classes\.json: mean_motion_per_class holds {re.escape(shown)}; each class's mean "
                                   r"motion is a positive number", tiny_cfg(tmp_path))
    classes.write_text('{"classes": ["Walk", null]}')
    one_line_error(ValueError, r"classes\.json: every class must be a non-empty name", tiny_cfg(tmp_path))


def test_positions_must_be_metres(tmp_path):
    raw = write_npz(tmp_path / "data_3d_h36m.npz", TINY)
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d={**raw, "S9": {"Walk": (raw["S9"]["Walk"] * 1000)}})
    one_line_error(ValueError, r"S9/Walk has a joint \d+(\.\d+)? from the root, more than a body's 2\.5 m: positions "
                               r"must be in metres \(divide millimetres by 1000\)", tiny_cfg(tmp_path))
    millimetres = np.round(raw["S9"]["Walk"] * 1000).astype(np.int64)
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d={**raw, "S9": {"Walk": millimetres}})
    one_line_error(ValueError, r"S9/Walk holds int64 positions, expected floats in metres", tiny_cfg(tmp_path))
    tall = raw["S1"]["Sit"].copy()
    tall[5, 12] = tall[5, 0] + [0.0, 0.0, 2.49]  # the most a joint may lie from the root (float32 rounding aside)
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d={**raw, "S1": {**raw["S1"], "Sit": tall}})
    assert load_dataset(tiny_cfg(tmp_path)).train


def test_splits_are_named_once(tmp_path):
    write_npz(tmp_path / "data_3d_h36m.npz", TINY)
    one_line_error(ValueError, r"'S9' is listed twice in train_splits and test_splits: name each split once, and "
                               r"never train on a test split",
                   h36m_cfg(tmp_path, train_splits=("S1", "S9"), test_splits=("S9",)))
    one_line_error(ValueError, r"'S1' is listed twice in train_splits:", h36m_cfg(tmp_path, train_splits=("S1", "S1")))
    with pytest.raises(ValueError, match=r"splits \('train',\) cannot be loaded: use \('train', 'test'\) to train"):
        load_dataset(tiny_cfg(tmp_path), splits=("train",))


def test_an_npz_naming_a_member_twice_is_refused(tmp_path):
    import warnings
    import zipfile

    path = tmp_path / "data_3d_h36m.npz"
    write_npz(path, TINY)
    member = zipfile.ZipFile(path).read("positions_3d.npy")
    with zipfile.ZipFile(path, "a") as npz, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it writes
        npz.writestr("positions_3d.npy", member)
    one_line_error(ValueError, r"holds two members named 'positions_3d': it is damaged or forged", tiny_cfg(tmp_path))


# --- evaluation reads only the test split ----------------------------------------------------------

def evaluation_arrays(ds):
    return ds.test_windows, ds.test_labels, ds.cmd_reference, ds.mmapd


@pytest.mark.parametrize("protocol_files", [False, True])
def test_a_test_only_file_gives_the_test_protocol_of_the_full_file(tmp_path, protocol_files):
    raw = np.load(write_gsps(tmp_path / "full"), allow_pickle=True)["positions_3d"].item()
    write_gsps(tmp_path / "test_only", {s: raw[s] for s in ("S9", "S11")})
    if protocol_files:  # the same segments and mmapd files beside both
        for folder in ("full", "test_only"):
            (tmp_path / folder / "segments_test.csv").write_text(
                "subject,action,init,pred_init,pred_end\nS11,Eating 1,25,50,149\nS9,Walking 1,0,25,124\n")
            (tmp_path / folder / "mmapd_GT.csv").write_text("id,gt_APD\n0,1.5\n1,0.0\n")
    full = load_dataset(h36m_cfg(tmp_path / "full"))
    test = load_dataset(h36m_cfg(tmp_path / "test_only"), splits=("test",))
    assert test.classes == full.classes == ["Eating", "Walking"]
    assert [c.key for c in test.test] == [c.key for c in full.test]
    for ours, theirs in zip(evaluation_arrays(test), evaluation_arrays(full)):
        np.testing.assert_array_equal(ours, theirs)
    assert len(test.test_windows) == (2 if protocol_files else 8)
    assert test.train == test.val == [] and test.val_windows.shape == (0, 125, 17, 3) and len(test.val_labels) == 0
    # training needs (and checks) the training subjects
    one_line_error(ValueError, r"subject 'S1' is not in .* \(it has S9, S11\)", h36m_cfg(tmp_path / "test_only"))


def test_class_ids_come_from_the_test_subjects(tmp_path):
    lengths = {"S1": {"Walk 1": 300, "Run 1": 300, "Sit 1": 300}, "S9": {"Walk": 200, "Sit 3": 180}}
    raw = write_npz(tmp_path / "data_3d_h36m.npz", lengths)
    full = load_dataset(tiny_cfg(tmp_path))
    assert full.classes == ["Sit", "Walk", "Run"]  # a class only training has comes after the tested ones
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d={"S9": raw["S9"]})
    test = load_dataset(tiny_cfg(tmp_path), splits=("test",))
    assert test.classes == ["Sit", "Walk"]
    np.testing.assert_array_equal(test.test_windows, full.test_windows)
    np.testing.assert_array_equal(test.test_labels, full.test_labels)
    np.testing.assert_array_equal(test.cmd_reference, full.cmd_reference[:2])
    assert np.isnan(full.cmd_reference[2])


def test_offsets_from_a_distant_root_are_exact():
    """Joints are made relative to the root before rounding to float32: 3,000 km from the origin (float32
    steps of 0.25 m there) they keep their millimetres."""
    from spard.data.skeletons import root_relative

    body = np.random.default_rng(0).normal(0, 0.3, (5, 17, 3))
    got = root_relative(body + 3e6, "far away")
    np.testing.assert_allclose(got[:, 1:], body[:, 1:] - body[:, :1], atol=1e-6)
