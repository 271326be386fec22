"""`spard demo` end to end with a tiny model (1 epoch per stage), then a rerun and a `--reuse` run."""
import dataclasses
import re

import pytest
from PIL import Image

import spard.config
import spard.data
from conftest import tiny_config
from spard.cli import main
from spard.model import SPARD


@pytest.fixture(scope="module")
def small_dataset():
    """The DeepMimic clips, read once, with every 6th test window (16 windows of 11 actions)."""
    dataset = spard.data.load_dataset(spard.config.preset("deepmimic").data)
    return dataclasses.replace(dataset, test_windows=dataset.test_windows[::6], test_labels=dataset.test_labels[::6])


@pytest.fixture
def tiny_preset(monkeypatch, small_dataset):
    cfg = tiny_config("deepmimic", num_samples=4)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, stride=60))
    monkeypatch.setitem(spard.config.PRESETS, "deepmimic", lambda: cfg)
    monkeypatch.setattr(spard.data, "load_dataset", lambda _: small_dataset)


def test_deepmimic_preset_fits_the_demo():
    cfg = spard.config.preset("deepmimic")
    assert cfg.noise_predictor.k >= cfg.train.num_samples == 50  # the np sampler gives the 50 futures
    assert cfg.data.t_total == 45 and SPARD(cfg).denoiser.refine_n_pre == 45
    # the demo's ~6 minutes on 2 CPU cores rest on this size (and on the epochs of spard.demo.EPOCHS)
    assert sum(p.numel() for p in SPARD(cfg).denoiser.parameters()) < 400_000


def test_demo_writes_report_pictures_and_keeps_earlier_reports(tiny_preset, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--epochs", "1,1,1", "--out_dir", str(out), "--no_progress", "--gif_windows", "2",
            "--gif_futures", "1", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    for sampler in ("ddim", "onestep", "np", "zero_velocity"):
        assert re.search(rf"^\| {sampler} \|", report, flags=re.M), sampler
        assert re.search(rf"^\| {sampler} \|", printed, flags=re.M), sampler
    assert "ms / prediction" in report and "base (trained 1 epoch in" in report
    with Image.open(out / "predictions.gif") as gif:
        assert gif.n_frames == len(range(0, 45, 2))
    assert Image.open(out / "losses.png").size[0] > 0
    for stage in ("train/ckpt.pt", "distill/distill_ckpt.pt", "np/np_ckpt.pt"):
        assert (out / stage).is_file()

    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(args) == 2  # results are there: a rerun needs --overwrite (or --reuse), and changes nothing
    assert "pass --overwrite to retrain and replace them" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert main(args + ["--overwrite"]) == 0  # a rerun retrains into new run folders and keeps the earlier report
    printed = capsys.readouterr().out
    assert "retrains and replaces" in printed and "kept the earlier report" in printed
    assert (out / "np" / "runs" / "002").is_dir()
    assert len(list(out.glob("report-*.md"))) == 1 and len(list(out.glob("predictions-*.gif"))) == 1

    assert main(args + ["--reuse"]) == 0  # evaluates what is there, trains nothing
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 3 and not (out / "np" / "runs" / "003").exists()
    report = (out / "report.md").read_text()
    assert "nothing trained (--reuse)" in report and "np (reused; weights of epoch 1" in report


def test_demo_flags_are_checked(capsys):
    assert main(["demo", "--epochs", "3,2"]) == 2
    assert "--epochs expects three" in capsys.readouterr().err
