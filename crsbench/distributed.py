"""Several processes for one run (``accelerate launch -m crsbench run ...``): who writes, and
how the processes agree.

Every process trains (each computes the gradient of its share of a batch, the shares are
summed, so the update is the one-process update); only the main process (rank 0) writes the
run directory, predicts and scores. With one process every function here is a no-op, and
torch.distributed is never imported.
"""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    return rank() == 0


def init(device: str = "cpu") -> None:
    """Join the process group that ``accelerate launch`` (or torchrun) set up the environment for."""
    if world_size() <= 1:
        return
    from accelerate import PartialState

    PartialState(cpu=device == "cpu")


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def shard(indices):
    """This process's share of a batch (every ``world_size``-th element from ``rank``)."""
    return list(indices)[rank()::world_size()]


def all_reduce_gradients(module) -> None:
    """Sum every parameter's gradient over the processes (a missing gradient counts as zero)."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    for p in module.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def all_reduce_sum(tensor):
    """The sum of ``tensor`` over the processes (in place; returned for chaining)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
