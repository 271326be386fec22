"""Motion files as people have them, brought to a checkpoint's joints, frame rate, units and axes.

    motions = read_motions(path)                         # [Motion]: positions as the file holds them
    ready = prepare(motion, target, Frame(units, up))    # the checkpoint's joints at its fps, file and model frames

Formats (by file name suffix):
    .npz with positions_3d   Human3.6M format: subject -> action -> [L, 32, 3], metres, z up, 50 fps
    .npy, .npz               one array [T, J, 3] or [B, T, J, 3] (of several arrays in an npz: "positions")
    .csv                     one row per frame of 3J numbers: x, y, z of joint 0, then of joint 1, ...;
                             an optional first line of column names
    .bvh                     read with pybvh; world positions by forward kinematics (spard.geometry);
                             the checkpoint's joints found by name (an End Site is "<joint>_end")

Arrays and CSV hold the checkpoint's joints in its order, or all joints of its dataset's file layout (the
32 of Human3.6M); a JSON joint map (`read_joint_map`) picks them by index instead, or names the BVH joint
of each checkpoint joint for skeletons other than the built-in namings (`skeletons.BVH_NAMINGS`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.files import first_line, read_csv, read_json, shown
from .data.skeletons import BVH_NAMINGS, Naming

FORMAT_FPS = 50.0  # frame rate of Human3.6M-format files
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "in": 0.0254}  # metres per unit
UP_TO_Z = {"z": np.eye(3), "y": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])}  # file -> model axes: (x, y, z) -> (x, -z, y)
BODY_SPAN = (0.5, 3.0)  # metres: the largest distance between two joints of a person (median over frames)
MAX_SPEED = 25.0  # metres per second: no joint of a person moves faster (a kick peaks near 12)
MIN_RATE = 0.5  # input slower than this fraction of the checkpoint's fps is too coarse to interpolate
END = "_end"  # suffix naming a BVH End Site after its joint


@dataclass
class Motion:
    """One recording of a file: positions in the file's units and axes."""

    name: str
    positions: np.ndarray  # [L, N, 3] numbers
    fps: float | None  # the file's frame rate, None when the format does not say
    joint_names: list[str] | None = None  # BVH joints and End Sites; None for arrays (joints by position)


@dataclass(frozen=True)
class Target:
    """What a checkpoint expects: its dataset, rate, history length and joints."""

    dataset: str
    fps: float
    t_his: int
    names: list[str]  # the joints it predicts, root first
    kept: list[int]  # their slots in the dataset file's layout
    file_joints: int  # joints in that layout

    @classmethod
    def of(cls, predictor) -> "Target":
        return cls(predictor.dataset, predictor.fps, predictor.t_his, predictor.joint_names, list(predictor.kept),
                   predictor.file_num_joints)

    def describe(self) -> str:
        layout = f" (or the {self.file_joints} of its file layout)" if self.file_joints != len(self.names) else ""
        return (f"the {self.dataset} checkpoint expects {len(self.names)} joints{layout} at {self.fps:g} fps: "
                f"{', '.join(self.names)}")


# ------------------------------------------------------------------------------------------------ reading

