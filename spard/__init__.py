"""spard: stochastic human motion prediction by residual diffusion with single-step inference (SPARD).

    from spard import Predictor
    futures = Predictor.from_checkpoint("results/demo/np").predict(history, num_samples=50)
"""
from .api import Predictor
from .checkpoints import from_published, load_model, to_published
from .config import Config, preset
from .model import SPARD

__version__ = "0.1.0"
__all__ = ["Config", "Predictor", "SPARD", "from_published", "load_model", "preset", "to_published"]
