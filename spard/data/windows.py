"""Training windows (docs/data.md): the published stride + jitter rule, then a random rotation about z.

The rule: list every window of `T` frames of every training clip (stride 1, clips in order, never across
a clip boundary); the epoch has `floor(#windows / stride)` items; item `i` is window
`clamp(stride i + aug + U{-aug..aug}, 0, #windows - 1)` of that list (the jitter may step into the
neighbouring clip's windows, as published); with probability `rota_prob` the whole window (root included)
turns about the z axis by a uniform integer number of degrees in [0, 359].

Two implementations of that one rule:
- `TrainWindows`: every training frame in one tensor, on any device; a batch is pure index arithmetic.
- `ReferenceWindows`: a per-item numpy `torch.utils.data.Dataset`, like the published loader; slow, kept
  as the reference for tests and benchmarks.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from .dataset import Clip


def window_starts(lengths: Sequence[int], t_total: int) -> np.ndarray:
    """First frame of every stride-1 window `[S]` int64, as a row of the clips' concatenated frames."""
    offsets = np.cumsum([0, *lengths[:-1]])
    starts = [o + np.arange(max(n - t_total + 1, 0)) for o, n in zip(offsets, lengths)]
    return np.concatenate([np.zeros(0, np.int64), *starts]).astype(np.int64)


def rotate_z(traj: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """`p -> R_z(degrees) p` for every point of `traj [B, T, J+1, 3]`, one angle per window `[B]` (0 = unchanged)."""
    rad = degrees.double() * (math.pi / 180)  # cos/sin in float64 then float32, like scipy's matrix
    cos, sin = (f(rad).float()[:, None, None] for f in (torch.cos, torch.sin))  # [B, 1, 1]
    x, y, z = traj.unbind(-1)  # [B, T, J+1] each
    return torch.stack([cos * x - sin * y, sin * x + cos * y, z], dim=-1)


@dataclass
class Batch:
    """This rank's slice `[lo, hi)` of a global batch of `global_size` windows."""

    poses: torch.Tensor  # [hi - lo, T, J+1, 3]
    lo: int
    hi: int
    global_size: int


class TrainWindows:
    """Training windows as tensors: `batches()` yields windows `[B, T, J+1, 3]` on the device of the frames."""

    def __init__(self, clips: Sequence[Clip], t_total: int, stride: int, aug: int, rota_prob: float,
                 device: str | torch.device = "cpu"):
        lengths = [len(clip.poses) for clip in clips]
        starts = window_starts(lengths, t_total)
        if len(starts) < stride:
            raise ValueError(f"{len(starts)} training windows of {t_total} frames, fewer than stride {stride}: "
                             "no item to train on; lower --stride")
        self.t_total, self.stride, self.aug, self.rota_prob = t_total, stride, aug, rota_prob
        self.frames = torch.from_numpy(np.concatenate([clip.poses for clip in clips])).to(device)  # [F, J+1, 3]
        self.starts = torch.from_numpy(starts).to(device)  # [S]
        self.steps = torch.arange(t_total, device=device)  # [T]

    def __len__(self) -> int:
        return len(self.starts) // self.stride

    @property
    def device(self) -> torch.device:
        return self.frames.device

    def windows(self, items: torch.Tensor, offsets: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
        """Items `[B]`, jitter offsets `[B]` in [-aug, aug], rotations `[B]` (degrees) -> `[B, T, J+1, 3]`."""
        index = (self.stride * items + self.aug + offsets).clamp(0, len(self.starts) - 1)  # [B] into starts
        frames = self.starts[index, None] + self.steps  # [B, T] rows of self.frames
        return rotate_z(self.frames[frames], degrees)

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random jitter offsets `[n]` and rotation angles `[n]` (0 where the rotation coin fails)."""
        kw = dict(generator=generator, device=self.device)
        offsets = torch.randint(-self.aug, self.aug + 1, (n,), **kw)
        degrees = torch.randint(0, 360, (n,), **kw)
        return offsets, degrees * (torch.rand(n, **kw) < self.rota_prob)

    def batches(self, batch_size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = False,
                rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """One epoch of batches; `Batch.poses` is `[B, T, J+1, 3]`.

        `generator` must live on `self.device`. Under data parallelism give every rank the same generator
        state: each global batch (and its randomness) is drawn in full, and rank r gets its r-th contiguous
        slice `[lo, hi)`, so the union over ranks is exactly the single-process batch. Every batch is drawn
        whatever `world_size`: in a last batch smaller than it some ranks get an empty slice (callers skip it).
        """
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        for first in range(0, n, batch_size):
            items = order[first:first + batch_size]  # [B_global]
            if drop_last and len(items) < batch_size:
                return
            offsets, degrees = self.draw(len(items), generator)
            lo, hi = rank * len(items) // world_size, (rank + 1) * len(items) // world_size
            yield Batch(self.windows(items[lo:hi], offsets[lo:hi], degrees[lo:hi]), lo, hi, len(items))


class ReferenceWindows(torch.utils.data.Dataset):
    """The same rule one item at a time in numpy, as the published loader (use with `num_workers=0`)."""

    def __init__(self, clips: Sequence[Clip], t_total: int, stride: int, aug: int, rota_prob: float,
                 seed: int | None = None):
        self.clips = [clip.poses for clip in clips]
        self.segments = [(c, s) for c, poses in enumerate(self.clips) for s in range(len(poses) - t_total + 1)]
        self.t_total, self.stride, self.aug, self.rota_prob = t_total, stride, aug, rota_prob
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.segments) // self.stride

    def window(self, index: int, offset: int = 0, degrees: int = 0) -> np.ndarray:
        """Item `index` with a given jitter offset and rotation -> `[T, J+1, 3]` float32."""
        c, s = self.segments[min(max(self.stride * index + self.aug + offset, 0), len(self.segments) - 1)]
        traj = self.clips[c][s:s + self.t_total]  # [T, J+1, 3]
        r = Rotation.from_euler("z", degrees, degrees=True).as_matrix().astype(np.float32)  # [3, 3]
        return (r @ traj.reshape(-1, 3).T).T.reshape(traj.shape)

    def __getitem__(self, index: int) -> torch.Tensor:
        offset = int(self.rng.integers(-self.aug, self.aug + 1))
        degrees = int(self.rng.integers(0, 360)) if self.rng.random() < self.rota_prob else 0
        return torch.from_numpy(self.window(index, offset, degrees))