def read_motions(path: str | Path, subject: str | None = None, action: str | None = None) -> list[Motion]:
    """The recordings of a motion file; `subject`/`action` pick sequences of a Human3.6M-format npz."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a .bvh, .csv, .npy or .npz motion file")
    kind = path.suffix.lower()
    if kind not in (".bvh", ".csv", ".npy", ".npz"):
        raise ValueError(f"{path}: unknown motion file type {kind or '(none)'!r}; give a .bvh, .csv, .npy or .npz file")
    if kind == ".npz":
        with _opened_npz(path) as npz:
            if "positions_3d" in npz.files:
                return _h36m_motions(path, subject, action)
            array = _npz_array(path, npz)
    elif subject or action:
        raise ValueError(f"--subject and --action pick sequences of a Human3.6M-format npz, and {path} is not one")
    elif kind == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - not an npy file, object arrays (pickles), truncated, ...
            raise ValueError(f"{path} is not a numeric .npy array ({_reason(e)})") from None
    elif kind == ".csv":
        array = _csv_array(path)
    else:
        return [read_bvh(path)]
    array = _numbers(array, path)
    if array.ndim == 3:
        return [Motion(path.stem, array, None)]
    return [Motion(f"{path.stem}[{b}]", clip, None) for b, clip in enumerate(array)]


def _reason(error: Exception) -> str:
    """Why numpy did not load an array; pickles are never loaded (they could run code)."""
    reason = first_line(error)
    return "it holds pickled Python objects, which are never loaded" if "pickle" in reason else reason


def _opened_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - not a zip, truncated, ...
        raise ValueError(f"{path} is not a readable .npz file ({first_line(e)})") from None


def _npz_array(path: Path, npz) -> np.ndarray:
    """The one array of an npz, or the one named "positions"."""
    names = npz.files
    if len(names) != 1 and "positions" not in names:
        raise ValueError(f"{path} holds {len(names)} arrays ({', '.join(map(shown, names[:8]))}); give a file with one "
                         "array, or name the positions 'positions'")
    try:
        return npz["positions" if "positions" in names else names[0]]
    except Exception as e:  # noqa: BLE001 - object arrays (pickles) refused, damaged member, ...
        raise ValueError(f"{path} does not hold a numeric array ({_reason(e)})") from None


def _numbers(array: np.ndarray, path: Path) -> np.ndarray:
    """A float or integer array [T, J, 3] or [B, T, J, 3], or a one-line refusal."""
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{path} holds {array.dtype} values, expected numbers (positions)")
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"{path} holds an array of shape {list(array.shape)}, expected [T, J, 3] or [B, T, J, 3] "
                         "positions")
    return array


def _csv_array(path: Path) -> np.ndarray:
    """[T, J, 3] from one row per frame of 3J numbers; a first row that is not numbers is a header."""
    rows = [row for row in map(_trimmed, read_csv(path)) if row]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # the header
    if not rows:
        raise ValueError(f"{path} holds no rows of numbers; write one row per frame (x, y, z of each joint)")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: rows have {sorted(widths)[:4]} columns; every row (a frame) must have 3J numbers")
    width = widths.pop()
    if width % 3:
        raise ValueError(f"{path} has {width} columns, not a multiple of 3; write x, y, z of each joint per row")
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{path} holds a cell that is not a number ({first_line(e)})") from None
    return values.reshape(len(rows), width // 3, 3)


def _trimmed(row: list[str]) -> list[str]:
    """A CSV row without its trailing empty cells (lines ending in a comma)."""
    while row and not row[-1].strip():
        row = row[:-1]
    return row


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _h36m_motions(path: Path, subject: str | None, action: str | None) -> list[Motion]:
    from .data.h36m import read_positions

    data = read_positions(path)
    if subject is not None and subject not in data:
        raise ValueError(f"{path} has no subject {subject!r}; it has {', '.join(map(shown, data))}")
    motions = []
    for s in [subject] if subject is not None else list(data):
        if action is not None and action not in data[s]:
            if subject is not None:
                raise ValueError(f"{path} has no action {action!r} for {s}; it has "
                                 f"{', '.join(map(shown, list(data[s])[:12]))}{', ...' if len(data[s]) > 12 else ''}")
            continue
        for a in [action] if action is not None else list(data[s]):
            positions = data[s][a]
            if not isinstance(positions, np.ndarray):
                raise ValueError(f"{path} {shown(s)}/{shown(a)} is a {type(positions).__name__}, expected an array")
            motions.append(Motion(f"{s}/{a}", _numbers(positions, path), FORMAT_FPS))
    if not motions:
        raise ValueError(f"{path}: no subject has the action {action!r}; see the action names with --subject")
    return motions


def read_bvh(path: Path) -> Motion:
    """World positions of every joint and End Site of a BVH file, by forward kinematics of its channels.

    Read with pybvh (the hierarchy, offsets, channel orders, angles and Frame Time); rotations are intrinsic
    in each joint's channel order; the root sits at its position channels (its OFFSET is ignored, as pybvh
    and most readers do).
    """
    try:
        import pybvh
    except ImportError:
        raise ValueError(f"reading {path} needs pybvh, a dependency of spard: pip install 'pybvh>=0.9,<0.10'") from None

    from .geometry import euler_to_matrix, forward_kinematics

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bvh = pybvh.read_bvh_file(path, world_up="+y")  # the up axis is ours to choose: no guessing
    except Exception as e:  # noqa: BLE001 - a malformed file raises whatever the parser meets
        detail = " ".join(str(e).replace(f" in file {path}", "").split())[:300] or type(e).__name__
        raise ValueError(f"{path} is not a BVH file that can be read ({detail})") from None
    nodes = bvh.nodes
    index = {id(node): i for i, node in enumerate(nodes)}
    parents = [-1] + [index[id(node.parent)] for node in nodes[1:]]
    offsets = np.stack([node.offset for node in nodes])  # [N, 3]
    names = [node.parent.name + END if node.is_end_site() else node.name for node in nodes]
    frames = bvh.root_pos.shape[0]
    rotations = np.tile(np.eye(3), (frames, len(nodes), 1, 1))  # [L, N, 3, 3], identity at End Sites
    joints = [i for i, node in enumerate(nodes) if not node.is_end_site()]  # the columns of joint_angles
    for column, i in enumerate(joints):
        rotations[:, i] = euler_to_matrix(bvh.joint_angles[:, column], "".join(nodes[i].rot_channels))
    positions, _ = forward_kinematics(np.array(parents), offsets, rotations, bvh.root_pos)
    return Motion(path.stem, positions, 1.0 / bvh.frame_time, names)


def read_joint_map(path: str | Path) -> dict[str, str | int]:
    """A JSON object: checkpoint joint name -> the file's joint name (BVH) or joint index (arrays, CSV)."""
    fix = 'write {"<checkpoint joint>": "<file joint>" or <joint index>, ...}'
    if not Path(path).is_file():
        raise FileNotFoundError(f"joint map {path} not found; {fix}")
    data = read_json(Path(path), fix)
    if not isinstance(data, dict) or not all(isinstance(v, str) or (type(v) is int and v >= 0) for v in data.values()):
        raise ValueError(f"{path} is not a joint map; {fix}")
    return data


