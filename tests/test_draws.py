"""Every random choice of training, tested against the method (method.md section 4, formats.md section 1.5).

The oracle tests prove that spard computes what the published code computes for given weights and given
draws; these prove the draws themselves: which values can occur, with which probabilities, how they are
shared between windows, copies and ranks, and how the weights start.

Each statistical check has a stated false-alarm rate, `ALPHA`: its bound is the quantile of the check's
distribution under the method's rule at that rate (chi-square, binomial, normal), for the sample size used.
The generators are seeded, so every run draws the same numbers; the sample sizes are chosen so that the
mistakes these tests exist for (a step never drawn, a coin per window instead of per batch, a jitter one
step too wide, a turn about another axis, a non-zero start) exceed the bounds many times over.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

import spard.distributed
from conftest import published_np, randomized, tiny_config
from spard import losses
from spard.data import TrainWindows
from spard.data.dataset import Clip, Dataset
from spard.data.windows import window_starts
from spard.model import SPARD
from spard.nets.gcn import GraphConv, NodeBatchNorm
from spard.stages import STAGES
from spard.train import Trainer

ALPHA = 1e-6  # false-alarm rate of each statistical check
Z = stats.norm.isf(ALPHA / 2)  # two-sided normal bound at that rate (4.89)


# ------------------------------------------------------------------------------------------ statistics

def chi_square(values, pmf: dict[int, float], what: str) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom of integer `values` against `pmf` {value: probability}.

    A value that `pmf` gives probability 0 fails at once. Cells are taken in value order, neighbours pooled
    until each expects at least 5 (where the chi-square law holds)."""
    found, counts = np.unique(np.asarray(values).ravel(), return_counts=True)
    stray = [int(v) for v in found if pmf.get(int(v), 0) == 0]
    assert not stray, f"{what}: values that cannot occur: {stray[:8]}"
    seen, n = dict(zip(found.tolist(), counts.tolist())), counts.sum()
    cells, observed, expected = [], 0, 0.0
    for value in sorted(v for v, p in pmf.items() if p > 0):
        observed, expected = observed + seen.get(value, 0), expected + n * pmf[value]
        if expected >= 5:
            cells.append([observed, expected])
            observed, expected = 0, 0.0
    assert cells, f"{what}: too few draws for a chi-square test"
    cells[-1][0] += observed
    cells[-1][1] += expected
    return sum((o - e) ** 2 / e for o, e in cells), len(cells) - 1


def assert_chi_square(stat: float, dof: int, what: str) -> None:
    bound = stats.chi2.isf(ALPHA, dof) if dof else 0.0
    assert stat <= bound, f"{what}: chi-square {stat:.1f} with {dof} degrees of freedom, above {bound:.1f}"


def assert_follows(values, pmf: dict[int, float], what: str) -> None:
    """Integer `values`, drawn independently, follow `pmf`."""
    assert_chi_square(*chi_square(values, pmf, what), what)


def uniform(low: int, high: int) -> dict[int, float]:
    """The uniform law on the integers low..high (both included)."""
    return {v: 1 / (high - low + 1) for v in range(low, high + 1)}


def assert_binomial(successes: int, n: int, p: float, what: str) -> None:
    """`successes` of `n` independent trials, each a success with probability `p`."""
    low, high = (stats.binom.ppf(ALPHA / 2, n, p), stats.binom.isf(ALPHA / 2, n, p)) if 0 < p < 1 else (n * p, n * p)
    assert low <= successes <= high, f"{what}: {successes} of {n}, outside [{low:.0f}, {high:.0f}] for p = {p}"


def assert_standard_normal(x: torch.Tensor, what: str) -> None:
    """The elements of `x` look like independent N(0, 1) draws: mean, variance and Kolmogorov-Smirnov."""
    x = x.double().flatten().numpy()
    n = len(x)
    assert abs(x.mean()) <= Z / math.sqrt(n), f"{what}: mean {x.mean():.4g} over {n} draws"
    assert abs(x.var() - 1) <= Z * math.sqrt(2 / n), f"{what}: variance {x.var():.4g} over {n} draws"
    p = stats.kstest(x, "norm").pvalue
    assert p >= ALPHA, f"{what}: Kolmogorov-Smirnov p = {p:.3g} against N(0, 1)"


