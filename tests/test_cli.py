"""End to end on the real CMU data with a tiny model: the six modes, the files each leaves for the
next, parseable evaluation output, and the published-flag forms."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

TINY = ["--latent_dims", "16", "--ff_size", "32", "--num_layers", "2", "--num_heads", "2", "--gcn_linear_size", "8",
        "--gcn_layers", "1", "--np_gcn_linear_size", "8", "--np_gcn_layers", "1", "--np_k", "6"]


def run(cwd, *args, check=True):
    proc = subprocess.run([sys.executable, str(REPO / "h36m_main.py"), *args], cwd=cwd, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def metrics_of(output: str) -> dict:
    found = dict(re.findall(r"^(\w+)\s*: \(([^)]*)\)$", output, flags=re.M))
    assert list(found) == ["APD", "APDE", "ADE", "FDE", "MMADE", "MMFDE", "FID", "CMD"], output[-1500:]
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cmu_dir_module):
    cwd = tmp_path_factory.mktemp("cli")
    common = ["--cfg", "h36m", "--device", "cpu", "--data_dir", str(cmu_dir_module), "--batch_size", "32",
              "--num_epoch", "1", "--stride", "200", "--num_samples", "4", "--no_progress", "--div_k", "2"]
    run(cwd, "--mode", "train", *common, *TINY)
    run(cwd, "--mode", "distill", *common, "--ckpt", "results/h36m/train/ckpt.pt")
    run(cwd, "--mode", "np", *common, "--sample", "np", "--metrics_epoch", "1")  # --distill_ckpt found in results/h36m
    return cwd, common


@pytest.fixture(scope="module")
def cmu_dir_module():
    from conftest import shared_path
    return shared_path("data", "cmu_h36m")


def test_training_stages_write_the_readme_paths(workdir):
    cwd, _ = workdir
    for path in ("results/h36m/train/ckpt.pt", "results/h36m/distill/distill_ckpt.pt", "results/h36m/np/np_ckpt.pt"):
        assert (cwd / path).is_file(), path
    run_dir = cwd / "results/h36m/train/runs/001"
    assert (run_dir / "log.txt").read_text().count("====> Epoch: 1") == 1
    assert any((run_dir / "tb").iterdir())
    assert json.loads((run_dir / "history.jsonl").read_text().splitlines()[-1])["epoch"] == 1


@pytest.mark.parametrize("mode,flags,sampler", [
    ("eval", ["--ckpt", "results/h36m/train/ckpt.pt", "--sample", "ddim"], "ddim"),
    ("distill_eval", ["--distill_ckpt", "results/h36m/distill/distill_ckpt.pt", "--sample", "onestep"], "onestep"),
    ("np_eval", ["--distill_ckpt", "results/h36m/distill/distill_ckpt.pt", "--np_ckpt", "results/h36m/np/np_ckpt.pt",
                 "--sample", "np"], "np"),
])
def test_evaluation_modes_print_and_write_metrics(workdir, mode, flags, sampler):
    cwd, common = workdir
    proc = run(cwd, "--mode", mode, *common, *flags)
    printed = metrics_of(proc.stdout)
    assert printed["FID"] == "n/a"  # no classifier for these classes: never 0
    files = sorted((cwd / "results/h36m/eval").glob(f"{mode}_{sampler}_*.json"))
    record = json.loads(files[-1].read_text())
    assert record["windows"] == 166 and record["sampler"] == sampler
    assert f"{record['metrics']['ADE']:.4f}" == printed["ADE"]
    assert 0 < record["metrics"]["ADE"] < 10


def test_spard_command_and_readme_aliases(workdir):
    cwd, common = workdir
    proc = subprocess.run([sys.executable, "-m", "spard.cli", "distill_eval", *common, "--model_ckpt", "unused",
                           "--distill_ckpt", "results/h36m/distill/distill_ckpt.pt", "--mode_test", "0.3"],
                          cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]
    metrics_of(proc.stdout)


def test_existing_result_is_not_overwritten(workdir):
    cwd, common = workdir
    before = (cwd / "results/h36m/train/ckpt.pt").read_bytes()
    proc = run(cwd, "--mode", "train", *common, *TINY, check=False)
    assert proc.returncode == 2
    assert "already exists; pass --overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (cwd / "results/h36m/train/ckpt.pt").read_bytes() == before


def test_a_stage_finds_the_previous_result_in_out_dir(workdir):
    """The np stage of the fixture got no --distill_ckpt: its frozen denoiser is the distilled result there."""
    import torch

    cwd, _ = workdir
    load = lambda path: torch.load(cwd / path, weights_only=True)["model"]  # noqa: E731
    distilled, final = load("results/h36m/distill/distill_ckpt.pt"), load("results/h36m/np/np_ckpt.pt")
    denoiser = [k for k in distilled if k.startswith("denoiser.")]
    assert denoiser and all(torch.equal(distilled[k], final[k]) for k in denoiser)
    base = load("results/h36m/train/ckpt.pt")
    assert not all(torch.equal(base[k], final[k]) for k in denoiser)  # the distilled one, not the base model


def test_tensorboard_shows_validation_metrics_and_a_picture(workdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cwd, _ = workdir
    events = EventAccumulator(str(cwd / "results/h36m/np/runs/001/tb"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"Loss/train", "val/ADE", "val/APD", "val/FDE"} <= set(tags["scalars"])
    assert tags["images"] == ["val/futures"]
    image = events.Images("val/futures")[0]
    assert image.step == 1 and image.width > 200 and image.height > 100


def test_config_json_reruns_the_recorded_run(workdir, tmp_path):
    cwd, common = workdir
    recorded = cwd / "results/h36m/train/runs/001/config.json"
    run(cwd, "train", "--config", str(recorded), "--device", "cpu", "--out_dir", str(tmp_path), "--no_progress")
    assert (tmp_path / "train/runs/001/config.json").read_text() == recorded.read_text()
    run(tmp_path, "train", "--config", str(recorded), "--device", "cpu", "--out_dir", str(tmp_path / "b"),
        "--no_progress", "--lr", "0.002")  # from another folder; a flag on the line wins over the recorded value
    rerun = json.loads((tmp_path / "b/train/runs/001/config.json").read_text())
    assert rerun["train"]["lr"] == 0.002 and {**rerun["train"], "lr": None} == \
        {**json.loads(recorded.read_text())["train"], "lr": None}


def test_paths_are_recorded_absolute(tmp_path, monkeypatch):
    """Files and folders of a config are absolute, so a recorded config.json reruns from any folder."""
    from spard.arguments import config_from_args
    from spard.cli import mode_parser

    monkeypatch.chdir(tmp_path)
    args = mode_parser("spard", None, "train", "h36m").parse_args(
        ["--cfg", "h36m", "--data_dir", "data/cmu", "--classes", "c.json"])
    cfg = config_from_args(args)
    assert (cfg.data.data_dir, cfg.data.classes_json) == (str(tmp_path / "data/cmu"), str(tmp_path / "c.json"))
    assert cfg.data.segments_csv is None and cfg.data.fid_classifier is None  # unset stays unset


def test_help_lists_every_command_and_the_version():
    proc = subprocess.run([sys.executable, "-m", "spard.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("train", "distill", "np", "eval", "distill_eval", "np_eval", "predict", "render", "view",
                    "export", "convert", "demo"):
        assert re.search(rf"^  {command} +\S", proc.stdout, flags=re.M), command
    version = subprocess.run([sys.executable, "-m", "spard.cli", "--version"], capture_output=True, text=True)
    assert re.fullmatch(r"spard \d+\.\d+\.\d+\n", version.stdout)
    flags = subprocess.run([sys.executable, "-m", "spard.cli", "train", "--cfg", "amass", "-h"], capture_output=True,
                           text=True).stdout
    assert re.search(r"--stride STRIDE +training windows[^(]*\(default: 60\)", flags)  # AMASS's stride as the default
    from spard.cli import mode_parser

    actions = [a for a in mode_parser("spard", None, None, "h36m")._actions if a.option_strings != ["-h", "--help"]]
    assert len(actions) > 60 and all(a.help and len(a.help) > 8 for a in actions)  # every flag explains itself


def test_import_spard_leaves_the_compiler_stack_out():
    code = ("import sys, spard; loaded = [m for m in sys.modules if m.startswith(('torch._dynamo', "
            "'torch._inductor', 'triton', 'matplotlib'))]; print(loaded)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_evaluation_of_a_test_only_file_equals_the_full_file_and_saves_its_futures(workdir, tmp_path):
    import numpy as np

    from spard.data.h36m import read_positions
    from spard.predictions import Predictions

    cwd, common = workdir
    full = common[common.index("--data_dir") + 1]
    positions = read_positions(Path(full) / "data_3d_h36m.npz")
    test_only = tmp_path / "test_only"
    test_only.mkdir()
    np.savez(test_only / "data_3d_h36m.npz", positions_3d={s: positions[s] for s in ("S9", "S11") if s in positions})
    for name in ("segments_test.csv", "mmapd_GT.csv", "classes.json"):
        (test_only / name).write_bytes((Path(full) / name).read_bytes())
    flags = ["--mode", "np_eval", *common, "--np_ckpt", "results/h36m/np/np_ckpt.pt"]
    want = metrics_of(run(cwd, *flags).stdout)
    saved = tmp_path / "futures.npz"
    at = flags.index("--data_dir") + 1
    got = metrics_of(run(cwd, *flags[:at], str(test_only), *flags[at + 1:], "--save_predictions", str(saved)).stdout)
    assert got == want
    p = Predictions.load(saved)
    assert p.futures.shape == (166, 4, 100, 17, 3) and p.history.shape == (166, 25, 17, 3)
    np.testing.assert_allclose(p.futures[:, :, 0, 0], np.broadcast_to(p.history[:, None, -1, 0], (166, 4, 3)))
