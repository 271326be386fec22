"""Fast inference on a GPU: a sampler compiled by `torch.compile` and replayed as one CUDA graph.

    fast = GraphedSampler(model, "np", batch_size=1, num_samples=50, precision="bf16")
    futures = fast(history)            # [B, t_his, D] -> [B, S, T, D], no host sync inside

One graph is captured per input size; inputs are copied into static buffers and the output
buffer is reused by the next call (clone it to keep it). bf16 runs the matrix products in bf16
(autocast); the DCT arithmetic and the residual paths stay in float32.
"""
from __future__ import annotations

import contextlib

import torch

from .model import SPARD
from .samplers import get_sampler


def autocast(precision: str, device_type: str):
    """Autocast context for a precision name: 'fp32' (none), 'tf32', or 'bf16'."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision in ("fp32", "tf32"):
        return contextlib.nullcontext()
    raise ValueError(f"unknown precision {precision!r}; choose fp32, tf32 or bf16")


class GraphedSampler:
    """`sampler(model, history, S)` for fixed `[batch_size, t_his, D]` inputs, compiled and graph-captured."""

    def __init__(self, model: SPARD, sampler: str, batch_size: int, num_samples: int, *, precision: str = "bf16",
                 compile: bool = True, graph: bool = True, warmup: int = 3, compile_mode: str = "default"):
        self.model = model.eval()
        self.name, self.precision = sampler, precision
        self.num_samples = num_samples
        device = model.sqrt_etas.device
        d, n = model.cfg.denoiser.input_feats, model.n_pre
        self.history = torch.randn(batch_size, model.t_his, d, device=device)
        self.noise = torch.randn(num_samples, batch_size, n, d, device=device)
        sample = get_sampler(sampler)

        def run(history, noise):
            with autocast(precision, device.type):
                extra = {} if sampler == "np" else {"noise": noise}
                return sample(self.model, history, num_samples, **extra).float()

        self.fn = torch.compile(run, mode=compile_mode, dynamic=False) if compile else run
        self.graph = None
        with torch.no_grad():
            if device.type == "cuda":
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(warmup):
                        self.out = self.fn(self.history, self.noise)
                torch.cuda.current_stream().wait_stream(stream)
                if graph:
                    self.graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(self.graph):
                        self.out = self.fn(self.history, self.noise)
            else:
                self.out = self.fn(self.history, self.noise)

    @torch.no_grad()
    def __call__(self, history: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, t_his, D]` (and noise `[S, B, n_pre, D]` for ddim/onestep) -> `[B, S, T, D]`."""
        self.history.copy_(history)
        if noise is not None:
            self.noise.copy_(noise)
        elif self.name != "np":
            self.noise.normal_()
        if self.graph is not None:
            self.graph.replay()
            return self.out
        return self.fn(self.history, self.noise)
