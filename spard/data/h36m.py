"""Reader of GSPS / VideoPose3D `data_3d_h36m.npz` files (formats.md §1): Human3.6M or any data in its format.

`positions_3d` is a dict subject -> action -> `[L, 32, 3]` world positions (metres, z up, 50 Hz). We keep
the 17 joints of `skeletons.H36M_KEPT`, in file order. The class of a sequence is its action name up to
the first space (`'Discussion 2' -> 'Discussion'`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..metrics import H36M_CLASSES, H36M_CMD_REFERENCE
from .dataset import Clip, Dataset
from .protocol import build_dataset, choose_classes
from .skeletons import H36M, H36M_KEPT, root_relative

FILE = "data_3d_h36m.npz"
HOW_TO = ("prepare it with VideoPose3D's data/prepare_data_h36m.py (the file GSPS, CoMusion and SPARD read), "
          "or point --data_dir to the folder holding it")


def read_positions(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The `positions_3d` dict of a GSPS-format npz."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {HOW_TO}")
    with np.load(path, allow_pickle=True) as npz:
        if "positions_3d" not in npz.files:
            keys = ", ".join(npz.files)
            raise ValueError(f"{path} has no 'positions_3d' (keys: {keys}): it is not a GSPS-format file; {HOW_TO}")
        return npz["positions_3d"].item()


def read_clips(data: dict, subjects: tuple[str, ...], path: Path) -> list[tuple[tuple[str, str], np.ndarray]]:
    """((subject, action), poses `[L, 17, 3]` root-relative) of the subjects, in file order."""
    clips = []
    for subject in subjects:
        if subject not in data:
            has = ", ".join(data)
            raise ValueError(f"subject {subject!r} is not in {path} (it has {has}): fix train_splits/test_splits")
        for action, positions in data[subject].items():
            where = f"{path.name} {subject}/{action}"
            if positions.ndim != 3 or positions.shape[1:] != (32, 3):
                shape = list(positions.shape)
                raise ValueError(f"{where} has shape {shape}, expected [L, 32, 3] (the 32 Human3.6M joints)")
            clips.append(((subject, action), root_relative(positions[:, H36M_KEPT], where)))
    return clips


def load_h36m(cfg: DataConfig) -> Dataset:
    """The Dataset of a GSPS-format npz: `cfg.data_dir` is its folder (or the file itself)."""
    path = Path(cfg.data_dir)
    path = path if path.suffix == ".npz" else path / FILE
    data = read_positions(path)
    train, test = read_clips(data, cfg.train_splits, path), read_clips(data, cfg.test_splits, path)
    category = {key: key[1].split(" ")[0] for key, _ in train + test}
    found = sorted(set(category.values()))
    if found == sorted(H36M_CLASSES):  # the real Human3.6M: the published class ids and CMD reference
        default, published_cmd = list(H36M_CLASSES), dict(zip(H36M_CLASSES, H36M_CMD_REFERENCE))
    else:
        default, published_cmd = found, {}
    classes, cmd_reference, note = choose_classes(cfg, path.parent, default, published_cmd)
    label = {name: i for i, name in enumerate(classes)}

    def clips(pairs):
        return [Clip(key, label[category[key]], poses) for key, poses in pairs]

    return build_dataset(cfg, path.parent, H36M, classes, cmd_reference, clips(train), clips(test), [note])

