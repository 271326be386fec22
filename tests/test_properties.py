"""Property-based tests: the readers and the API on random and malformed input either work or raise a
ValueError / FileNotFoundError whose message is one line, never another exception (docs/reliability.md)."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require

require("hypothesis")
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import H36M_SUBJECTS, tiny_config, write_gsps
from spard import checkpoints
from spard.api import Predictor
from spard.config import preset
from spard.data import load_dataset
from spard.data.dataset import Clip
from spard.data.h36m import read_positions
from spard.data.protocol import read_classes, read_mmapd, read_segments, segment_starts
from spard.model import SPARD

CUT = st.none() | st.integers(0, 10**6)  # None: the whole file
FLIPS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3)  # (offset, xor) byte changes
EXAMPLES = int(os.environ.get("SPARD_EXAMPLES", "40"))  # more for a thorough local run: SPARD_EXAMPLES=2000
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACCEPTED = (ValueError, FileNotFoundError)


def one_line(error: Exception) -> None:
    message = str(error)
    assert message and "\n" not in message, repr(message)


def attempt(function, *args):
    """`function(*args)`, or None when it refused with an accepted one-line error."""
    try:
        result = function(*args)
    except ACCEPTED as e:
        one_line(e)
        event(f"refused: {type(e).__name__}")
        return None
    event("worked")
    return result


def damage(content: bytes, cut: int | None, flips: list[tuple[int, int]]) -> bytes:
    """`content` cut at `cut` (None: whole), then byte `offset % length` xor-ed for each (offset, xor)."""
    damaged = bytearray(content if cut is None else content[: cut % (len(content) + 1)])
    for at, xor in flips:
        if damaged:
            damaged[at % len(damaged)] ^= xor
    return bytes(damaged)


def in_folder(files: dict[str, bytes]) -> tempfile.TemporaryDirectory:
    folder = tempfile.TemporaryDirectory()
    for name, content in files.items():
        (Path(folder.name) / name).write_bytes(content)
    return folder


# ------------------------------------------------------------------------------------------------
# GSPS npz files

floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
good_sequence = hnp.arrays(st.sampled_from([np.float32, np.float64]),  # every joint within 2.5 m of the root
                           st.tuples(st.integers(12, 40), st.just(32), st.just(3)),
                           elements=st.floats(-0.6875, 0.6875, width=32))
bad_sequence = st.one_of(
    hnp.arrays(np.float32, st.tuples(st.integers(0, 40), st.sampled_from([31, 17]), st.sampled_from([3, 2]))),
    hnp.arrays(st.sampled_from([np.int16, np.bool_, np.complex64, np.str_]), hnp.array_shapes(max_dims=3, max_side=4)),
    hnp.arrays(np.float32, (20, 32, 3), elements=floats),
    hnp.arrays(np.float64, (20, 32, 3), elements=st.floats(-1e300, 1e300)),  # finite, beyond float32
    hnp.arrays(st.sampled_from([np.float32, np.int32]), (20, 32, 3), elements=st.integers(-2000, 2000)),  # mm
    st.none(), st.text(max_size=3), st.integers(),
)
good_actions = st.dictionaries(st.sampled_from(["Walking 1", "Eating", "Sitting 2"]), good_sequence,
                               min_size=1, max_size=2)


@st.composite
def contents(draw):
    """A positions_3d dict: every subject with good sequences, then maybe one thing broken."""
    data = {s: draw(good_actions) for s in H36M_SUBJECTS}
    subject = draw(st.sampled_from(H36M_SUBJECTS))
    broken = draw(st.sampled_from(["nothing", "sequence", "subject", "missing", "whole"]))
    if broken == "sequence":
        data[subject][draw(st.sampled_from(["Walking 1", "Eating"]))] = draw(bad_sequence)
    elif broken == "subject":
        data[subject] = draw(st.one_of(st.dictionaries(st.text(max_size=3), bad_sequence, max_size=2), st.integers(),
                                       st.none()))
    elif broken == "missing":
        del data[subject]
    elif broken == "whole":
        data = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)))
    return data


SMALL = dataclasses.replace(preset("h36m").data, t_his=5, t_pred=10, val_fraction=0.2)


@SETTINGS
@given(contents())
def test_random_positions_load_or_say_why(positions):
    with tempfile.TemporaryDirectory() as folder:
        np.savez(Path(folder) / "data_3d_h36m.npz", positions_3d=np.array(positions, dtype=object))
        dataset = attempt(load_dataset, dataclasses.replace(SMALL, data_dir=folder))
    if dataset is not None:
        assert dataset.test_windows.shape[1:] == (15, 17, 3) and np.isfinite(dataset.test_windows).all()
        assert all(np.isfinite(clip.poses).all() for clip in dataset.train + dataset.val)


@pytest.fixture(scope="module")
def good_npz(tmp_path_factory) -> bytes:
    rng = np.random.default_rng(0)
    data = {s: {"Walking 1": rng.normal(size=(30, 32, 3))} for s in H36M_SUBJECTS}
    return write_gsps(tmp_path_factory.mktemp("npz"), data).read_bytes()


@SETTINGS
@given(cut=CUT, flips=FLIPS)
def test_damaged_npz_files_load_or_say_why(good_npz, cut, flips):
    with in_folder({"data_3d_h36m.npz": damage(good_npz, cut, flips)}) as folder:
        attempt(read_positions, Path(folder) / "data_3d_h36m.npz")


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_are_not_an_npz(content):
    with in_folder({"data_3d_h36m.npz": content}) as folder:
        attempt(read_positions, Path(folder) / "data_3d_h36m.npz")


# ------------------------------------------------------------------------------------------------
# protocol files

CLIPS = [Clip(("S9", "Walking 1"), 0, np.zeros((60, 17, 3), np.float32)),
         Clip(("S11", "Eating"), 1, np.zeros((40, 17, 3), np.float32))]
cell = st.one_of(st.sampled_from(["S9", "S11", "S3", "Walking 1", "Eating", "25", "0", "-5", "1e3", "", " 7"]),
                 st.integers(-100, 200).map(str), st.text(max_size=6))
header = st.one_of(st.just("subject,action,init,pred_init,pred_end"),
                   st.just("dataset,file,file_idx,pred_init,pred_end"), st.text(max_size=20))


@SETTINGS
@given(header, st.lists(st.lists(cell, min_size=0, max_size=6), max_size=6))
def test_segments_rows_parse_or_say_why(head, rows):
    text = "\n".join([head] + [",".join(row) for row in rows]) + "\n"
    with in_folder({"segments_test.csv": text.encode("utf-8", "surrogatepass")}) as folder:
        segments = attempt(read_segments, Path(folder) / "segments_test.csv")
    if segments is not None:
        starts = attempt(segment_starts, segments, CLIPS, 5, 15)
        assert starts is None or all(0 <= s and s + 15 <= len(CLIPS[c].poses) for c, s in starts)


@SETTINGS
@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.tuples(st.integers(-1, 5).map(str), st.one_of(cell, st.floats().map(str))), max_size=5)
                 .map(lambda rows: ("id,gt_APD\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode()),
                 st.lists(st.floats(0, 20), max_size=5)
                 .map(lambda values: ("id,gt_APD\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values))).encode())))
def test_mmapd_files_parse_or_say_why(content):
    with in_folder({"mmapd_GT.csv": content}) as folder:
        values = attempt(read_mmapd, Path(folder) / "mmapd_GT.csv")
    assert values is None or (np.isfinite(values).all() and (values >= 0).all())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)
motions = st.lists(st.none() | st.floats() | st.integers(), max_size=4)
classes_specs = st.one_of(json_values, st.fixed_dictionaries(
    {"classes": st.one_of(st.lists(st.text(max_size=4), max_size=4), json_values)},
    optional={"mean_motion_per_class": st.one_of(motions, json_values)}))


@SETTINGS
@given(st.one_of(classes_specs.map(lambda spec: json.dumps(spec).encode()), st.binary(max_size=50)))
def test_classes_json_parses_or_says_why(content):
    with in_folder({"classes.json": content}) as folder:
        result = attempt(read_classes, Path(folder) / "classes.json")
    if result is not None:
        assert len(result[0]) == len(result[1])


# ------------------------------------------------------------------------------------------------
# zarr stores (AMASS)

@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None)
@given(st.one_of(hnp.arrays(st.sampled_from([np.float32, np.float64]),
                            st.tuples(st.integers(1, 60), st.just(22), st.just(3))),
                 hnp.arrays(st.sampled_from([np.float32, np.int32]), hnp.array_shapes(max_dims=4, max_side=25))),
       st.one_of(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=3)
                 .map(lambda pairs: np.array([sorted(p) for p in pairs], np.int64)),
                 hnp.arrays(np.int64, st.tuples(st.integers(1, 3), st.sampled_from([2, 3])),
                            elements=st.integers(-5, 60))))
def test_zarr_stores_load_or_say_why(poses, index):
    zarr = require("zarr", "pip install -e .")
    from spard.data.amass import read_dataset

    with tempfile.TemporaryDirectory() as root:
        for name, values in (("poses.zarr", poses), ("poses_index.zarr", index)):
            z = zarr.open_array(str(Path(root) / "ACCAD" / name), mode="w", shape=values.shape, dtype=values.dtype,
                                zarr_format=2, config={"write_empty_chunks": True})  # zeros are data here
            z[:] = values
        clips = attempt(read_dataset, Path(root), "ACCAD")
    assert clips is None or all(poses.shape[1:] == (22, 3) for _, poses in clips)


class Evil:
    """Unpickling this creates `marker`: what a store whose metadata asks for pickle would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


