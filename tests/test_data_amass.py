"""AMASS reader on small zarr v2 stores in BeLFusion's layout, and the AMASS protocol files."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO, require, shared_path

from spard.config import preset
from spard.data import AMASS, load_dataset
from spard.data.amass import AMASS_CMD_REFERENCE, read_dataset
from spard.data.files import open_zarr
from spard.data.protocol import read_mmapd, read_segments

zarr = require("zarr", "pip install -e . (zarr>=3.1, numcodecs>=0.16.6)")


def write_array(path, values, chunks):
    z = zarr.open_array(str(path), mode="w", shape=values.shape, chunks=chunks, dtype=values.dtype, zarr_format=2)
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


# --- stores are checked before anything is decoded ------------------------------------------------

class Evil:
    """Unpickling this creates a marker file: what a pickle codec would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def edit_metadata(store, **changes):
    """Change keys of a v2 store's .zarray (or of a v3 store's zarr.json)."""
    path = store / (".zarray" if (store / ".zarray").is_file() else "zarr.json")
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("changes, match", [
    (dict(filters=[{"id": "pickle", "protocol": 4}], compressor=None),
     r"it declares filters \['pickle'\] \(pickle and object codecs can run code\)"),
    (dict(dtype="|O", filters=None, compressor=None), r"dtype object is not a plain number type"),
    (dict(compressor={"id": "pickle"}), r"compressor 'pickle' is not one of blosc, zstd, gzip, zlib, lz4, bz2, lzma"),
])
def test_a_store_asking_for_pickle_is_refused_unread(stores, monkeypatch, changes, match):
    import numcodecs.pickles

    monkeypatch.setattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True)  # as an old numcodecs would
    root, _ = stores
    marker = root / "PWNED"
    store = root / "ACCAD" / "poses.zarr"
    edit_metadata(store, **changes)
    for chunk in ("0.0.0", "1.0.0"):
        (store / chunk).write_bytes(pickle.dumps(np.array([Evil(marker)], dtype=object)))
    with pytest.raises(ValueError, match=f"ACCAD/poses.zarr: {match}; spard reads only plain numeric zarr arrays, "
                                         "checked before any chunk is decoded: prepare AMASS") as err:
        load_dataset(amass_cfg(root))
    assert "\n" not in str(err.value) and not marker.exists()


def test_the_installed_numcodecs_refuses_to_unpickle(tmp_path):
    import numcodecs
    from numcodecs.errors import UnsafeDecodeError

    marker = tmp_path / "PWNED"
    with pytest.raises(UnsafeDecodeError):
        numcodecs.Pickle().decode(pickle.dumps(np.array([Evil(marker)], dtype=object)))
    assert not marker.exists()


def test_zarr_v3_stores_read_and_their_codecs_are_checked(tmp_path):
    rng = np.random.default_rng(0)
    poses = np.cumsum(rng.normal(0, 0.01, (300, 22, 3)), axis=0).astype(np.float32)
    for name, values in (("poses.zarr", poses), ("poses_index.zarr", np.array([[0, 300]]))):
        z = zarr.open_array(str(tmp_path / "ACCAD" / name), mode="w", shape=values.shape, dtype=values.dtype,
                            chunks=(100,) + values.shape[1:], zarr_format=3)
        z[:] = values
    (clip,) = read_dataset(tmp_path, "ACCAD")
    np.testing.assert_allclose(clip[1][:, 1:], poses[:, 1:] - poses[:, :1], atol=1e-6)
    store = tmp_path / "ACCAD" / "poses.zarr"
    codecs = json.loads((store / "zarr.json").read_text())["codecs"]
    edit_metadata(store, codecs=[*codecs, {"name": "numcodecs.pickle"}])
    with pytest.raises(ValueError, match=r"codec 'numcodecs\.pickle' is not one of bytes, transpose, blosc"):
        read_dataset(tmp_path, "ACCAD")
    edit_metadata(store, codecs=[{"name": "sharding_indexed", "configuration": {"codecs": codecs}}])
    with pytest.raises(ValueError, match=r"codec 'sharding_indexed' is not one of"):
        read_dataset(tmp_path, "ACCAD")


