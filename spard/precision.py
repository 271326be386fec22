"""Arithmetic precision, one vocabulary for training, evaluation and the fast path.

    fp32   float32 everywhere, TF32 left as the caller set it (PyTorch's default: off)
    tf32   float32 weights and activations, float32 matrix products in TF32 on GPUs
    bf16   bf16 autocast, the float32 products that remain in TF32
    fp16   fp16 autocast (inference only), the float32 products that remain in TF32

Training takes fp32, tf32 (the default) and bf16 (`TrainConfig.precision`).
"""
from __future__ import annotations

import contextlib

import torch

from .config import PRECISIONS

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")


def autocast(precision: str, device_type: str, cache_enabled: bool = True):
    """Autocast for bf16 and fp16; no autocast for fp32 and tf32."""
    check(precision)
    if precision in HALF:
        return torch.autocast(device_type, dtype=HALF[precision], cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def uses_tf32(precision: str) -> bool:
    """Whether float32 matrix products run in TF32 under `precision`."""
    check(precision)
    return precision != "fp32"


@contextlib.contextmanager
def float32_products(precision: str):
    """CUDA float32 matrix products in TF32 while `precision` is not 'fp32' ('fp32' leaves
    `torch.backends.cuda.matmul.allow_tf32` as it is). Set around a call, not inside a compiled function."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = before if precision == "fp32" else uses_tf32(precision)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
