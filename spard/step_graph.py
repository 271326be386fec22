"""A whole training step (forward, backward, data parallelism's gradient all-reduce, Adam) replayed
as one CUDA graph: `--compile step-graph`.

Replaying one graph launches no kernels from Python, so a step costs the GPU's time alone. This is
what lets data parallelism scale when a step is short: DistributedDataParallel's per-parameter
work (a hook, a copy into its bucket and a copy back per gradient) is recorded once, at capture,
instead of run by the host every step (docs/performance.md, "Why stage 2 scales worse").

    step = StepGraph(body)              # body(poses, draws, scale) -> loss, the eager step
    loss = step(poses, draws, scale)    # [b, T, J+1, 3], {name: [b, ...]}, float -> loss []

The first `warmup` calls run `body` eagerly on a side stream (11 for DistributedDataParallel, as
PyTorch's CUDA-graph notes ask); the next call marked `capture` (a full batch) is captured, then
every call of its shapes replays the graph with its inputs copied into static buffers. Calls of
other shapes (an epoch's last, smaller batch) run eagerly.

What `body` needs for capture: no host syncs; gradients set to None before the backward (PyTorch
then allocates them in the graph's memory); an optimizer built with `capturable=True` and a tensor
learning rate (the scheduler updates it in place); autocast without its weight cache.

A graph that captured NCCL collectives must be released before the process group is destroyed, or
NCCL's teardown hangs: `spard.distributed.teardown` calls `release_all()` first.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch

# DistributedDataParallel finishes setting itself up over its first iterations (bucket rebuilds)
WARMUP = 11
_LIVE: "weakref.WeakSet[StepGraph]" = weakref.WeakSet()


def _shapes(poses: torch.Tensor, draws: dict, scale: float) -> tuple:
    return (tuple(poses.shape), tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(draws.items())), scale)


class StepGraph:
    """A training step, run eagerly for `warmup` calls, then replayed from one captured CUDA graph."""

    def __init__(self, body: Callable[[torch.Tensor, dict, float], torch.Tensor], warmup: int = WARMUP):
        self.body, self.warmup, self.calls = body, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key = None
        self.stream = torch.cuda.Stream()
        _LIVE.add(self)

    def __call__(self, poses: torch.Tensor, draws: dict, scale: float, capture: bool = True) -> torch.Tensor:
        key = _shapes(poses, draws, scale)
        self.calls += 1
        if self.graph is None and capture and self.calls > self.warmup:
            self._capture(poses, draws, scale, key)
        if self.graph is None or key != self.key:
            return self._eager(poses, draws, scale)
        self.poses.copy_(poses)
        for k, v in draws.items():
            self.draws[k].copy_(v)
        self.graph.replay()
        return self.loss.clone()

    def _eager(self, poses, draws, scale) -> torch.Tensor:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            loss = self.body(poses, draws, scale)
        torch.cuda.current_stream().wait_stream(self.stream)
        return loss

    def _capture(self, poses, draws, scale, key) -> None:
        self.poses = poses.clone()
        self.draws = {k: v.clone() for k, v in draws.items()}
        self.key = key
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            self.loss = self.body(self.poses, self.draws, scale)
        self.graph = graph

    def release(self) -> None:
        """Free the graph; later calls run eagerly again, and the next full batch after `warmup` more
        calls is captured anew."""
        if self.graph is not None:
            torch.cuda.synchronize()
            self.graph.reset()
            self.graph, self.calls = None, 0


def release_all() -> None:
    """Release every live step graph (before the process group is destroyed)."""
    for step in list(_LIVE):
        step.release()
