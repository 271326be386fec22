"""Motion data: readers per file format, the test protocol, training windows.

    load_dataset(cfg.data) -> Dataset    clips, splits, test/val windows, protocol references
    TrainWindows(dataset.train, ...)     training batches as tensors, on any device
"""
from __future__ import annotations

from ..config import DataConfig
from .amass import load_amass
from .dataset import Clip, Dataset, Skeleton
from .h36m import load_h36m
from .skeletons import AMASS, H36M
from .windows import ReferenceWindows, TrainWindows


def load_dataset(cfg: DataConfig) -> Dataset:
    """Read the dataset `cfg.name` ("h36m": any GSPS-format npz, "amass": BeLFusion zarr, "deepmimic")."""
    if cfg.name == "h36m":
        return load_h36m(cfg)
    if cfg.name == "amass":
        return load_amass(cfg)
    if cfg.name == "deepmimic":
        from .deepmimic import load_deepmimic

        return load_deepmimic(cfg)
    raise ValueError(f"unknown dataset {cfg.name!r}: choose h36m, amass or deepmimic")


__all__ = ["AMASS", "H36M", "Clip", "Dataset", "ReferenceWindows", "Skeleton", "TrainWindows", "load_dataset"]