def test_a_missing_chunk_is_refused_not_read_as_zeros(tmp_path):
    write_dataset(tmp_path, "ACCAD", [400, 1200, 90])  # poses in chunks of 1000 rows: 0.0.0 and 1.0.0
    (tmp_path / "ACCAD" / "poses.zarr" / "1.0.0").unlink()
    with pytest.raises(ValueError, match=r"ACCAD/poses\.zarr is incomplete: chunk '1\.0\.0' of 2 is missing and would "
                                         r"read as zeros; copy or convert the store again"):
        read_dataset(tmp_path, "ACCAD")
    nested = tmp_path / "nested"  # the same with '/' as separator
    write_array(nested, np.ones((30, 2), np.int64), (10, 2))
    edit_metadata(nested, dimension_separator="/")
    for key in ("0.0", "1.0", "2.0"):
        (nested / key.replace(".", "/")).parent.mkdir(exist_ok=True)
        (nested / key).rename(nested / key.replace(".", "/"))
    np.testing.assert_array_equal(open_zarr(nested, "").read(""), np.ones((30, 2)))
    (nested / "2" / "0").unlink()
    with pytest.raises(ValueError, match=r"chunk '2/0' of 3 is missing"):
        open_zarr(nested, "").read("")


def test_integer_or_millimetre_poses_are_refused(tmp_path):
    world = write_dataset(tmp_path, "ACCAD", [200])[0]
    write_array(tmp_path / "ACCAD" / "poses.zarr", world * 1000, (1000, 22, 3))
    with pytest.raises(ValueError, match=r"ACCAD/poses\.zarr file_idx 0 has a joint .* more than a body's 2\.5 m"):
        read_dataset(tmp_path, "ACCAD")
    write_array(tmp_path / "ACCAD" / "poses.zarr", (world * 1000).astype(np.int32), (1000, 22, 3))
    with pytest.raises(ValueError, match=r"ACCAD/poses\.zarr holds int32 values, expected floats"):
        read_dataset(tmp_path, "ACCAD")


def test_metadata_that_is_not_json_or_too_deep_gives_one_line(tmp_path):
    write_array(tmp_path / "a.zarr", np.ones((3, 2)), (3, 2))
    for text, match in (("[" * 100_000, "nested too deeply"), ("{'zarr_format': 2", "is not valid JSON"),
                        ('{"zarr_format": 2, "zarr_format": 3}', "key 'zarr_format' appears twice")):
        (tmp_path / "a.zarr" / ".zarray").write_text(text)
        with pytest.raises(ValueError, match=match) as err:
            open_zarr(tmp_path / "a.zarr", "fix it")
        assert "\n" not in str(err.value)


def test_a_test_only_folder_gives_the_test_protocol_of_the_full_folder(stores):
    root, _ = stores
    (root / "segments_test.csv").write_text("dataset,file,file_idx,pred_init,pred_end\nGRAB,a,0,180,299\n"
                                            "DFaust,b,0,300,419\n")
    full = load_dataset(amass_cfg(root))
    for name in ("ACCAD", "CMU"):
        shutil.rmtree(root / name)
    test = load_dataset(amass_cfg(root), splits=("test",))
    assert test.classes == full.classes and test.train == test.val == []
    for field in ("test_windows", "test_labels", "cmd_reference"):
        np.testing.assert_array_equal(getattr(test, field), getattr(full, field))
    with pytest.raises(FileNotFoundError, match="ACCAD/poses.zarr not found"):
        load_dataset(amass_cfg(root))


@pytest.mark.parametrize("rows", [[[0, 200], [0, 200]], [[0, 150], [100, 200]], [[100, 200], [0, 120]]])
def test_files_that_share_rows_are_refused(tmp_path, rows):
    """Each file's rows are its own: a file listed twice, or two overlapping ranges, would count motion twice."""
    write_dataset(tmp_path, "ACCAD", [200])
    write_array(tmp_path / "ACCAD" / "poses_index.zarr", np.array(rows, dtype=np.int64), (1000, 2))
    with pytest.raises(ValueError, match=r"poses_index\.zarr: files 0 and 1 share rows of poses\.zarr"):
        read_dataset(tmp_path, "ACCAD")
