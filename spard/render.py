"""Pictures of predictions: the history, then K sampled futures side by side, as a GIF (and MP4).

    spard render --ckpt results/demo/np                      # one test window per action, 4 futures
    spard render --ckpt model.pt --windows 3,40 --num_samples 6 --out fig.gif

One row per window: the ground truth, then the futures; every panel first replays the history (grey),
then its future in colour (left side blue, right side red; the ground truth in greens). Bodies are drawn
body-centred: the root's horizontal path is taken out, so the history and every future stand on one spot
of the floor (the model predicts poses around the root, not where the root goes). Headless (Agg); an MP4
is written beside the GIF when `ffmpeg` is on the PATH.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import numpy as np

HISTORY = {"left": "#5a5a5a", "right": "#a8a8a8", "centre": "#7f7f7f"}
FUTURE = {"left": "#1f77b4", "right": "#d62728", "centre": "#333333"}
TRUTH = {"left": "#1b7a2e", "right": "#7ccf6d", "centre": "#2f4f2f"}


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


def side_of(skeleton) -> list[str]:
    """'left', 'right' or 'centre' for the bone ending at each joint."""
    left, right = set(skeleton.left), set(skeleton.right)
    return ["left" if j in left else "right" if j in right else "centre" for j in range(len(skeleton.parents))]


# ------------------------------------------------------------------------------------------ drawing

def render_frames(history: np.ndarray, futures: np.ndarray, skeleton, titles: list[str], *,
                  truth: np.ndarray | None = None, fps: float = 30.0, step: int = 2, dpi: int = 72,
                  panel_inches: float = 1.7) -> list:
    """Frames (PIL images) of `history [N, t_his, J+1, 3]` then `futures [N, K, t_pred, J+1, 3]`.

    Positions are absolute (world), z up, metres. `truth [N, t_pred, J+1, 3]` adds a first column
    with the ground-truth future. One frame every `step` time steps: `len(range(0, T, step))` frames.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Line3DCollection
    from PIL import Image

    n, k, t_pred = futures.shape[:3]
    t_his = history.shape[1]
    if history.shape[0] != n or history.shape[2:] != futures.shape[3:] or len(titles) != n:
        raise ValueError(f"history {list(history.shape)}, futures {list(futures.shape)} and {len(titles)} titles "
                         f"disagree; expected [N, t_his, J, 3], [N, K, t_pred, J, 3] and N titles")
    columns = [("ground truth", truth, TRUTH)] if truth is not None else []
    columns += [(f"sample {i + 1}", futures[:, i], FUTURE) for i in range(k)]  # (name, [N, t_pred, J+1, 3], colours)

    # one scale for every panel, from the observed motion and the ground truth (a wild future may leave it)
    seen = body_centred(np.concatenate([history] + ([truth] if truth is not None else []), axis=1))
    floor = float(seen[..., 2].min())
    top = max(float(seen[..., 2].max()), floor + 1.0)
    reach = max(float(np.abs(seen[..., :2]).max()), 0.5) * 1.1
    sides = side_of(skeleton)
    bones = np.array([(j, p) for j, p in enumerate(skeleton.parents) if p >= 0])  # [bones, 2] (child, parent)

    height = panel_inches * n + 0.45  # the panels, and a strip at the top for the time label
    fig = Figure(figsize=(panel_inches * len(columns), height), dpi=dpi)
    canvas = FigureCanvasAgg(fig)  # headless, whatever matplotlib backend the caller uses
    panels = []  # (axes, bones artist, [T, J+1, 3] sequence, colours)
    for row in range(n):
        for col, (name, future, colours) in enumerate(columns):
            ax = fig.add_subplot(n, len(columns), row * len(columns) + col + 1, projection="3d")
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
            ax.set_zlim(floor, top)
            ax.set_box_aspect((2 * reach, 2 * reach, top - floor), zoom=1.5)  # equal scales on the three axes
            ax.view_init(elev=15, azim=-60)
            ax.set_axis_off()
            ax.set_title(f"{titles[row]} · {name}", fontsize=7, pad=0)
            xx, yy = np.meshgrid([-reach, reach], [-reach, reach])
            ax.plot_surface(xx, yy, np.full_like(xx, floor), color="#d9d9d9", alpha=0.5, shade=False)
            lines = Line3DCollection([], linewidths=1.5, capstyle="round", axlim_clip=True, animated=True)
            ax.add_collection3d(lines, autolim=False)
            sequence = body_centred(np.concatenate([history[row], future[row]]))  # [T, J+1, 3]
            panels.append((ax, lines, sequence, colours))
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.45 / height, wspace=0, hspace=0.1)
    label = fig.suptitle("", fontsize=9, y=1 - 0.05 / height, va="top", animated=True)

    # blitting: floors and titles are drawn once; the bodies and the time label on top, frame by frame
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    frames = []
    for t in range(0, t_his + t_pred, step):
        observed = t < t_his
        canvas.restore_region(background)
        label.set_text(f"history {(t + 1) / fps:.2f} s" if observed else f"prediction +{(t - t_his + 1) / fps:.2f} s")
        fig.draw_artist(label)
        for ax, lines, sequence, colours in panels:
            lines.set_segments(sequence[t, bones])  # [bones, 2, 3]
            lines.set_color([(HISTORY if observed else colours)[sides[j]] for j, _ in bones])
            lines.do_3d_projection()  # with the view set by the full draw
            ax.draw_artist(lines)
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    return frames


