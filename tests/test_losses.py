"""The three losses: what trains, what is frozen, and the randomness they draw."""
import copy
import dataclasses

import pytest
import torch

from conftest import randomized, tiny_config, with_np_noise
from spard import losses
from spard.model import SPARD
from spard.stages import STAGES


@pytest.fixture
def model():
    torch.manual_seed(0)
    return randomized(SPARD(tiny_config()))


def draws(stage: str, model, n: int, seed: int = 0, **train) -> dict:
    """The draws of `stage` for `n` windows, from a fresh generator."""
    cfg = dataclasses.replace(model.cfg, train=dataclasses.replace(model.cfg.train, **train))
    return STAGES[stage].draw(model, n, torch.Generator().manual_seed(seed), cfg)


def test_best_of_h_picks_the_best_copy(model):
    traj = torch.randn(4, 125, 48)
    loss, err, pred = losses.base_loss(model.eval(), traj, h=3, **draws("base", model, 4, div_k=3))
    assert err.shape == (4, 3) and pred.shape == (4, 3, 125, 48)
    torch.testing.assert_close(loss, err.min(1).values.mean())
    torch.testing.assert_close(err, (pred - traj[:, None]).abs().mean((-1, -2)))


def test_condition_dropout_whole_batch_or_per_window(model):
    traj = torch.randn(64, 125, 48)
    model.eval()
    t, eps = torch.zeros(64, dtype=torch.long), torch.randn(64, 1, 20, 48)
    cond = losses.base_loss(model, traj, h=1, t=t, eps=eps, keep_cond=True)[1]
    uncond = losses.base_loss(model, traj, h=1, t=t, eps=eps, keep_cond=False)[1]
    kept = []
    for i in range(20):
        keep = draws("base", model, 64, seed=i, div_k=1, per_sample_dropout=True)["keep_cond"]
        err = losses.base_loss(model, traj, h=1, t=t, eps=eps, keep_cond=keep)[1]
        kept.append(torch.isclose(err, cond).squeeze(1))
        assert (torch.isclose(err, cond) | torch.isclose(err, uncond)).all()
    kept = torch.stack(kept)
    assert 0.3 < kept.float().mean() < 0.7  # mod_train = 0.5 per window
    whole = [losses.base_loss(model, traj, h=1, t=t, eps=eps, keep_cond=draws("base", model, 64, seed=i)["keep_cond"])[1]
             for i in range(10)]
    for err in whole:  # one coin for the batch: all windows agree
        assert torch.isclose(err, cond).all() or torch.isclose(err, uncond).all()


def test_mse_option(model):
    traj = torch.randn(2, 125, 48)
    _, err, pred = losses.base_loss(model.eval(), traj, h=2, kind="mse", **draws("base", model, 2, div_k=2))
    torch.testing.assert_close(err, (pred - traj[:, None]).square().mean((-1, -2)))
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        losses.reconstruction_error(pred, traj[:, None], "huber")


def test_distillation_gradients_reach_only_the_student(model):
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    student = model.train()
    loss, out, target = losses.distill_loss(student, teacher, torch.randn(2, 125, 48), guidance=0.3,
                                            **draws("distill", model, 2))
    loss.backward()
    assert student.denoiser.joint_embed.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    assert not target.requires_grad


def test_noise_predictor_loss_trains_the_predictor_through_a_frozen_model(model):
    model = with_np_noise(model, 0.0)  # the published predictor: no noise draws
    model.denoiser.eval().requires_grad_(False)
    model.noise_predictor.train()
    loss, err, eps = losses.noise_predictor_loss(model, torch.randn(3, 125, 48))
    assert err.shape == (3, 5) and eps.shape == (3, 5, 20, 48)
    assert eps.abs().max() <= 3.0
    loss.backward()
    assert model.noise_predictor.model.gc1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.denoiser.parameters())
