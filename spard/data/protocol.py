"""The test protocol (docs/data.md): protocol files, test and validation windows, the assembled Dataset.

Readers (`h36m.py`, `amass.py`, `deepmimic.py`) turn files into labelled clips; `build_dataset` does the rest
the same way for every format:
- test windows from `segments_test.csv` (window = frames `pred_init - t_his .. pred_init + t_pred - 1`; every
  row must agree with t_his and t_pred), or, without one, by the published rule: starts `0, t_his, 2 t_his, ...`
  of every test clip while the window fits;
- validation = whole training clips (about `val_fraction` of each class's frames), or clips the reader made,
  windows by the same rule;
- `mmapd_GT.csv` (APDE reference) and `classes.json` (class order, CMD reference) when given or found; without a
  published CMD reference, the mean motion of each class's test windows.
Evaluation needs the test split only: `splits=("test",)` reads and checks nothing else.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..metrics import cmd_reference_from_gt
from .dataset import Clip, Dataset, Skeleton
from .files import find_file, first_repeated, read_csv, read_json, shown

SPLITS = ("train", "test")  # a full load; ("test",) reads only what evaluation needs
FIX_ROW = "fix the row, or give the segments file of this data and t_his/t_pred"

# segments header -> the two columns that name a clip (Clip.key)
SEGMENT_HEADERS = {
    ("subject", "action", "init", "pred_init", "pred_end"): ("subject", "action"),  # Human3.6M format
    ("dataset", "file", "file_idx", "pred_init", "pred_end"): ("dataset", "file_idx"),  # AMASS
}


@dataclass(frozen=True)
class Segment:
    """One row of a segments file."""

    where: str  # "segments_test.csv line 7 (subject S9, action Directions 1)", for errors
    key: tuple[str, str]  # the clip it names
    pred_init: int  # first predicted frame
    pred_end: int  # last predicted frame (inclusive)
    init: int | None  # first observed frame (Human3.6M format; the AMASS format has no such column)


def check_splits(cfg: DataConfig, splits) -> tuple[str, ...]:
    """`splits` in SPLITS order; a one-line ValueError for other splits, or split names listed twice."""
    chosen = tuple(split for split in SPLITS if split in splits)
    if set(splits) - set(SPLITS) or "test" not in chosen:
        raise ValueError(f"splits {tuple(splits)} cannot be loaded: use ('train', 'test') to train, ('test',) "
                         "to evaluate")
    twice = first_repeated(list(cfg.train_splits) + list(cfg.test_splits))
    if twice is not None:
        where = "train_splits and test_splits" if twice in cfg.train_splits and twice in cfg.test_splits else \
            "train_splits" if twice in cfg.train_splits else "test_splits"
        raise ValueError(f"{shown(twice)!r} is listed twice in {where}: name each split once, and never train on a "
                         "test split; fix train_splits/test_splits")
    return chosen


def _int(text: str, where: str, column: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{where}: {column} {text!r} is not an integer; fix the row") from None


def read_segments(path: Path) -> list[Segment]:
    """Rows of a Human3.6M- or AMASS-format `segments_test.csv`, in file order; a window listed twice is refused."""
    rows = read_csv(path)
    header = tuple(c.strip() for c in rows[0]) if rows else ()
    if header not in SEGMENT_HEADERS:
        expected = " or ".join(",".join(h) for h in SEGMENT_HEADERS)
        raise ValueError(f"{path}: header {','.join(header)!r} is not a segments file header; expected {expected}")
    key_cols = [header.index(c) for c in SEGMENT_HEADERS[header]]
    column = {name: header.index(name) for name in header}
    segments, seen = [], {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path.name} line {line}: {len(row)} columns, the header has {len(header)}; fix the row")
        named = ", ".join(f"{header[c]} {shown(row[c])}" for c in key_cols)
        where = f"{path.name} line {line} ({named})"
        key = tuple(row[c] for c in key_cols)
        if header[key_cols[1]] == "file_idx":
            key = (key[0], str(_int(key[1], where, "file_idx")))
        pred_init = _int(row[column["pred_init"]], where, "pred_init")
        init = _int(row[column["init"]], where, "init") if "init" in column else None
        segment = Segment(where, key, pred_init, _int(row[column["pred_end"]], where, "pred_end"), init)
        if (key, pred_init) in seen:
            raise ValueError(f"{where}: the same window as line {seen[key, pred_init]}; each window must be listed "
                             "once (a repeated row would count twice in every metric): remove the row")
        seen[key, pred_init] = line
        segments.append(segment)
    return segments


def read_mmapd(path: Path) -> np.ndarray:
    """`gt_APD` per test window `[N]` float64 from `mmapd_GT.csv` (`id,gt_APD`, id = row index)."""
    rows = read_csv(path)
    if not rows or [c.strip() for c in rows[0]] != ["id", "gt_APD"]:
        raise ValueError(f"{path}: expected the header id,gt_APD; give the mmapd_GT.csv of this protocol, or none")
    values = []
    for i, row in enumerate(rows[1:]):
        try:
            value = float(row[1]) if len(row) == 2 and row[0].strip() == str(i) else math.nan
        except ValueError:
            value = math.nan
        if not 0 <= value < math.inf:
            raise ValueError(f"{path.name} line {i + 2}: expected '{i},<gt_APD >= 0>', got {','.join(row)!r}")
        values.append(value)
    return np.array(values, dtype=np.float64)


def read_classes(path: Path) -> tuple[list[str], np.ndarray]:
    """Class names (id = index, each once) and CMD reference `[C]` (m/frame, null -> NaN) from a `classes.json`."""
    spec = read_json(path, "fix it or remove the file")
    if not isinstance(spec, dict) or not isinstance(spec.get("classes"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'classes' list (and 'mean_motion_per_class')")
    if not all(isinstance(c, str) and c.strip() for c in spec["classes"]):
        raise ValueError(f"{path}: every class must be a non-empty name (text); fix the 'classes' list")
    classes = list(spec["classes"])
    twice = first_repeated(classes)
    if twice is not None:
        raise ValueError(f"{path}: class {shown(twice)!r} is listed twice; list each class once (its position is "
                         "its id)")
    motion = spec.get("mean_motion_per_class")
    motion = [None] * len(classes) if motion is None else motion
    if not isinstance(motion, list) or len(motion) != len(classes):
        raise ValueError(f"{path}: mean_motion_per_class must be a list of {len(classes)} numbers or nulls, "
                         f"one per class")
    bad = [m for m in motion if m is not None and not (isinstance(m, (int, float)) and not isinstance(m, bool)
                                                       and math.isfinite(m) and m > 0)]
    if bad:
        raise ValueError(f"{path}: mean_motion_per_class holds {bad[0]!r}; each class's mean motion is a positive "
                         f"number (m/frame) or null (no CMD reference)")
    return classes, np.array([math.nan if m is None else float(m) for m in motion], dtype=np.float64)


def choose_classes(cfg: DataConfig, folder: Path, default: list[str],
                   published_cmd: dict[str, float]) -> tuple[list[str], np.ndarray | None, str]:
    """Class list, CMD reference `[C]` and a note for the log.

    From `classes.json` when given or found (its order wins), else `default` with the CMD reference of
    `published_cmd` by class name (None when no class has one).
    """
    path = find_file(cfg.classes_json, folder, "classes.json")
    if path is not None:
        classes, reference = read_classes(path)
        missing = [c for c in default if c not in classes]
        if missing:
            raise ValueError(f"{path}: classes {missing} of the data are not listed; add them or remove the file")
        return classes, reference, f"classes: {len(classes)} from {path}"
    reference = np.array([published_cmd.get(c, math.nan) for c in default], dtype=np.float64)
    note = f"classes: {len(default)} ({', '.join(default)})"
    if np.isnan(reference).all():
        return default, None, note
    return default, reference, note


def rule_starts(clips: list[Clip], t_his: int, t_total: int) -> list[tuple[int, int]]:
    """(clip, first frame) of the published test rule: frames 0, t_his, 2 t_his, ... while the window fits."""
    return [(c, s) for c, clip in enumerate(clips) for s in range(0, len(clip.poses) - t_total + 1, t_his)]


def segment_starts(segments: list[Segment], clips: list[Clip], t_his: int, t_total: int) -> list[tuple[int, int]]:
    """(clip, first frame) of every segments row; a one-line ValueError for a row that does not fit the data.

    A row must describe a window of this t_his and t_pred (`init = pred_init - t_his` where the file has an
    init column, `pred_end = pred_init + t_pred - 1`), else the file was made for another protocol.
    """
    t_pred = t_total - t_his
    index = {clip.key: c for c, clip in enumerate(clips)}
    owners = list(dict.fromkeys(key[0] for key in index))
    starts = []
    for seg in segments:
        if seg.init is not None and seg.init != seg.pred_init - t_his:
            raise ValueError(f"{seg.where}: init {seg.init} is not pred_init - t_his = {seg.pred_init - t_his}, "
                             f"the row is made for t_his {seg.pred_init - seg.init}; {FIX_ROW}")
        if seg.pred_end != seg.pred_init + t_pred - 1:
            made_for = seg.pred_end - seg.pred_init + 1
            raise ValueError(f"{seg.where}: pred_end {seg.pred_end} is not pred_init + t_pred - 1 = "
                             f"{seg.pred_init + t_pred - 1}, the row is made for t_pred {made_for}; {FIX_ROW}")
        if seg.key[0] not in owners:
            raise ValueError(f"{seg.where}: {seg.key[0]!r} is not in the test split ({', '.join(map(shown, owners))}); "
                             f"{FIX_ROW}")
        if seg.key not in index:
            raise ValueError(f"{seg.where}: {shown(seg.key[0])} has no sequence {seg.key[1]!r}; {FIX_ROW}")
        c, first = index[seg.key], seg.pred_init - t_his
        length = len(clips[c].poses)
        if first < 0 or first + t_total > length:
            frames = f"{first}..{first + t_total - 1}"
            raise ValueError(f"{seg.where}: frames {frames} lie outside the sequence's {length} frames; {FIX_ROW}")
        starts.append((c, first))
    return starts


def cut(clips: list[Clip], starts: list[tuple[int, int]], t_total: int, joints: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows `[N, T, J+1, 3]` float32 and their labels `[N]` int64."""
    windows = np.zeros((len(starts), t_total, joints, 3), dtype=np.float32)
    for n, (c, s) in enumerate(starts):
        windows[n] = clips[c].poses[s:s + t_total]
    return windows, np.array([clips[c].label for c, _ in starts], dtype=np.int64)


