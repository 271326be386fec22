"""The three samplers (docs/method.md section 4), one signature, one output layout.

    sampler(model, history, num_samples, *, noise=None, generator=None, **options) -> [B, S, T, D]

`history` is `[B, t_his, D]` in model space. The output holds whole trajectories (observed frames
included); `[:, :, t_his:]` are the futures. `noise` `[S, B, n_pre, D]` (sample-major, as the
published code draws it) fixes the randomness; otherwise it is drawn from `generator`.

    ddim     S guided deterministic steps: 2 network evaluations per step (10 by default)
    onestep  one evaluation of the distilled model from the prior
    np       one evaluation from the K noise maps of the noise predictor: no randomness at all

Callers say how to sample with one `SamplerOptions` (sampler, number of futures, its settings):
`SamplerOptions("ddim", 50, guidance=0.3).sample(model, history, generator=g)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config, DiffusionConfig
from .diffusion import ddim_coefficients, ddim_step, prior_sample
from .model import SPARD


def _draw_noise(model: SPARD, history: torch.Tensor, num_samples: int, noise, generator) -> torch.Tensor:
    shape = (num_samples, history.shape[0], model.n_pre, history.shape[-1])
    if noise is None:
        return torch.randn(shape, generator=generator, device=history.device, dtype=history.dtype)
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {list(shape)} [S, B, n_pre, D], got {list(noise.shape)}")
    return noise


def _check_history(model: SPARD, history: torch.Tensor) -> None:
    want = (model.t_his, model.dim)
    if history.dim() != 3 or tuple(history.shape[1:]) != want:
        raise ValueError(f"history must be [B, {want[0]}, {want[1]}] (t_his, D), got {list(history.shape)}")


def _repeat(x: torch.Tensor, s: int) -> torch.Tensor:
    """`[B, ...]` -> `[S * B, ...]`, sample-major (row `s * B + b`)."""
    return x.unsqueeze(0).expand(s, *x.shape).reshape(s * x.shape[0], *x.shape[1:])


def _unflatten(traj: torch.Tensor, s: int) -> torch.Tensor:
    """`[S * B, T, D]` -> `[B, S, T, D]`."""
    return traj.view(s, -1, *traj.shape[1:]).transpose(0, 1)


def guided_denoise(model: SPARD, x_t, t: int, y, history, guidance: float) -> torch.Tensor:
    """Classifier-free guidance as interpolation: `f(x, t, none) + w (f(x, t, y) - f(x, t, none))`.

    Both branches run as one batch of 2N rows (the second half without the condition term).
    """
    n = x_t.shape[0]
    keep = torch.cat([torch.ones(n, dtype=torch.bool, device=x_t.device), torch.zeros(n, dtype=torch.bool, device=x_t.device)])
    steps = torch.full((2 * n,), t, dtype=torch.long, device=x_t.device)
    both = model.denoiser(x_t.repeat(2, 1, 1), steps, y.repeat(2, 1, 1), history.repeat(2, 1, 1), keep_cond=keep)
    cond, uncond = both[:n], both[n:]
    return uncond + guidance * (cond - uncond)


def ddim_loop(model: SPARD, x_T: torch.Tensor, y: torch.Tensor, history: torch.Tensor, guidance: float) -> torch.Tensor:
    """Guided deterministic sampling from `x_T` `[N, n_pre, D]`; returns the last `x0_hat` `[N, T, D]`.

    Between steps the prediction goes back to DCT space with the observed frames re-inserted.
    """
    sched = model.schedule
    steps = list(sched.timesteps)
    x_t = x_T
    for t, s in zip(steps, steps[1:] + [None]):
        x0_hat = guided_denoise(model, x_t, t, y, history, guidance)
        if s is None:
            return x0_hat
        traj = torch.cat([history, x0_hat[:, history.shape[1]:]], dim=1)
        x_t = ddim_step(model.encode(traj), x_t, y, ddim_coefficients(sched, t, s))
    raise AssertionError("unreachable: the sampling timesteps are never empty")


@torch.no_grad()
def ddim(model: SPARD, history: torch.Tensor, num_samples: int, *, noise=None, generator=None,
         guidance: float = DiffusionConfig.guidance) -> torch.Tensor:
    """The base model's sampler; `guidance` is the weight w (published default 0.3)."""
    _check_history(model, history)
    eps = _draw_noise(model, history, num_samples, noise, generator).flatten(0, 1)
    y = _repeat(model.condition(history), num_samples)
    h = _repeat(history, num_samples)
    return _unflatten(ddim_loop(model, prior_sample(y, eps, model.schedule), y, h, guidance), num_samples)