def save_gif(frames: list, path: str | Path, fps: float, hold_last: float = 1.0) -> Path:
    """An endlessly looping GIF at `fps` frames per second; the last frame stays `hold_last` seconds."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [round(1000 / fps)] * (len(frames) - 1) + [round(1000 * max(hold_last, 1 / fps))]
    # one palette for all frames (small file, no flicker), taken from the first and last frames
    first, last = frames[0], frames[-1]
    both = Image.new("RGB", (first.width, 2 * first.height))
    both.paste(first, (0, 0))
    both.paste(last, (0, first.height))
    shared = both.quantize(colors=64)
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
    windows = dataset.test_windows if split == "test" else dataset.val_windows
    labels = dataset.test_labels if split == "test" else dataset.val_labels
    bad = [i for i in indices if not 0 <= i < len(windows)]
    if bad:
        raise ValueError(f"window {bad[0]} does not exist: the {split} split has {len(windows)} windows "
                         f"(0..{len(windows) - 1})")
    world = to_world(windows[indices])  # [N, T, J+1, 3]
    history, future = world[:, :predictor.t_his], world[:, predictor.t_his:]
    futures = predictor.predict(history, num_samples=num_samples, seed=seed)  # [N, K, t_pred, J+1, 3]
    titles = [f"{dataset.classes[labels[i]]} #{i}" for i in indices]
    frames = render_frames(history, futures, dataset.skeleton, titles, truth=future if truth else None,
                           fps=dataset.fps, step=step, dpi=dpi)
    written = [save_gif(frames, path, fps=dataset.fps / step)]
    mp4 = save_mp4(frames, Path(path).with_suffix(".mp4"), fps=dataset.fps / step)
    return written + ([mp4] if mp4 else [])


# ------------------------------------------------------------------------------------------ command

def parser() -> argparse.ArgumentParser:
    from .arguments import Parser as _Parser, positive as _positive

    p = _Parser(prog="spard render", description=__doc__.split("\n\n")[0],
                epilog="Frames: one every --step time steps; the GIF plays in real time.")
    p.add_argument("--ckpt", required=True, help="a spard checkpoint, or a stage folder (results/demo/np)")
    p.add_argument("--sampler", choices=("ddim", "onestep", "np"), default=None,
                   help="default: the checkpoint stage's own (base: ddim, distill: onestep, np: np)")
    p.add_argument("--windows", default=None,
                   help="window indices, e.g. 3,17,40 (default: --max_windows windows of different actions)")
    p.add_argument("--max_windows", type=_positive(int), default=4, help="windows picked when --windows is not given")
    p.add_argument("--split", choices=("test", "val"), default="test", help="which windows")
    p.add_argument("--num_samples", type=_positive(int), default=4, help="futures per window (K)")
    p.add_argument("--data_dir", default=None, help="dataset folder, if not where the checkpoint was trained")
    p.add_argument("--out", default=None, help="output GIF (default: render.gif beside the checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no_ground_truth", action="store_true", help="leave out the ground-truth column")
    p.add_argument("--step", type=_positive(int), default=2, help="draw every step-th frame")
    p.add_argument("--dpi", type=_positive(int), default=72, help="resolution: pixels per inch of a 1.7-inch panel")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the ddim/onestep samplers")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def run(args) -> list[Path]:
    import dataclasses

    from .api import Predictor
    from .runs import find_checkpoint
    from .arguments import UsageError, resolve_device
    from .data import load_dataset

    ckpt = find_checkpoint(Path(args.ckpt))
    out = Path(args.out) if args.out else ckpt.parent / "render.gif"
    if out.suffix.lower() != ".gif":
        raise UsageError(f"--out must name a .gif file, got {out}")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it, or --out to write elsewhere")
    predictor = Predictor.from_checkpoint(ckpt, device=resolve_device(args.device), sampler=args.sampler)
    data_cfg = predictor.model.cfg.data
    if args.data_dir:
        data_cfg = dataclasses.replace(data_cfg, data_dir=args.data_dir)
    dataset = load_dataset(data_cfg)
    labels = dataset.test_labels if args.split == "test" else dataset.val_labels
    if args.windows:
        try:
            indices = [int(i) for i in args.windows.replace(",", " ").split()]
        except ValueError:
            raise UsageError(f"--windows expects indices like 3,17,40, got {args.windows!r}") from None
    else:
        indices = pick_windows(labels, args.max_windows)
    written = render_windows(predictor, dataset, indices, out, num_samples=args.num_samples, split=args.split,
                             seed=args.seed, step=args.step, dpi=args.dpi, truth=not args.no_ground_truth)
    print(f"wrote {', '.join(map(str, written))} ({len(indices)} windows x {args.num_samples} futures, "
          f"sampler {predictor.sampler})")
    return written