def assert_uncorrelated(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Independent draws: the correlation of two equally long samples is N(0, 1/n) for large n."""
    a, b = a.double().flatten(), b.double().flatten()
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert abs(r) <= Z / math.sqrt(len(a)), f"{what}: correlation {r:.4g} over {len(a)} pairs"


# ------------------------------------------------------------------------------------------ models and data

def config(*, train: dict | None = None, **sections: dict):
    """`tiny_config("h36m")` with some fields of its sections replaced: `config(data={"aug": 3})`."""
    cfg = tiny_config("h36m", **(train or {}))
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})


def small(**sections) -> SPARD:
    """A model with one joint and two coefficients (D = 3): its draws are cheap to take by the hundred thousand."""
    return SPARD(config(data={"num_joints": 1, "t_his": 2, "t_pred": 3}, denoiser={"n_pre": 2}, **sections))


def draw(stage: str, model: SPARD, n: int, seed: int) -> dict:
    return STAGES[stage].draw(model, n, torch.Generator().manual_seed(seed), model.cfg)


class Spy:
    """What the denoiser is called with: `x_t`, `t`, `y`, `keep_cond` of its last call."""

    def __init__(self, model: SPARD):
        model.denoiser.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.x_t, self.t, self.y = args[:3]
        self.keep = kwargs.get("keep_cond")


def method_dct(model: SPARD, traj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(x0, y)` `[B, n_pre, D]` in float64 as method.md section 1 defines them: the orthonormal DCT-II of the
    trajectory and of the history padded with its last pose, first `n_pre` coefficients."""
    t_total, t_his = traj.shape[1], model.t_his
    k, i = torch.arange(t_total, dtype=torch.float64)[:, None], torch.arange(t_total, dtype=torch.float64)[None]
    dct = torch.cos(math.pi * (i + 0.5) * k / t_total) * math.sqrt(2 / t_total)
    dct[0] /= math.sqrt(2)
    idx = list(range(t_his)) + [t_his - 1] * (t_total - t_his)
    basis = dct[: model.n_pre]  # [n_pre, T]
    return basis @ traj.double(), basis @ traj.double()[:, idx]


# ------------------------------------------------------------------------------------------ stage 1

@pytest.mark.parametrize("steps", [5, 8])
def test_timesteps_are_uniform_over_all_steps(steps):
    model = small(diffusion={"noise_steps": steps, "sample_steps": steps}, train={"div_k": 1})
    t = draw("base", model, 40_000, seed=steps)["t"]
    assert t.shape == (40_000,) and t.dtype == torch.int64
    assert_follows(t, uniform(0, steps - 1), f"stage-1 timesteps, S = {steps}")


@pytest.mark.parametrize("mod_train", [0.3, 0.0, 1.0])
def test_condition_coin_is_one_per_batch_kept_with_probability_mod_train(mod_train):
    model = small(train={"div_k": 1, "mod_train": mod_train})
    gen = torch.Generator().manual_seed(1)
    coins = [losses.base_draws(model, 16, gen, model.cfg)["keep_cond"] for _ in range(3000)]
    assert all(c.shape == (1,) and c.dtype == torch.bool for c in coins), "one coin for the whole batch"
    assert_binomial(int(torch.cat(coins).sum()), len(coins), mod_train, "batches that keep the condition")


def test_condition_coin_per_window_when_asked():
    model = small(train={"div_k": 1, "mod_train": 0.3, "per_sample_dropout": True})
    gen = torch.Generator().manual_seed(2)
    keep = torch.stack([losses.base_draws(model, 16, gen, model.cfg)["keep_cond"] for _ in range(2000)])  # [2000, 16]
    assert_binomial(int(keep.sum()), keep.numel(), 0.3, "windows that keep the condition")
    # independent windows: the number kept in a batch of 16 is Binomial(16, 0.3)
    assert_follows(keep.sum(1), {k: stats.binom.pmf(k, 16, 0.3) for k in range(17)}, "windows kept per batch")


@pytest.mark.parametrize("per_sample", [False, True])
def test_stage_one_network_sees_one_t_and_one_coin_per_window_and_fresh_noise_per_copy(per_sample):
    """The draws as the denoiser receives them: window b's h copies are rows b h .. b h + h - 1 of
    `x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) eps` with the window's t and coin and their own eps."""
    b, h = 40, 3
    model = randomized(SPARD(config(train={"div_k": h, "per_sample_dropout": per_sample}))).eval()
    traj = torch.randn(b, model.cfg.data.t_total, model.dim)
    d = draw("base", model, b, seed=3)
    spy = Spy(model)
    losses.base_loss(model, traj, h=h, **d)
    keep = d["keep_cond"].expand(b)  # [B]
    torch.testing.assert_close(spy.t, d["t"].repeat_interleave(h), rtol=0, atol=0)
    torch.testing.assert_close(spy.keep, keep.repeat_interleave(h), rtol=0, atol=0)
    if not per_sample:
        assert spy.keep.unique().numel() == 1
    x0, y = method_dct(model, traj)
    sqrt_eta = model.sqrt_etas.double()[d["t"]][:, None, None, None]  # [B, 1, 1, 1]
    want = x0[:, None] + sqrt_eta**2 * (y - x0)[:, None] + model.schedule.kappa * sqrt_eta * d["eps"].double()
    # float32 against float64: a few elements differ by ~1e-5 depending on the thread count; a wrong draw
    # moves them by the noise's scale
    torch.testing.assert_close(spy.x_t.double(), want.flatten(0, 1), rtol=1e-4, atol=1e-4)


def test_stage_one_noise_is_standard_normal_and_independent_between_copies_and_windows():
    model = SPARD(tiny_config(div_k=10))
    gen = torch.Generator().manual_seed(4)
    eps = losses.base_draws(model, 64, gen, model.cfg)["eps"]
    assert eps.shape == (64, 10, model.n_pre, model.dim) and eps.dtype == torch.float32
    assert_standard_normal(eps, "stage-1 noise")
    for k in range(1, 10):
        assert_uncorrelated(eps[:, 0], eps[:, k], f"stage-1 noise of copies 0 and {k}")
    assert_uncorrelated(eps[:-1], eps[1:], "stage-1 noise of neighbouring windows")
    assert_uncorrelated(eps, losses.base_draws(model, 64, gen, model.cfg)["eps"], "stage-1 noise of two batches")


# ------------------------------------------------------------------------------------------ stages 2 and 3

def test_distillation_noise_is_standard_normal_one_map_per_window():
    model = SPARD(tiny_config())
    eps = draw("distill", model, 256, seed=5)["eps"]
    assert eps.shape == (256, model.n_pre, model.dim)
    assert_standard_normal(eps, "distillation noise")
    assert_uncorrelated(eps[:-1], eps[1:], "distillation noise of neighbouring windows")


def test_published_noise_predictor_draws_nothing():
    model = randomized(SPARD(published_np(tiny_config()))).eval()
    assert draw("np", model, 8, seed=6) == {}
    traj = torch.randn(4, model.cfg.data.t_total, model.dim)
    first, second = (losses.noise_predictor_loss(model, traj)[0] for _ in range(2))
    assert torch.equal(first, second)  # eval mode: the loss is a function of the weights and the batch


@pytest.mark.parametrize("noise", [0.0, 0.7])
def test_noise_predictor_trains_from_the_true_x0_at_t_equal_T(noise):
    """method.md section 4: `x_T^k = x0 + eta_T (y - x0) + kappa sqrt(eta_T) eps_k(y)` at the first sampling step
    T, with the condition on; with --np_noise, `eps_k = map_k + noise z_k`, z drawn afresh, standard normal."""
    b, k = 100, 5
    model = randomized(SPARD(config(noise_predictor={"noise": noise, "k": k}))).eval()
    traj = torch.randn(b, model.cfg.data.t_total, model.dim)
    d = draw("np", model, b, seed=7)
    spy = Spy(model)
    losses.noise_predictor_loss(model, traj, **d)
    big_t = model.cfg.diffusion.noise_steps - 1
    assert model.schedule.t_max == big_t
    assert (spy.t == big_t).all(), f"the noise predictor trains at t = {spy.t.unique().tolist()}, not T = {big_t}"
    assert spy.keep is None, "the condition is dropped"
    x0, y = method_dct(model, traj)
    torch.testing.assert_close(spy.y.double(), y.repeat_interleave(k, 0), rtol=1e-5, atol=1e-5)
    maps = model.noise_predictor(y.float()).double()  # [B, K, n_pre, D]
    sqrt_eta = float(model.sqrt_etas[big_t])
    std = model.schedule.kappa * sqrt_eta
    mean = x0 + sqrt_eta**2 * (y - x0)  # [B, n_pre, D]
    eps = (spy.x_t.double().view(b, k, *y.shape[1:]) - mean[:, None]) / std  # the noise the network saw
    if noise == 0:
        torch.testing.assert_close(eps, maps, rtol=1e-4, atol=1e-4)
        return
    z = d["z"]
    assert z.shape == (b, k, model.n_pre, model.dim)
    torch.testing.assert_close(eps, maps + noise * z.double(), rtol=1e-4, atol=1e-4)
    assert_standard_normal(z, "--np_noise draws")
    for j in range(1, k):
        assert_uncorrelated(z[:, 0], z[:, j], f"--np_noise draws of maps 0 and {j}")


# ------------------------------------------------------------------------------------------ training windows

T = 5  # frames of a window


def coded_clips(lengths) -> list[Clip]:
    """Clips of one joint besides the root, whose root height is the frame's row among all clips' frames
    (turns about the vertical axis keep it), the other coordinates random."""
    rng = np.random.default_rng(0)
    clips, row = [], 0
    for c, n in enumerate(lengths):
        poses = rng.normal(0, 1, (n, 2, 3)).astype(np.float32)  # [L, J+1, 3]
        poses[:, 0, 2] = row + np.arange(n)
        clips.append(Clip(("S1", f"take {c}"), 0, poses))
        row += n
    return clips


def segments(windows: TrainWindows, poses: torch.Tensor) -> torch.Tensor:
    """The stride-1 window (segment) index of every window `[B, T, J+1, 3]`, read from its first frame's code."""
    first = poses[:, 0, 0, 2].long()
    index = torch.searchsorted(windows.starts, first)
    assert (windows.starts[index] == first).all() and (poses[:, :, 0, 2].diff(dim=1) == 1).all()
    return index


def jitter_law(item: int, stride: int, aug: int, count: int) -> dict[int, float]:
    """formats.md 1.5: item i is segment clamp(stride i + aug + U{-aug..aug}, 0, count - 1)."""
    law: dict[int, float] = {}
    for offset in range(-aug, aug + 1):
        s = min(max(stride * item + aug + offset, 0), count - 1)
        law[s] = law.get(s, 0) + 1 / (2 * aug + 1)
    return law


def test_draw_gives_uniform_offsets_and_integer_degrees():
    windows = TrainWindows(coded_clips([40]), T, 3, 4, 0.4)
    offsets, degrees = windows.draw(150_000, torch.Generator().manual_seed(8))
    assert offsets.dtype == degrees.dtype == torch.int64
    assert_follows(offsets, uniform(-4, 4), "jitter offsets")
    # the coin: with probability 1 - rota_prob no turn; else 0..359 degrees, 0 included
    assert_binomial(int((degrees == 0).sum()), len(degrees), 0.6 + 0.4 / 360, "windows not turned")
    assert_follows(degrees[degrees != 0], uniform(1, 359), "degrees of the turned windows")


def test_window_starts_are_jittered_uniformly_and_clamped_at_the_end():
    """Stride 3 with jitter +-4 over two clips: jitter crosses clip boundaries, and at the end of the list the
    last items pile onto the last window (the clamp)."""
    stride, aug = 3, 4
    windows = TrainWindows(coded_clips([20, 17]), T, stride, aug, 0.0)
    count = len(window_starts([20, 17], T))
    assert len(windows) == count // stride == 9
    gen = torch.Generator().manual_seed(9)
    epochs = torch.stack([segments(windows, torch.cat([b.poses for b in windows.batches(4, gen, shuffle=False)]))
                          for _ in range(300)])  # [epoch, item]: the segment each item became
    stat, dof = 0.0, 0
    for item in range(len(windows)):
        s, d = chi_square(epochs[:, item], jitter_law(item, stride, aug, count), f"segments of item {item}")
        stat, dof = stat + s, dof + d
    assert_chi_square(stat, dof, "segments of every item")
    assert jitter_law(len(windows) - 1, stride, aug, count)[count - 1] == 5 / 9  # the clamp is exercised


def test_epoch_order_is_a_uniform_permutation():
    n = 6
    windows = TrainWindows(coded_clips([n + T - 1]), T, 1, 0, 0.0)
    gen = torch.Generator().manual_seed(10)
    seen = torch.zeros(n, n)  # [item, position]
    for _ in range(900):
        order = segments(windows, torch.cat([b.poses for b in windows.batches(4, gen)]))  # items, in epoch order
        assert sorted(order.tolist()) == list(range(n)), "every item once an epoch"
        seen[order, torch.arange(n)] += 1
    # every item at every position with probability 1/n: with both margins fixed, (n - 1)^2 degrees of freedom
    expected = 900 / n
    assert_chi_square(float(((seen - expected) ** 2 / expected).sum()), (n - 1) ** 2, "positions of the items")


def test_windows_turn_about_the_vertical_axis_by_whole_degrees_with_probability_rota_prob():
    windows = TrainWindows(coded_clips([40, 35]), T, 1, 2, 0.4)
    gen = torch.Generator().manual_seed(11)
    turned = torch.cat([b.poses for _ in range(60) for b in windows.batches(512, gen)])  # [B, T, J+1, 3]
    plain = windows.frames[windows.starts[segments(windows, turned), None] + windows.steps]  # the same windows unturned
    assert torch.equal(turned[..., 2], plain[..., 2]), "heights change: not a turn about the vertical axis"
    x, y = plain[..., 0].double().flatten(1), plain[..., 1].double().flatten(1)  # [B, T (J+1)]
    u, v = turned[..., 0].double().flatten(1), turned[..., 1].double().flatten(1)
    norm = (x * x + y * y).sum(1)
    cos, sin = (x * u + y * v).sum(1) / norm, (x * v - y * u).sum(1) / norm  # least squares: (u, v) = R (x, y)
    angle = torch.rad2deg(torch.atan2(sin, cos)) % 360
    degrees = angle.round()
    assert (angle - degrees).abs().max() < 1e-3, "angles are not whole degrees"
    torch.testing.assert_close(u, cos[:, None] * x - sin[:, None] * y, rtol=0, atol=1e-5)  # a rotation, nothing else
    torch.testing.assert_close(v, sin[:, None] * x + cos[:, None] * y, rtol=0, atol=1e-5)
    torch.testing.assert_close(cos**2 + sin**2, torch.ones_like(cos), rtol=0, atol=1e-5)
    degrees = degrees.long() % 360
    assert_binomial(int((degrees == 0).sum()), len(degrees), 0.6 + 0.4 / 360, "windows not turned")
    assert_follows(degrees[degrees != 0] // 10, {0: 9 / 359, **{b: 10 / 359 for b in range(1, 36)}},
                   "angles of the turned windows, in tens of degrees")


# ------------------------------------------------------------------------------------------ initialisation

ZERO = r"\.temporal_decoder_blocks\.\d+\.(sa_block\.proj_out\.out_layers\.2|ffn\.linear2|ffn\.proj_out\.out_layers\.2)\."


def assert_uniform(p: torch.Tensor, bound: float, what: str) -> None:
    """U(-bound, bound): within the bounds; mean 0 and mean square bound^2/3 within their sampling error."""
    x, n = p.detach().double().flatten(), p.numel()
    assert x.abs().max() <= bound, f"{what}: {float(x.abs().max()):.4g} outside +-{bound:.4g}"
    assert abs(float(x.mean())) <= Z * bound / math.sqrt(3 * n), f"{what}: mean {float(x.mean()):.4g}"
    square = float(x.square().mean())  # E = b^2/3, Var = (b^4/5 - b^4/9) / n
    assert abs(square - bound**2 / 3) <= Z * bound**2 * math.sqrt(4 / (45 * n)), \
        f"{what}: std {math.sqrt(square):.4g}, expected {bound / math.sqrt(3):.4g}"


def test_initialisation_is_the_published_one():
    """Residual branches start at zero (each transformer block starts as identity, method.md section 3); the
    learned positional embedding is N(0, 1); graph convolutions U(+-1/sqrt(out features)) (LTD's); every other
    layer PyTorch's default: Linear U(+-1/sqrt(in features)), LayerNorm and BatchNorm the identity."""
    torch.manual_seed(12)
    model = SPARD(config(noise_predictor={"k": 7}))
    owner = {f"{m}.{n}" if m else n: module for m, module in model.named_modules()
             for n, _ in module.named_parameters(recurse=False)}
    zeros = set()
    for name, p in model.named_parameters():
        module, leaf = owner[name], name.rsplit(".", 1)[1]
        if re.search(ZERO, "." + name):
            assert not p.any(), f"{name} is not zero"
            zeros.add(name)
        elif name == "denoiser.sequence_embedding":
            x = p.detach().double()
            assert abs(float(x.mean())) <= Z / math.sqrt(p.numel()) and \
                abs(float(x.square().mean()) - 1) <= Z * math.sqrt(2 / p.numel()), f"{name} is not N(0, 1)"
        elif isinstance(module, GraphConv):
            assert_uniform(p, 1 / math.sqrt(module.weight.shape[1]), name)
        elif isinstance(module, torch.nn.Linear):
            assert_uniform(p, 1 / math.sqrt(module.in_features), name)
        elif isinstance(module, (torch.nn.LayerNorm, NodeBatchNorm)):
            assert torch.equal(p, torch.full_like(p, 1.0 if leaf == "weight" else 0.0)), f"{name} is not the identity"
        else:
            raise AssertionError(f"{name}: no published initialisation known for it")
    assert len(zeros) == 6 * model.cfg.denoiser.num_layers  # weight and bias of three branches a block
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean") or name.endswith("num_batches_tracked"):
            assert not buffer.any(), name
        elif name.endswith("running_var"):
            assert (buffer == 1).all(), name


# ------------------------------------------------------------------------------------------ data parallelism

def synthetic_dataset(cfg) -> Dataset:
    """Two training clips (18 windows at stride 4), no validation or test windows."""
    shape = (0, cfg.data.t_total, cfg.data.num_joints + 1, 3)
    poses = [np.random.default_rng(c).normal(0, 1, (n, *shape[2:])).astype(np.float32) for c, n in enumerate((160, 161))]
    return Dataset("synthetic", 50.0, None, ["all"], [Clip(("S1", f"take {c}"), 0, p) for c, p in enumerate(poses)],
                   [], [], np.zeros(shape, np.float32), np.zeros(0, np.int64), np.zeros(shape, np.float32),
                   np.zeros(0, np.int64))


def epochs_of(trainer: Trainer, rank: int, world: int, monkeypatch) -> tuple[list, torch.Tensor]:
    """What `train_epoch` hands to the optimiser step over two epochs from the seed, as rank `rank` of `world`
    (the rank and world size torchrun would give; no step is taken): [(global batch size, windows, draws)],
    and the generator's state at the end."""
    steps = []

    def record(poses, draws, global_size):
        steps.append((global_size, poses, draws))
        return torch.zeros(())

    monkeypatch.setattr(spard.distributed, "rank", lambda: rank)
    monkeypatch.setattr(spard.distributed, "world_size", lambda: world)
    monkeypatch.setattr(trainer, "train_step", record)
    trainer.generator.manual_seed(trainer.cfg.train.seed)
    for epoch in (1, 2):
        trainer.train_epoch(epoch)
    return steps, trainer.generator.get_state()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
@pytest.mark.parametrize("stage, settings", [
    ("base", {}), ("base", {"train": {"per_sample_dropout": True}}), ("distill", {}),
    ("np", {"noise_predictor": {"noise": 0.5}})])
def test_ranks_draw_slices_of_what_one_process_draws(stage, settings, monkeypatch):
    """Each rank steps on its slice of every global batch, windows and draws included; their union is the
    single process's batch. A last batch of 2 windows (18 = 4 x 4 + 2) has too few for 3 ranks: they skip it
    but take its draws, so the next epoch still matches."""
    cfg = config(train={"batch_size": 4, "div_k": 2, **settings.get("train", {})}, data={"stride": 4, "aug": 3},
                 noise_predictor=settings.get("noise_predictor", {}))
    trainer = Trainer(cfg, stage, SPARD(cfg), synthetic_dataset(cfg), None, None, torch.device("cpu"),
                      logging.getLogger("test_draws"), progress=False)
    assert len(trainer.windows) == 18
    one, state = epochs_of(trainer, 0, 1, monkeypatch)
    assert [n for n, _, _ in one] == [4, 4, 4, 4, 2] * 2
    for world in (2, 3):
        ranks = [epochs_of(trainer, r, world, monkeypatch) for r in range(world)]
        whole = [step for step in one if step[0] >= world]  # the batches the ranks step on
        for r, (steps, end) in enumerate(ranks):
            assert torch.equal(end, state), f"rank {r} of {world}: the generator is out of step"
            assert len(steps) == len(whole)
        for k, (n, poses, draws) in enumerate(whole):
            parts = [steps[k] for steps, _ in ranks]  # [(n, poses, draws)] of each rank
            sizes = [(r + 1) * n // world - r * n // world for r in range(world)]
            assert [len(p) for _, p, _ in parts] == sizes
            assert torch.equal(torch.cat([p for _, p, _ in parts]), poses), f"{world} ranks, batch {k}: windows"
            assert all(d.keys() == draws.keys() for _, _, d in parts)
            for key, value in draws.items():
                got = [d[key] for _, _, d in parts]
                if len(value) == n:  # a row per window: each rank has its rows
                    assert [len(g) for g in got] == sizes and torch.equal(torch.cat(got), value), \
                        f"{world} ranks, batch {k}: {key}"
                else:  # one draw for the batch (the condition coin): every rank has it
                    assert all(torch.equal(g, value) for g in got), f"{world} ranks, batch {k}: {key}"


def test_ranks_draw_their_own_dropout_and_resume_it(monkeypatch, tmp_path):
    """Dropout comes from torch's global generator: each rank seeds its own stream (rank 0 the single
    process's), and a checkpoint keeps every rank's state, each resumed by its rank."""
    from spard.runs import make_logger
    from spard.train import _rng_state, _set_rng_state

    cfg = tiny_config("deepmimic", batch_size=4)
    streams = {}
    for rank in (0, 1):
        monkeypatch.setattr(spard.distributed, "rank", lambda r=rank: r)
        Trainer(cfg, "base", SPARD(cfg), synthetic_dataset(cfg), None, None, "cpu", make_logger(None, quiet=True))
        streams[rank] = torch.rand(64)
    monkeypatch.setattr(spard.distributed, "rank", lambda: 0)
    torch.manual_seed(cfg.train.seed)
    assert torch.equal(streams[0], torch.rand(64))  # one process: the seed itself
    assert abs(torch.corrcoef(torch.stack([streams[0], streams[1]]))[0, 1]) < 0.5  # another rank: another stream

    gen = torch.Generator().manual_seed(1)
    states = [{"torch": torch.manual_seed(10 + r).get_state()} for r in range(2)]
    monkeypatch.setattr(spard.distributed, "gather_objects", lambda own: states)
    saved = _rng_state(gen)
    for rank in (0, 1):
        monkeypatch.setattr(spard.distributed, "rank", lambda r=rank: r)
        _set_rng_state(saved, gen)
        resumed = torch.rand(8)
        torch.manual_seed(10 + rank)
        assert torch.equal(resumed, torch.rand(8)), rank
