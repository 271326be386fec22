"""The Python API: load a trained model, give it observed poses, get K futures.

    from spard import Predictor
    p = Predictor.from_checkpoint("results/demo/np/np_ckpt.pt")    # or the stage folder
    futures = p.predict(history, num_samples=50)                    # history [t_his, J, 3], metres
    p.joint_names, p.parents, p.fps                                 # the skeleton of the futures
    p.last.apd, p.last.sampler                                      # what the last predict returned
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints import load_model
from .devices import resolve_device
from .data.dataset import Skeleton
from .data.skeletons import AMASS, H36M, H36M_FILE_NAMES, H36M_KEPT, MAX_REACH
from .metrics import apd
from .model import SPARD
from .runs import find_checkpoint
from .samplers import SamplerOptions, draws_noise, get_sampler
from .stages import check_sampler, stage as stage_named

MAX_DISTANCE = 1e4  # metres: roots farther from the origin lose float32 precision (1 mm at 10 km)
ROWS_PER_CALL = 512  # sampled futures per network call when batch_size is not given (bounds working memory)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def dataset_layout(name: str, joints: int) -> tuple[Skeleton, list[int], int]:
    """(skeleton of the `joints` joints a model of dataset `name` predicts, their slots in the dataset
    file's layout, the number of joints in that layout). Human3.6M files hold 32 joints, 17 of them kept."""
    if name == "h36m" and joints == len(H36M.names):
        return H36M, list(H36M_KEPT), len(H36M_FILE_NAMES)
    if name == "amass" and joints == len(AMASS.names):
        return AMASS, list(range(joints)), joints
    if name == "deepmimic":
        from .data.deepmimic import skeleton

        if joints == len(skeleton().names):
            return skeleton(), list(range(joints)), joints
    # a dataset of another layout: joints named by index, hanging from the root
    generic = Skeleton(names=[f"joint_{i}" for i in range(joints)], parents=[-1] + [0] * (joints - 1), left=[], right=[])
    return generic, list(range(joints)), joints


@dataclass(frozen=True)
class PredictionInfo:
    """What the last `Predictor.predict` call returned."""

    sampler: str  # "ddim", "onestep" or "np"
    num_samples: int  # K futures per history
    seed: int | None  # the noise seed (None: fresh noise, or a sampler that draws none: the published np)
    apd: np.ndarray  # [B] float64: average pairwise distance of each history's K futures (metres, the
    #                  protocol's APD: root-relative joints, whole futures flattened; NaN when K = 1)


class Predictor:
    """Stochastic motion prediction from a trained spard checkpoint.

    A history is `[frames, J, 3]` (or a batch `[B, frames, J, 3]`): absolute positions in metres, the
    dataset's axes (z up), at the checkpoint's `fps`; only the last `t_his` frames are used. J is either the
    model's own joints (`joint_names`, root first) or all joints of the dataset's file layout
    (`file_num_joints`; Human3.6M: 32, of which the 17 `kept` slots are used).

    The futures `[B, K, t_pred, J, 3]` always hold the model's own joints (Human3.6M: 17, in `joint_names`
    order, whichever layout came in), in metres like the history. The model predicts the pose relative
    to the root, not the global path: in the futures the root stays at its last observed position, so the
    futures overlay the history directly.
    """

    def __init__(self, model: SPARD, stage: str, sampler: str | None = None):
        self.model = model.eval()
        self.stage = stage
        self.sampler = sampler or stage_named(stage).sampler  # a one-line ValueError for an unknown stage
        get_sampler(self.sampler)
        check_sampler(stage, self.sampler)
        self.skeleton, self.kept, self.file_num_joints = dataset_layout(model.cfg.data.name, self.num_joints)
        self.last: PredictionInfo | None = None  # set by every successful predict

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", sampler: str | None = None) -> "Predictor":
        """A checkpoint file or a stage folder (`results/demo/np`); the sampler follows the stage."""
        device = resolve_device(device)
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
        """Joints per predicted pose, root included."""
        return self.model.cfg.data.num_joints + 1

    @property
    def joint_names(self) -> list[str]:
        """Names of the predicted joints, root first."""
        return list(self.skeleton.names)

    @property
    def parents(self) -> list[int]:
        """Parent of each predicted joint (-1 for the root)."""
        return list(self.skeleton.parents)

    @property
    def dataset(self) -> str:
        """The dataset the checkpoint was trained on ("h36m", "amass", "deepmimic")."""
        return self.model.cfg.data.name

    @property
    def fps(self) -> float:
        return self.model.cfg.data.fps

    @property
    def device(self) -> torch.device:
        return self.model.sqrt_etas.device

    def _check(self, history) -> torch.Tensor:
        """The poses `predict` uses: float32 `[B, t_his, J, 3]` on the model's device, the model's own joints;
        or a one-line ValueError saying what is wrong."""
        if isinstance(history, np.ndarray):
            if not np.issubdtype(history.dtype, np.floating):
                raise ValueError(f"history must hold floating-point positions in metres, got dtype {history.dtype}")
        elif not isinstance(history, torch.Tensor):
            raise ValueError(f"history must be a numpy array or torch tensor, got {type(history).__name__}")
        elif not history.is_floating_point():
            raise ValueError(f"history must hold floating-point positions in metres, got dtype {history.dtype}")
        elif history.layout != torch.strided or history.device.type == "meta":
            raise ValueError(f"history must be a dense tensor with values (got layout {history.layout}, device "
                             f"{history.device}); use .to_dense() or a numpy array")
        want = f"[t_his={self.t_his}, J={self.num_joints}, 3] or [B, t_his, J, 3]"
        joints = (self.num_joints, self.file_num_joints)
        if history.ndim not in (3, 4) or history.shape[-1] != 3 or history.shape[-2] not in joints:
            also = f"; J may also be {self.file_num_joints}, the dataset file's layout" if joints[1] != joints[0] else ""
            raise ValueError(f"history must be {want}, got {list(history.shape)}{also}")
        if history.ndim == 4 and history.shape[0] == 0:
            raise ValueError("history holds an empty batch [0, t_his, J, 3]; give at least one history")
        if history.shape[-3] < self.t_his:
            raise ValueError(f"history has {history.shape[-3]} frames, the model needs at least t_his={self.t_his}")
        recent = history[..., -self.t_his:, :, :]  # a view: only the used frames are copied below
        if history.shape[-2] != self.num_joints:
            recent = recent[..., self.kept, :]
        if isinstance(recent, np.ndarray):
            with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused below
                poses = torch.from_numpy(np.ascontiguousarray(recent, dtype=np.float32))
        else:
            poses = recent.float()
        poses = poses.to(self.device)
        poses = poses if poses.dim() == 4 else poses[None]  # [B, t_his, J, 3]
        if not torch.isfinite(poses).all():
            raise ValueError("history contains NaN or infinite values; fill or drop those frames first")
        far = poses[..., 0, :].abs().amax().item()
        if far > MAX_DISTANCE:
            raise ValueError(f"history's root lies {far:.3g} m from the origin, beyond {MAX_DISTANCE:g} m; give "
                             f"positions in metres near the origin (subtract a fixed offset first)")
        reach = (poses[..., 1:, :] - poses[..., :1, :]).norm(dim=-1).amax().item()
        if reach > MAX_REACH:
            raise ValueError(f"history has a joint {reach:.3g} m from the root, but a body reaches at most "
                             f"{MAX_REACH:g} m; give positions in metres (from cm: divide by 100, mm: by 1000)")
        return poses

    def _options(self, name: str, num_samples, batch_size, seed) -> SamplerOptions:
        """How to sample (the checkpoint's settings, e.g. ddim's guidance), after one-line checks of predict's
        options."""
        if not (_is_int(num_samples) and num_samples >= 1):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if batch_size is not None and not (_is_int(batch_size) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        if seed is not None and not 0 <= seed < 2 ** 64:
            raise ValueError(f"seed {seed} is out of range: use an integer from 0 to 2**64 - 1")
        get_sampler(name)
        check_sampler(self.stage, name)
        return SamplerOptions.from_config(self.model.cfg, name, num_samples=num_samples)

    def _samples_per_call(self, name: str, num_samples: int) -> int:
        """Futures of one history per network call: all of them, or for many about ROWS_PER_CALL (for the np
        sampler a multiple of K, so that each call cycles through the K maps from the first as one call would)."""
        if num_samples <= ROWS_PER_CALL:
            return num_samples
        k = self.model.cfg.noise_predictor.k if name == "np" else 1
        return max(k, ROWS_PER_CALL // k * k)

    def _noise(self, windows: int, num_samples: int, generator) -> torch.Tensor:
        """Starting noise `[K, windows, n_pre, D]`, drawn window by window so that a window's noise depends on
        the seed and its place in the batch, not on how the batch is cut into network calls."""
        shape = (num_samples, self.model.n_pre, self.model.cfg.data.dim)
        return torch.stack([torch.randn(shape, generator=generator, device=self.device) for _ in range(windows)], 1)

    @torch.no_grad()
    def predict(self, history, num_samples: int = 50, *, sampler: str | None = None, seed: int | None = 0,
                batch_size: int | None = None):
        """Futures `[B, K, t_pred, J, 3]` for a history `[frames, J, 3]` (B = 1) or `[B, frames, J, 3]`.

        Returns the input's type and dtype (numpy in, numpy out). `seed` fixes the noise of the samplers
        (None: fresh noise); the published noise predictor (`--np_noise 0`) draws none: its np futures are
        a deterministic function of the history. Histories go through the network `batch_size` at a time
        (default: about 512 futures per call; many futures of one history are split the same way) and their
        futures are written into one preallocated array, so memory stays near the size of the result.
        `self.last` then tells the sampler used and the APD of each history's futures.
        """
        poses = self._check(history)  # [B, t_his, J, 3] float32 on the model's device
        name = sampler or self.sampler
        options = self._options(name, num_samples, batch_size, seed)
        step = batch_size or max(1, ROWS_PER_CALL // num_samples)  # histories per network call
        per_call = self._samples_per_call(name, num_samples)  # and futures of one history per call
        shape = (poses.shape[0], num_samples, self.t_pred, self.num_joints, 3)
        if isinstance(history, np.ndarray):
            out = np.empty(shape, dtype=history.dtype)
        else:
            out = torch.empty(shape, dtype=history.dtype, device=history.device)
        spread = np.empty(poses.shape[0])  # [B] APD
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed))
        random = draws_noise(self.model, name)
        for start in range(0, poses.shape[0], step):
            part = poses[start:start + step]  # [b, t_his, J, 3]
            root = part[:, -1:, :1][:, None]  # [b, 1, 1, 1, 3] the last observed root
            relative = (part[:, :, 1:] - part[:, :, :1]).flatten(-2)  # [b, t_his, D]
            noise = self._noise(part.shape[0], num_samples, generator) if random else None  # [K, b, n_pre, D]
            dst = out[start:start + len(part)]  # [b, K, t_pred, J, 3], filled in place
            for lo in range(0, num_samples, per_call):
                hi = min(lo + per_call, num_samples)
                future = dataclasses.replace(options, num_samples=hi - lo).sample(
                    self.model, relative, noise=None if noise is None else noise[lo:hi])[:, :, self.t_his:]
                future = future.unflatten(-1, (-1, 3))  # [b, k, t_pred, J-1, 3] root-relative
                if isinstance(dst, np.ndarray):
                    dst[:, lo:hi, :, :1] = root_np = root.cpu().numpy()  # float32, added before any rounding
                    np.add(future.cpu().numpy(), root_np, out=dst[:, lo:hi, :, 1:])
                else:
                    dst[:, lo:hi, :, :1] = root
                    dst[:, lo:hi, :, 1:] = future + root
            finite = np.isfinite(dst).all() if isinstance(dst, np.ndarray) else bool(torch.isfinite(dst).all())
            if not finite:
                raise ValueError(f"the model returned non-finite futures (sampler {name}, history {start} or after): "
                                 f"its weights may be damaged; retrain or use an intact checkpoint")
            moved = dst[..., 1:, :] - dst[..., :1, :]  # [b, K, t_pred, J-1, 3] root-relative, as the protocol's APD
            if isinstance(moved, np.ndarray):
                moved = torch.from_numpy(moved.astype(np.float32, copy=False))
            moved = moved.to(self.device, torch.float32).flatten(-2)  # [b, K, t_pred, D]
            spread[start:start + len(part)] = apd(moved, block=ROWS_PER_CALL).double().cpu().numpy()
        self.last = PredictionInfo(sampler=name, num_samples=num_samples, seed=seed if random else None,
                                   apd=spread)
        return out
