"""Shared test fixtures.

Data that the project must not copy lives in `../shared` beside the checkout (`SPARD_SHARED_DIR`
overrides it); test dependencies come with `pip install -e '.[dev]'`. A test whose data or
dependency is missing fails in CI (`CI` set, as `.ci/run` does) and is skipped elsewhere, with the
reason (`missing`, `require`, `shared_path`). Only the tests that need a CUDA GPU skip everywhere.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def missing(reason: str):
    """Something a test needs is not there: the test fails under CI (`CI` set and not 0/false), else it
    is skipped; either way with `reason`, which says what is missing and how to get it."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI: nothing a test needs may be missing)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(module: str, install: str = "pip install -e '.[dev]'"):
    """The module `module` for a test that needs it, imported; when it cannot be, `missing` (fail in CI)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing(f"{module} cannot be imported ({error}): {install} installs it")


def shared_path(*parts: str) -> Path:
    root = Path(os.environ.get("SPARD_SHARED_DIR", REPO.parent / "shared"))
    path = root.joinpath(*parts)
    if not path.exists():
        missing(f"{path} is missing: the shared data must sit beside the checkout (or set SPARD_SHARED_DIR)")
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
                               train=dataclasses.replace(cfg.train, **train))


def published_np(cfg, sigma: float = 0.0):
    """`cfg` with the published noise predictor: K deterministic maps (`--np_noise 0`), or with `sigma`."""
    import dataclasses

    return dataclasses.replace(cfg, noise_predictor=dataclasses.replace(cfg.noise_predictor, noise=sigma))


def with_np_noise(model, sigma: float):
    """A copy of `model` whose noise predictor adds `sigma` x N(0, I) to its maps (same weights)."""
    from spard.model import SPARD

    out = SPARD(published_np(model.cfg, sigma))
    out.load_state_dict(model.state_dict())
    return out.train(model.training)


# ------------------------------------------------------------------------------------------------
# small synthetic data in the GSPS (Human3.6M) file format, for tests that must not need the shared data

H36M_SUBJECTS = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")  # the h36m preset's train + test splits


def smooth_motion(rng, frames: int, joints: int = 32):
    """World positions `[frames, joints, 3]` float64: a body-sized point cloud drifting smoothly."""
    import numpy as np

    rest = rng.normal(0, 0.3, (1, joints, 3)) + [0, 0, 1]
    drift = np.cumsum(rng.normal(0, 0.005, (frames, joints, 3)), axis=0)
    return rest + drift


def write_gsps(folder, positions: dict | None = None, *, seed: int = 0, train_frames: int = 300,
               test_frames: int = 150):
    """`<folder>/data_3d_h36m.npz` as VideoPose3D writes it; default: two actions per h36m subject."""
    import numpy as np
    from pathlib import Path

    if positions is None:
        rng = np.random.default_rng(seed)
        positions = {s: {a: smooth_motion(rng, test_frames if s in ("S9", "S11") else train_frames)
                         for a in ("Walking 1", "Eating 1")} for s in H36M_SUBJECTS}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "data_3d_h36m.npz", positions_3d=positions)
    return folder / "data_3d_h36m.npz"


def randomized(model, seed: int = 0):
    """Every parameter redrawn at random: the published init starts residual branches at zero, which
    makes a fresh model ignore its condition; tests of behaviour want every layer to matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model
