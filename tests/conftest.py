"""Shared test fixtures.

Data that the project must not copy lives in `../shared` beside the checkout (`SPARD_SHARED_DIR`
overrides it). Tests that need it fail in CI (`CI` set, as `.ci/run` does) when it is missing and
are skipped elsewhere, with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_path(*parts: str) -> Path:
    root = Path(os.environ.get("SPARD_SHARED_DIR", REPO.parent / "shared"))
    path = root.joinpath(*parts)
    if not path.exists():
        reason = f"{path} is missing: the shared data must sit beside the checkout (or set SPARD_SHARED_DIR)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def cmu_dir() -> Path:
    """The real CMU motion capture in the Human3.6M file format."""
    return shared_path("data", "cmu_h36m")


@pytest.fixture
def protocol_dir() -> Path:
    return shared_path("data", "protocol")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


def tiny_config(name: str = "h36m", **train):
    """A preset shrunk to test size (same structure, a few thousand parameters)."""
    import dataclasses

    from spard.config import preset

    cfg = preset(name)
    den = dataclasses.replace(cfg.denoiser, latent_dim=16, ff_size=32, num_layers=2, num_heads=2, gcn_hidden=8,
                              gcn_layers=1)
    npc = dataclasses.replace(cfg.noise_predictor, hidden=8, layers=1, k=5)
    return dataclasses.replace(cfg, denoiser=den, noise_predictor=npc,
                               train=dataclasses.replace(cfg.train, **train)).synced()
