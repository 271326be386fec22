"""Reader of BeLFusion's preprocessed AMASS (docs/data.md): zarr v2 stores, one folder per sub-dataset.

    <data_dir>/<Dataset>/poses.zarr        float32 [F, 22, 3]  world positions (metres, z up), files appended
    <data_dir>/<Dataset>/poses_index.zarr  int64   [n, 2]      [start, end) rows of file n in poses

Clip n of a dataset is `poses[start:end]` with key `(dataset, str(n))`; its class is the dataset. Class
ids: the test datasets first, in split order (the published CMD ids 0..6), then the training datasets.
Stores are read through `files.open_zarr`: metadata allow-listed, dtype and shape checked, chunks complete, then
decoded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig
from .dataset import Clip, Dataset
from .files import open_zarr
from .protocol import SPLITS, build_dataset, choose_classes
from .skeletons import AMASS, root_relative

HOW_TO = ("prepare AMASS with BeLFusion's preprocessing (data_loader/parsers/amass.py: <Dataset>/poses.zarr and "
          "poses_index.zarr per sub-dataset), or point --data_dir to the folder holding those sub-dataset folders")

# The published test datasets (docs/data.md) and their CMD reference (docs/metrics.md), metres/frame, in that order.
AMASS_TEST_CLASSES = ("DFaust", "DanceDB", "GRAB", "HUMAN4D", "SOMA", "SSM", "Transitions")
AMASS_CMD_REFERENCE = (
    0.00427221349493322, 0.008289838197001043, 0.0016145416139357026, 0.004560201420525195,
    0.007548907591298325, 0.0052984837093390524, 0.007567679516515443,
)


# store -> (dtype kinds, what they are, does a shape fit, the expected shape in words)
STORES = {
    "poses.zarr": ("f", "floats", lambda shape: shape[1:] == (22, 3) and len(shape) == 3,
                   "[F, 22, 3] (the 22 SMPL body joints)"),
    "poses_index.zarr": ("iu", "integers", lambda shape: shape[1:] == (2,), "[n, 2] (start, end)"),
}


def read_dataset(root: Path, name: str) -> list[tuple[tuple[str, str], np.ndarray]]:
    """((name, file_idx), poses `[L, 22, 3]` root-relative) of every file of one sub-dataset, in index order.

    Both stores' metadata (codecs, dtype, shape) are checked before either is decoded.
    """
    folder = root / name
    arrays = {}
    for store, (kinds, values, fits, expected) in STORES.items():
        if not (folder / store).is_dir():
            raise FileNotFoundError(f"{folder / store} not found: {HOW_TO}")
        array = open_zarr(folder / store, HOW_TO)
        if array.dtype.kind not in kinds:
            raise ValueError(f"{folder / store} holds {array.dtype} values, expected {values}: {HOW_TO}")
        if not fits(array.shape):
            raise ValueError(f"{folder / store} has shape {list(array.shape)}, expected {expected}")
        arrays[store] = array
    positions, index = (arrays[store].read(HOW_TO) for store in STORES)  # [F, 22, 3], [n, 2]
    starts, ends = index.T
    if not ((0 <= starts) & (starts <= ends) & (ends <= len(positions))).all():
        raise ValueError(f"{folder / 'poses_index.zarr'} must hold [start, end) row ranges "
                         f"within the {len(positions)} rows of poses.zarr")
    order = np.argsort(starts, kind="stable")
    shared = np.nonzero(starts[order][1:] < ends[order][:-1])[0]  # a file starting before the previous one ends
    if len(shared):
        a, b = sorted(order[shared[0]:shared[0] + 2].tolist())
        raise ValueError(f"{folder / 'poses_index.zarr'}: files {a} and {b} share rows of poses.zarr "
                         f"({index[a].tolist()}, {index[b].tolist()}); each file's rows must be its own")
    return [((name, str(n)), root_relative(positions[start:end], f"{folder / 'poses.zarr'} file_idx {n}"))
            for n, (start, end) in enumerate(index.tolist())]


def load_amass(cfg: DataConfig, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """The Dataset of BeLFusion's AMASS stores under `cfg.data_dir`."""
    root = Path(cfg.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"AMASS folder {root} not found: {HOW_TO}")
    default = list(dict.fromkeys(cfg.test_splits + cfg.train_splits))
    published_cmd = dict(zip(AMASS_TEST_CLASSES, AMASS_CMD_REFERENCE))
    classes, cmd_reference, note = choose_classes(cfg, root, default, published_cmd)
    label = {name: i for i, name in enumerate(classes)}

    def clips(names):
        return [Clip(key, label[name], poses) for name in names for key, poses in read_dataset(root, name)]

    train = clips(cfg.train_splits) if "train" in splits else []
    test = clips(cfg.test_splits)
    return build_dataset(cfg, root, AMASS, classes, cmd_reference, train, test, [note], splits=splits)
