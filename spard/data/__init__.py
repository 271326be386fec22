"""Motion data: readers per file format, the test protocol, training windows.

    load_dataset(cfg.data) -> Dataset                     clips, splits, test/val windows, protocol references
    load_dataset(cfg.data, splits=("test",)) -> Dataset   only what evaluation reads (no training clips)
    TrainWindows(dataset.train, ...)                      training batches as tensors, on any device
"""
from __future__ import annotations

from ..config import DataConfig
from .amass import load_amass
from .dataset import Clip, Dataset, Skeleton
from .h36m import load_h36m
from .protocol import SPLITS, check_splits
from .skeletons import AMASS, H36M
from .windows import ReferenceWindows, TrainWindows


def load_dataset(cfg: DataConfig, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Read the dataset `cfg.name` ("h36m": any GSPS-format npz, "amass": BeLFusion zarr, "deepmimic").

    `splits=("test",)` reads only the test split: the test windows, labels and protocol references are those of
    a full load, the training and validation clips and windows are empty, and the training splits need not be in
    the data.
    """
    splits = check_splits(cfg, splits)
    if cfg.name == "h36m":
        return load_h36m(cfg, splits)
    if cfg.name == "amass":
        return load_amass(cfg, splits)
    if cfg.name == "deepmimic":
        from .deepmimic import load_deepmimic

        return load_deepmimic(cfg, splits)
    raise ValueError(f"unknown dataset {cfg.name!r}: choose h36m, amass or deepmimic")


__all__ = ["AMASS", "H36M", "SPLITS", "Clip", "Dataset", "ReferenceWindows", "Skeleton", "TrainWindows",
           "load_dataset"]
