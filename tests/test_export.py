"""ONNX export: the np and onestep predictors of a tiny model run in onnxruntime exactly as in PyTorch,
with dynamic batch (and sample) axes and no randomness inside the graph; the `spard export` command."""
import pytest
import torch

from conftest import published_np, require, tiny_config
from spard import export, samplers
from spard.checkpoints import save_checkpoint
from spard.model import SPARD

require("onnxruntime")
onnx = require("onnx")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SPARD(published_np(tiny_config())).eval()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return {name: export.export_onnx(model, name, out / f"{name}.onnx") for name in ("np", "onestep")}


def ort_run(path, **inputs):
    return torch.from_numpy(export.session(path, threads=1).run(None, {k: v.numpy() for k, v in inputs.items()})[0])


@pytest.mark.parametrize("batch", [1, 4])
def test_np_matches_pytorch(model, files, batch):
    history = torch.randn(batch, 25, 48, generator=torch.Generator().manual_seed(batch))
    got = ort_run(files["np"], history=history)
    want = samplers.np_sample(model, history)
    assert got.shape == (batch, 5, 125, 48)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("batch,samples", [(1, 3), (2, 7)])
def test_onestep_matches_pytorch_for_the_given_noise(model, files, batch, samples):
    g = torch.Generator().manual_seed(samples)
    history, noise = torch.randn(batch, 25, 48, generator=g), torch.randn(samples, batch, 20, 48, generator=g)
    got = ort_run(files["onestep"], history=history, noise=noise)
    want = samplers.onestep(model, history, samples, noise=noise)
    assert got.shape == (batch, samples, 125, 48)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("name", ["np", "onestep"])
def test_graph_has_no_random_op_and_a_recent_opset(files, name):
    proto = onnx.load(str(files[name]))
    assert not [n.op_type for n in proto.graph.node if n.op_type.startswith("Random")]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert {p.key: p.value for p in proto.metadata_props}["spard.sampler"] == name


def test_cli_exports_checks_and_times_a_stage_folder(model, tmp_path, capsys):
    from spard.cli import main

    save_checkpoint(tmp_path / "np" / "np_ckpt.pt", model, "np")
    args = ["export", "--ckpt", str(tmp_path / "np"), "--out", str(tmp_path / "out"), "--num_samples", "3",
            "--repeats", "2", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "out" / "spard_np.onnx").is_file() and (tmp_path / "out" / "spard_onestep.onnx").is_file()
    assert printed.count("check: onnxruntime equals PyTorch") == 2
    assert "1 history x 5 samples" in printed and "1 history x 3 samples" in printed
    assert main(args) == 2  # existing files are kept without --overwrite
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_cli_refuses_a_checkpoint_without_a_noise_predictor(model, tmp_path, capsys):
    from spard.cli import main

    save_checkpoint(tmp_path / "distill_ckpt.pt", model, "distill")
    assert main(["export", "--ckpt", str(tmp_path / "distill_ckpt.pt"), "--sampler", "np",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs a trained noise_predictor, which a 'distill' result does not hold" in err and len(err.strip().splitlines()) == 1


def test_an_np_predictor_trained_with_noise_takes_it_as_an_input(tmp_path):
    import dataclasses

    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, noise_predictor=dataclasses.replace(cfg.noise_predictor, noise=0.5))
    torch.manual_seed(1)
    noisy = SPARD(cfg).eval()
    path = export.export_onnx(noisy, "np", tmp_path / "np_noise.onnx")
    g = torch.Generator().manual_seed(3)
    history, noise = torch.randn(2, 25, 48, generator=g), torch.randn(8, 2, 20, 48, generator=g)  # 8 > K = 5
    got = ort_run(path, history=history, noise=noise)
    want = samplers.np_sample(noisy, history, 8, noise=noise)
    assert got.shape == (2, 8, 125, 48)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * max(1.0, float(want.abs().max())))
    assert export.check(path, noisy, "np", num_samples=7) <= 1e-4
