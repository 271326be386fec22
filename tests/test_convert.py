"""`spard convert`: published state dicts in and out, every size read from the weights, the number of
attention heads (which the weights cannot tell) required, never guessed."""
import dataclasses

import torch

from conftest import randomized, tiny_config
from spard import samplers
from spard.checkpoints import load_model, save_checkpoint
from spard.cli import main
from spard.model import SPARD


def test_round_trip_through_the_published_layout(tmp_path, capsys):
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, num_heads=4))  # not the preset's 8
    model = randomized(SPARD(cfg)).eval()
    save_checkpoint(tmp_path / "ours.pt", model, "np")
    den, npr = tmp_path / "spard.pt", tmp_path / "np.pt"
    assert main(["convert", "--to_published", "--ckpt", str(tmp_path / "ours.pt"), "--out", str(den),
                 "--np_out", str(npr)]) == 0
    assert "give --num_heads 4 when converting it back" in capsys.readouterr().out

    back = tmp_path / "back.pt"
    assert main(["convert", "--cfg", "h36m", "--ckpt", str(den), "--np_ckpt", str(npr), "--out", str(back)]) == 2
    assert "--num_heads is required" in capsys.readouterr().err and not back.exists()

    assert main(["convert", "--cfg", "h36m", "--num_heads", "4", "--ckpt", str(den), "--np_ckpt", str(npr),
                 "--out", str(back)]) == 0
    again, _ = load_model(back)
    assert again.cfg.denoiser == model.cfg.denoiser and again.cfg.noise_predictor == model.cfg.noise_predictor
    history = torch.randn(2, model.t_his, model.dim)
    torch.testing.assert_close(samplers.np_sample(again.eval(), history), samplers.np_sample(model, history),
                               rtol=0, atol=0)


def test_two_outputs_of_one_name_are_refused(tmp_path, capsys):
    model = randomized(SPARD(tiny_config()))
    save_checkpoint(tmp_path / "ours.pt", model, "np")
    out = str(tmp_path / "same.pt")
    assert main(["convert", "--to_published", "--ckpt", str(tmp_path / "ours.pt"), "--out", out, "--np_out", out]) == 2
    assert "name the same file" in capsys.readouterr().err and not (tmp_path / "same.pt").exists()