def split_validation(clips: list[Clip], fraction: float) -> tuple[list[Clip], list[Clip]]:
    """(train, val): whole training clips held out for validation, deterministically.

    Per class, clips are taken from the end of its list while that brings the held-out frames nearer to
    `fraction` of the class's frames; a class's first clip always stays in training.
    """
    held = set()
    for label in sorted({clip.label for clip in clips}):
        members = [c for c, clip in enumerate(clips) if clip.label == label]
        target, taken = fraction * sum(len(clips[c].poses) for c in members), 0
        for c in reversed(members[1:]):
            if taken + len(clips[c].poses) / 2 >= target:
                break
            held.add(c)
            taken += len(clips[c].poses)
    return [x for c, x in enumerate(clips) if c not in held], [x for c, x in enumerate(clips) if c in held]


def cmd_reference_of(windows: np.ndarray, labels: np.ndarray, t_his: int, num_classes: int) -> np.ndarray:
    """Mean motion per class of the windows' future `[C]` float64 (NaN: no window), as evaluation computes it."""
    future = torch.from_numpy(windows[:, t_his:, 1:]).flatten(-2)  # [N, t_pred, 3J] model space
    return cmd_reference_from_gt(future, torch.from_numpy(labels), num_classes).numpy()


def _drop_short(clips: list[Clip], t_total: int, split: str, notes: list[str]) -> list[Clip]:
    short = [clip for clip in clips if len(clip.poses) < t_total]
    if short:
        named = ", ".join(f"{'/'.join(c.key)} ({len(c.poses)})" for c in short[:5])
        more = ", ..." if len(short) > 5 else ""
        notes.append(f"skipped {len(short)} {split} sequences shorter than {t_total} frames: {named}{more}")
    return [clip for clip in clips if len(clip.poses) >= t_total]


