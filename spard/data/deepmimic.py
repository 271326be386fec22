"""The embedded default dataset: DeepMimic's motion clips, real motion capture shipped inside `pybullet`.

Source (read from the installed `pybullet_data` package; pybullet itself is never imported):
- `data/motions/humanoid3d_<action>.txt`: 15 clips, one per action (CMU and SFU mocap retargeted by DeepMimic);
- `data/motions/walker/*.txt`: 5 more walks (forward, turning left/right), class "walk";
- `humanoid/humanoid.urdf`: the skeleton (offsets in urdf units; DeepMimic loads it with globalScaling 0.25).

Clip format (JSON, checked against the files): `Loop` is "wrap" (a cycle) or "none" (one shot); each row
of `Frames` has 44 numbers: dt (seconds to the next frame; the last row's dt is unused), root position
(3, already in metres: a standing root is ~0.85 m high), root quaternion (w, x, y, z; world frame), then
the local rotations of chest, neck, right hip, right knee, right ankle, right shoulder, right elbow,
left hip, ..., left elbow: a quaternion (w, x, y, z) per spherical joint, one angle (radians) per
revolute knee/elbow, about the urdf axis z (knees bend negative, elbows positive). The data is y up with
the character facing +x, so +z is its right (the urdf puts the right hip at +z).

Points (J = 17, joint 0 = pelvis), in metres, z up, right-handed (x forward at rest, y left):
  0 pelvis; 1-4 right hip, knee, ankle, toe; 5-8 left hip, knee, ankle, toe; 9 chest (spine joint),
  10 neck, 11 head; 12-14 right shoulder, elbow, wrist; 15-17 left shoulder, elbow, wrist.
Joint points are the urdf joint origins. The end points come from the urdf collision shapes: toe = the
front-bottom edge centre of the foot box (so a flat foot puts it on the floor), head = the top of the head
sphere (so a standing body is ~1.62 m tall).

Processing of a clip: quaternions normalised; a "wrap" clip is made seamless (its last frame differs from
its first by up to ~60 degrees at some joints: that difference is spread linearly over the cycle, as is any
root height and tilt difference) and tiled to LOOP_SECONDS, each cycle starting where the previous one ended
(root translation and heading carried forward, as DeepMimic does); the timeline is resampled to `cfg.fps`
(slerp of rotations, linear root position), then forward kinematics (`spard.geometry`) gives the points: the urdf
becomes one joint per point, the end points being leaf joints fixed in their link.

Split (deterministic, by time within each clip; there is one recording per action):
- a tiled "wrap" clip (LOOP_SECONDS long) is cut into three disjoint, consecutive time ranges:
  train = the first 1 - val_fraction - TEST_FRACTION, validation = the next `cfg.val_fraction`,
  test = the last TEST_FRACTION. The ranges share no frame, but they replay the same recorded cycle, so the
  test measures how well the model fits the cycle, not generalisation to new recordings;
- a "none" clip (kick, punch, the two get-ups: 1.5 to 3.8 s) is too short to cut into windows for all three
  parts and goes whole to train: those classes have no validation/test windows (CMD reference NaN).
The rest is `protocol.build_dataset`, as for every dataset, with these validation clips: test and validation
windows by the published rule (per clip, starts 0, t_his, 2 t_his, ... while the window of T = t_his + t_pred
frames fits) and the CMD reference from the test windows. Suggested protocol: fps 30, t_his 15, t_pred 30
(T = 1.5 s, so the shortest one-shot, kick at 1.53 s, still gives a training window).
"""
from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..geometry import (forward_kinematics, quat_about_axis, quat_exp, quat_inverse, quat_log, quat_multiply,
                        quat_normalize, quat_slerp, quat_to_matrix)
from .dataset import Clip, Dataset, Skeleton
from .files import first_line, read_json
from .protocol import SPLITS, build_dataset
from .skeletons import root_relative