sizes = st.lists(st.integers(-1, 12), max_size=3)
zarray = st.fixed_dictionaries({
    "zarr_format": st.sampled_from([2, 3, "2"]), "shape": sizes, "chunks": sizes,
    "dtype": st.sampled_from(["<f4", "<f8", "<i8", "|O", "<U3", "|V8", "<M8[s]", "bogus", 1]),
    "compressor": st.none() | st.fixed_dictionaries({"id": st.sampled_from(["zstd", "blosc", "pickle", "x"])}),
    "filters": st.none() | st.lists(st.fixed_dictionaries({"id": st.sampled_from(["pickle", "delta"])}), max_size=2),
    "order": st.sampled_from(["C", "F", "X"]), "fill_value": st.sampled_from([0, None, "NaN", 1.5]),
}, optional={"dimension_separator": st.sampled_from([".", "/", "", "x"])})
codec = st.sampled_from(["bytes", "zstd", "numcodecs.pickle", "vlen-utf8", "sharding_indexed"]).map(
    lambda name: {"name": name, "configuration": {"endian": "little"} if name == "bytes" else {}})
zarr_json = st.fixed_dictionaries({
    "zarr_format": st.sampled_from([3, 2]), "node_type": st.sampled_from(["array", "group"]), "shape": sizes,
    "data_type": st.sampled_from(["float32", "int64", "bool", "string", "complex64", "object"]),
    "chunk_grid": st.fixed_dictionaries({"name": st.sampled_from(["regular", "rectilinear"]),
                                         "configuration": st.fixed_dictionaries({"chunk_shape": sizes})}),
    "chunk_key_encoding": st.fixed_dictionaries({"name": st.sampled_from(["default", "v2", "x"])}),
    "codecs": st.lists(codec, max_size=3), "fill_value": st.sampled_from([0, None, "NaN"]),
})
metadata = st.one_of(zarray.map(lambda d: (".zarray", d)), zarr_json.map(lambda d: ("zarr.json", d)),
                     json_values.map(lambda d: (".zarray", d)))


