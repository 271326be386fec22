"""Reader of BeLFusion's preprocessed AMASS (formats.md §2): zarr v2 stores, one folder per sub-dataset.

    <data_dir>/<Dataset>/poses.zarr        float32 [F, 22, 3]  world positions (metres, z up), files appended
    <data_dir>/<Dataset>/poses_index.zarr  int64   [n, 2]      [start, end) rows of file n in poses

Clip n of a dataset is `poses[start:end]` with key `(dataset, str(n))`; its class is the dataset. Class
ids: the test datasets first, in split order (the published CMD ids 0..6), then the training datasets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..metrics import AMASS_CMD_REFERENCE, AMASS_TEST_CLASSES
from .dataset import Clip, Dataset
from .protocol import build_dataset, choose_classes
from .skeletons import AMASS, root_relative

HOW_TO = ("prepare AMASS with BeLFusion's preprocessing (data_loader/parsers/amass.py: <Dataset>/poses.zarr and "
          "poses_index.zarr per sub-dataset), or point --data_dir to the folder holding those sub-dataset folders")


def _read_store(path: Path, kinds: str) -> np.ndarray:
    """A zarr array whose dtype kind is one of `kinds`; checked before reading, so no object codec ever runs."""
    import zarr  # only AMASS users need it

    try:
        array = zarr.open_array(str(path), mode="r")
        dtype = array.dtype
        values = array[:] if dtype.kind in kinds else None
    except Exception as e:  # noqa: BLE001 - missing or garbled .zarray, truncated chunks, ...
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(f"{path} cannot be read as a zarr array ({detail}): {HOW_TO}") from None
    if values is None:
        raise ValueError(f"{path} holds {dtype} values, expected {'floats' if kinds == 'f' else 'integers'}: {HOW_TO}")
    return values


def read_dataset(root: Path, name: str) -> list[tuple[tuple[str, str], np.ndarray]]:
    """((name, file_idx), poses `[L, 22, 3]` root-relative) of every file of one sub-dataset, in index order."""
    folder = root / name
    for store in ("poses.zarr", "poses_index.zarr"):
        if not (folder / store).is_dir():
            raise FileNotFoundError(f"{folder / store} not found: {HOW_TO}")
    positions = _read_store(folder / "poses.zarr", "f")  # [F, 22, 3]
    index = _read_store(folder / "poses_index.zarr", "iu")  # [n, 2]
    if positions.ndim != 3 or positions.shape[1:] != (22, 3):
        raise ValueError(f"{folder / 'poses.zarr'} has shape {list(positions.shape)}, "
                         "expected [F, 22, 3] (the 22 SMPL body joints)")
    if index.ndim != 2 or index.shape[1] != 2:
        raise ValueError(f"{folder / 'poses_index.zarr'} has shape {list(index.shape)}, expected [n, 2] (start, end)")
    starts, ends = index.T
    if not ((0 <= starts) & (starts <= ends) & (ends <= len(positions))).all():
        raise ValueError(f"{folder / 'poses_index.zarr'} must hold [start, end) row ranges "
                         f"within the {len(positions)} rows of poses.zarr")
    return [((name, str(n)), root_relative(positions[start:end], f"{name} file_idx {n}"))
            for n, (start, end) in enumerate(index.tolist())]


def load_amass(cfg: DataConfig) -> Dataset:
    """The Dataset of BeLFusion's AMASS stores under `cfg.data_dir`."""
    root = Path(cfg.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"AMASS folder {root} not found: {HOW_TO}")
    default = list(dict.fromkeys(cfg.test_splits + cfg.train_splits))
    published_cmd = dict(zip(AMASS_TEST_CLASSES, AMASS_CMD_REFERENCE))
    classes, cmd_reference, note = choose_classes(cfg, root, default, published_cmd)
    label = {name: i for i, name in enumerate(classes)}

    def clips(splits):
        return [Clip(key, label[name], poses) for name in splits for key, poses in read_dataset(root, name)]

    train, test = clips(cfg.train_splits), clips(cfg.test_splits)
    return build_dataset(cfg, root, AMASS, classes, cmd_reference, train, test, [note])

