"""The noise predictor's objectives (losses.noise_predictor_loss) on small tensors: which maps get a
gradient under each, what the spread prior does to collapsed maps, the noisy maps of --np_noise, and
training and sampling with them deterministic under a seed."""
import dataclasses

import pytest
import torch

from conftest import published_np, randomized, tiny_config, with_np_noise
from spard import losses, samplers
from spard.model import SPARD
from spard.stages import STAGES


def test_winner_takes_all_sends_gradient_to_the_best_map_only():
    err = torch.tensor([[0.3, 0.1, 0.5], [0.2, 0.4, 0.6]], requires_grad=True)
    losses.best_of(err).backward()
    assert torch.equal(err.grad, torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]]))


def test_relaxed_objective_gives_every_map_a_gradient():
    err = torch.tensor([[0.3, 0.1, 0.5]], requires_grad=True)
    loss = losses.relaxed_best_of(err, 0.1)
    torch.testing.assert_close(loss, torch.tensor(0.9 * 0.1 + 0.1 * (0.3 + 0.5) / 2))
    loss.backward()
    torch.testing.assert_close(err.grad, torch.tensor([[0.05, 0.9, 0.05]]))
    assert losses.relaxed_best_of(err, 0.0).item() == pytest.approx(losses.best_of(err).item())


def test_spread_prior_is_zero_for_gaussian_spread_and_large_for_collapsed_maps():
    gen = torch.Generator().manual_seed(0)
    gaussian = torch.randn(4, 2000, 3, 5, generator=gen)  # [B, K, n_pre, D]: K maps spread like N(0, 1)
    assert losses.spread_prior(gaussian).item() < 1e-3
    collapsed = torch.full((4, 50, 3, 5), 0.2) + 1e-4 * torch.randn(4, 50, 3, 5, generator=gen)
    assert losses.spread_prior(collapsed).item() > 4  # -log of a tiny variance
    maps = collapsed.clone().requires_grad_(True)
    losses.spread_prior(maps).backward()
    spread = maps - maps.mean(dim=1, keepdim=True)
    assert (maps.grad * spread).sum() < 0  # descending pushes the maps apart


@pytest.fixture
def model():
    """The published noise predictor (deterministic maps); `with_np_noise(model, 0.5)` adds the noise."""
    torch.manual_seed(0)
    return randomized(SPARD(published_np(tiny_config())))


@pytest.mark.parametrize("objective", ["published", "relaxed", "prior"])
def test_objectives_on_a_model(model, objective):
    model.denoiser.eval().requires_grad_(False)
    model.noise_predictor.train()
    traj = torch.randn(3, 125, 48)
    loss, err, eps = losses.noise_predictor_loss(model, traj, objective=objective, relax=0.1, prior=0.5)
    assert err.shape == (3, 5) and eps.shape == (3, 5, 20, 48) and loss.ndim == 0
    if objective == "published":
        assert loss.item() == pytest.approx(err.min(1).values.mean().item())
    loss.backward()
    assert model.noise_predictor.model.gc1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown noise-predictor objective 'best'"):
        losses.noise_predictor_loss(model, traj, objective="best")


def test_noisy_maps_are_the_maps_plus_scaled_noise_and_cycle_through_k(model):
    model = with_np_noise(model, 0.5).eval()
    maps = torch.randn(2, 5, 20, 48)
    z = torch.randn(2, 12, 20, 48)
    got = model.noise_predictor.sample(maps, 12, z)
    torch.testing.assert_close(got, maps[:, torch.arange(12) % 5] + 0.5 * z)
    draws = STAGES["np"].draw(model, 3, torch.Generator().manual_seed(0), model.cfg)
    assert draws["z"].shape == (3, 5, 20, 48)
    published = published_np(tiny_config())
    assert STAGES["np"].draw(SPARD(published), 3, torch.Generator(), published) == {}  # published: no draws


def test_noisy_np_sampling_is_random_and_follows_the_seed(model):
    model = with_np_noise(model, 0.5).eval()
    history = torch.randn(2, 25, 48)
    run = lambda seed: samplers.np_sample(model, history, 12, generator=torch.Generator().manual_seed(seed))  # noqa
    torch.testing.assert_close(run(1), run(1))
    assert run(1).shape == (2, 12, 125, 48) and not torch.allclose(run(1), run(2))
    assert samplers.draws_noise(model, "np") and not samplers.draws_noise(SPARD(published_np(tiny_config())), "np")


def test_training_with_a_new_objective_is_deterministic_on_the_cpu(model):
    from spard.data.dataset import Clip, Dataset
    from spard.runs import make_logger
    from spard.train import Trainer
    import numpy as np

    cfg = dataclasses.replace(model.cfg, noise_predictor=dataclasses.replace(model.cfg.noise_predictor, noise=0.5,
                                                                            objective="prior", prior=0.1),
                              train=dataclasses.replace(model.cfg.train, batch_size=4, num_epoch=1))
    poses = np.random.default_rng(0).normal(0, 0.1, (400, 17, 3)).astype(np.float32)
    empty = np.zeros((0, 125, 17, 3), np.float32)
    data = Dataset("synthetic", 50.0, None, ["all"], [Clip(("S1", "a"), 0, poses)], [], [], empty,
                   np.zeros(0, np.int64), empty, np.zeros(0, np.int64))
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        start = STAGES["np"].start(model, cfg)
        trainer = Trainer(cfg, "np", start, data, None, None, "cpu", make_logger(None, quiet=True))
        trainer.train_epoch(1)
        weights.append(torch.cat([p.detach().flatten() for p in start.noise_predictor.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], torch.cat([p.flatten() for p in STAGES["np"].start(model, cfg).noise_predictor.parameters()]))
