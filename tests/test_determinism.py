"""Determinism on CPU: the same seed gives the same weights and the same metrics (docs/reliability.md)."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_config, write_gsps
from spard.checkpoints import read_file, save_checkpoint
from spard.data import load_dataset
from spard.model import SPARD
from spard.train import Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_gsps(tmp_path_factory.mktemp("data")).parent


def train_once(data, folder, seed: int) -> dict:
    cfg = tiny_config(batch_size=32, num_epoch=1, div_k=2, metrics_epoch=0, save_model_interval=0, seed=seed)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(data), val_fraction=0.3, stride=10))
    torch.manual_seed(seed)  # the initial weights
    folder.mkdir()
    trainer = Trainer(cfg, "base", SPARD(cfg), load_dataset(cfg.data), folder, folder, torch.device("cpu"),
                      logging.getLogger("determinism"), progress=False)
    trainer.fit()
    return read_file(folder / "last.pt")["model"]


def test_two_trainings_with_one_seed_give_identical_weights(data, tmp_path):
    before = (random.getstate(), np.random.get_state()[1].copy())
    a, b = train_once(data, tmp_path / "a", 3), train_once(data, tmp_path / "b", 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # training draws nothing from Python's or numpy's generators: only torch ones, all checkpointed
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    c = train_once(data, tmp_path / "c", 4)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters


def test_the_same_evaluation_twice_gives_identical_metrics(data, tmp_path):
    """Two processes, one seed: the metrics JSON is the same, number for number (ddim draws noise)."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt.pt", SPARD(tiny_config()), "base")
    runs = []
    for n in (1, 2):
        cmd = [sys.executable, str(REPO / "h36m_main.py"), "--mode", "eval", "--cfg", "h36m", "--device", "cpu",
               "--data_dir", str(data), "--val_fraction", "0.3", "--ckpt", str(tmp_path / "ckpt.pt"),
               "--sample", "ddim", "--num_samples", "4", "--seed", "7", "--no_progress",
               "--json", str(tmp_path / f"metrics{n}.json")]
        runs.append(subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in runs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-2000:]
    first, second = (json.loads((tmp_path / f"metrics{n}.json").read_text()) for n in (1, 2))
    timings = ("seconds_per_window",)
    metrics = [{k: v for k, v in run["metrics"].items() if k not in timings} for run in (first, second)]
    assert metrics[0] == metrics[1] and metrics[0]["ADE"] > 0
