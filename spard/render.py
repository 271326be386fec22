"""Pictures of predictions: the history, then K sampled futures side by side, as a GIF (and MP4).

    spard render --ckpt results/demo/np                      # one test window per action, 4 futures
    spard render --ckpt model.pt --windows 3,40 --num_samples 6 --out fig.gif
    spard render --predictions predictions.npz               # a predictions file (spard predict)

One row per window: the ground truth, then the futures; every panel first replays the history (grey),
then its future in colour (left side blue, right side red; the ground truth in greens), and a legend
says so. Bodies are drawn body-centred: the root's horizontal path is taken out, so the history and
every future stand on one spot of the floor (the model predicts poses around the root, not where the
root goes). Each window has its own scale, fitted to every frame of its history, ground truth and
futures and to the floor under them, so no limb is cut off. Text is 11 px (the time 13 px) at the
default 72 dpi and grows with --dpi. Headless (Agg); an MP4 is written beside the GIF when `ffmpeg` is
on the PATH, and the command says so when it is not.

`render_picture` draws one window as a single image (history, futures and ground truth at a few
moments), e.g. for TensorBoard's `add_image(..., dataformats="HWC")`.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .arguments import Parser, UsageError, add_sampler_flag, positive, resolve_device
from .predictions import Predictions, file_sha256, predict_windows

HISTORY = {"left": "#5a5a5a", "right": "#a8a8a8", "centre": "#7f7f7f"}
FUTURE = {"left": "#1f77b4", "right": "#d62728", "centre": "#333333"}
TRUTH = {"left": "#1b7a2e", "right": "#7ccf6d", "centre": "#2f4f2f"}

TEXT_PT = 11  # headers, row titles, legend; a point is a pixel at 72 dpi
TIME_PT = 13  # the time (or title) line at the top
TOP_IN, HEADER_IN, ROW_TITLE_IN, LEGEND_ROW_IN = 0.32, 0.26, 0.24, 0.28  # strips of the figure, inches


# ------------------------------------------------------------------------------------------ geometry

def to_world(poses: np.ndarray) -> np.ndarray:
    """Dataset layout (joint 0 absolute, others relative to it) -> absolute positions.  [..., J+1, 3]"""
    out = np.array(poses, dtype=np.float32)
    out[..., 1:, :] += out[..., :1, :]
    return out


def body_centred(poses: np.ndarray) -> np.ndarray:
    """Absolute positions with the root's horizontal (x, y) position removed, height kept.  [..., J+1, 3]"""
    out = np.array(poses, dtype=np.float32)
    out[..., :2] -= out[..., :1, :2]
    return out


def extent(poses: np.ndarray) -> tuple[float, float, float]:
    """(reach, floor, top) of body-centred positions `[..., J, 3]`: |x|, |y| <= reach, floor <= z <= top."""
    floor = float(poses[..., 2].min())
    return max(float(np.abs(poses[..., :2]).max()), 0.25), floor, max(float(poses[..., 2].max()), floor + 0.5)


def side_of(skeleton) -> list[str]:
    """'left', 'right' or 'centre' for the bone ending at each joint."""
    left, right = set(skeleton.left), set(skeleton.right)
    return ["left" if j in left else "right" if j in right else "centre" for j in range(len(skeleton.parents))]


def bones_of(skeleton) -> np.ndarray:
    """`[bones, 2]` (child, parent) joint pairs."""
    return np.array([(j, p) for j, p in enumerate(skeleton.parents) if p >= 0]).reshape(-1, 2)


# ------------------------------------------------------------------------------------------ figure

