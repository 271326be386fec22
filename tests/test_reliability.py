"""Trustworthy under bad input and faults (docs/reliability.md).

Every bad input gives one line on stderr starting with `error:`, exit status 2, no traceback, and
leaves every file as it was. Checkpoints never run code when loaded, damaged ones give a clear error,
and a failed save (disk full) keeps the previous checkpoint.

The CLI cases run `main()` in this process (the entry point `h36m_main.py` calls; a few also run as
real processes below) on small synthetic data, so the whole table takes seconds.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import REPO, published_np, require, smooth_motion, tiny_config, write_gsps
from spard import checkpoints
from spard.api import Predictor
from spard.checkpoints import CheckpointError
from spard.cli import main
from spard.model import SPARD

TINY = ["--latent_dims", "16", "--ff_size", "32", "--num_layers", "2", "--num_heads", "2", "--gcn_linear_size", "8",
        "--gcn_layers", "1", "--np_gcn_linear_size", "8", "--np_gcn_layers", "1", "--np_k", "6"]
FAST = ["--device", "cpu", "--no_progress", "--val_fraction", "0.3", "--batch_size", "32", "--num_epoch", "1",
        "--stride", "50", "--num_samples", "2", "--div_k", "2", "--metrics_epoch", "0", *TINY]


class Evil:
    """Unpickling this runs a shell command: the attack a checkpoint or data file from a stranger can carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ------------------------------------------------------------------------------------------------
