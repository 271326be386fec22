"""AMASS reader on small zarr v2 stores in BeLFusion's layout, and the AMASS protocol files."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO, require, shared_path

from spard.config import preset
from spard.data import AMASS, load_dataset
from spard.data.amass import AMASS_CMD_REFERENCE
from spard.data.protocol import read_mmapd, read_segments

zarr = require("zarr", "pip install -e .")


def write_array(path, values, chunks):
    v2 = {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}
    z = zarr.open_array(str(path), mode="w", shape=values.shape, chunks=chunks, dtype=values.dtype, **v2)
    z[:] = values


def write_dataset(root, name, lengths, seed=0):
    """`<root>/<name>/{poses,trans,poses_index}.zarr` as BeLFusion writes them; returns the world positions."""
    rng = np.random.default_rng(seed)
    poses = np.cumsum(rng.normal(0, 0.01, (sum(lengths), 22, 3)), axis=0).astype(np.float32)  # [F, 22, 3]
    ends = np.cumsum(lengths)
    index = np.stack([ends - lengths, ends], axis=1).astype(np.int64)  # [n, 2]
    (root / name).mkdir(parents=True)
    write_array(root / name / "poses.zarr", poses, (1000, 22, 3))
    write_array(root / name / "trans.zarr", poses[:, 0], (1000, 3))
    write_array(root / name / "poses_index.zarr", index, (1000, 2))
    return [poses[s:e] for s, e in index]


def amass_cfg(root, **overrides):
    splits = dict(train_splits=("ACCAD", "CMU"), test_splits=("DFaust", "GRAB"))
    return replace(preset("amass").data, data_dir=str(root), **splits, **overrides)


@pytest.fixture
def stores(tmp_path):
    files = {name: write_dataset(tmp_path, name, lengths, seed)
             for seed, (name, lengths) in enumerate({"ACCAD": [400, 1200, 90], "CMU": [300, 500],
                                                     "DFaust": [420, 100], "GRAB": [700]}.items())}
    return tmp_path, files


def test_reads_clips_root_relative_with_dataset_classes(stores):
    root, files = stores
    ds = load_dataset(amass_cfg(root, val_fraction=0))
    assert ds.skeleton is AMASS and ds.skeleton.num_joints == 21
    assert ds.classes == ["DFaust", "GRAB", "ACCAD", "CMU"]  # test datasets first: the published CMD ids
    np.testing.assert_array_equal(ds.cmd_reference[:2], [AMASS_CMD_REFERENCE[0], AMASS_CMD_REFERENCE[2]])
    assert np.isnan(ds.cmd_reference[2:]).all()
    assert [c.key for c in ds.train] == [("ACCAD", "0"), ("ACCAD", "1"), ("CMU", "0"), ("CMU", "1")]  # ACCAD 2: short
    assert [c.label for c in ds.train] == [2, 2, 3, 3]
    world = files["ACCAD"][1]
    np.testing.assert_array_equal(ds.train[1].poses[:, 0], world[:, 0])
    np.testing.assert_allclose(ds.train[1].poses[:, 1:], world[:, 1:] - world[:, :1], atol=1e-6)
    assert ds.train[1].poses.dtype == np.float32
    # no segments file: the published rule, every t_his = 30 frames while 150 frames fit
    assert len(ds.test_windows) == len(range(0, 420 - 149, 30)) + len(range(0, 700 - 149, 30))
    assert "skipped 1 train sequences shorter than 150 frames" in " | ".join(ds.notes)


def test_segments_csv_with_file_idx(stores):
    root, files = stores
    rows = ["dataset,file,file_idx,pred_init,pred_end", "GRAB,s1_apple,0,180,299", "DFaust,50002_hips,0,300,419",
            "GRAB,s1_apple,0,540,659"]
    (root / "segments_test.csv").write_text("\n".join(rows))  # no newline after the last row, as published
    (root / "mmapd_GT.csv").write_text("id,gt_APD\n0,0.0\n1,9.5\n2,7.25\n")
    ds = load_dataset(amass_cfg(root))
    assert ds.test_labels.tolist() == [1, 0, 1]
    world = files["DFaust"][0][270:420]  # observation starts at pred_init - 30
    np.testing.assert_allclose(ds.test_windows[1, :, 1:], world[:, 1:] - world[:, :1], atol=1e-6)
    np.testing.assert_array_equal(ds.mmapd, [0.0, 9.5, 7.25])


def test_segment_row_naming_a_missing_file(stores):
    root, _ = stores
    (root / "segments_test.csv").write_text("dataset,file,file_idx,pred_init,pred_end\nGRAB,s1_apple,3,180,299\n")
    with pytest.raises(ValueError, match="segments_test.csv line 2 .*GRAB has no sequence '3'"):
        load_dataset(amass_cfg(root))


def test_missing_store_says_how_to_prepare(stores):
    root, _ = stores
    with pytest.raises(FileNotFoundError, match="BeLFusion"):
        load_dataset(replace(amass_cfg(root), train_splits=("ACCAD", "KIT")))
    with pytest.raises(FileNotFoundError, match="--data_dir"):
        load_dataset(amass_cfg(root / "nowhere"))


def test_wrong_joint_count(tmp_path):
    (tmp_path / "ACCAD").mkdir()
    write_array(tmp_path / "ACCAD" / "poses.zarr", np.zeros((200, 24, 3), np.float32), (1000, 24, 3))
    write_array(tmp_path / "ACCAD" / "poses_index.zarr", np.array([[0, 200]]), (1000, 2))
    with pytest.raises(ValueError, match=r"shape \[200, 24, 3\], expected \[F, 22, 3\]"):
        load_dataset(amass_cfg(tmp_path))


def test_zarr_is_imported_only_when_reading_amass():
    code = "import sys, spard.data; assert 'zarr' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_published_amass_protocol_files_parse():
    folder = shared_path("data", "protocol", "amass")
    rows = read_segments(folder / "segments_test.csv")
    assert len(rows) == 12727
    assert (rows[0].key, rows[0].pred_init) == (("Transitions", "0"), 180)
    assert (rows[-1].key, rows[-1].pred_init) == (("SOMA", "68"), 540)
    mmapd = read_mmapd(folder / "mmapd_GT.csv")
    assert mmapd.shape == (12727,) and (mmapd == 0).sum() == 4365
