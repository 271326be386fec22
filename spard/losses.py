"""The three training losses (docs/method.md section 4), one per stage, and the random draws each needs.

A loss takes the model, a batch of trajectories `traj [B, T, D]` (model space) and its draws; the
draws of a batch come from the stage's `*_draws` function (the only place training randomness is
drawn, from one generator). Returning the per-copy errors next to the loss lets tests and logs look
inside.
"""
from __future__ import annotations

import torch

from .config import Config
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


def base_draws(model: SPARD, n: int, generator: torch.Generator, cfg: Config) -> dict:
    """Stage 1 draws for `n` windows: `t [n]` uniform over all S steps, `eps [n, h, n_pre, D]` standard
    normal, `keep_cond` `[1]` (one coin for the batch, published) or `[n]` (`per_sample_dropout`),
    True with probability `mod_train`."""
    kw = dict(generator=generator, device=generator.device)
    t = torch.randint(0, len(model.sqrt_etas), (n,), **kw)
    eps = torch.randn((n, cfg.train.div_k, model.n_pre, model.dim), **kw)
    coins = torch.rand(n if cfg.train.per_sample_dropout else 1, **kw)
    return {"t": t, "eps": eps, "keep_cond": coins < cfg.train.mod_train}


def base_loss(model: SPARD, traj: torch.Tensor, *, h: int, t: torch.Tensor, eps: torch.Tensor,
              keep_cond: torch.Tensor | bool, kind: str = "mae"):
    """Stage 1, best of h: each window gets one `t` and `h` noisy copies; L1 of the best copy.

    Draws (`base_draws`): `t [B]`, `eps [B, h, n_pre, D]`, `keep_cond` `[1]`, `[B]` or a bool
    (whether the condition term is kept). Returns `(loss, err [B, h], pred [B, h, T, D])`.
    """
    b, dev = traj.shape[0], traj.device
    x0, y, history = _split(model, traj)
    if isinstance(keep_cond, bool):
        keep_cond = torch.tensor([keep_cond], device=dev)
    keep = keep_cond.expand(b) if keep_cond.numel() == 1 else keep_cond

    t_h = _copies(t, h)
    x_t = q_sample(_copies(x0, h), _copies(y, h), t_h, eps.flatten(0, 1), model.schedule)
    pred = model.denoiser(x_t, t_h, _copies(y, h), _copies(history, h), keep_cond=_copies(keep, h))
    pred = pred.view(b, h, *pred.shape[1:])
    err = reconstruction_error(pred, traj[:, None], kind)
    return best_of(err), err, pred


def distill_draws(model: SPARD, n: int, generator: torch.Generator, cfg: Config) -> dict:
    """Stage 2 draws for `n` windows: the prior's noise `eps [n, n_pre, D]`, standard normal."""
    return {"eps": torch.randn((n, model.n_pre, model.dim), generator=generator, device=generator.device)}


def distill_loss(student: SPARD, teacher: SPARD, traj: torch.Tensor, *, guidance: float, eps: torch.Tensor,
                 kind: str = "mae", use_condition: bool = True):
    """Stage 2: one student step from the prior against the teacher's guided DDIM from the same `x_T`.

    The teacher runs without gradients (callers keep it in eval mode). `eps [B, n_pre, D]`. The
    student sees the condition (`use_condition=False` drops it, as the published flag allows).
    Returns `(loss, student_out [B, T, D], teacher_out [B, T, D])`.
    """
    _, y, history = _split(student, traj)
    x_T = prior_sample(y, eps, student.schedule)
    with torch.no_grad():
        # The published code calls `teacher.condition_ddim_p_sample`, which does not exist (it crashes at
        # the first batch); the intended teacher, used here, is the guided DDIM of its `ddim_p_sample`.
        target = ddim_loop(teacher, x_T, y, history, guidance)
    t = torch.full((y.shape[0],), student.schedule.t_max, dtype=torch.long, device=y.device)
    out = student.denoiser(x_T, t, y if use_condition else None, history)
    per_window = reconstruction_error(out, target, kind)
    return per_window.mean(), out, target


def noise_predictor_draws(model: SPARD, n: int, generator: torch.Generator, cfg: Config) -> dict:
    """Stage 3 draws: with `--np_noise` > 0, the noise `z [n, K, n_pre, D]` added to the K maps; else none
    (the published maps are a function of the history)."""
    npc = cfg.noise_predictor
    if npc.noise == 0:
        return {}
    return {"z": torch.randn((n, npc.k, model.n_pre, model.dim), generator=generator, device=generator.device)}


def relaxed_best_of(err: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Relaxed winner-takes-all: per window `(1 - epsilon)` x the best copy's error + `epsilon` x the
    mean error of the others, averaged over windows: `[B, K]` -> scalar. Every copy gets a gradient."""
    k = err.shape[1]
    best = err.min(dim=1).values
    others = (err.sum(dim=1) - best) / max(k - 1, 1)
    return ((1 - epsilon) * best + epsilon * others).mean()


def spread_prior(maps: torch.Tensor) -> torch.Tensor:
    """KL(N(m, v) || N(0, 1)) of every map element, `m` and `v` its mean and variance over the K maps,
    averaged: `[B, K, n_pre, D]` -> scalar. Zero when the K maps spread like draws of N(0, 1); large when
    they collapse onto one map (v -> 0) or drift away (m far from 0)."""
    mean, var = maps.mean(dim=1), maps.var(dim=1, unbiased=False)
    return 0.5 * (var + mean.square() - 1 - (var + 1e-8).log()).mean()  # 1e-8: finite, and pushing, at a collapse


def noise_predictor_loss(model: SPARD, traj: torch.Tensor, *, kind: str = "mae", objective: str = "published",
                         relax: float = 0.05, prior: float = 0.01, z: torch.Tensor | None = None):
    """Stage 3: the distilled model's one-step error from each of the K noise maps, reduced by `objective`:

        published  min over K (winner takes all: only the best map of a window gets a gradient)
        relaxed    `relaxed_best_of(err, relax)`
        prior      min over K + `prior` x `spread_prior(maps)`

    The noisy input comes from the true `x0`: `x_T^k = q_sample(x0, y, T, eps_k(y))`, with `eps_k` the
    map plus `noise * z_k` for a predictor with `--np_noise` (`z [B, K, n_pre, D]`, `noise_predictor_draws`).
    Returns `(loss, err [B, K], eps [B, K, n_pre, D])`.
    """
    x0, y, history = _split(model, traj)
    maps = model.noise_predictor(y)  # [B, K, n_pre, D]
    b, k = maps.shape[:2]
    eps = model.noise_predictor.sample(maps, k, z)
    t = torch.full((b * k,), model.schedule.t_max, dtype=torch.long, device=y.device)
    x_T = q_sample(_copies(x0, k), _copies(y, k), t, eps.flatten(0, 1), model.schedule)
    pred = model.denoiser(x_T, t, _copies(y, k), _copies(history, k)).view(b, k, *traj.shape[1:])
    err = reconstruction_error(pred, traj[:, None], kind)
    if objective == "published":
        loss = best_of(err)
    elif objective == "relaxed":
        loss = relaxed_best_of(err, relax)
    elif objective == "prior":
        loss = best_of(err) + prior * spread_prior(maps)
    else:
        raise ValueError(f"unknown noise-predictor objective {objective!r}; choose published, relaxed or prior")
    return loss, err, eps
