"""The in-memory form every reader produces: clips of poses, split, labelled, with the test protocol.

Poses are `[L, J+1, 3]` float32 in metres, z up: joint 0 is the root at its absolute position,
joints 1..J are relative to the root (the layout of the published loaders). The model drops joint 0.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Skeleton:
    """Joint names and tree of the J+1 joints of a dataset (joint 0 = root)."""

    names: list[str]
    parents: list[int]  # parent index per joint, -1 for the root
    left: list[int]  # left-side joints (for drawing)
    right: list[int]

    @property
    def num_joints(self) -> int:
        """Joints the model sees (root dropped)."""
        return len(self.parents) - 1


@dataclass
class Clip:
    """One continuous recording."""

    key: tuple[str, str]  # (subject or dataset, action or file index)
    label: int  # class id (index into Dataset.classes)
    poses: np.ndarray  # [L, J+1, 3] float32


@dataclass
class Dataset:
    """A dataset split into train / validation / test clips, plus its test protocol."""

    name: str
    fps: float
    skeleton: Skeleton
    classes: list[str]
    train: list[Clip]
    val: list[Clip]
    test: list[Clip]
    test_windows: np.ndarray  # [N, T, J+1, 3] float32, in protocol order
    test_labels: np.ndarray  # [N] int64 class ids
    val_windows: np.ndarray  # [Nv, T, J+1, 3] float32 (checkpoint selection, never the test set)
    val_labels: np.ndarray  # [Nv] int64
    mmapd: np.ndarray | None = None  # [N] gt_APD per test window (APDE reference), 0 = no reference
    cmd_reference: np.ndarray | None = None  # [C] mean motion per class (m/frame), NaN = none; the readers give the
    # published table, else each class's mean motion in the test windows; None (a Dataset built by hand): evaluation
    # computes the latter
    notes: list[str] = field(default_factory=list)  # what the reader skipped or assumed, for the log

    @functools.cached_property
    def training_sha256(self) -> str:
        """A fingerprint of what training reads (the training and validation clips: keys, labels, poses): a
        resumed run must see the same data, wherever the files now are. Computed once per dataset."""

        digest = hashlib.sha256()
        for clip in self.train + self.val:
            digest.update(repr((clip.key, clip.label, clip.poses.shape)).encode())
            digest.update(np.ascontiguousarray(clip.poses).tobytes())
        return digest.hexdigest()
