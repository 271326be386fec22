"""The predictions file: K sampled futures of B windows, with what is needed to draw them.

An `.npz` (plain arrays, no pickles) written by `spard predict` and by evaluation, read by
`spard view` and `spard render`:

    futures            float32 [B, K, t_pred, J, 3]
    history            float32 [B, t_his, J, 3]
    ground_truth       float32 [B, t_pred, J, 3]     optional
    joint_names        str     [J]
    parents            int64   [J]                   -1 for the root (joint 0)
    left_joints        int64   [L]                   joints drawn as the body's left side
    right_joints       int64   [R]
    fps                float   []
    sampler            str     []                    ddim, onestep, np, zero_velocity, ...
    checkpoint_sha256  str     []                    "" when no checkpoint was involved
    window_names       str     [B]                   optional
    units              float   []                    optional: metres per unit of the positions (default 1)
    up                 str     []                    optional: the vertical axis, "z" (default) or "y"

Every joint at its absolute (world) position, joint 0 the root; positions in metres with z up for
the built-in datasets and evaluation. `spard predict` keeps its input's units and axes and records
them (`units`, `up`); `in_metres_z_up()` gives what the drawing code takes.

    from spard.predictions import Predictions
    p = Predictions.load("predictions.npz")
    p.futures.shape   # (B, K, t_pred, J, 3)
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED = ("futures", "history", "joint_names", "parents", "left_joints", "right_joints", "fps", "sampler",
            "checkpoint_sha256")
OPTIONAL = ("ground_truth", "window_names", "units", "up")


@dataclass
class Predictions:
    """Futures of B windows with their histories, skeleton and provenance (the file's fields, checked)."""

    futures: np.ndarray  # [B, K, t_pred, J, 3] float32
    history: np.ndarray  # [B, t_his, J, 3] float32
    joint_names: list[str]  # [J]
    parents: np.ndarray  # [J] int64, -1 for the root
    left_joints: np.ndarray  # [L] int64
    right_joints: np.ndarray  # [R] int64
    fps: float
    sampler: str
    checkpoint_sha256: str = ""
    ground_truth: np.ndarray | None = None  # [B, t_pred, J, 3] float32
    window_names: list[str] | None = None  # [B]
    units: float = 1.0  # metres per unit of the positions
    up: str = "z"  # the vertical axis of the positions: "z" or "y"

    def __post_init__(self):
        self.futures = _positions("futures", self.futures, 5)
        self.history = _positions("history", self.history, 4)
        b, _, t_pred, j = self.futures.shape[:4]
        if self.history.shape[0] != b or self.history.shape[2] != j:
            raise ValueError(f"history is {list(self.history.shape)} but futures are {list(self.futures.shape)}: "
                             f"expected history [B={b}, t_his, J={j}, 3]")
        if self.ground_truth is not None:
            self.ground_truth = _positions("ground_truth", self.ground_truth, 4)
            if self.ground_truth.shape != (b, t_pred, j, 3):
                raise ValueError(f"ground_truth is {list(self.ground_truth.shape)}, expected [B, t_pred, J, 3] = "
                                 f"{[b, t_pred, j, 3]} like the futures")
        self.joint_names = _strings("joint_names", self.joint_names, j)
        self.parents = _indices("parents", self.parents, j, low=-1)
        if self.parents.shape != (j,) or self.parents[0] != -1 or (self.parents[1:] < 0).any() \
                or (self.parents == np.arange(j)).any():
            raise ValueError(f"parents must give each of the J={j} joints its parent joint: -1 for joint 0 (the "
                             f"root), 0..J-1 for the others, never the joint itself; got {self.parents.tolist()}")
        self.left_joints = _indices("left_joints", self.left_joints, j)
        self.right_joints = _indices("right_joints", self.right_joints, j)
        self.fps = float(self.fps)
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number of frames per second, got {self.fps}")
        for name in ("sampler", "checkpoint_sha256"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        if self.window_names is not None:
            self.window_names = _strings("window_names", self.window_names, b)
        self.units = float(self.units)
        if not (np.isfinite(self.units) and self.units > 0):
            raise ValueError(f"units must be a positive number of metres per unit, got {self.units}")
        if self.up not in ("y", "z"):
            raise ValueError(f"up must be 'y' or 'z' (the vertical axis), got {self.up!r}")

    def in_metres_z_up(self) -> "Predictions":
        """The same predictions with positions in metres and z up (itself when they already are)."""
        if self.units == 1.0 and self.up == "z":
            return self
        from .motion_io import Frame

        frame = Frame(self.units, self.up)
        convert = lambda a: None if a is None else frame.to_model(a).astype(np.float32)  # noqa: E731
        return dataclasses.replace(self, futures=convert(self.futures), history=convert(self.history),
                                   ground_truth=convert(self.ground_truth), units=1.0, up="z")

    # -------------------------------------------------------------------------------------- shape

    @property
    def num_windows(self) -> int:
        return self.futures.shape[0]

    @property
    def num_samples(self) -> int:
        return self.futures.shape[1]

    @property
    def t_his(self) -> int:
        return self.history.shape[1]

    @property
    def t_pred(self) -> int:
        return self.futures.shape[2]

    @property
    def names(self) -> list[str]:
        """The windows' names: `window_names`, or `window 0`, `window 1`, ..."""
        return self.window_names or [f"window {i}" for i in range(self.num_windows)]

    @property
    def skeleton(self):
        """The joints as a `spard.data.dataset.Skeleton` (what the drawing code takes)."""
        from .data.dataset import Skeleton

        return Skeleton(names=list(self.joint_names), parents=self.parents.tolist(),
                        left=self.left_joints.tolist(), right=self.right_joints.tolist())

    def select(self, windows: list[int] | None = None, samples: int | None = None) -> "Predictions":
        """Some of the windows (indices) and/or the first `samples` futures of each."""
        b = self.num_windows
        windows = list(range(b)) if windows is None else list(windows)
        bad = [i for i in windows if not 0 <= i < b]
        if bad or not windows:
            raise ValueError(f"window {bad[0] if bad else '(none)'} does not exist: the file holds {b} windows "
                             f"(0..{b - 1})")
        k = self.num_samples if samples is None else samples
        if not 1 <= k <= self.num_samples:
            raise ValueError(f"{k} futures asked for, the file holds {self.num_samples} per window")
        return Predictions(
            futures=self.futures[windows, :k], history=self.history[windows], joint_names=self.joint_names,
            parents=self.parents, left_joints=self.left_joints, right_joints=self.right_joints, fps=self.fps,
            sampler=self.sampler, checkpoint_sha256=self.checkpoint_sha256,
            ground_truth=None if self.ground_truth is None else self.ground_truth[windows],
            window_names=None if self.window_names is None else [self.window_names[i] for i in windows],
            units=self.units, up=self.up)

    # -------------------------------------------------------------------------------------- files

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the `.npz` atomically (a temporary file renamed over `path`); refuses to replace a file
        unless `overwrite`."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"a predictions file is an .npz file, got {path}")
        if path.exists() and not overwrite:
            raise ValueError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
        arrays = {"futures": self.futures, "history": self.history, "joint_names": np.array(self.joint_names, str),
                  "parents": self.parents, "left_joints": self.left_joints, "right_joints": self.right_joints,
                  "fps": np.array(self.fps), "sampler": np.array(self.sampler, str),
                  "checkpoint_sha256": np.array(self.checkpoint_sha256, str), "units": np.array(self.units),
                  "up": np.array(self.up, str)}
        if self.ground_truth is not None:
            arrays["ground_truth"] = self.ground_truth
        if self.window_names is not None:
            arrays["window_names"] = np.array(self.window_names, str)
        return write_atomically(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        """Read a predictions file without running code; a one-line ValueError for anything else."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"predictions file {path} is a folder: give the .npz file")
        if not path.is_file():
            raise ValueError(f"predictions file {path} does not exist")
        try:
            with open(path, "rb") as f:
                if f.read(4) != b"PK\x03\x04":  # an .npz is a zip archive
                    raise ValueError("not an .npz archive")
            with np.load(path, allow_pickle=False) as archive:
                missing = [key for key in REQUIRED if key not in archive.files]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)} (it holds {', '.join(archive.files) or 'nothing'})")
                arrays = {key: archive[key] for key in REQUIRED + OPTIONAL if key in archive.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            reason = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
            if "pickle" in reason:
                reason = "it holds pickled Python objects, which are never loaded (they could run code)"
            raise ValueError(f"{path} is not a predictions file: {reason}; write one with `spard predict` or "
                             f"Predictions.save") from None
        try:
            for key in ("fps", "sampler", "checkpoint_sha256", "units", "up"):
                if key in arrays and arrays[key].shape != ():
                    raise ValueError(f"{key} must be a single value, got an array of shape {list(arrays[key].shape)}")
            return cls(futures=arrays["futures"], history=arrays["history"], joint_names=arrays["joint_names"],
                       parents=arrays["parents"], left_joints=arrays["left_joints"],
                       right_joints=arrays["right_joints"], fps=_number("fps", arrays["fps"]),
                       sampler=_text("sampler", arrays["sampler"]),
                       checkpoint_sha256=_text("checkpoint_sha256", arrays["checkpoint_sha256"]),
                       ground_truth=arrays.get("ground_truth"), window_names=arrays.get("window_names"),
                       **({"units": _number("units", arrays["units"])} if "units" in arrays else {}),
                       **({"up": _text("up", arrays["up"])} if "up" in arrays else {}))
        except ValueError as e:
            raise ValueError(f"predictions file {path}: {e}") from None


def write_atomically(path: str | Path, write) -> Path:
    """`write(binary file)` into a temporary file beside `path`, then renamed over it: a failure leaves
    any earlier `path` as it was and no partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's owner-only mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (what `checkpoint_sha256` holds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _world(windows: np.ndarray) -> np.ndarray:
    """Dataset windows (joint 0 absolute, the others relative to it) -> absolute positions.  [N, T, J, 3]"""
    world = np.array(windows, dtype=np.float32)
    world[:, :, 1:] += world[:, :, :1]
    return world


def _names(dataset, split: str, indices) -> list[str]:
    labels = dataset.test_labels if split == "test" else dataset.val_labels
    return [f"{dataset.classes[labels[i]]} #{i}" for i in indices]


def predict_windows(predictor, dataset, indices: list[int], *, num_samples: int, split: str = "test",
                    seed: int | None = 0, checkpoint_sha256: str = "") -> Predictions:
    """Predictions for some windows of a dataset's test (or validation) split, with their ground truth."""
    windows = dataset.test_windows if split == "test" else dataset.val_windows
    bad = [i for i in indices if not 0 <= i < len(windows)]
    if bad:
        raise ValueError(f"window {bad[0]} does not exist: the {split} split has {len(windows)} windows "
                         f"(0..{len(windows) - 1})")
    world = _world(windows[indices])  # [N, T, J, 3]
    history, truth = world[:, :predictor.t_his], world[:, predictor.t_his:]
    skeleton = dataset.skeleton
    return Predictions(
        futures=predictor.predict(history, num_samples=num_samples, seed=seed),  # [N, K, t_pred, J, 3]
        history=history, ground_truth=truth, joint_names=skeleton.names, parents=np.array(skeleton.parents),
        left_joints=np.array(skeleton.left), right_joints=np.array(skeleton.right), fps=dataset.fps,
        sampler=predictor.sampler, checkpoint_sha256=checkpoint_sha256, window_names=_names(dataset, split, indices))


def evaluated_windows(dataset, t_his: int, futures: np.ndarray, *, sampler: str, checkpoint_sha256: str = "",
                      split: str = "test") -> Predictions:
    """The futures an evaluation sampled for every window of `split`, `[N, S, t_pred, 3J]` in model space
    (relative to the root, root dropped), as predictions: the root held at its last observed position."""
    world = _world(dataset.test_windows if split == "test" else dataset.val_windows)  # [N, T, J+1, 3]
    n, s, t_pred = futures.shape[:3]
    root = world[:, t_his - 1, None, None, :1]  # [N, 1, 1, 1, 3]
    poses = np.empty((n, s, t_pred, world.shape[2], 3), dtype=np.float32)
    poses[..., :1, :] = root
    poses[..., 1:, :] = futures.reshape(n, s, t_pred, -1, 3) + root
    skeleton = dataset.skeleton
    return Predictions(
        futures=poses, history=world[:, :t_his], ground_truth=world[:, t_his:], joint_names=skeleton.names,
        parents=np.array(skeleton.parents), left_joints=np.array(skeleton.left), right_joints=np.array(skeleton.right),
        fps=dataset.fps, sampler=sampler, checkpoint_sha256=checkpoint_sha256,
        window_names=_names(dataset, split, range(n)))


# ------------------------------------------------------------------------------------------ checks

def _positions(name: str, value, ndim: int) -> np.ndarray:
    """A float32 array `[..., 3]` of `ndim` dimensions, non-empty and finite."""
    value = np.asarray(value)
    layout = {5: "[B, K, t_pred, J, 3]", 4: "[B, frames, J, 3]"}[ndim]
    if value.ndim != ndim or value.shape[-1] != 3 or 0 in value.shape:
        raise ValueError(f"{name} must be {layout} positions, got shape {list(value.shape)}")
    if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point positions in metres, got dtype {value.dtype}")
    with np.errstate(over="ignore"):
        value = np.ascontiguousarray(value, dtype=np.float32)
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite positions")
    return value


def _indices(name: str, value, j: int, low: int = 0) -> np.ndarray:
    """A 1-D int64 array of joint indices in low..J-1."""
    value = np.asarray(value)
    if value.ndim != 1 or not (value.size == 0 or np.issubdtype(value.dtype, np.integer)):
        raise ValueError(f"{name} must be a list of joint indices, got {value.dtype} of shape {list(value.shape)}")
    value = value.astype(np.int64)
    if ((value < low) | (value >= j)).any():
        raise ValueError(f"{name} must be joint indices {low}..{j - 1} (J={j} joints), got {value.tolist()}")
    return value


def _strings(name: str, value, count: int) -> list[str]:
    value = np.asarray(value)
    if value.shape != (count,) or value.dtype.kind not in "US":
        raise ValueError(f"{name} must be {count} strings, got {value.dtype} of shape {list(value.shape)}")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value.tolist()]


def _text(name: str, value: np.ndarray) -> str:
    if value.dtype.kind not in "US":
        raise ValueError(f"{name} must be a string, got {value.dtype}")
    item = value.item()
    return item.decode() if isinstance(item, bytes) else str(item)


def _number(name: str, value: np.ndarray) -> float:
    if value.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a number, got {value.dtype}")
    return float(value)