URDF_SCALE = 0.25  # DeepMimic's globalScaling of humanoid.urdf
LOOP_SECONDS = 20.0  # tiled length of a looping clip
TEST_FRACTION = 0.2  # share of a tiled loop kept for test (its last frames)

# motion-file order of the animated urdf joints (each a spherical quaternion or a revolute angle)
MOTION_JOINTS = ("chest", "neck", "right_hip", "right_knee", "right_ankle", "right_shoulder", "right_elbow",
                 "left_hip", "left_knee", "left_ankle", "left_shoulder", "left_elbow")
REVOLUTE = {"right_knee", "right_elbow", "left_knee", "left_elbow"}

# (point name, urdf link, site in that link: "origin" = the joint, "toe"/"head" = end points)
POINTS = (
    ("pelvis", "root", "origin"),
    ("right_hip", "right_hip", "origin"), ("right_knee", "right_knee", "origin"),
    ("right_ankle", "right_ankle", "origin"), ("right_toe", "right_ankle", "toe"),
    ("left_hip", "left_hip", "origin"), ("left_knee", "left_knee", "origin"),
    ("left_ankle", "left_ankle", "origin"), ("left_toe", "left_ankle", "toe"),
    ("chest", "chest", "origin"), ("neck", "neck", "origin"), ("head", "neck", "head"),
    ("right_shoulder", "right_shoulder", "origin"), ("right_elbow", "right_elbow", "origin"),
    ("right_wrist", "right_wrist", "origin"),
    ("left_shoulder", "left_shoulder", "origin"), ("left_elbow", "left_elbow", "origin"),
    ("left_wrist", "left_wrist", "origin"),
)
PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 9, 12, 13, 9, 15, 16)

Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # (x, y, z) -> (x, -z, y)


def skeleton() -> Skeleton:
    names = [p[0] for p in POINTS]
    return Skeleton(names=names, parents=list(PARENTS),
                    left=[i for i, n in enumerate(names) if n.startswith("left_")],
                    right=[i for i, n in enumerate(names) if n.startswith("right_")])


# ----------------------------------------------------------------------------------------------- files


def find_pybullet_data(data_dir: str = "") -> Path:
    """`data_dir` if given, else the `pybullet_data` folder of the installed pybullet wheel."""
    if data_dir:
        root = Path(data_dir)
    else:
        spec = importlib.util.find_spec("pybullet_data")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("pybullet_data not found: pip install pybullet (or set data_dir to pybullet_data)")
        root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "humanoid" / "humanoid.urdf").is_file():
        raise FileNotFoundError(f"{root} has no humanoid/humanoid.urdf: point data_dir at pybullet_data")
    return root


def clip_files(root: Path) -> list[tuple[str, Path]]:
    """(class, file) of every clip, in a fixed order: humanoid3d actions, then the walkers."""
    motions = root / "data" / "motions"
    files = [(p.stem.removeprefix("humanoid3d_"), p) for p in sorted(motions.glob("humanoid3d_*.txt"))]
    files += [("walk", p) for p in sorted((motions / "walker").glob("*.txt"))]
    if not files:
        raise FileNotFoundError(f"no humanoid3d_*.txt clips under {motions}")
    return files


# ------------------------------------------------------------------------------------------------ heading

UP = np.array([0.0, 1.0, 0.0])  # the vertical axis of the motion files


def yaw_quat(angle: np.ndarray | float) -> np.ndarray:
    """Rotation about the vertical (y) axis of the motion files.  [...] -> [..., 4]"""
    return quat_about_axis(UP, angle)


def heading(q: np.ndarray) -> np.ndarray:
    """Yaw about y of the character's forward axis (+x).  [..., 4] -> [...]"""
    forward = quat_to_matrix(q)[..., :, 0]
    return np.arctan2(-forward[..., 2], forward[..., 0])


# ---------------------------------------------------------------------------------------------- skeleton


