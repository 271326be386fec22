"""Reader of GSPS / VideoPose3D `data_3d_h36m.npz` files (docs/data.md): Human3.6M or any data in its format.

`positions_3d` is a dict subject -> action -> `[L, 32, 3]` world positions (metres, z up, 50 Hz). We keep
the 17 joints of `skeletons.H36M_KEPT`, in file order. The class of a sequence is its action name up to
the first space (`'Discussion 2' -> 'Discussion'`). Class ids come from the test subjects, so a file holding
only those gives the ids of the full file: the published ids when the test subjects hold the 15 Human3.6M
actions, else their categories sorted; categories only the training subjects have come after.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig
from .dataset import Clip, Dataset
from .files import read_npz_object, shown
from .protocol import SPLITS, build_dataset, choose_classes
from .skeletons import H36M, H36M_KEPT, root_relative

FILE = "data_3d_h36m.npz"
HOW_TO = ("prepare it with VideoPose3D's data/prepare_data_h36m.py (the file GSPS, CoMusion and SPARD read), "
          "or point --data_dir to the folder holding it")

# The published class ids (docs/data.md) and CMD reference (docs/metrics.md): mean ground-truth frame-to-frame joint
# displacement per class, metres/frame, in that order, as SPARD and CoMusion use them.
H36M_CLASSES = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Posing", "Purchases", "Sitting",
    "SittingDown", "Smoking", "Photo", "Waiting", "Walking", "WalkDog", "WalkTogether",
)
H36M_CMD_REFERENCE = (
    0.004528946212615328, 0.005068199383505345, 0.003978791804673771, 0.005921345536787865,
    0.003595039379111546, 0.004192961478268034, 0.005664689143238568, 0.0024945400286369122,
    0.003543066357658834, 0.0035990843311130487, 0.004356865838457266, 0.004219841185066826,
    0.007528046315984569, 0.007054820734533077, 0.006751761745020258,
)


def read_positions(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The `positions_3d` dict of a GSPS-format npz, read without running code from the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {HOW_TO}")
    members, data = read_npz_object(path, "positions_3d")
    if "positions_3d" not in members:
        keys = ", ".join(map(shown, members))
        raise ValueError(f"{path} has no 'positions_3d' (keys: {keys}): it is not a GSPS-format file; {HOW_TO}")
    if not (isinstance(data, dict) and all(isinstance(actions, dict) for actions in data.values())):
        what = shown(data) if isinstance(data, str) else type(data).__name__
        raise ValueError(f"{path}: positions_3d is {what}, expected a dict subject -> action -> [L, 32, 3] array; "
                         f"{HOW_TO}")
    return data


def read_clips(data: dict, subjects: tuple[str, ...], path: Path) -> list[tuple[tuple[str, str], np.ndarray]]:
    """((subject, action), poses `[L, 17, 3]` root-relative) of the subjects, in file order."""
    clips = []
    for subject in subjects:
        if subject not in data:
            has = ", ".join(map(shown, data))
            raise ValueError(f"subject {subject!r} is not in {path} (it has {has}): fix train_splits/test_splits")
        for action, positions in data[subject].items():
            where = f"{path.name} {shown(subject)}/{shown(action)}"
            if not isinstance(positions, np.ndarray) or positions.dtype.kind not in "fiu":
                what = positions.dtype if isinstance(positions, np.ndarray) else type(positions).__name__
                raise ValueError(f"{where} holds {what}, expected a float array [L, 32, 3] of positions in metres")
            if positions.ndim != 3 or positions.shape[1:] != (32, 3):
                shape = list(positions.shape)
                raise ValueError(f"{where} has shape {shape}, expected [L, 32, 3] (the 32 Human3.6M joints); "
                                 f"convert the data with all 32 joints")
            clips.append(((subject, str(action)), root_relative(positions[:, H36M_KEPT], where)))
    return clips


def category(key: tuple[str, str]) -> str:
    """The class of a sequence: its action name up to the first space."""
    return key[1].split(" ")[0]


def default_classes(test: list[tuple], train: list[tuple]) -> tuple[list[str], dict[str, float]]:
    """Class ids and the published CMD reference by name: decided by the test sequences, training-only ones after."""
    tested = {category(key) for key, _ in test}
    trained = sorted({category(key) for key, _ in train} - tested)
    if tested == set(H36M_CLASSES):  # the real Human3.6M: the published class ids and CMD reference
        return list(H36M_CLASSES) + trained, dict(zip(H36M_CLASSES, H36M_CMD_REFERENCE))
    return sorted(tested) + trained, {}


def load_h36m(cfg: DataConfig, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """The Dataset of a GSPS-format npz: `cfg.data_dir` is its folder (or the file itself)."""
    path = Path(cfg.data_dir)
    path = path if path.suffix == ".npz" else path / FILE
    data = read_positions(path)
    train = read_clips(data, cfg.train_splits, path) if "train" in splits else []
    test = read_clips(data, cfg.test_splits, path)
    default, published_cmd = default_classes(test, train)
    classes, cmd_reference, note = choose_classes(cfg, path.parent, default, published_cmd)
    label = {name: i for i, name in enumerate(classes)}

    def clips(pairs):
        return [Clip(key, label[category(key)], poses) for key, poses in pairs]

    return build_dataset(cfg, path.parent, H36M, classes, cmd_reference, clips(train), clips(test), [note],
                         splits=splits)