@torch.no_grad()
def onestep(model: SPARD, history: torch.Tensor, num_samples: int, *, noise=None, generator=None,
            use_condition: bool = True) -> torch.Tensor:
    """The distilled model's sampler: `f(y + kappa sqrt(eta_T) eps, T, y)`."""
    _check_history(model, history)
    eps = _draw_noise(model, history, num_samples, noise, generator).flatten(0, 1)
    y = _repeat(model.condition(history), num_samples)
    x_T = prior_sample(y, eps, model.schedule)
    t = torch.full((x_T.shape[0],), model.schedule.t_max, dtype=torch.long, device=x_T.device)
    out = model.denoiser(x_T, t, y if use_condition else None, _repeat(history, num_samples))
    return _unflatten(out, num_samples)


@torch.no_grad()
def np_sample(model: SPARD, history: torch.Tensor, num_samples: int | None = None, *, noise=None, generator=None,
              use_condition: bool = True) -> torch.Tensor:
    """The noise predictor's sampler: its first `num_samples` (default all K) noise maps. With the
    published predictor nothing is random (`noise`, `generator` unused, at most K futures); one trained
    with `--np_noise` adds fresh noise to each map (from `noise` or `generator`) and cycles through them.
    """
    _check_history(model, history)
    predictor = model.noise_predictor
    s = predictor.cfg.k if num_samples is None else num_samples
    if s < 1:
        raise ValueError(f"num_samples must be >= 1, got {s}")
    y_b = model.condition(history)
    z = _draw_noise(model, history, s, noise, generator).transpose(0, 1) if predictor.cfg.noise > 0 else None
    eps = predictor.sample(predictor(y_b), s, z).transpose(0, 1).flatten(0, 1)  # [S * B, n_pre, D]
    y = _repeat(y_b, s)
    x_T = prior_sample(y, eps, model.schedule)
    t = torch.full((x_T.shape[0],), model.schedule.t_max, dtype=torch.long, device=x_T.device)
    out = model.denoiser(x_T, t, y if use_condition else None, _repeat(history, s))
    return _unflatten(out, s)


SAMPLERS = {"ddim": ddim, "onestep": onestep, "np": np_sample}
SETTINGS = {"ddim": ("guidance",), "onestep": ("use_condition",), "np": ("use_condition",)}  # what each one reads


def draws_noise(model: SPARD, name: str) -> bool:
    """Whether sampler `name` of `model` is random (its futures depend on the noise, or the seed, given)."""
    return name in ("ddim", "onestep") or (name == "np" and model.noise_predictor.cfg.noise > 0)


def get_sampler(name: str):
    """A sampler by name, or one of the trivial baselines (`zero_velocity`, `constant_velocity`)."""
    from .baselines import BASELINES

    found = SAMPLERS.get(name) or BASELINES.get(name)
    if found is None:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS) + sorted(BASELINES)}")
    return found


@dataclass(frozen=True)
class SamplerOptions:
    """How to sample: the sampler (or a baseline), the futures per history and the sampler's settings."""

    name: str = "np"
    num_samples: int = 50
    guidance: float = DiffusionConfig.guidance  # ddim: the classifier-free guidance weight w
    use_condition: bool = True  # onestep, np: condition on

    @classmethod
    def from_config(cls, cfg: Config, name: str, **overrides) -> "SamplerOptions":
        """The options a run's config implies (`--guidance`, `--num_samples`), `overrides` on top."""
        return cls(**{"name": name, "num_samples": cfg.train.num_samples, "guidance": cfg.diffusion.guidance,
                      **overrides})

    def sample(self, model: SPARD, history: torch.Tensor, *, noise=None, generator=None) -> torch.Tensor:
        """`[B, t_his, D]` -> `[B, S, T, D]`, whole trajectories."""
        settings = {key: getattr(self, key) for key in SETTINGS.get(self.name, ())}
        return get_sampler(self.name)(model, history, self.num_samples, noise=noise, generator=generator, **settings)
