"""Predictions for your own motion: a motion file in, K futures of each window out, as a predictions file.

    spard predict --ckpt results/demo/np --input walk.bvh --out walk.npz
    spard predict --ckpt model.pt --input data_3d_h36m.npz --subject S9 --action "Walking 1" --out p.npz
    spard predict --ckpt model.pt --input clip.csv --input_fps 120 --input_units mm --stride 25 --out p.json

Input (see `spard.motion_io`): a Human3.6M-format npz (all sequences, or --subject/--action), an array
`[T, J, 3]` or `[B, T, J, 3]` (.npy/.npz), a CSV (one row per frame: x, y, z of each joint, an optional
header line), or a BVH file. Arrays and CSV hold the checkpoint's joints in its order, or all joints of its
dataset's file layout (Human3.6M: 32); a BVH file's joints are found by name (the CMU and Human3.6M namings
are built in). For other layouts --joint_map gives each checkpoint joint its array index or BVH joint name
(an End Site is "<joint>_end"). The motion is resampled to the checkpoint's frame rate (BVH: its Frame
Time; arrays and CSV: --input_fps, else taken to be at the checkpoint's rate) and converted to metres with
z up for the model (--input_units, --input_up), after checks of the body's size and speed.

Windows: the last t_his frames of each recording, or one every --stride frames; with --ground_truth only
windows followed by t_pred frames, which are written as the ground truth.

Output: a predictions file (`spard.predictions`; --format json writes the same fields as JSON) at the
checkpoint's frame rate, in the input's units and axes: the futures overlay the history (each future
starts from the last observed root). Fields: futures [B, K, t_pred, J, 3], history [B, t_his, J, 3],
ground_truth, joint_names, parents, left_joints, right_joints, fps, sampler, checkpoint_sha256, window_names,
units (metres per unit) and up (the vertical axis), which `spard render` and `spard view` read.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from .arguments import Parser, UsageError, add_sampler_flag, positive


def window_starts(frames: int, length: int, stride: int | None) -> list[int]:
    """First frames of the windows of `length` frames: the last window, or one every `stride` frames."""
    if frames < length:
        return []
    if stride is None:
        return [frames - length]
    return list(range(0, frames - length + 1, stride))


def to_file_frame(futures: np.ndarray, model_history: np.ndarray, file_history: np.ndarray, frame) -> np.ndarray:
    """Futures in metres, z up `[B, K, t_pred, J, 3]` -> the file's units and axes, in place: each window's
    futures relative to its last observed root, turned back and added to that root as the file has it."""
    for b in range(len(futures)):
        relative = futures[b] - model_history[b, -1, 0]  # [K, t_pred, J, 3]
        futures[b] = frame.to_file(relative) + file_history[b, -1, 0]
    return futures


def write_json(predictions, path: Path) -> Path:
    """The fields of a predictions file as one JSON object (positions rounded to 1e-6 units)."""
    from .predictions import write_atomically

    def plain(value):  # positions rounded; joint indices as integers
        if isinstance(value, np.ndarray):
            return np.round(value.astype(np.float64), 6).tolist() if value.dtype.kind == "f" else value.tolist()
        return value

    fields = {f.name: getattr(predictions, f.name) for f in dataclasses.fields(predictions)}
    document = {key: plain(value) for key, value in fields.items() if value is not None}
    return write_atomically(path, lambda f: f.write(json.dumps(document, separators=(",", ":")).encode()))


# ------------------------------------------------------------------------------------------ command

def parser() -> argparse.ArgumentParser:
    p = Parser(prog="spard predict", description=__doc__.split("\n\n")[0],
               epilog="\n\n".join(__doc__.split("\n\n")[2:]), formatter_class=argparse.RawDescriptionHelpFormatter,
               replaces="an existing --out")
    p.add_argument("--ckpt", required=True, help="a spard checkpoint, or a stage folder (results/demo/np)")
    p.add_argument("--input", required=True, help="motion file: .bvh, .csv, .npy, or .npz (an array or Human3.6M format)")
    p.add_argument("--out", required=True, help="predictions file to write (.npz, or .json)")
    p.add_argument("--format", choices=("npz", "json"), default=None, help="default: from the --out suffix")
    g = p.add_argument_group("input")
    g.add_argument("--subject", default=None, help="Human3.6M-format npz: this subject only (default: all)")
    g.add_argument("--action", default=None, help="Human3.6M-format npz: this action only, e.g. 'Walking 1'")
    g.add_argument("--joint_map", default=None,
                   help='JSON {"<checkpoint joint>": "<BVH joint>" or <array joint index>, ...} for other skeletons')
    g.add_argument("--input_fps", type=positive(float), default=None,
                   help="frame rate of the input (default: BVH Frame Time, 50 for Human3.6M files, else the "
                        "checkpoint's)")
    g.add_argument("--input_units", default=None,
                   help="m, cm, mm, in, or metres per unit (default: cm for BVH, m otherwise)")
    g.add_argument("--input_up", choices=("y", "z"), default=None, help="vertical axis (default: y for BVH, z otherwise)")
    g = p.add_argument_group("windows and sampling")
    g.add_argument("--stride", type=positive(int), default=None,
                   help="a window every N frames (at the checkpoint's fps) instead of the last one only")
    g.add_argument("--ground_truth", action="store_true",
                   help="only windows followed by t_pred frames, written as ground truth")
    g.add_argument("--num_samples", type=positive(int), default=None,
                   help="futures per window (default: all K of the np sampler, 50 otherwise)")
    add_sampler_flag(g)
    g.add_argument("--seed", type=int, default=0, help="noise seed of the ddim/onestep samplers")
    g.add_argument("--device", default="cpu", help="torch device")
    return p


def run(args) -> Path:
    from .api import Predictor
    from .motion_io import Frame, Target, parse_units, prepare, read_joint_map, read_motions
    from .predictions import Predictions, file_sha256
    from .runs import find_checkpoint

    out = Path(args.out)
    fmt = args.format or ("json" if out.suffix.lower() == ".json" else "npz")
    if out.suffix.lower() != f".{fmt}":
        raise UsageError(f"--out must end in .{fmt} (--format {fmt}), got {out}")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it, or --out to write elsewhere")
    ckpt = find_checkpoint(Path(args.ckpt))
    predictor = Predictor.from_checkpoint(ckpt, device=args.device, sampler=args.sampler)
    target = Target.of(predictor)
    bvh = Path(args.input).suffix.lower() == ".bvh"
    frame = Frame(parse_units(args.input_units or ("cm" if bvh else "m")), args.input_up or ("y" if bvh else "z"))
    joint_map = read_joint_map(args.joint_map) if args.joint_map else None
    motions = read_motions(args.input, args.subject, args.action)

    t_his, t_pred = predictor.t_his, predictor.t_pred
    length = t_his + (t_pred if args.ground_truth else 0)
    windows, notes, short = [], {}, []  # windows: (prepared motion, first frame)
    for motion in motions:
        where = f"{args.input}" + (f" {motion.name}" if len(motions) > 1 else "")
        ready = prepare(motion, target, frame, joint_map=joint_map, input_fps=args.input_fps, where=where)
        notes.update(dict.fromkeys(ready.notes))
        starts = window_starts(len(ready.file), length, args.stride)
        windows += [(ready, start) for start in starts]
        if not starts:
            short.append((where, len(ready.file)))
    if not windows:
        where, frames = short[0]
        need = f"t_his={t_his}" + (f" + t_pred={t_pred} = {length}" if args.ground_truth else "")
        raise ValueError(f"{where}{' and the others' if len(short) > 1 else ''}: {frames} frames at {target.fps:g} "
                         f"fps, but the checkpoint needs {need} frames ({length / target.fps:.2f} s)")

    model_history = np.stack([r.model[s:s + t_his] for r, s in windows]).astype(np.float32)  # [B, t_his, J, 3]
    file_history = np.stack([r.file[s:s + t_his] for r, s in windows])  # [B, t_his, J, 3] float64
    k = args.num_samples or (predictor.model.cfg.noise_predictor.k if predictor.sampler == "np" else 50)
    futures = predictor.predict(model_history, num_samples=k, seed=args.seed)  # [B, K, t_pred, J, 3]
    to_file_frame(futures, model_history, file_history, frame)
    truth = np.stack([r.file[s + t_his:s + length] for r, s in windows]) if args.ground_truth else None
    skeleton = predictor.skeleton
    predictions = Predictions(
        futures=futures, history=file_history.astype(np.float32), ground_truth=truth,
        joint_names=skeleton.names, parents=np.array(skeleton.parents, dtype=np.int64),
        left_joints=np.array(skeleton.left, dtype=np.int64), right_joints=np.array(skeleton.right, dtype=np.int64),
        fps=target.fps, sampler=predictor.last.sampler, checkpoint_sha256=file_sha256(ckpt),
        window_names=[f"{r.name} @ {s / target.fps:.2f} s" for r, s in windows], units=frame.scale, up=frame.up)
    if fmt == "json":
        write_json(predictions, out)
    else:
        predictions.save(out, overwrite=True)
    if short:
        print(f"skipped {len(short)} recordings shorter than {length} frames at {target.fps:g} fps "
              f"(e.g. {short[0][0]}: {short[0][1]})")
    print(f"read {args.input}: {'; '.join(notes)}; units {frame.units()}, {frame.up} up")
    print(f"wrote {out}: {len(windows)} windows x {k} futures of {len(skeleton.names)} joints, {target.fps:g} fps, "
          f"sampler {predictor.last.sampler}, " + (f"mean APD {predictor.last.apd.mean():.3f} m" if k > 1 else
                                                     "APD n/a (one future each)"))
    return out