@SETTINGS
@given(metadata, st.sampled_from([[], ["0"], ["0.0", "1.0"], ["0/0", "1/0"], ["c/0/0", "c/1/0"], ["c"]]),
       st.sampled_from(["evil", "bytes"]))
def test_zarr_metadata_is_refused_or_read_and_never_runs_code(meta, chunks, payload):
    from spard.data.files import open_zarr

    with tempfile.TemporaryDirectory() as folder:
        store, marker = Path(folder) / "a.zarr", Path(folder) / "PWNED"
        for key in chunks:
            (store / key).parent.mkdir(parents=True, exist_ok=True)
            content = pickle.dumps(np.array([Evil(marker)], dtype=object)) if payload == "evil" else b"\x00" * 8
            (store / key).write_bytes(content)
        store.mkdir(exist_ok=True)
        (store / meta[0]).write_text(json.dumps(meta[1]))
        values = attempt(lambda: open_zarr(store, "fix it").read("fix it"))
        assert not marker.exists()
    assert values is None or values.dtype.kind in "biuf"


# ------------------------------------------------------------------------------------------------
# checkpoints

@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    checkpoints.save_checkpoint(path, SPARD(tiny_config()), "np")
    return path.read_bytes()


@SETTINGS
@given(cut=CUT, flips=FLIPS)
def test_damaged_checkpoints_load_or_say_why(good_checkpoint, cut, flips):
    with in_folder({"ckpt.pt": damage(good_checkpoint, cut, flips)}) as folder:
        attempt(checkpoints.load_model, Path(folder) / "ckpt.pt")


# ------------------------------------------------------------------------------------------------
# the Python API

@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor(SPARD(tiny_config()), "np")  # t_his 25, 17 joints (root included), K = 5


histories = st.one_of(
    hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64, np.longdouble]),
               st.tuples(st.integers(25, 30), st.just(17), st.just(3)), elements=st.floats(-3, 3, width=16)),
    hnp.arrays(st.sampled_from([np.float32, np.float64]),
               st.tuples(st.integers(20, 30), st.sampled_from([17, 16]), st.sampled_from([3, 2]))),
    hnp.arrays(np.float32, st.tuples(st.integers(0, 2), st.just(25), st.just(17), st.just(3)), elements=floats),
    hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(max_dims=5, max_side=5)),
    st.lists(st.floats(), max_size=3), st.none(), st.text(max_size=3),
)


@settings(max_examples=EXAMPLES * 3 // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, st.one_of(st.integers(1, 5), st.integers(-1, 7), st.floats(0, 3), st.none()), st.booleans())
def test_predict_works_or_says_why(predictor, history, num_samples, as_tensor):
    if as_tensor and isinstance(history, np.ndarray) and history.dtype in (np.float16, np.float32, np.float64):
        history = torch.from_numpy(history)
    out = attempt(lambda: predictor.predict(history, num_samples))
    if out is not None:
        batch = history.shape[0] if history.ndim == 4 else 1
        assert tuple(out.shape) == (batch, num_samples, 100, 17, 3) and type(out) is type(history)
        assert out.dtype == history.dtype
