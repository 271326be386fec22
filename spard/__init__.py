"""spard: stochastic human motion prediction by residual diffusion with single-step inference (SPARD).

    from spard import Predictor
    futures = Predictor.from_checkpoint("results/demo/np").predict(history, num_samples=50)
"""
from importlib.metadata import PackageNotFoundError, version

from .api import Predictor
from .checkpoints import from_published, load_model, to_published
from .config import Config, preset
from .model import SPARD
from .samplers import SamplerOptions

try:
    __version__ = version("spard")  # pyproject.toml's
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "unknown"
__all__ = ["Config", "Predictor", "SPARD", "SamplerOptions", "from_published", "load_model", "preset", "to_published"]