def _training_clips(cfg: DataConfig, train: list[Clip], val: list[Clip] | None, window: str,
                    notes: list[str]) -> tuple[list[Clip], list[Clip]]:
    """(train, val) without clips shorter than a window; validation held out of `train` unless given."""
    train = _drop_short(train, cfg.t_total, "train", notes)
    if not train:
        raise ValueError(f"every training sequence of {list(cfg.train_splits)} is shorter than a window of {window}: "
                         "lower t_his/t_pred or check the data")
    if val is None:
        return split_validation(train, cfg.val_fraction)
    return train, _drop_short(val, cfg.t_total, "validation", notes)


def build_dataset(cfg: DataConfig, folder: Path, skeleton: Skeleton, classes: list[str],
                  cmd_reference: np.ndarray | None, train: list[Clip], test: list[Clip], notes: list[str], *,
                  val: list[Clip] | None = None, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Cut the protocol's windows from the clips and find its files (segments, mmapd) next to the data in `folder`.

    val            validation clips the reader made; None: whole training clips held out (`split_validation`)
    splits         ("test",): no training or validation clips (given ones are ignored), nothing of them checked
    cmd_reference  the published table `[C]`; None: each class's mean motion in the test windows (`cmd_reference_of`)
    """
    t_total, joints, notes = cfg.t_total, len(skeleton.parents), list(notes)
    if cfg.num_joints != skeleton.num_joints:
        raise ValueError(f"num_joints is {cfg.num_joints} but {cfg.name} has {skeleton.num_joints} joints "
                         f"besides the root: use the {cfg.name} preset's value")
    window = f"{t_total} frames (t_his {cfg.t_his} + t_pred {cfg.t_pred})"

    segments_path = find_file(cfg.segments_csv, folder, "segments_test.csv")
    if segments_path is not None:
        starts = segment_starts(read_segments(segments_path), test, cfg.t_his, t_total)
        notes.append(f"test windows: {len(starts)} from {segments_path}")
    else:
        starts = rule_starts(test, cfg.t_his, t_total)
        notes.append(f"test windows: {len(starts)}, every {cfg.t_his} frames of each test sequence (no segments file)")
    if not starts:
        raise ValueError(f"no test window of {window} in test splits {list(cfg.test_splits)}: "
                         "check test_splits, t_his/t_pred or the segments file")
    test_windows, test_labels = cut(test, starts, t_total, joints)
    test = _drop_short(test, t_total, "test", notes)

    train, val = _training_clips(cfg, train, val, window, notes) if "train" in splits else ([], [])
    val_windows, val_labels = cut(val, rule_starts(val, cfg.t_his, t_total), t_total, joints)
    if "train" in splits:
        share = sum(len(c.poses) for c in val) / sum(len(c.poses) for c in train + val)
        notes.append(f"validation: {len(val)} sequences ({share:.1%} of the training frames), "
                     f"{len(val_windows)} windows")

    mmapd = None
    mmapd_path = find_file(cfg.mmapd_csv, folder, "mmapd_GT.csv")
    if mmapd_path is not None:
        mmapd = read_mmapd(mmapd_path)
        if len(mmapd) != len(test_windows):
            raise ValueError(f"{mmapd_path} has {len(mmapd)} rows for {len(test_windows)} test windows: "
                             "give the mmapd file of these segments, or none")
    else:
        notes.append("no mmapd_GT.csv: the APDE reference will come from the multimodal ground truth")
    if cmd_reference is None:
        cmd_reference = cmd_reference_of(test_windows, test_labels, cfg.t_his, len(classes))
        notes.append("CMD reference: each class's mean motion in the test windows (no published table)")

    return Dataset(
        name=cfg.name, fps=cfg.fps, skeleton=skeleton, classes=classes, train=train, val=val, test=test,
        test_windows=test_windows, test_labels=test_labels, val_windows=val_windows, val_labels=val_labels,
        mmapd=mmapd, cmd_reference=cmd_reference, notes=notes,
    )