# ------------------------------------------------------------------------------------------------ joints

def select_joints(motion: Motion, target: Target, joint_map: dict | None, where: str) -> tuple[np.ndarray, str]:
    """The checkpoint's joints of a motion, `[L, J, 3]` float64 in the file's units and axes, and how they were
    found (for the report)."""
    positions, names = motion.positions, motion.joint_names
    if joint_map is not None:
        missing = [n for n in target.names if n not in joint_map]
        extra = [k for k in joint_map if k not in target.names]
        if missing or extra:
            problem = f"lacks {', '.join(missing)}" if missing else f"names {', '.join(map(shown, extra))}, unknown"
            raise ValueError(f"the joint map {problem}; {target.describe()}")
        picks = [joint_map[n] for n in target.names]
        if names is None:
            if not all(type(p) is int for p in picks) or max(picks) >= positions.shape[1]:
                raise ValueError(f"{where} holds {positions.shape[1]} unnamed joints: the joint map must give each "
                                 f"checkpoint joint an index from 0 to {positions.shape[1] - 1}")
            return np.asarray(positions[:, picks], dtype=np.float64), "joints picked by the joint map"
        unknown = [(n, p) for n, p in zip(target.names, picks) if p not in names]
        if unknown:
            n, p = unknown[0]
            raise ValueError(f"{where} has no joint {shown(p)!r} (the joint map's {n}); its joints are "
                             f"{', '.join(map(shown, names[:40]))}")
        return np.asarray(positions[:, [names.index(p) for p in picks]], dtype=np.float64), "joints named by the joint map"
    if names is None:
        count = positions.shape[1]
        if count == len(target.names):
            return np.asarray(positions, dtype=np.float64), "joints in the checkpoint's order"
        if count == target.file_joints:
            return np.asarray(positions[:, target.kept], dtype=np.float64), f"the {count} joints of the file layout"
        raise ValueError(f"{where} holds {count} joints, but {target.describe()}; reorder them, or pick them with "
                         "--joint_map")
    own = Naming("checkpoint", tuple(target.names), {n: n for n in target.names})
    namings = [own] + [n for n in BVH_NAMINGS.get(target.dataset, []) if list(n.mapping) == target.names]
    have = set(names)
    fitting = [n for n in namings if set(n.mapping.values()) <= have]
    if not fitting:
        closest = min(namings, key=lambda n: len(set(n.mapping.values()) - have))
        lacking = [j for j in closest.mapping.values() if j not in have]
        raise ValueError(f"{where}: its joints match none of the namings known for the {target.dataset} checkpoint "
                         f"({', '.join(n.name for n in namings)}; closest: {closest.name}, which lacks "
                         f"{', '.join(lacking[:6])}{', ...' if len(lacking) > 6 else ''}); map the checkpoint's "
                         f"joints ({', '.join(target.names)}) to the file's with --joint_map")
    best = max(fitting, key=lambda n: len(have & set(n.joints)))  # the convention that knows the most joints
    picks = [names.index(best.mapping[n]) for n in target.names]
    return np.asarray(positions[:, picks], dtype=np.float64), f"{best.name} joint names"