# inputs: good data and checkpoints, then one damaged input per case

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """`data/` (good synthetic data), `ckpt/` (checkpoints of each kind), `work/` (where commands run)."""
    root = tmp_path_factory.mktemp("reliability")
    write_gsps(root / "data")
    (root / "work").mkdir()
    ck = root / "ckpt"
    torch.manual_seed(0)
    model = SPARD(tiny_config())
    for stage in ("base", "distill", "np"):
        checkpoints.save_checkpoint(ck / f"{stage}.pt", model, stage)
    checkpoints.save_checkpoint(ck / "amass.pt", SPARD(tiny_config("amass")), "base")
    den, npr = checkpoints.to_published(model)
    torch.save(den, ck / "published_spard.pt")
    torch.save(npr, ck / "published_np.pt")
    torch.save({"model": Evil(root / "work" / "PWNED")}, ck / "evil.pt")
    good = (ck / "base.pt").read_bytes()
    (ck / "truncated.pt").write_bytes(good[: len(good) // 2])
    (ck / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (ck / "empty.pt").write_bytes(b"")
    (root / "file").write_text("a regular file, not a folder\n")
    return root


def tree(root: Path) -> dict[str, str]:
    """Every path under `root` with a digest of its content ('dir' for folders)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def positions(frames: int = 300, joints: int = 32, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {s: {a: smooth_motion(rng, frames if s not in ("S9", "S11") else 150, joints)
                for a in ("Walking 1", "Eating 1")} for s in ("S1", "S5", "S6", "S7", "S8", "S9", "S11")}


def with_value(value) -> Callable[[Path], None]:
    def prepare(folder: Path) -> None:
        data = positions()
        data["S5"]["Eating 1"][40, 3, 1] = value
        write_gsps(folder, data)
    return prepare


def write(name: str, content: str | bytes, data: bool = True) -> Callable[[Path], None]:
    """A case folder with good data (when `data`) and one extra file."""
    def prepare(folder: Path) -> None:
        if data:
            write_gsps(folder)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return prepare


def zarr_store(poses: np.ndarray) -> Callable[[Path], None]:
    """An AMASS folder whose first sub-dataset (ACCAD) has `poses` as poses.zarr."""
    def prepare(folder: Path) -> None:
        zarr = require("zarr", "pip install -e .")
        v2 = {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}
        for name, values in (("poses.zarr", poses), ("poses_index.zarr", np.array([[0, len(poses)]]))):
            z = zarr.open_array(str(folder / "ACCAD" / name), mode="w", shape=values.shape, dtype=values.dtype, **v2)
            z[:] = values
    return prepare


def amass_store(damage: Callable[[Path, Path], None]) -> Callable[[Path], None]:
    """An AMASS folder whose first sub-dataset (ACCAD) holds good stores, chunks of 100 rows, then `damage(store,
    marker)` is applied to its poses.zarr."""
    def prepare(folder: Path) -> None:
        zarr = pytest.importorskip("zarr")
        poses = smooth_motion(np.random.default_rng(0), 300, 22).astype(np.float32)
        for name, values in (("poses.zarr", poses), ("poses_index.zarr", np.array([[0, 300]]))):
            z = zarr.open_array(str(folder / "ACCAD" / name), mode="w", shape=values.shape, dtype=values.dtype,
                                chunks=(100,) + values.shape[1:], zarr_format=2)
            z[:] = values
        damage(folder / "ACCAD" / "poses.zarr", folder / "PWNED")
    return prepare


def pickle_filter(store: Path, marker: Path) -> None:
    """The store's metadata asks for a pickle filter, and its chunks are pickles that run a command."""
    meta = json.loads((store / ".zarray").read_text())
    (store / ".zarray").write_text(json.dumps({**meta, "filters": [{"id": "pickle"}], "compressor": None}))
    for chunk in ("0.0.0", "1.0.0", "2.0.0"):
        (store / chunk).write_bytes(pickle.dumps(np.array([Evil(marker)], dtype=object)))


def scaled(factor: float, dtype=None) -> Callable[[Path], None]:
    """Good data with every position multiplied by `factor` (and cast to `dtype`)."""
    def prepare(folder: Path) -> None:
        write_gsps(folder, {s: {a: (v * factor).astype(dtype or v.dtype) for a, v in acts.items()}
                            for s, acts in positions().items()})
    return prepare


SEGMENTS = "subject,action,init,pred_init,pred_end\n"
EVAL = ["--mode", "eval", "--cfg", "h36m", *FAST]
TRAIN = ["--mode", "train", "--cfg", "h36m", *FAST]


@dataclass
class Case:
    id: str
    argv: list[str]  # {data} {case} {ckpt} {root} are filled in; {data} is the good data unless `prepare` writes {case}
    message: str  # regex the one-line message must match
    prepare: Callable[[Path], None] | None = None  # writes the case's input files into {case}


CASES = [
    # --- data files and folders
    Case("missing data folder", [*TRAIN, "--data_dir", "{root}/nowhere"],
         r"nowhere/data_3d_h36m\.npz not found: prepare it with VideoPose3D's data/prepare_data_h36m\.py"),
    Case("folder without the data file", [*TRAIN, "--data_dir", "{case}"], r"data_3d_h36m\.npz not found: prepare it",
         lambda f: None),
    Case("missing AMASS folder", ["--mode", "train", "--cfg", "amass", *FAST, "--data_dir", "{root}/nowhere"],
         r"AMASS folder .*nowhere not found: prepare AMASS with BeLFusion's preprocessing"),
    Case("npz without positions_3d", [*TRAIN, "--data_dir", "{case}"],
         r"has no 'positions_3d' \(keys: poses\): it is not a GSPS-format file; prepare it",
         lambda f: np.savez(f / "data_3d_h36m.npz", poses=np.zeros(3))),
    Case("corrupt npz (random bytes)", [*TRAIN, "--data_dir", "{case}"], r"is corrupt or truncated .*convert it again",
         lambda f: (f / "data_3d_h36m.npz").write_bytes(np.random.default_rng(1).bytes(5000))),
    Case("truncated npz", [*TRAIN, "--data_dir", "{case}"], r"is corrupt or truncated .*convert it again",
         lambda f: (f / "data_3d_h36m.npz").write_bytes(write_gsps(f).read_bytes()[:20000])),
    Case("npz whose pickle would run code", [*TRAIN, "--data_dir", "{case}"],
         r"refusing to unpickle positions_3d \(it holds posix\.system, which could run code\)",
         lambda f: np.savez(f / "data_3d_h36m.npz", positions_3d=np.array(Evil(f.parents[1] / "work" / "PWNED")))),
    Case("positions_3d not a dict", [*TRAIN, "--data_dir", "{case}"],
         r"positions_3d is a float64 array of shape \[4, 32, 3\], expected a dict subject -> action",
         lambda f: np.savez(f / "data_3d_h36m.npz", positions_3d=np.zeros((4, 32, 3)))),
    Case("NaN in positions", [*TRAIN, "--data_dir", "{case}"],
         r"S5/Eating 1 contains NaN or inf positions: repair or drop this sequence", with_value(np.nan)),
    Case("inf in positions", [*TRAIN, "--data_dir", "{case}"],
         r"S5/Eating 1 contains NaN or inf positions", with_value(np.inf)),
    Case("wrong joint count", [*TRAIN, "--data_dir", "{case}"],
         r"S1/Walking 1 has shape \[300, 17, 3\], expected \[L, 32, 3\] \(the 32 Human3\.6M joints\); convert the data",
         lambda f: write_gsps(f, positions(joints=17))),
    Case("positions that are not numbers", [*TRAIN, "--data_dir", "{case}"],
         r"S1/Walking 1 holds <U1, expected a float array \[L, 32, 3\]",
         lambda f: write_gsps(f, {"S1": {"Walking 1": np.full((300, 32, 3), "x")}})),
    Case("missing test subject", [*TRAIN, "--data_dir", "{case}"],
         r"subject 'S11' is not in .* \(it has S1, S5, S6, S7, S8, S9\): fix train_splits/test_splits",
         lambda f: write_gsps(f, {s: acts for s, acts in positions().items() if s != "S11"})),
    Case("every sequence shorter than a window", [*TRAIN, "--data_dir", "{case}"],
         r"no test window of 125 frames \(t_his 25 \+ t_pred 100\) in test splits .*: check test_splits, t_his/t_pred",
         lambda f: write_gsps(f, {s: {a: v[:100] for a, v in acts.items()} for s, acts in positions().items()})),
    Case("every training sequence shorter than a window", [*TRAIN, "--data_dir", "{case}"],
         r"every training sequence of .* is shorter than a window of 125 frames .*: lower t_his/t_pred",
         lambda f: write_gsps(f, positions(frames=100))),
    Case("empty test split", [*TRAIN, "--data_dir", "{case}"], r"no test window of 125 frames",
         lambda f: write_gsps(f, {**positions(), "S9": {}, "S11": {}})),
    Case("stride larger than the training windows", [*TRAIN, "--data_dir", "{data}", "--stride", "100000"],
         r"training windows of 125 frames, fewer than stride 100000: no item to train on; lower --stride"),
    # --- protocol files
    Case("segments CSV: unknown subject", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"segments_test\.csv line 2 \(subject S3, action Walking 1\): 'S3' is not in the test split \(S9, S11\); "
         r"fix the row",
         write("segments_test.csv", SEGMENTS + "S3,Walking 1,0,25,124\n")),
    Case("segments CSV: unknown action", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"line 2 \(subject S9, action Jumping 1\): S9 has no sequence 'Jumping 1'; fix the row, or give the segments",
         write("segments_test.csv", SEGMENTS + "S9,Jumping 1,0,25,124\n")),
    Case("segments CSV: frames out of range", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"line 3 \(subject S9, action Walking 1\): frames 100\.\.224 lie outside the sequence's 150 frames; "
         r"fix the row",
         write("segments_test.csv", SEGMENTS + "S9,Walking 1,0,25,124\nS9,Walking 1,100,125,224\n")),
    Case("segments CSV: wrong header", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"header 'who,what' is not a segments file header; expected subject,action,init,pred_init,pred_end",
         write("segments_test.csv", "who,what\nS9,Walking 1\n")),
    Case("segments CSV: not an integer", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"line 2 \(subject S9, action Walking 1\): pred_init 'soon' is not an integer; fix the row",
         write("segments_test.csv", SEGMENTS + "S9,Walking 1,0,soon,124\n")),
    Case("segments CSV: binary garbage", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"segments_test\.csv is not a readable CSV text file",
         write("segments_test.csv", b"subject,action,init\n\xff\xfe\x00garbage\n")),
    Case("missing segments file given", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt",
                                         "--segments", "{root}/nowhere.csv"],
         r"nowhere\.csv not found: fix the path given for segments_test\.csv, or leave it unset"),
    Case("missing mmapd_GT.csv given", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt",
                                        "--mmapd", "{root}/nowhere.csv"],
         r"nowhere\.csv not found: fix the path given for mmapd_GT\.csv, or leave it unset"),
    Case("malformed mmapd_GT.csv: header", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"mmapd_GT\.csv: expected the header id,gt_APD; give the mmapd_GT\.csv of this protocol, or none",
         write("mmapd_GT.csv", "window,apd\n0,1.0\n")),
    Case("malformed mmapd_GT.csv: value", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"mmapd_GT\.csv line 3: expected '1,<gt_APD >= 0>', got '1,nan'",
         write("mmapd_GT.csv", "id,gt_APD\n0,1.5\n1,nan\n")),
    Case("mmapd_GT.csv of other segments", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"mmapd_GT\.csv has 2 rows for 8 test windows: give the mmapd file of these segments, or none",
         write("mmapd_GT.csv", "id,gt_APD\n0,1.5\n1,2.5\n")),
    Case("malformed classes.json", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"classes\.json is not valid JSON .*; fix it or remove the file", write("classes.json", "{'classes': [")),
    Case("zarr store with wrong shapes", ["--mode", "train", "--cfg", "amass", *FAST, "--data_dir", "{case}"],
         r"ACCAD/poses\.zarr has shape \[200, 21, 3\], expected \[F, 22, 3\] \(the 22 SMPL body joints\)",
         zarr_store(np.zeros((200, 21, 3), np.float32))),
    Case("zarr store of integers", ["--mode", "train", "--cfg", "amass", *FAST, "--data_dir", "{case}"],
         r"ACCAD/poses\.zarr holds int32 values, expected floats", zarr_store(np.zeros((200, 22, 3), np.int32))),
    Case("zarr store whose metadata asks for pickle",
         ["--mode", "train", "--cfg", "amass", *FAST, "--data_dir", "{case}"],
         r"ACCAD/poses\.zarr: it declares filters \['pickle'\] \(pickle and object codecs can run code\); spard reads "
         r"only plain numeric zarr arrays, checked before any chunk is decoded", amass_store(pickle_filter)),
    Case("zarr store with a missing chunk", ["--mode", "train", "--cfg", "amass", *FAST, "--data_dir", "{case}"],
         r"ACCAD/poses\.zarr is incomplete: chunk '1\.0\.0' of 3 is missing and would read as zeros; copy or convert "
         r"the store again", amass_store(lambda store, _: (store / "1.0.0").unlink())),
    Case("positions in millimetres", [*TRAIN, "--data_dir", "{case}"],
         r"data_3d_h36m\.npz S1/Walking 1 has a joint .* from the root, more than a body's 2\.5 m: positions must "
         r"be in metres \(divide millimetres by 1000\)", scaled(1000)),
    Case("integer positions", [*TRAIN, "--data_dir", "{case}"],
         r"data_3d_h36m\.npz S1/Walking 1 holds int64 positions, expected floats in metres", scaled(1000, np.int64)),
    Case("segments CSV of another t_pred", [*TRAIN, "--data_dir", "{case}", "--t_pred", "50"],
         r"segments_test\.csv line 2 \(subject S9, action Walking 1\): pred_end 124 is not pred_init \+ t_pred - 1 = "
         r"74, the row is made for t_pred 100; fix the row, or give the segments file of this data and t_his/t_pred",
         write("segments_test.csv", SEGMENTS + "S9,Walking 1,0,25,124\n")),
    Case("segments CSV: a window listed twice", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"segments_test\.csv line 3 \(subject S9, action Walking 1\): the same window as line 2; each window must be "
         r"listed once", write("segments_test.csv", SEGMENTS + "S9,Walking 1,0,25,124\nS9,Walking 1,0,25,124\n")),
    Case("classes.json listing a class twice", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"classes\.json: class 'Walking' is listed twice; list each class once \(its position is its id\)",
         write("classes.json", '{"classes": ["Walking", "Eating", "Walking"]}')),
    Case("classes.json nested too deeply", [*EVAL, "--data_dir", "{case}", "--ckpt", "{ckpt}/base.pt"],
         r"classes\.json is nested too deeply to be the expected JSON; fix it or remove the file",
         write("classes.json", "[" * 100_000 + "]" * 100_000)),
    Case("FID classifier whose pickle would run code",
         [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt", "--fid_classifier", "{ckpt}/evil.pt"],
         r"FID classifier .*evil\.pt holds posix\.system, which could run code; refusing to unpickle it: give the "
         r"published h36m_classifier\.pth"),
    Case("FID classifier that is not one", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt",
                                            "--fid_classifier", "{ckpt}/base.pt"],
         r"FID classifier .*base\.pt does not fit ClassifierForFID \(.*\); give the published h36m_classifier\.pth"),
    # --- flags
    Case("zero epochs", [*TRAIN, "--data_dir", "{data}", "--num_epoch", "0"],
         r"--num_epoch must be >= 1 and <= 1e\+06, got 0"),
    Case("negative epochs", [*TRAIN, "--data_dir", "{data}", "--num_epoch", "-3"],
         r"--num_epoch must be >= 1 and <= 1e\+06, got -3"),
    Case("zero batch size", [*TRAIN, "--data_dir", "{data}", "--batch_size", "0"],
         r"--batch_size must be >= 2, got 0"),
    Case("zero div_k", [*TRAIN, "--data_dir", "{data}", "--div_k", "0"], r"--div_k must be >= 1, got 0"),
    Case("mode_test above 1", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt", "--mode_test", "1.5"],
         r"--guidance/--mode_test must be >= 0 and <= 1, got 1\.5"),
    Case("mode_test below 0", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt", "--mode_test", "-0.1"],
         r"--guidance/--mode_test must be >= 0 and <= 1, got -0\.1"),
    Case("unknown mode", [*TRAIN, "--data_dir", "{data}", "--mode", "fly"], r"argument --mode: invalid choice: 'fly'"),
    Case("unknown sampler", [*EVAL, "--data_dir", "{data}", "--sample", "magic"],
         r"argument --sample: invalid choice: 'magic'"),
    Case("unknown cfg", [*TRAIN, "--data_dir", "{data}", "--cfg", "nope"],
         r"unknown cfg 'nope'; choose one of \['amass', 'deepmimic', 'h36m'\]"),
    Case("unknown loss", [*TRAIN, "--data_dir", "{data}", "--loss", "huber"],
         r"argument --loss: invalid choice: 'huber' \(choose from mae, mse\)|invalid choice: 'huber'"),
    Case("n_pre longer than the window", [*TRAIN, "--data_dir", "{data}", "--n_pre", "200"],
         r"--n_pre \(200\) cannot exceed t_his \+ t_pred \(125\)"),
    Case("not a torch device", [*TRAIN, "--data_dir", "{data}", "--device", "toaster"],
         r"--device 'toaster' is not a torch device; use e\.g\. cuda:0 or cpu"),
    Case("np sampler without a noise predictor",
         [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt", "--sample", "np"],
         r"the np sampler needs a trained noise_predictor, which a 'base' result does not hold: give a result of stage 'np'"),
    # --- checkpoints
    Case("missing checkpoint path", [*EVAL, "--data_dir", "{data}", "--ckpt", "{root}/nowhere.pt"],
         r"checkpoint .*nowhere\.pt does not exist: check the path, or run the stage that writes it first"),
    Case("no checkpoint given", ["--mode", "distill", "--cfg", "h36m", *FAST, "--data_dir", "{data}"],
         r"--ckpt is required here: give the checkpoint written by --mode train"),
    Case("checkpoint is a folder", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}"],
         r"is a folder: give the checkpoint file in it"),
    Case("base checkpoint given as --np_ckpt", ["--mode", "np_eval", "--cfg", "h36m", *FAST, "--data_dir", "{data}",
                                                "--np_ckpt", "{ckpt}/base.pt"],
         r"base\.pt is a 'base' checkpoint but a 'np' checkpoint is needed here"),
    Case("base checkpoint given as --distill_ckpt",
         ["--mode", "distill_eval", "--cfg", "h36m", *FAST, "--data_dir", "{data}", "--distill_ckpt", "{ckpt}/base.pt"],
         r"base\.pt is a 'base' checkpoint but a 'distill' or 'np' checkpoint is needed here"),
    Case("noise predictor given as --ckpt", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/published_np.pt"],
         r"published_np\.pt holds only a noise predictor; --ckpt needs a SPARD model checkpoint"),
    Case("checkpoint of another dataset", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/amass.pt"],
         r"amass\.pt was trained with name='amass' but this run has name='h36m'; use a checkpoint of this dataset"),
    Case("checkpoint of other sizes", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt", "--t_pred", "50"],
         r"base\.pt was trained with t_pred=100 but this run has t_pred=50"),
    Case("checkpoint whose pickle would run code", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/evil.pt"],
         r"evil\.pt holds posix\.system, not only tensors and plain data; refusing to unpickle it "
         r"\(it could run code\)"),
    Case("truncated checkpoint", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/truncated.pt"],
         r"truncated\.pt is corrupt or truncated .*; use an intact copy or retrain"),
    Case("corrupt checkpoint", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/garbage.pt"],
         r"garbage\.pt is corrupt or truncated"),
    Case("empty checkpoint file", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/empty.pt"],
         r"empty\.pt is empty \(0 bytes\): use an intact copy or retrain"),
    Case("resume from nowhere", [*TRAIN, "--data_dir", "{data}", "--resume", "{root}/nowhere"],
         r"--resume .*nowhere: no checkpoint there; give a run folder or its last\.pt"),
    Case("resume a run of another stage", ["--mode", "distill", "--cfg", "h36m", *FAST, "--data_dir", "{data}",
                                           "--ckpt", "{ckpt}/base.pt", "--resume", "{ckpt}/base.pt"],
         r"--resume .*base\.pt is a 'base' run but this is stage 'distill'; give a run folder of this stage"),
    # --- output
    Case("output folder not writable (under a file)", [*TRAIN, "--data_dir", "{data}", "--out_dir", "{root}/file/out"],
         r"cannot create output folder .*file/out/train: .*file is a file; choose another --out_dir"),
    Case("evaluation output not writable", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt",
                                            "--out_dir", "{root}/file/out"],
         r"cannot create output folder .*file/out/eval: .*file is a file"),
    Case("existing stage result", [*TRAIN, "--data_dir", "{data}", "--out_dir", "{case}"],
         r"train/ckpt\.pt already exists; pass --overwrite to replace it, or --out_dir to write elsewhere",
         write("train/ckpt.pt", "an earlier result", data=False)),
    Case("existing --json file", [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/base.pt", "--json", "{root}/file"],
         r"--json .*file already exists; pass --overwrite to replace it, or another path"),
]


def fill(argv: list[str], paths: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv, prog="h36m_main.py", default_cfg="h36m")
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, root, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "case"
    folder.mkdir(parents=True)
    if case.prepare:
        case.prepare(folder)
    paths = {"root": root, "data": root / "data", "ckpt": root / "ckpt", "case": folder}
    monkeypatch.chdir(root / "work")
    before, before_case = tree(root), tree(tmp_path)
    code, _, err = run_main(fill(case.argv, paths), capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert re.search(case.message, err), f"{err!r} does not match {case.message!r}"
    assert tree(root) == before and tree(tmp_path) == before_case, "a file was created, changed or removed"
    assert not (root / "work" / "PWNED").exists()


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the case under a file covers it")
def test_read_only_output_folder(root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    monkeypatch.chdir(root / "work")
    code, _, err = run_main([*TRAIN, "--data_dir", str(root / "data"), "--out_dir", str(out)], capsys)
    assert code == 2 and "is not writable; choose another --out_dir" in err
    assert list(out.iterdir()) == []


def test_debug_shows_the_traceback(root, capsys, monkeypatch):
    monkeypatch.chdir(root / "work")
    with pytest.raises(FileNotFoundError, match="prepare it with VideoPose3D"):
        main([*TRAIN, "--data_dir", str(root / "nowhere"), "--debug"])


def test_real_processes_exit_2_with_one_line(root):
    """Three cases as real commands: the exit status and stderr the user sees."""
    for argv in ([*TRAIN, "--data_dir", "{root}/nowhere"], [*EVAL, "--data_dir", "{data}", "--ckpt", "{ckpt}/evil.pt"],
                 [*TRAIN, "--data_dir", "{data}", "--batch_size", "0"]):
        before = tree(root)
        argv = fill(argv, {"root": root, "data": root / "data", "ckpt": root / "ckpt"})
        proc = subprocess.run([sys.executable, str(REPO / "h36m_main.py"), *argv], cwd=root / "work",
                              capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
        assert tree(root) == before and not (root / "work" / "PWNED").exists()


# ------------------------------------------------------------------------------------------------
# disk full while saving

def failing_save(monkeypatch, when: Callable[[object], bool]) -> None:
    """`torch.save` that writes part of the file, then fails with ENOSPC, for the objects `when` selects."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if when(obj):
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save)


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoints.atomic_save({"epoch": 1}, path)
    before = path.read_bytes()
    failing_save(monkeypatch, lambda obj: True)
    with pytest.raises(OSError, match=r"cannot write .*last\.pt \(No space left on device\); the previous file is "
                                      r"unchanged: free disk space or choose another --out_dir"):
        checkpoints.atomic_save({"epoch": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temporary file is gone


def test_disk_full_during_training_then_resume(root, tmp_path, capsys, monkeypatch):
    """The CLI reports the full disk in one line; last.pt of epoch 1 survives and the next run resumes it."""
    monkeypatch.chdir(tmp_path)
    argv = [*TRAIN, "--data_dir", str(root / "data"), "--num_epoch", "2"]
    failing_save(monkeypatch, lambda obj: isinstance(obj, dict) and obj.get("epoch") == 2)
    code, _, err = run_main(argv, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "(No space left on device); the previous file is unchanged" in err
    run = tmp_path / "results/h36m/train/runs/001"
    assert checkpoints.read_file(run / "last.pt")["epoch"] == 1
    assert not list(run.glob(".*.tmp"))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    assert f"resuming {Path('results/h36m/train/runs/001')} from epoch 1" in out
    assert checkpoints.read_file(tmp_path / "results/h36m/train/ckpt.pt")["epoch"] in (1, 2)


# ------------------------------------------------------------------------------------------------
# checkpoints: never run code, clear errors, published state dicts still load

@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("form", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_a_pickle_that_runs_code_is_refused(tmp_path, form):
    marker, path = tmp_path / "PWNED", tmp_path / "evil.pt"
    if form == "torch.save":
        torch.save({"model": Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Evil(marker), protocol=int(form[-1])))
    # protocol 5 stops at an opcode torch's safe unpickler does not read, before it reaches the global
    message = "corrupt or truncated" if form.endswith("5") else r"holds posix\.system, .* \(it could run code\)"
    with pytest.raises(CheckpointError, match=message):
        checkpoints.read_file(path)
    with pytest.raises(CheckpointError, match=message):
        Predictor.from_checkpoint(path)
    assert not marker.exists()


def test_a_data_file_that_runs_code_is_refused(tmp_path):
    from spard.data.h36m import read_positions

    marker = tmp_path / "PWNED"
    np.savez(tmp_path / "data.npz", positions_3d=np.array({"S1": {"Walk": Evil(marker)}}))
    with pytest.raises(ValueError, match="refusing to unpickle positions_3d"):
        read_positions(tmp_path / "data.npz")
    assert not marker.exists()


def test_published_state_dicts_still_load(root):
    den = checkpoints.read_file(root / "ckpt" / "published_spard.pt")
    npr = checkpoints.read_file(root / "ckpt" / "published_np.pt")
    assert checkpoints.kind_of(den) == "published-denoiser" and checkpoints.kind_of(npr) == "published-np"
    model = checkpoints.from_published(tiny_config(), den, npr)
    ours, _ = checkpoints.load_model(root / "ckpt" / "np.pt")
    for a, b in zip(model.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoints_describe_themselves(root):
    ckpt = checkpoints.read_file(root / "ckpt" / "base.pt")
    assert ckpt["format_version"] == checkpoints.FORMAT_VERSION and ckpt["stage"] == "base"
    assert ckpt["dataset"] == {"name": "h36m", "num_joints": 16, "t_his": 25, "t_pred": 100, "fps": 50.0}
    assert ckpt["config"] == tiny_config().to_dict()


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(format_version=99), r"format version 99, newer than this spard \(1\); upgrade spard"),
    (lambda c: c.pop("model"), r"lacks model: it is an incomplete spard checkpoint"),
    (lambda c: c.update(config={"data": {"colour": 1}}), r"holds an unreadable config \(unknown DataConfig fields"),
    (lambda c: c["model"].pop("noise_predictor.model.gc1.weight"), r"keys do not match the model \(1 missing"),
    (lambda c: c["model"].update({"denoiser.sequence_embedding": torch.zeros(3, 3)}),
     r"denoiser\.sequence_embedding has shape \[3, 3\], expected \[20, 16\]"),
])
def test_damaged_checkpoints_give_one_line(root, tmp_path, change, message):
    ckpt = checkpoints.read_file(root / "ckpt" / "np.pt")
    change(ckpt)
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoints.load_model(tmp_path / "ckpt.pt")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------
# the Python API

@pytest.fixture(scope="module")
def predictor():
    """The published noise predictor (at most K futures), to see that limit refused in one line."""
    torch.manual_seed(0)
    return Predictor(SPARD(published_np(tiny_config())), "np")


@pytest.mark.parametrize("history,options,message", [
    (np.zeros((25, 16, 3)), {}, r"history must be \[t_his=25, J=17, 3\] or \[B, t_his, J, 3\], got \[25, 16, 3\]"),
    (np.zeros((25, 17)), {}, r"got \[25, 17\]"),
    (np.zeros((0, 25, 17, 3)), {}, r"history holds an empty batch \[0, t_his, J, 3\]; give at least one history"),
    (np.zeros((24, 17, 3)), {}, r"history has 24 frames, the model needs at least t_his=25"),
    (np.zeros((25, 17, 3), np.int64), {}, r"floating-point positions in metres, got dtype int64"),
    (torch.zeros(25, 17, 3, dtype=torch.bool), {}, r"floating-point positions in metres, got dtype torch\.bool"),
    (np.full((25, 17, 3), np.nan), {}, r"history contains NaN or infinite values; fill or drop those frames first"),
    (np.full((25, 17, 3), 1e300), {}, r"NaN or infinite"),
    ([[0.0] * 3] * 17, {}, r"history must be a numpy array or torch tensor, got list"),
    (np.zeros((25, 17, 3)), {"num_samples": 0}, r"num_samples must be a positive integer, got 0"),
    (np.zeros((25, 17, 3)), {"num_samples": 7}, r"the np sampler gives at most K=5 futures without --np_noise, asked for 7"),
    (np.zeros((25, 17, 3)), {"batch_size": 0}, r"batch_size must be a positive integer"),
    (np.zeros((25, 17, 3)), {"seed": "x"}, r"seed must be an integer or None"),
    (np.zeros((25, 17, 3)), {"sampler": "magic"}, r"unknown sampler 'magic'"),
    (torch.zeros(25, 17, 3).to_sparse(), {}, r"history must be a dense tensor with values \(got layout torch\.sparse_coo"),
    (torch.zeros(25, 17, 3, device="meta"), {}, r"history must be a dense tensor with values \(got layout torch\.strided, "
                                                r"device meta\)"),
])
def test_predict_refuses_bad_input_in_one_line(predictor, history, options, message):
    with pytest.raises(ValueError, match=message) as info:
        predictor.predict(history, **options)
    assert "\n" not in str(info.value)


def test_unknown_stage_and_numpy_seeds(predictor):
    with pytest.raises(ValueError, match="unknown stage 'bogus'; expected one of base, distill, np"):
        Predictor(predictor.model, "bogus")
    history = np.zeros((25, 17, 3))
    np.testing.assert_array_equal(predictor.predict(history, 2, sampler="onestep", seed=np.uint64(2**64 - 1)),
                                  predictor.predict(history, 2, sampler="onestep", seed=2**64 - 1))


def test_np_sampler_needs_an_np_checkpoint(predictor):
    base = Predictor(predictor.model, "base")
    with pytest.raises(ValueError, match="the np sampler needs a trained noise_predictor, which a 'base' result does not hold"):
        base.predict(np.zeros((25, 17, 3)), 2, sampler="np")