JOINT_POINT = {link: i for i, (_, link, site) in enumerate(POINTS) if site == "origin"}  # urdf link -> its point
ANIMATED = [JOINT_POINT[link] for link in ("root", *MOTION_JOINTS)]  # the points Motion.quats turn, in its order


@dataclass(frozen=True)
class Humanoid:
    """The urdf as arrays for `geometry.forward_kinematics`, in metres, y up: one joint per point of POINTS.

    A joint point is its urdf link's origin; an end point (toe, head top) is a leaf joint fixed in its link.
    """

    offsets: np.ndarray  # [J+1, 3] each point's origin in its parent's frame (parents: PARENTS)
    axis: dict[str, np.ndarray]  # revolute link -> [3] unit axis


def _xyz(element: ET.Element | None, attr: str = "xyz") -> np.ndarray:
    return np.array([float(v) for v in element.get(attr).split()]) if element is not None else np.zeros(3)


def _parse_urdf(path: Path) -> tuple[dict, dict, dict, dict]:
    """(link -> parent link, link -> joint offset, revolute link -> axis, (link, site) -> point), in metres."""
    robot = ET.fromstring(path.read_bytes().rstrip(b"\x00\r\n\t "))  # the file ends with a stray NUL byte
    parent, offset, axis = {"root": None}, {"root": np.zeros(3)}, {}
    for joint in robot.iter("joint"):
        child, up = joint.find("child").get("link"), joint.find("parent").get("link")
        if up == "base":
            continue  # base -> root is a fixed identity joint; the clip gives the root pose
        parent[child] = up
        offset[child] = URDF_SCALE * _xyz(joint.find("origin"))
        if joint.get("type") == "revolute":
            axis[child] = _xyz(joint.find("axis"))
    links = {link.get("name"): link for link in robot.iter("link")}
    sites = {}
    for side in ("right", "left"):  # toe: front-bottom edge centre of the foot box
        box = links[f"{side}_ankle"].find("collision")
        size = _xyz(box.find("geometry/box"), "size")
        sites[(f"{side}_ankle", "toe")] = URDF_SCALE * (_xyz(box.find("origin")) + size * [0.5, -0.5, 0.0])
    head = links["neck"].find("collision")  # head: top of the head sphere
    radius = float(head.find("geometry/sphere").get("radius"))
    sites[("neck", "head")] = URDF_SCALE * (_xyz(head.find("origin")) + [0.0, radius, 0.0])
    return parent, offset, axis, sites


