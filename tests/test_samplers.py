"""The three samplers: one signature, one layout, the randomness they promise (and no more)."""
import pytest
import torch

from conftest import randomized, tiny_config, with_np_noise
from spard import samplers
from spard.model import SPARD
from spard.stages import check_sampler


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomized(SPARD(tiny_config())).eval()


@pytest.mark.parametrize("name", ["ddim", "onestep", "np"])
def test_layout(model, name):
    history = torch.randn(3, 25, 48)
    out = samplers.get_sampler(name)(model, history, 4, generator=torch.Generator().manual_seed(1))
    assert out.shape == (3, 4, 125, 48)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["ddim", "onestep"])
def test_stochastic_samplers_follow_the_generator(model, name):
    history = torch.randn(2, 25, 48)
    run = lambda seed: samplers.get_sampler(name)(model, history, 3, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(run(5), run(5))
    assert not torch.allclose(run(5), run(6))


def test_sample_major_noise_layout(model):
    """noise[s, b] drives future s of history b, whatever the batch composition."""
    history = torch.randn(2, 25, 48)
    noise = torch.randn(3, 2, 20, 48)
    both = samplers.onestep(model, history, 3, noise=noise)
    alone = samplers.onestep(model, history[1:], 3, noise=noise[:, 1:])
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-5)


def test_published_np_is_deterministic_and_diverse(model):
    model = with_np_noise(model, 0.0)
    history = torch.randn(2, 25, 48)
    a = samplers.np_sample(model, history)
    b = samplers.np_sample(model, history, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b)
    assert a.shape[1] == model.cfg.noise_predictor.k
    assert (a[:, 0] - a[:, 1]).abs().max() > 0
    torch.testing.assert_close(samplers.np_sample(model, history, 2), a[:, :2])
    with pytest.raises(ValueError, match="at most K=5"):
        samplers.np_sample(model, history, 6)


def test_ddim_guidance_one_is_the_conditional_model(model):
    """w = 1 makes the guided step the conditional network alone (checked on the first step)."""
    history, noise = torch.randn(1, 25, 48), torch.randn(1, 1, 20, 48)
    y = model.condition(history)
    x_T = y + 3.96 * noise[0]
    with torch.no_grad():
        guided = samplers.guided_denoise(model, x_T, 4, y, history, 1.0)
        cond = model.denoiser(x_T, torch.tensor([4]), y, history)
    torch.testing.assert_close(guided, cond, atol=1e-5, rtol=1e-5)


def test_bad_history_and_noise(model):
    with pytest.raises(ValueError, match=r"history must be \[B, 25, 48\]"):
        samplers.ddim(model, torch.randn(2, 20, 48), 3)
    with pytest.raises(ValueError, match="noise must have shape"):
        samplers.onestep(model, torch.randn(2, 25, 48), 3, noise=torch.randn(2, 3, 20, 48))
    with pytest.raises(ValueError, match="unknown sampler 'fast'"):
        samplers.get_sampler("fast")


@pytest.mark.parametrize("stage, sampler, ok", [
    ("base", "ddim", True), ("base", "onestep", True), ("base", "np", False), ("base", "zero_velocity", True),
    ("distill", "ddim", True), ("distill", "np", False), ("np", "np", True), ("np", "onestep", True),
])
def test_a_sampler_needs_the_network_its_stage_trains(stage, sampler, ok):
    """The one rule every caller (evaluation, Predictor, export) applies: np needs a trained noise predictor."""
    if ok:
        check_sampler(stage, sampler)
    else:
        with pytest.raises(ValueError, match=f"needs a trained noise_predictor, which a '{stage}' result does not hold"):
            check_sampler(stage, sampler)


def test_constant_velocity_needs_two_observed_frames(model):
    from spard.baselines import constant_velocity

    with pytest.raises(ValueError, match="constant_velocity needs at least 2 observed frames for a velocity, t_his is 1"):
        constant_velocity(model, torch.zeros(2, 1, 48))
