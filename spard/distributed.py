"""PyTorch's distributed engine, reduced to what training and evaluation need.

Started by `torchrun` (environment variables RANK, WORLD_SIZE, LOCAL_RANK): NCCL on GPUs, gloo on
CPU. Without it every helper degrades to the single-process answer.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: str) -> torch.device:
    """Join the process group when launched by torchrun; returns this process's device."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or is_initialized():
        return torch.device(device)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        tdist.init_process_group("nccl", device_id=torch.device("cuda", local))
        return torch.device("cuda", local)
    tdist.init_process_group("gloo")
    return torch.device(device)


def teardown() -> None:
    if is_initialized():
        from .step_graph import release_all

        release_all()  # CUDA graphs holding NCCL collectives first, or destroying the group hangs
        tdist.barrier()  # no rank destroys the group while another still works in it (rank 0 writes files last)
        tdist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        tdist.barrier()


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (a list of one outside torchrun)."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


class _SumOverRanks(torch.autograd.Function):
    """`x` summed over all ranks; the gradient of a sum every rank uses is the sum of their gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(grad)
        return grad


# Kept out of torch.compile. With PyTorch's `torch.distributed.nn.functional.all_reduce` here, compiled
# stage 1 on two NCCL GPUs moved away from one process, most likely from tracing that collective (newer
# PyTorch refuses to); docs/performance.md. Eager, it runs, and a CUDA graph captures it as it is.
@torch.compiler.disable
def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    return _SumOverRanks.apply(x)
