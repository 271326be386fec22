"""End to end on the real CMU data with a tiny model: the six modes, the files each leaves for the
next, parseable evaluation output, and the published-flag forms."""
import json
import re
import subprocess
import sys

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
    run(cwd, "--mode", "np", *common, "--distill_ckpt", "results/h36m/distill/distill_ckpt.pt", "--sample", "np")
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
