"""`--compile step-graph`: the whole training step captured as one CUDA graph trains like the eager step.

Tiny model, synthetic Human3.6M-format data (stride 12: 146 windows, batch 8: 18 full batches and a
last one of 2; nothing beyond torch needed, so it runs on any GPU machine), dropout off, TF32 off, two
epochs with the learning rate halved after each. That covers the eager warm-up (11 steps), the capture,
replays, the eager last batch between replays, and a learning rate changed by the scheduler after
capture. Tolerances as in test_distributed.py: Adam
moves every weight by about lr per step, so a stale input, a skipped step or a stale learning rate
shows as several lr, rounding as much less; biases that a BatchNorm cancels only get noise.
"""
import dataclasses

import pytest
import torch

from conftest import tiny_config, write_gsps
from test_distributed import LR, assert_trained_alike
from spard.data import load_dataset
from spard.model import SPARD
from spard.runs import make_logger
from spard.train import Trainer

STEPS = 2 * 19

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(write_gsps(tmp_path_factory.mktemp("data")).parent)


def config(compile: str, data_dir: str, np_noise: float = 1.0):
    cfg = tiny_config("h36m", batch_size=8, lr=LR, milestones=(1, 2), gamma=0.5, precision="fp32", compile=compile)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=data_dir, stride=12),
                              denoiser=dataclasses.replace(cfg.denoiser, dropout=0.0, gcn_dropout=0.0),
                              noise_predictor=dataclasses.replace(cfg.noise_predictor, dropout=0.0, noise=np_noise))
    return cfg


def train_two_epochs(stage: str, compile: str, data_dir: str, device: str = "cuda", np_noise: float = 1.0):
    cfg = config(compile, data_dir, np_noise)
    torch.manual_seed(0)
    model = SPARD(cfg)
    trainer = Trainer(cfg, stage, model, load_dataset(cfg.data), run_dir=None, out_dir=None, device=device,
                      logger=make_logger(None, quiet=True), progress=False)
    losses = [trainer.train_epoch(epoch) for epoch in (1, 2)]
    return trainer, losses


@cuda
@pytest.mark.parametrize("stage, np_noise", [("base", 1.0), ("distill", 1.0), ("np", 0.0), ("np", 1.0)])
def test_captured_step_trains_like_the_eager_step(stage, np_noise, data_dir):
    eager, eager_losses = train_two_epochs(stage, "none", data_dir, np_noise=np_noise)
    graphed, graphed_losses = train_two_epochs(stage, "step-graph", data_dir, np_noise=np_noise)
    assert len(eager.windows) == 146
    assert graphed.step_graph.graph is not None, "the step was never captured"
    assert float(graphed.optimizer.param_groups[0]["lr"]) == pytest.approx(LR / 4)  # two scheduler steps
    assert graphed_losses == pytest.approx(eager_losses, rel=1e-3)
    assert_trained_alike(eager.model.state_dict(), graphed.model.state_dict(), noise=2 * STEPS * LR)


def test_step_graph_needs_a_gpu(data_dir):
    with pytest.raises(ValueError, match="--compile step-graph needs a CUDA device"):
        train_two_epochs("base", "step-graph", data_dir, device="cpu")