def read_humanoid(path: Path) -> Humanoid:
    """humanoid.urdf as a `Humanoid`; a one-line ValueError when it is not DeepMimic's humanoid."""
    fix = "reinstall pybullet, or point data_dir at an intact pybullet_data"
    try:
        parent, offset, axis, sites = _parse_urdf(path)
    except (ET.ParseError, OSError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable humanoid urdf ({first_line(e)}); {fix}") from None
    missing = [link for link in JOINT_POINT if link not in parent]
    ups = [parent.get(link) if site == "origin" else link for _, link, site in POINTS]  # the link each point hangs on
    parents = [-1 if up is None else JOINT_POINT.get(up) for up in ups]
    if missing or set(axis) != REVOLUTE or parents != list(PARENTS):
        raise ValueError(f"{path}: not DeepMimic's humanoid (links missing {missing}, revolute {sorted(axis)}, "
                         f"tree {parents}); {fix}")
    offsets = np.stack([offset[link] if site == "origin" else sites[(link, site)] for _, link, site in POINTS])
    return Humanoid(offsets, axis)


# ------------------------------------------------------------------------------------------------ motion


@dataclass(frozen=True)
class Motion:
    """A clip's pose parameters, y up: root position and one quaternion per animated link."""

    times: np.ndarray  # [n] seconds, increasing
    root: np.ndarray  # [n, 3] metres
    quats: np.ndarray  # [n, 13, 4] w-first: root (world), then MOTION_JOINTS (local)
    loop: bool


def read_motion(path: Path, humanoid: Humanoid) -> Motion:
    """Parse one DeepMimic clip (see the module docstring for the row layout)."""
    clip = read_json(path, "reinstall pybullet, or point data_dir at an intact pybullet_data")
    try:
        frames = np.asarray(clip["Frames"], dtype=float)  # [n, 44]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: no numeric 'Frames' table ({first_line(e)}); reinstall pybullet") from None
    width = 8 + sum(1 if j in REVOLUTE else 4 for j in MOTION_JOINTS)
    if frames.ndim != 2 or frames.shape[1] != width or len(frames) < 2:
        raise ValueError(f"{path}: frames of shape {frames.shape}, expected [n >= 2, {width}]")
    dt = frames[:-1, 0]  # the last frame's dt is unused
    if np.any(dt <= 0):
        raise ValueError(f"{path}: non-positive frame duration at frame {int(np.argmax(dt <= 0))}")
    quats, col = [frames[:, 4:8]], 8
    for joint in MOTION_JOINTS:
        if joint in REVOLUTE:
            quats.append(quat_exp(frames[:, col:col + 1] * humanoid.axis[joint]))
            col += 1
        else:
            quats.append(frames[:, col:col + 4])
            col += 4
    times = np.concatenate([[0.0], np.cumsum(dt)])
    return Motion(times, frames[:, 1:4], quat_normalize(np.stack(quats, 1)), clip.get("Loop") == "wrap")


def close_loop(m: Motion) -> Motion:
    """Spread the last-to-first mismatch of a cycle over it so its last frame continues into its first.

    The last frame should equal the first up to the root's horizontal translation and heading; the rest of
    the difference (joint rotations, root tilt, root height) is removed linearly in time.
    """
    alpha = (m.times / m.times[-1])[:, None, None]  # [n, 1, 1]
    turn = yaw_quat(heading(m.quats[-1, 0]) - heading(m.quats[0, 0]))
    target = np.concatenate([quat_multiply(turn, m.quats[0, :1]), m.quats[0, 1:]])  # [13, 4]
    error = quat_log(quat_multiply(target, quat_inverse(m.quats[-1])))  # [13, 3]
    quats = quat_normalize(quat_multiply(quat_exp(alpha * error), m.quats))
    root = m.root.copy()
    root[:, 1] += alpha[:, 0, 0] * (m.root[0, 1] - m.root[-1, 1])
    return Motion(m.times, root, quats, m.loop)


def tile(m: Motion, cycles: int) -> Motion:
    """Repeat a closed cycle, each repeat starting at the pose (position, heading) where the last one ended."""
    turn = heading(m.quats[-1, 0]) - heading(m.quats[0, 0])
    rot = quat_to_matrix(yaw_quat(turn))
    shift = m.root[-1] - rot @ m.root[0]
    shift[1] = 0.0
    times, roots, quats = [], [], []
    rot_k, shift_k = np.eye(3), np.zeros(3)
    for k in range(cycles):
        n = len(m.times) if k == cycles - 1 else len(m.times) - 1  # the last frame is the next cycle's first
        times.append(m.times[:n] + k * m.times[-1])
        roots.append(m.root[:n] @ rot_k.T + shift_k)
        q = m.quats[:n].copy()
        q[:, 0] = quat_multiply(yaw_quat(k * turn), q[:, 0])
        quats.append(q)
        rot_k, shift_k = rot @ rot_k, rot @ shift_k + shift
    return Motion(np.concatenate(times), np.concatenate(roots), np.concatenate(quats), m.loop)


def resample(m: Motion, fps: float, frames: int | None = None) -> Motion:
    """Sample at k / fps (slerp rotations, lerp root) for every k within the clip, or the first `frames`."""
    count = int(np.floor(m.times[-1] * fps + 1e-6)) + 1
    if frames is not None:
        if frames > count:
            raise ValueError(f"resample: {frames} frames asked, the motion holds {count} at {fps} fps")
        count = frames
    t = np.arange(count) / fps  # [L]
    i = np.clip(np.searchsorted(m.times, t, side="right") - 1, 0, len(m.times) - 2)
    a = (t - m.times[i]) / (m.times[i + 1] - m.times[i])  # [L]
    root = m.root[i] + a[:, None] * (m.root[i + 1] - m.root[i])
    quats = quat_slerp(m.quats[i], m.quats[i + 1], a[:, None, None])
    return Motion(t, root, quats, m.loop)


def points(m: Motion, humanoid: Humanoid) -> np.ndarray:
    """The POINTS of every frame, metres, z up.  -> [L, J+1, 3]"""
    rotations = np.broadcast_to(np.eye(3), (len(m.times), len(POINTS), 3, 3)).copy()  # fixed joints and end points
    rotations[:, ANIMATED] = quat_to_matrix(m.quats)  # [L, 13, 3, 3]
    positions, _ = forward_kinematics(PARENTS, humanoid.offsets, rotations, m.root)  # [L, J+1, 3], y up
    return positions @ Y_UP_TO_Z_UP.T


def clip_positions(m: Motion, humanoid: Humanoid, fps: float) -> np.ndarray:
    """A clip as points at `fps`: a loop closed and tiled to LOOP_SECONDS, a one-shot as recorded.  [L, J+1, 3]"""
    if m.loop:
        frames = int(round(LOOP_SECONDS * fps))
        m = resample(tile(close_loop(m), int(np.ceil((frames - 1) / fps / m.times[-1])) + 1), fps, frames)
    else:
        m = resample(m, fps)
    return points(m, humanoid).astype(np.float32)


# ------------------------------------------------------------------------------------------------- split


def split_ranges(frames: int, val_fraction: float) -> dict[str, range]:
    """Disjoint consecutive frame ranges of a tiled loop: train, then validation, then test."""
    n_test = int(round(frames * TEST_FRACTION))
    n_val = int(round(frames * val_fraction))
    n_train = frames - n_val - n_test
    if n_train <= 0:
        raise ValueError(f"val_fraction {val_fraction} + test {TEST_FRACTION} leave no training frames")
    return {"train": range(0, n_train), "val": range(n_train, n_train + n_val), "test": range(n_train + n_val, frames)}


# ------------------------------------------------------------------------------------------------ loader


def load_deepmimic(cfg: DataConfig, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """All clips of pybullet_data as a split, windowed Dataset (see the module docstring)."""
    root = find_pybullet_data(cfg.data_dir)
    humanoid = read_humanoid(root / "humanoid" / "humanoid.urdf")
    files = clip_files(root)
    classes = list(dict.fromkeys(action for action, _ in files))
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    one_shots = []
    for action, path in files:
        motion = read_motion(path, humanoid)
        name = path.relative_to(root / "data" / "motions").with_suffix("").as_posix()
        poses = root_relative(clip_positions(motion, humanoid, cfg.fps), f"{path}")  # [L, J+1, 3]
        ranges = split_ranges(len(poses), cfg.val_fraction) if motion.loop else {"train": range(len(poses))}
        if not motion.loop:
            one_shots.append(name)
        for part, frames in ranges.items():
            parts[part].append(Clip((name, part), classes.index(action), poses[frames.start:frames.stop]))
    notes = [f"deepmimic: clips from {root}",
             f"looping clips closed, tiled to {LOOP_SECONDS:g} s and split in time: train / val {cfg.val_fraction:g} / "
             f"test {TEST_FRACTION:g}; test frames replay the training cycle",
             f"one-shot clips kept whole in train (no val/test windows, CMD reference NaN): {', '.join(one_shots)}"]
    return build_dataset(cfg, root, skeleton(), classes, None, parts["train"], parts["test"], notes,
                         val=parts["val"], splits=splits)
