"""The networks: published sizes, shapes, the condition switch, input checks."""
import pytest
import torch

from conftest import randomized, tiny_config
from spard.config import preset
from spard.model import SPARD, from_model_space, to_model_space


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,denoiser,predictor", [("h36m", 29_607_341, 1_403_624), ("amass", 29_912_291, 1_526_774)])
def test_published_parameter_counts(name, denoiser, predictor):
    model = SPARD(preset(name))
    assert count(model.denoiser) == denoiser
    assert count(model.noise_predictor) == predictor
    assert count(model.denoiser.gcn) == {"h36m": 1_205_629, "amass": 1_341_604}[name]


def test_shapes_and_history_written_back():
    cfg = tiny_config()
    model = SPARD(cfg).eval()
    b, n, d, t_his = 3, cfg.denoiser.n_pre, cfg.data.dim, cfg.data.t_his
    traj = torch.randn(b, cfg.data.t_total, d)
    y = model.condition(traj[:, :t_his])
    out = model.denoiser(torch.randn(b, n, d), torch.tensor([0, 2, 4]), y, traj[:, :t_his])
    assert out.shape == (b, cfg.data.t_total, d)
    assert model.noise_predictor(y).shape == (b, cfg.noise_predictor.k, n, d)


def test_keep_cond_mask_equals_dropping_the_condition():
    model = randomized(SPARD(tiny_config())).eval()
    x, y = torch.randn(2, 4, 20, 48).unbind(0)
    t, hist = torch.tensor([1, 3, 4, 0]), torch.randn(4, 25, 48)
    keep = torch.tensor([True, False, True, False])
    mixed = model.denoiser(x, t, y, hist, keep_cond=keep)
    cond = model.denoiser(x, t, y, hist)
    uncond = model.denoiser(x, t, None, hist)
    torch.testing.assert_close(mixed[keep], cond[keep])
    torch.testing.assert_close(mixed[~keep], uncond[~keep])
    assert not torch.allclose(cond, uncond)


def test_model_space_round_trip():
    poses = torch.randn(2, 7, 17, 3)
    flat = to_model_space(poses)
    assert flat.shape == (2, 7, 48)
    torch.testing.assert_close(from_model_space(flat), poses[..., 1:, :])


def test_residual_branches_start_at_zero():
    """Published initialisation: every transformer block starts as the identity."""
    model = SPARD(tiny_config())
    for block in model.denoiser.temporal_decoder_blocks:
        for layer in (block.sa_block.proj_out.out_layers[2], block.ffn.proj_out.out_layers[2], block.ffn.linear2):
            assert not layer.weight.any() and not layer.bias.any()


def test_bad_sizes_are_one_line_errors():
    import dataclasses
    cfg = tiny_config()
    with pytest.raises(ValueError, match="divisible by --num_heads"):
        SPARD(dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, num_heads=3)))
    with pytest.raises(ValueError, match="n_pre"):
        SPARD(dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, n_pre=500)))
