"""Interruption: a training run killed with SIGKILL mid-epoch, then resumed by running the same command
again, ends with exactly the weights of an uninterrupted run (bit-exact on CPU), see docs/reliability.md."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import REPO, write_gsps
from spard.checkpoints import read_file

TINY = ["--latent_dims", "16", "--ff_size", "32", "--num_layers", "2", "--num_heads", "2", "--gcn_linear_size", "8",
        "--gcn_layers", "1", "--np_gcn_linear_size", "8", "--np_gcn_layers", "1", "--np_k", "6"]
EPOCHS = 3
RUN = Path("results/h36m/train/runs/001")


def command(data: Path) -> list[str]:
    return [sys.executable, str(REPO / "h36m_main.py"), "--mode", "train", "--cfg", "h36m", "--device", "cpu",
            "--data_dir", str(data), "--val_fraction", "0.3", "--batch_size", "32", "--stride", "10",
            "--num_epoch", str(EPOCHS), "--div_k", "2", "--metrics_epoch", "0", "--select", "last", "--no_progress",
            *TINY]


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process, run side by side
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def history(cwd: Path) -> list[dict]:
    path = cwd / RUN / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def kill_during_epoch_2(proc: subprocess.Popen, cwd: Path) -> None:
    """SIGKILL once epoch 1 is logged (and checkpointed), halfway through epoch 2."""
    deadline = time.time() + 300
    while not history(cwd):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "epoch 1 never finished"
        time.sleep(0.01)
    time.sleep(history(cwd)[0]["seconds"] / 2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    write_gsps(tmp_path / "data")
    cmd = command(tmp_path / "data")
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    interrupted.mkdir(), straight.mkdir()
    reference = start(cmd, straight)
    killed = start(cmd, interrupted)
    kill_during_epoch_2(killed, interrupted)

    last = read_file(interrupted / RUN / "last.pt")
    assert not last["finished"] and last["epoch"] < EPOCHS and len(history(interrupted)) < EPOCHS
    assert not (interrupted / "results/h36m/train/ckpt.pt").exists()

    resumed = start(cmd, interrupted)  # the same command again: it resumes by default
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-2000:]
    assert f"resuming {RUN} from epoch {last['epoch']} (pass --no_resume to start a new run)" in out
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-2000:]

    a, b = read_file(interrupted / RUN / "last.pt"), read_file(straight / RUN / "last.pt")
    assert a["epoch"] == b["epoch"] == EPOCHS and a["finished"] and b["finished"]
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_b)
    # per-epoch losses agree too (a kill between writing last.pt and the history line may lose that line)
    losses = [{r["epoch"]: (r["train_loss"], r["val_loss"]) for r in history(cwd)} for cwd in (interrupted, straight)]
    assert EPOCHS in losses[0] and all(losses[0][e] == losses[1][e] for e in losses[0])
    result_a = read_file(interrupted / "results/h36m/train/ckpt.pt")["model"]
    result_b = read_file(straight / "results/h36m/train/ckpt.pt")["model"]
    assert all(torch.equal(result_a[k], result_b[k]) for k in result_b)
