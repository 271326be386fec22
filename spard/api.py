"""The Python API: load a trained model, give it observed poses, get K futures.

    from spard import Predictor
    p = Predictor.from_checkpoint("results/demo/np/np_ckpt.pt")    # or the stage folder
    futures = p.predict(history, num_samples=50)                    # history [t_his, J, 3], metres
"""
from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np
import torch

from .checkpoints import load_model
from .model import SPARD
from .runs import find_checkpoint
from .samplers import get_sampler
from .stages import STAGES


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Predictor:
    """Stochastic motion prediction from a trained spard checkpoint.

    Poses are `[frames, J, 3]` in the dataset's joint layout (`num_joints` joints, joint 0 the root
    at its absolute position), metres, the dataset's axes (z up). The model predicts the pose
    relative to the root, not the global path: in the returned futures the root stays at its last
    observed position, so the futures overlay the history directly.
    """

    def __init__(self, model: SPARD, stage: str, sampler: str | None = None):
        self.model = model.eval()
        self.stage = stage
        self.sampler = sampler or STAGES[stage].sampler
        get_sampler(self.sampler)
        if self.sampler == "np" and stage != "np":
            raise ValueError(f"a '{stage}' checkpoint has no trained noise predictor; use sampler 'ddim' or 'onestep'")

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", sampler: str | None = None) -> "Predictor":
        """A checkpoint file or a stage folder (`results/demo/np`); the sampler follows the stage."""
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here; use device='cpu'")
        model, ckpt = load_model(find_checkpoint(path), map_location="cpu")
        return cls(model.to(device), ckpt["stage"], sampler)

    @property
    def t_his(self) -> int:
        """Observed frames `predict` needs (more are accepted: the last t_his are used)."""
        return self.model.t_his

    @property
    def t_pred(self) -> int:
        return self.model.t_pred

    @property
    def num_joints(self) -> int:
        """Joints per pose, root included."""
        return self.model.cfg.data.num_joints + 1

    @property
    def fps(self) -> float:
        return self.model.cfg.data.fps

    @property
    def device(self) -> torch.device:
        return self.model.sqrt_etas.device

    def _check(self, history) -> torch.Tensor:
        """`history` as a float32 tensor `[B, frames, J, 3]`, or a one-line ValueError saying what is wrong."""
        if isinstance(history, np.ndarray):
            if not np.issubdtype(history.dtype, np.floating):
                raise ValueError(f"history must hold floating-point positions in metres, got dtype {history.dtype}")
            with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused below
                history = torch.from_numpy(np.ascontiguousarray(history, dtype=np.float32))
        elif not isinstance(history, torch.Tensor):
            raise ValueError(f"history must be a numpy array or torch tensor, got {type(history).__name__}")
        elif not history.is_floating_point():
            raise ValueError(f"history must hold floating-point positions in metres, got dtype {history.dtype}")
        want = f"[t_his={self.t_his}, J={self.num_joints}, 3] or [B, t_his, J, 3]"
        if history.dim() not in (3, 4) or tuple(history.shape[-2:]) != (self.num_joints, 3):
            raise ValueError(f"history must be {want}, got {list(history.shape)}")
        if history.dim() == 4 and history.shape[0] == 0:
            raise ValueError("history holds an empty batch [0, t_his, J, 3]; give at least one history")
        if history.shape[-3] < self.t_his:
            raise ValueError(f"history has {history.shape[-3]} frames, the model needs at least t_his={self.t_his}")
        history = history.float()
        if not torch.isfinite(history).all():
            raise ValueError("history contains NaN or infinite values; fill or drop those frames first")
        return history if history.dim() == 4 else history[None]

    def _sampler(self, name: str, num_samples, batch_size, seed):
        """The sampler function, after one-line checks of predict's options."""
        for what, value in (("num_samples", num_samples), ("batch_size", batch_size)):
            if not (_is_int(value) and value >= 1):
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        if name == "np" and self.stage != "np":
            raise ValueError(f"a '{self.stage}' checkpoint has no trained noise predictor; use sampler 'ddim' or 'onestep'")
        return get_sampler(name)

    @torch.no_grad()
    def predict(self, history, num_samples: int = 50, *, sampler: str | None = None, seed: int | None = 0,
                batch_size: int = 256):
        """Futures `[B, K, t_pred, J, 3]` for a history `[t_his, J, 3]` (B = 1) or `[B, t_his, J, 3]`.

        Returns the input's type (numpy in, numpy out). `seed` fixes the noise of ddim/onestep
        (None: fresh noise); np futures are a deterministic function of the history.
        """
        poses = self._check(history)[:, -self.t_his:].to(self.device)  # [B, t_his, J, 3] float32
        sample = self._sampler(sampler or self.sampler, num_samples, batch_size, seed)
        as_numpy = isinstance(history, np.ndarray)
        root = poses[:, :, :1]  # [B, t_his, 1, 3]
        relative = (poses[:, :, 1:] - root).flatten(-2)  # [B, t_his, D]
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        chunks = []
        for part in relative.split(batch_size):
            traj = sample(self.model, part, num_samples, generator=generator)  # [b, K, T, D]
            chunks.append(traj[:, :, self.t_his:])
        future = torch.cat(chunks).unflatten(-1, (-1, 3))  # [B, K, t_pred, J-1, 3]
        last_root = root[:, -1][:, None, None].expand(-1, future.shape[1], future.shape[2], 1, 3)
        out = torch.cat([last_root, future + last_root], dim=-2)  # [B, K, t_pred, J, 3]
        return out.cpu().numpy().astype(history.dtype, copy=False) if as_numpy else out.to(history.device, history.dtype)
