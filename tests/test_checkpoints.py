"""Checkpoints: the published layout in and out, our format, clear errors."""
import pytest
import torch

from conftest import tiny_config
from spard import checkpoints
from spard.checkpoints import CheckpointError
from spard.config import preset
from spard.model import SPARD


def test_published_layout_round_trip():
    torch.manual_seed(0)
    model = SPARD(tiny_config())
    den, npr = checkpoints.to_published(model)
    assert all(k.startswith("denoise_motion_transformer.") for k in den)
    assert "model.gc7.weight" in npr
    again = checkpoints.from_published(tiny_config(), den, npr)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_sizes_are_read_from_the_published_weights():
    den, npr = checkpoints.to_published(SPARD(tiny_config()))
    model = checkpoints.from_published(preset("h36m"), den, npr)  # full-size preset, tiny weights
    assert model.cfg.denoiser.latent_dim == 16 and model.cfg.denoiser.num_layers == 2
    assert model.cfg.noise_predictor.k == 5 and model.cfg.noise_predictor.hidden == 8


def test_wrong_dataset_and_wrong_shapes_are_one_line_errors():
    den, npr = checkpoints.to_published(SPARD(tiny_config()))
    with pytest.raises(CheckpointError, match="D=48 .* cfg 'amass' has D=63"):
        checkpoints.from_published(preset("amass"), den)
    den["denoise_motion_transformer.gcn.gc1.att"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"gcn.gc1.att has shape \[3, 3\], expected \[48, 48\]"):
        checkpoints.from_published(tiny_config(), den)
    with pytest.raises(CheckpointError, match="not a published noise-predictor"):
        checkpoints.from_published(tiny_config(), None, {"gc1.weight": torch.zeros(1)})


def test_our_format_round_trip_and_stage_check(tmp_path):
    model = SPARD(tiny_config())
    path = tmp_path / "ckpt.pt"
    checkpoints.save_checkpoint(path, model, "base", epoch=3)
    again, ckpt = checkpoints.load_model(path)
    assert ckpt["epoch"] == 3 and ckpt["stage"] == "base"
    assert again.cfg == model.cfg
    with pytest.raises(CheckpointError, match="is a 'base' checkpoint but a 'np' checkpoint is needed"):
        checkpoints.load_model(path, stages=("np",))
    with pytest.raises(CheckpointError, match="trained with name='h36m' but this run has name='amass'"):
        checkpoints.load_model(path, tiny_config("amass"))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoints.read_file(tmp_path / "nope.pt")
    path = tmp_path / "ckpt.pt"
    checkpoints.save_checkpoint(path, SPARD(tiny_config()), "np")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoints.read_file(path)


def spard_01_config() -> dict:
    """The h36m preset as spard 0.1 wrote it: derived sizes stored, old names, no --np_noise."""
    d = preset("h36m").to_dict()
    d["denoiser"] |= {"input_feats": 48, "t_his": 25, "t_total": 125}
    d["noise_predictor"] |= {"input_feats": 48, "n_pre": d["denoiser"]["n_pre"]}
    for key in ("noise", "objective", "relax", "prior"):
        d["noise_predictor"].pop(key)
    d["train"] |= {"mod_test": d["diffusion"].pop("guidance"), "amp": "none", "tf32": True}
    d["train"].pop("precision")
    return d


def test_configs_of_spard_01_load_as_they_ran():
    from spard.config import Config

    cfg = Config.from_dict(spard_01_config())
    assert cfg.noise_predictor.noise == 0.0  # 0.1 had the published noise predictor only
    assert (cfg.diffusion.guidance, cfg.train.precision) == (0.3, "tf32")
    assert Config.from_dict(preset("h36m").to_dict()).noise_predictor.noise == 1.0  # today's default stays


def test_a_stored_size_that_disagrees_is_refused():
    from spard.config import Config, ConfigError

    d = spard_01_config()
    d["noise_predictor"]["n_pre"] += 1
    with pytest.raises(ConfigError, match="noise_predictor.n_pre disagrees"):
        Config.from_dict(d)
