"""The three training losses (method.md section 4), one per stage.

Each takes the model and a batch of trajectories `traj [B, T, D]` (model space), plus the random
draws it needs; a draw left as None is taken from `generator`. Returning the per-copy errors next
to the loss lets tests and logs look inside.
"""
from __future__ import annotations

import torch

from .diffusion import prior_sample, q_sample
from .model import SPARD
from .samplers import ddim_loop


def reconstruction_error(pred: torch.Tensor, traj: torch.Tensor, kind: str = "mae") -> torch.Tensor:
    """Per-trajectory mean error over frames and coordinates: `[..., T, D]` -> `[...]`."""
    diff = pred - traj
    if kind == "mae":
        return diff.abs().mean(dim=(-1, -2))
    if kind == "mse":
        return diff.square().mean(dim=(-1, -2))
    raise ValueError(f"unknown loss {kind!r}; choose 'mae' or 'mse'")


def best_of(err: torch.Tensor) -> torch.Tensor:
    """`[B, copies]` -> scalar: the best copy of every window, averaged over windows."""
    return err.min(dim=1).values.mean()


def _split(model: SPARD, traj: torch.Tensor):
    history = traj[:, : model.t_his]
    return model.encode(traj), model.condition(history), history


def _copies(x: torch.Tensor, h: int) -> torch.Tensor:
    """`[B, ...]` -> `[B * h, ...]`, window-major (row `b * h + k`)."""
    return x.repeat_interleave(h, dim=0)


def base_loss(model: SPARD, traj: torch.Tensor, *, h: int, mod_train: float = 0.5, per_sample_dropout: bool = False,
              kind: str = "mae", generator: torch.Generator | None = None, t: torch.Tensor | None = None,
              eps: torch.Tensor | None = None, keep_cond: torch.Tensor | bool | None = None):
    """Stage 1, best of h: each window gets one `t` and `h` noisy copies; L1 of the best copy.

    The condition is kept with probability `mod_train`: one coin for the whole batch (published),
    or one per window with `per_sample_dropout`. Draws: `t [B]`, `eps [B, h, n_pre, D]`, `keep_cond`.
    Returns `(loss, err [B, h], pred [B, h, T, D])`.
    """
    b, dev = traj.shape[0], traj.device
    x0, y, history = _split(model, traj)
    if t is None:
        t = torch.randint(0, len(model.sqrt_etas), (b,), generator=generator, device=dev)
    if eps is None:
        eps = torch.randn((b, h) + tuple(x0.shape[1:]), generator=generator, device=dev, dtype=x0.dtype)
    if keep_cond is None:
        coins = torch.rand(b if per_sample_dropout else 1, generator=generator, device=dev)
        keep_cond = coins < mod_train
    if isinstance(keep_cond, bool):
        keep_cond = torch.tensor([keep_cond], device=dev)
    keep = keep_cond.expand(b) if keep_cond.numel() == 1 else keep_cond

    t_h = _copies(t, h)
    x_t = q_sample(_copies(x0, h), _copies(y, h), t_h, eps.flatten(0, 1), model.schedule)
    pred = model.denoiser(x_t, t_h, _copies(y, h), _copies(history, h), keep_cond=_copies(keep, h))
    pred = pred.view(b, h, *pred.shape[1:])
    err = reconstruction_error(pred, traj[:, None], kind)
    return best_of(err), err, pred


def distill_loss(student: SPARD, teacher: SPARD, traj: torch.Tensor, *, guidance: float, kind: str = "mae",
                 generator: torch.Generator | None = None, eps: torch.Tensor | None = None,
                 use_condition: bool = True):
    """Stage 2: one student step from the prior against the teacher's guided DDIM from the same `x_T`.

    The teacher runs without gradients (callers keep it in eval mode). `eps [B, n_pre, D]`. The
    student sees the condition (`use_condition=False` drops it, as the published flag allows).
    Returns `(loss, student_out [B, T, D], teacher_out [B, T, D])`.
    """
    _, y, history = _split(student, traj)
    if eps is None:
        eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    x_T = prior_sample(y, eps, student.schedule)
    with torch.no_grad():
        # The published code calls `teacher.condition_ddim_p_sample`, which does not exist (it crashes at
        # the first batch); the intended teacher, used here, is the guided DDIM of its `ddim_p_sample`.
        target = ddim_loop(teacher, x_T, y, history, guidance)
    t = torch.full((y.shape[0],), student.schedule.t_max, dtype=torch.long, device=y.device)
    out = student.denoiser(x_T, t, y if use_condition else None, history)
    per_window = reconstruction_error(out, target, kind)
    return per_window.mean(), out, target


def noise_predictor_loss(model: SPARD, traj: torch.Tensor, *, kind: str = "mae"):
    """Stage 3, min over the K predicted noise maps of the distilled model's one-step error.

    The noisy input comes from the true `x0`: `x_T^k = q_sample(x0, y, T, eps_k(y))`.
    Returns `(loss, err [B, K], eps [B, K, n_pre, D])`.
    """
    x0, y, history = _split(model, traj)
    eps = model.noise_predictor(y)  # [B, K, n_pre, D]
    b, k = eps.shape[:2]
    t = torch.full((b * k,), model.schedule.t_max, dtype=torch.long, device=y.device)
    x_T = q_sample(_copies(x0, k), _copies(y, k), t, eps.flatten(0, 1), model.schedule)
    pred = model.denoiser(x_T, t, _copies(y, k), _copies(history, k)).view(b, k, *traj.shape[1:])
    err = reconstruction_error(pred, traj[:, None], kind)
    return best_of(err), err, eps