def _figure(columns: list[str], rows: list[str], extents: list[tuple], legend: dict, *, dpi: int,
            panel_inches: float):
    """A headless figure: a top line, column headers, one titled row of 3D panels per row, a legend.

    `extents`: (reach, floor, top) of each row; `legend`: {label: colours of the left and right sides}.

    Returns `(canvas, panels [rows][columns], top line)`; every panel shows its row's extent whole.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    n_cols = len(columns)
    labels = [f"{name} (left, right)" for name in legend]
    entry_in = 0.7 + 0.5 * TEXT_PT / 72 * max(map(len, labels))  # a legend entry's width, estimated
    width = max(panel_inches * n_cols, entry_in)
    legend_cols = max(1, min(len(legend), int(width // entry_in)))
    row_in = ROW_TITLE_IN + panel_inches
    height = TOP_IN + HEADER_IN + len(rows) * row_in + LEGEND_ROW_IN * math.ceil(len(legend) / legend_cols)
    fig = Figure(figsize=(width, height), dpi=dpi)
    canvas = FigureCanvasAgg(fig)  # headless, whatever matplotlib backend the caller uses
    top = fig.text(0.5, 1 - 0.05 / height, "", fontsize=TIME_PT, ha="center", va="top")
    for c, name in enumerate(columns):
        fig.text((c + 0.5) / n_cols, 1 - (TOP_IN + HEADER_IN / 2) / height, name, fontsize=TEXT_PT,
                 ha="center", va="center")
    panels = []
    for r, (title, (reach, floor, ceiling)) in enumerate(zip(rows, extents)):
        row_top = height - TOP_IN - HEADER_IN - r * row_in  # inches from the bottom
        fig.text(0.06 / width, (row_top - ROW_TITLE_IN / 2) / height, title, fontsize=TEXT_PT, weight="bold",
                 ha="left", va="center")
        panels.append([])
        for c in range(n_cols):
            ax = fig.add_axes((c / n_cols, (row_top - row_in) / height, 1 / n_cols, panel_inches / height),
                              projection="3d", proj_type="ortho")
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
            ax.set_zlim(floor, ceiling)
            ax.set_box_aspect((2 * reach, 2 * reach, ceiling - floor))  # equal scales on the three axes
            ax.view_init(elev=15, azim=-60)
            ax.set_axis_off()
            xx, yy = np.meshgrid([-reach, reach], [-reach, reach])
            ax.plot_surface(xx, yy, np.full_like(xx, floor), color="#d9d9d9", alpha=0.5, shade=False)
            panels[-1].append(ax)
    handles = [tuple(Line2D([], [], color=colours[side], lw=3) for side in ("left", "right"))
               for colours in legend.values()]
    fig.legend(handles, labels, loc="lower center", ncol=legend_cols,
               fontsize=TEXT_PT, frameon=False, handlelength=2.6, borderaxespad=0.1, columnspacing=1.2,
               handler_map={tuple: HandlerTuple(ndivide=None, pad=0.2)})
    _fit([ax for row in panels for ax in row], canvas)
    return canvas, panels, top


def _fit(axes: list, canvas) -> None:
    """Zoom each 3D panel so that its whole box (the axis limits) just fits inside the panel."""
    from mpl_toolkits.mplot3d import proj3d

    canvas.draw()  # sets each panel's projection
    for ax in axes:
        corners = np.array(list(itertools.product(ax.get_xlim(), ax.get_ylim(), ax.get_zlim()))).T  # [3, 8]
        x, y, _ = proj3d.proj_transform(*corners, ax.M)
        pixels = ax.transData.transform(np.c_[x, y])  # [8, 2]
        box = ax.bbox
        half = np.abs(pixels - (box.x0 + box.width / 2, box.y0 + box.height / 2)).max(axis=0)  # [2]
        zoom = 0.96 * min(box.width / 2 / half[0], box.height / 2 / half[1])
        ax.set_box_aspect(np.diff([ax.get_xlim(), ax.get_ylim(), ax.get_zlim()]).ravel(), zoom=zoom)


def _bone_lines(ax, linewidth: float = 1.5, alpha: float = 1.0):
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    lines = Line3DCollection([], linewidths=linewidth, alpha=alpha, capstyle="round")
    ax.add_collection3d(lines, autolim=False)
    return lines


def _columns(history, futures, truth) -> tuple[list[str], list[dict], np.ndarray]:
    """Column names, colours and body-centred sequences `[C, t_his + t_pred, J, 3]` of one window."""
    names, colours, futures = [f"sample {i + 1}" for i in range(len(futures))], [FUTURE] * len(futures), list(futures)
    if truth is not None:
        names, colours, futures = ["ground truth"] + names, [TRUTH] + colours, [truth] + futures
    return names, colours, body_centred(np.stack([np.concatenate([history, f]) for f in futures]))


def render_frames(history: np.ndarray, futures: np.ndarray, skeleton, titles: list[str], *,
                  truth: np.ndarray | None = None, fps: float = 30.0, step: int = 2, dpi: int = 72,
                  panel_inches: float = 1.7) -> list:
    """Frames (PIL images) of `history [N, t_his, J+1, 3]` then `futures [N, K, t_pred, J+1, 3]`.

    Positions are absolute (world), z up, metres. `truth [N, t_pred, J+1, 3]` adds a first column
    with the ground-truth future. One frame every `step` time steps: `len(range(0, T, step))` frames.
    """
    from PIL import Image

    n, k, t_pred = futures.shape[:3]
    t_his = history.shape[1]
    if history.shape[0] != n or history.shape[2:] != futures.shape[3:] or len(titles) != n or \
            (truth is not None and truth.shape != (n, t_pred) + futures.shape[3:]):
        raise ValueError(f"history {list(history.shape)}, futures {list(futures.shape)}, "
                         f"truth {None if truth is None else list(truth.shape)} and {len(titles)} titles disagree; "
                         f"expected [N, t_his, J, 3], [N, K, t_pred, J, 3], [N, t_pred, J, 3] and N titles")
    windows = [_columns(history[i], futures[i], None if truth is None else truth[i]) for i in range(n)]
    names, colours, _ = windows[0]
    legend = {"history": HISTORY, "samples": FUTURE} | ({"ground truth": TRUTH} if truth is not None else {})
    canvas, panels, label = _figure(names, titles, [extent(seq) for _, _, seq in windows], legend, dpi=dpi,
                                    panel_inches=panel_inches)
    sides, bones = side_of(skeleton), bones_of(skeleton)
    lines = [[_bone_lines(ax) for ax in row] for row in panels]
    for artist in [label] + [line for row in lines for line in row]:
        artist.set_animated(True)

    # blitting: floors and titles are drawn once; the bodies and the time label on top, frame by frame
    canvas.draw()
    background = canvas.copy_from_bbox(canvas.figure.bbox)
    frames = []
    for t in range(0, t_his + t_pred, step):
        observed = t < t_his
        canvas.restore_region(background)
        label.set_text(f"history {(t + 1) / fps:.2f} s" if observed else f"prediction +{(t - t_his + 1) / fps:.2f} s")
        canvas.figure.draw_artist(label)
        for (_, _, sequences), row_lines in zip(windows, lines):
            for sequence, palette, line in zip(sequences, colours, row_lines):
                line.set_segments(sequence[t, bones])  # [bones, 2, 3]
                line.set_color([(HISTORY if observed else palette)[sides[j]] for j, _ in bones])
                line.do_3d_projection()  # with the view set by the full draw
                line.axes.draw_artist(line)
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    return frames


def render_picture(history: np.ndarray, futures: np.ndarray, skeleton, *, truth: np.ndarray | None = None,
                   title: str = "", fps: float = 30.0, moments: int = 3, dpi: int = 72,
                   panel_inches: float = 1.4) -> np.ndarray:
    """One image `uint8 [H, W, 3]` of one window: `history [t_his, J, 3]`, `futures [K, t_pred, J, 3]`.

    Columns: the ground truth (`truth [t_pred, J, 3]`, if given), then the K futures; rows: `moments`
    evenly spaced times of the prediction, the last its end. Each panel shows that moment's pose in
    colour over the last observed pose in grey. Positions absolute (world), z up, metres.
    """
    t_pred = futures.shape[1]
    if history.ndim != 3 or futures.ndim != 4 or futures.shape[2:] != history.shape[1:] or \
            (truth is not None and truth.shape != futures.shape[1:]):
        raise ValueError(f"history {list(history.shape)}, futures {list(futures.shape)} and truth "
                         f"{None if truth is None else list(truth.shape)} disagree; expected [t_his, J, 3], "
                         f"[K, t_pred, J, 3] and [t_pred, J, 3]")
    names, colours, sequences = _columns(history, futures, truth)  # sequences [C, T, J, 3]
    times = np.unique(np.linspace(0, t_pred, moments + 1)[1:].round().astype(int)) - 1  # frames of the future
    last = len(history) - 1
    legend = {"last observed pose": HISTORY, "samples": FUTURE} | ({"ground truth": TRUTH} if truth is not None else {})
    canvas, panels, label = _figure(names, [f"+{(t + 1) / fps:.2f} s" for t in times],
                                    [extent(sequences)] * len(times), legend, dpi=dpi, panel_inches=panel_inches)
    label.set_text(title)
    sides, bones = side_of(skeleton), bones_of(skeleton)
    for t, row in zip(times, panels):
        for sequence, palette, ax in zip(sequences, colours, row):
            ghost = _bone_lines(ax, linewidth=1.0, alpha=0.8)
            ghost.set_segments(sequence[last, bones])
            ghost.set_color([HISTORY[sides[j]] for j, _ in bones])
            pose = _bone_lines(ax)
            pose.set_segments(sequence[last + 1 + t, bones])
            pose.set_color([palette[sides[j]] for j, _ in bones])
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ------------------------------------------------------------------------------------------ files

def save_gif(frames: list, path: str | Path, fps: float, hold_last: float = 1.0) -> Path:
    """An endlessly looping GIF at `fps` frames per second; the last frame stays `hold_last` seconds."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [round(1000 / fps)] * (len(frames) - 1) + [round(1000 * max(hold_last, 1 / fps))]
    # one palette for all frames (small file, no flicker), taken from the first and last frames and from
    # blocks of the drawing colours, so that thin lines and the legend keep their colours exactly
    first, last = frames[0], frames[-1]
    colours = [c for palette in (HISTORY, FUTURE, TRUTH) for c in palette.values()]
    block = max(1, first.width // len(colours))
    sample = Image.new("RGB", (max(first.width, block * len(colours)), 2 * first.height + block), "white")
    sample.paste(first, (0, 0))
    sample.paste(last, (0, first.height))
    for i, colour in enumerate(colours):
        sample.paste(colour, (i * block, 2 * first.height, (i + 1) * block, 2 * first.height + block))
    shared = sample.quantize(colors=64)
    quantized = [f.quantize(palette=shared, dither=0) for f in frames]
    quantized[0].save(path, save_all=True, append_images=quantized[1:], duration=durations, loop=0, optimize=True)
    return path


def save_mp4(frames: list, path: str | Path, fps: float) -> Path | None:
    """The frames as an H.264 MP4 through ffmpeg; None (nothing written) when ffmpeg is missing."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    w, h = frames[0].size
    raw = b"".join(f.convert("RGB").tobytes() for f in frames)
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", f"{fps:g}", "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p", str(path)]
    done = subprocess.run(cmd, input=raw, capture_output=True)
    if done.returncode != 0:
        raise OSError(f"ffmpeg failed writing {path}: {done.stderr.decode(errors='replace').strip()[:200]}")
    return Path(path)


def render_predictions(predictions: Predictions, path: str | Path, *, step: int = 2, dpi: int = 72) -> list[Path]:
    """Draw every window of `predictions`; writes `path` (GIF) and, with ffmpeg, the MP4 beside it."""
    p = predictions
    frames = render_frames(p.history, p.futures, p.skeleton, p.names, truth=p.ground_truth, fps=p.fps, step=step,
                           dpi=dpi)
    written = [save_gif(frames, path, fps=p.fps / step)]
    mp4 = save_mp4(frames, Path(path).with_suffix(".mp4"), fps=p.fps / step)
    return written + ([mp4] if mp4 else [])


# ------------------------------------------------------------------------------------------ windows

def pick_windows(labels: np.ndarray, count: int) -> list[int]:
    """`count` window indices of different classes, spread over the classes present (middle window of each)."""
    classes = np.unique(labels)
    chosen = classes[np.linspace(0, len(classes) - 1, min(count, len(classes))).round().astype(int)]
    picks = [int(np.flatnonzero(labels == c)[(labels == c).sum() // 2]) for c in chosen]
    rest = [i for i in range(len(labels)) if i not in picks]  # fewer classes than asked: fill with others
    return picks + rest[:count - len(picks)]


def render_windows(predictor, dataset, indices: list[int], path: str | Path, *, num_samples: int = 4,
                   split: str = "test", seed: int = 0, step: int = 2, dpi: int = 72, truth: bool = True) -> list[Path]:
    """Predict and draw the given windows of a dataset; writes `path` (GIF) and, with ffmpeg, the MP4 beside it."""
    predictions = predict_windows(predictor, dataset, indices, num_samples=num_samples, split=split, seed=seed)
    if not truth:
        predictions = dataclasses.replace(predictions, ground_truth=None)
    return render_predictions(predictions, path, step=step, dpi=dpi)


# ------------------------------------------------------------------------------------------ command

def add_source_flags(p: argparse.ArgumentParser, samples: int) -> None:
    """The flags that say what to draw: a predictions file, or a checkpoint and some dataset windows."""
    g = p.add_argument_group("what to draw: --predictions FILE, or --ckpt CHECKPOINT and dataset windows")
    g.add_argument("--predictions", default=None, help="a predictions file (.npz, as `spard predict` writes)")
    g.add_argument("--ckpt", default=None, help="a spard checkpoint, or a stage folder (results/demo/np)")
    g.add_argument("--windows", default=None,
                   help="window indices, e.g. 3,17,40 (default: --max_windows windows: of different actions with "
                        "--ckpt, the first ones of a file)")
    g.add_argument("--max_windows", type=positive(int), default=4, help="windows picked when --windows is not given")
    g.add_argument("--num_samples", type=positive(int), default=None,
                   help=f"futures per window (K; default {samples}, or all a file holds if fewer)")
    g.add_argument("--no_ground_truth", action="store_true", help="leave out the ground truth")
    add_sampler_flag(g)
    g.add_argument("--split", choices=("test", "val"), default=None, help="--ckpt: which windows (default test)")
    g.add_argument("--data_dir", default=None, help="--ckpt: dataset folder, if not where the checkpoint was trained")
    g.add_argument("--seed", type=int, default=None, help="--ckpt: noise seed of the ddim/onestep samplers (default 0)")
    g.add_argument("--device", default=None, help="--ckpt: torch device (default cpu)")


def source_file(args) -> Path:
    """The file the flags of `add_source_flags` name: the predictions file, or the checkpoint."""
    from .runs import find_checkpoint

    if bool(args.predictions) == bool(args.ckpt):
        raise UsageError("give either --predictions FILE.npz or --ckpt CHECKPOINT (to predict dataset windows)")
    if args.predictions:
        given = [f"--{name}" for name in ("sampler", "split", "data_dir", "seed", "device")
                 if getattr(args, name) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply with --ckpt: a predictions file is already predicted")
        return Path(args.predictions)
    return find_checkpoint(Path(args.ckpt))


def read_source(args, source: Path, samples: int) -> Predictions:
    """The predictions the flags ask for: read from the file `source`, or predicted by the checkpoint `source`."""
    windows = None
    if args.windows:
        try:
            windows = [int(i) for i in args.windows.replace(",", " ").split()]
        except ValueError:
            raise UsageError(f"--windows expects indices like 3,17,40, got {args.windows!r}") from None
    if args.predictions:
        predictions = Predictions.load(source).in_metres_z_up()  # what the drawing code takes
        windows = windows or list(range(min(args.max_windows, predictions.num_windows)))
        predictions = predictions.select(windows, args.num_samples or min(samples, predictions.num_samples))
    else:
        predictions = _predict(args, source, windows, args.num_samples or samples)
    if args.no_ground_truth:
        predictions = dataclasses.replace(predictions, ground_truth=None)
    return predictions


def _predict(args, ckpt: Path, windows: list[int] | None, num_samples: int) -> Predictions:
    """Predictions of a checkpoint for windows of its dataset (default: different actions)."""
    from .api import Predictor
    from .data import load_dataset

    predictor = Predictor.from_checkpoint(ckpt, device=resolve_device(args.device or "cpu"), sampler=args.sampler)
    data_cfg = predictor.model.cfg.data
    if args.data_dir:
        data_cfg = dataclasses.replace(data_cfg, data_dir=args.data_dir)
    dataset = load_dataset(data_cfg)
    split = args.split or "test"
    labels = dataset.test_labels if split == "test" else dataset.val_labels
    windows = windows or pick_windows(labels, args.max_windows)
    return predict_windows(predictor, dataset, windows, num_samples=num_samples, split=split,
                           seed=0 if args.seed is None else args.seed, checkpoint_sha256=file_sha256(ckpt))


def output_path(args, source: Path, name: str) -> Path:
    """--out, or `name` beside a checkpoint / the predictions file renamed; refuses to replace a file."""
    suffix = Path(name).suffix
    out = Path(args.out) if args.out else source.with_suffix(suffix) if source.suffix == ".npz" \
        else source.parent / name
    if out.suffix.lower() != suffix:
        raise UsageError(f"--out must name a {suffix} file, got {out}")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it, or --out to write elsewhere")
    return out


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="spard render", description=__doc__.split("\n\n")[0],
               epilog="Frames: one every --step time steps; the GIF plays in real time.",
               replaces="an existing output file")
    add_source_flags(p, samples=4)
    p.add_argument("--out", default=None,
                   help="output GIF (default: render.gif beside the checkpoint, or the predictions file's name .gif)")
    p.add_argument("--step", type=positive(int), default=2, help="draw every step-th frame")
    p.add_argument("--dpi", type=positive(int), default=72, help="resolution: pixels per inch of a 1.7-inch panel")
    return p


def run(args) -> list[Path]:
    source = source_file(args)
    out = output_path(args, source, "render.gif")
    predictions = read_source(args, source, samples=4)
    written = render_predictions(predictions, out, step=args.step, dpi=args.dpi)
    print(f"wrote {', '.join(map(str, written))} ({predictions.num_windows} windows x {predictions.num_samples} "
          f"futures, sampler {predictions.sampler})")
    if len(written) == 1:
        print("no MP4 written: ffmpeg is not on the PATH (install ffmpeg to get an MP4 beside the GIF)")
    return written