# ------------------------------------------------------------------------------------------------ units and axes

def parse_units(text: str) -> float:
    """Metres per file unit: "m", "cm", "mm", "in", or a positive number."""
    if text in UNITS:
        return UNITS[text]
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"--input_units {text!r}: use m, cm, mm, in, or metres per file unit (e.g. 0.0254)")
    return value


@dataclass(frozen=True)
class Frame:
    """A file's units and up axis. `to_model` gives metres with z up (the datasets' axes), `to_file` goes back;
    neither mirrors (the axis change is a proper rotation)."""

    scale: float  # metres per file unit
    up: str = "z"  # the file's vertical axis: "y" or "z"

    def to_model(self, p: np.ndarray) -> np.ndarray:
        return (p @ UP_TO_Z[self.up].T) * self.scale  # [..., 3]

    def to_file(self, p: np.ndarray) -> np.ndarray:
        return (p @ UP_TO_Z[self.up]) / self.scale  # [..., 3]

    def units(self) -> str:
        return next((name for name, value in UNITS.items() if value == self.scale), f"units of {self.scale:g} m")


# ------------------------------------------------------------------------------------------------ checks

def resample(poses: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """Linear interpolation in time: frame k at k / fps_out seconds, from frame 0 to the last within the clip."""
    if fps_in == fps_out:
        return poses
    count = int(np.floor((len(poses) - 1) * fps_out / fps_in + 1e-9)) + 1
    t = np.arange(count) * (fps_in / fps_out)  # [L'] in input frames
    i = np.minimum(np.floor(t).astype(int), len(poses) - 1)
    w = (t - i)[:, None, None]
    return poses[i] * (1 - w) + poses[np.minimum(i + 1, len(poses) - 1)] * w  # [L', J, 3]


def body_span(poses: np.ndarray) -> float:
    """The median over frames (at most 1000 of them) of the largest distance between two joints."""
    frames = poses[np.linspace(0, len(poses) - 1, min(len(poses), 1000)).astype(int)]  # [F, J, 3]
    i, j = np.triu_indices(poses.shape[1], 1)
    return float(np.median(np.linalg.norm(frames[:, i] - frames[:, j], axis=-1).max(-1)))


def check_units(model: np.ndarray, frame: Frame, where: str) -> None:
    """Refuses a body whose size in metres is not a person's, naming the unit that would fit."""
    span = body_span(model)
    low, high = BODY_SPAN
    if low <= span <= high:
        return
    in_file = span / frame.scale
    fits = sorted((name for name, value in UNITS.items() if low <= in_file * value <= high),
                  key=lambda name: abs(np.log(in_file * UNITS[name] / 1.6)))  # nearest a typical 1.6 m first
    hint = (f"the file looks like {fits[0]}: pass --input_units {fits[0]}" if fits else
            "pass --input_units with the file's unit (m, cm, mm, in) or metres per unit (e.g. 0.0564 for CMU ASF units)")
    raise ValueError(f"{where}: read as {frame.units()}, the body spans {span:.3g} m, and a person spans "
                     f"{low:g} to {high:g} m; {hint}")


def check_speed(model: np.ndarray, fps: float, names: list[str], where: str, fps_note: str) -> None:
    """Refuses joints moving faster than a body can: a wrong frame rate or unit, or a capture glitch."""
    if len(model) < 2:
        return
    speed = np.linalg.norm(np.diff(model, axis=0), axis=-1) * fps  # [L-1, J] m/s
    frame, joint = np.unravel_index(int(np.argmax(speed)), speed.shape)
    if speed[frame, joint] > MAX_SPEED:
        raise ValueError(f"{where}: {names[joint]} moves at {speed[frame, joint]:.3g} m/s at {frame / fps:.2f} s, "
                         f"faster than a body can ({MAX_SPEED:g} m/s); check the frame rate ({fps_note}) and the "
                         "units, or cut the glitch out")


@dataclass
class Prepared:
    """A motion ready for the checkpoint: its joints at its frame rate, in the file's and the model's frame."""

    name: str
    file: np.ndarray  # [L, J, 3] float64, the file's units and axes
    model: np.ndarray  # [L, J, 3] float64, metres, z up
    notes: list[str] = field(default_factory=list)  # how it was read, for the report


def prepare(motion: Motion, target: Target, frame: Frame, *, joint_map: dict | None = None,
            input_fps: float | None = None, where: str = "") -> Prepared:
    """Joints picked, frame rate brought to the checkpoint's, units and axes converted, each step checked."""
    where = where or motion.name
    poses, how = select_joints(motion, target, joint_map, where)  # [L, J, 3]
    if not len(poses):
        raise ValueError(f"{where} holds no frames")
    bad = np.flatnonzero(~np.isfinite(poses).all(axis=(1, 2)))
    if bad.size:
        raise ValueError(f"{where}: {bad.size} frame{'s' if bad.size > 1 else ''} (first: {bad[0]}) with NaN or "
                         "infinite positions; fill or cut them out")
    notes = [how]
    fps = input_fps or motion.fps
    if fps is None:
        fps = target.fps
        notes.append(f"assumed at {fps:g} fps (the checkpoint's; pass --input_fps otherwise)")
    fps_note = f"{fps:g} fps " + ("given" if input_fps else "in the file" if motion.fps else "assumed")
    if not (np.isfinite(fps) and fps >= MIN_RATE * target.fps):
        raise ValueError(f"{where} is at {fps:g} fps, too coarse to interpolate: {target.describe()}; record at "
                         f"{MIN_RATE * target.fps:g} fps or more, or give the right --input_fps")
    if fps != target.fps:
        poses = resample(poses, fps, target.fps)
        notes.append(f"resampled from {fps:g} to {target.fps:g} fps")
    model = frame.to_model(poses)
    check_units(model, frame, where)
    check_speed(model, target.fps, target.names, where, fps_note)
    if "head" in target.names and {"left_ankle", "right_ankle"} <= set(target.names):
        head, ankles = target.names.index("head"), [target.names.index(n) for n in ("left_ankle", "right_ankle")]
        if np.median(model[:, head, 2] - model[:, ankles, 2].mean(-1)) < 0:
            notes.append(f"the head is below the ankles in most frames: is the up axis {frame.up} right?")
    return Prepared(motion.name, poses, model, notes)
