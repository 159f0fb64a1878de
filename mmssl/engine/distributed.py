"""Distributed helpers for torchrun: process-group setup, rank queries and gathers with autograd.

Every helper is safe to call in a plain single-process run: queries return rank 0 of a world of 1,
gathers and reductions are the identity, and `barrier` does nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job, and the device it should use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool


def is_distributed() -> bool:
    """True when a process group is initialised (with any world size)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the process that logs and writes checkpoints."""
    return get_rank() == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Set up this process from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    With WORLD_SIZE > 1 the default process group is initialised from the env:// rendezvous
    (MASTER_ADDR, MASTER_PORT): `backend` defaults to nccl when CUDA is available, which also binds
    this process to GPU `local_rank`, and to gloo (on CPU) otherwise. Without torchrun this is a
    single-process run on cuda:0 when available, else on the CPU. Calling it again returns the
    same answer without initialising twice.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size == 1:
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        return DistInfo(rank=0, world_size=1, local_rank=0, device=device, is_main=True)

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(
            backend=backend, init_method="env://", world_size=world_size, rank=rank,
            device_id=device if device.type == "cuda" else None,
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                    is_main=rank == 0)


def cleanup() -> None:
    """Destroy the default process group if there is one. Release DDP-wrapped models first: a
    DDP reducer freed after its group was destroyed was seen to hang the process (gloo)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for all ranks; a no-op when not distributed."""
    if is_distributed():
        dist.barrier()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks along dim 0 (rank order), keeping autograd.

    Backward gives each rank the sum over ranks of the gradient with respect to its own slice,
    so a loss over the gathered batch (in-batch negatives), averaged over ranks by DDP, has the
    gradient of the same loss computed on the full batch in one process. `x` must have the same
    shape on every rank. Plain `torch.distributed.all_gather` has no autograd: the gathered
    features of the other ranks would be constants and their gradient would be lost.
    """
    if get_world_size() == 1:
        return x
    return torch.cat(dist_nn.all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks along dim 0 without autograd (for queues, metrics, eval)."""
    if get_world_size() == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over ranks, detached (for logging); integer tensors are averaged as float."""
    x = x.detach().clone() if x.is_floating_point() else x.detach().float()
    if get_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= get_world_size()
    return x
