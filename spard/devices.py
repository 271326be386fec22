"""Torch devices named by users: checked once, here, for the command line and the Python API."""
from __future__ import annotations

import torch


def resolve_device(name: str | torch.device, *, cpu_fallback: bool = False) -> torch.device:
    """`name` as a torch device that works here, or a one-line ValueError saying why not.

    `cpu_fallback`: without CUDA, a `cuda` device becomes the CPU, with a note on stdout (the published
    command line does so); otherwise that is an error.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {str(name)!r} is not a torch device; use e.g. cuda:0 or cpu") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        if not cpu_fallback:
            raise ValueError(f"device {str(name)!r}: CUDA is not available here; use cpu")
        print(f"CUDA is not available: using the CPU instead of {name}")  # a note (stdout); errors alone on stderr
        return torch.device("cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(name)!r}: spard runs on cpu or cuda devices")
    return device
