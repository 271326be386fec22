from .denoiser import Denoiser
from .noise_predictor import NoisePredictor

__all__ = ["Denoiser", "NoisePredictor"]
