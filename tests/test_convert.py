"""`spard convert`: published state dicts in and out, every size read from the weights, the number of
attention heads (which the weights cannot tell) required, never guessed."""
import dataclasses

import pytest
import torch

from conftest import randomized, tiny_config
from spard import samplers
from spard.checkpoints import load_model, save_checkpoint
from spard.cli import main
from spard.model import SPARD


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_round_trip_through_the_published_layout(tmp_path, capsys, noise):
    """The published layout holds neither the attention heads nor the noise the predictor adds: convert
    says what to give back, and the model comes back exactly (0: the published noise predictor)."""
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, num_heads=4),  # not the preset's 8
                              noise_predictor=dataclasses.replace(cfg.noise_predictor, noise=noise))
    model = randomized(SPARD(cfg)).eval()
    save_checkpoint(tmp_path / "ours.pt", model, "np")
    den, npr = tmp_path / "spard.pt", tmp_path / "np.pt"
    assert main(["convert", "--to_published", "--ckpt", str(tmp_path / "ours.pt"), "--out", str(den),
                 "--np_out", str(npr)]) == 0
    back_flags = ["--num_heads", "4"] + (["--np_noise", "0.5"] if noise else [])
    assert f"give {' '.join(back_flags)} when converting it back" in capsys.readouterr().out

    back = tmp_path / "back.pt"
    assert main(["convert", "--cfg", "h36m", "--ckpt", str(den), "--np_ckpt", str(npr), "--out", str(back)]) == 2
    assert "--num_heads is required" in capsys.readouterr().err and not back.exists()
    assert main(["convert", "--cfg", "h36m", "--num_heads", "5", "--ckpt", str(den), "--out", str(back)]) == 2
    err = capsys.readouterr().err  # the check names the width the weights have, not the preset's 512
    assert f"--latent_dim ({cfg.denoiser.latent_dim}) must be divisible by --num_heads (5)" in err and not back.exists()

    assert main(["convert", "--cfg", "h36m", *back_flags, "--ckpt", str(den), "--np_ckpt", str(npr),
                 "--out", str(back)]) == 0
    again, _ = load_model(back)
    assert again.cfg.denoiser == model.cfg.denoiser and again.cfg.noise_predictor == model.cfg.noise_predictor
    history = torch.randn(2, model.t_his, model.dim)
    draw = lambda m: samplers.np_sample(m.eval(), history, 7 if noise else 5, generator=torch.Generator().manual_seed(3))  # noqa
    torch.testing.assert_close(draw(again), draw(model), rtol=0, atol=0)


def test_two_outputs_of_one_name_are_refused(tmp_path, capsys):
    model = randomized(SPARD(tiny_config()))
    save_checkpoint(tmp_path / "ours.pt", model, "np")
    out = str(tmp_path / "same.pt")
    assert main(["convert", "--to_published", "--ckpt", str(tmp_path / "ours.pt"), "--out", out, "--np_out", out]) == 2
    assert "name the same file" in capsys.readouterr().err and not (tmp_path / "same.pt").exists()


def test_np_noise_out_of_range_is_refused_before_anything_is_written(tmp_path, capsys):
    model = randomized(SPARD(tiny_config()))
    save_checkpoint(tmp_path / "ours.pt", model, "np")
    den, npr, back = tmp_path / "spard.pt", tmp_path / "np.pt", tmp_path / "back.pt"
    assert main(["convert", "--to_published", "--ckpt", str(tmp_path / "ours.pt"), "--out", str(den),
                 "--np_out", str(npr)]) == 0
    for value, message in (("-1", "--np_noise must be >= 0, got -1.0"), ("inf", "--np_noise must be a finite number")):
        assert main(["convert", "--cfg", "h36m", "--num_heads", "8", "--ckpt", str(den), "--np_ckpt", str(npr),
                     "--np_noise", value, "--out", str(back)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and not back.exists()
