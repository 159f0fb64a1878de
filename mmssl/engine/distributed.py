"""Distributed helpers for torchrun: process-group setup, rank queries and gathers with autograd.

Every helper is safe to call in a plain single-process run: queries return rank 0 of a world of 1,
gathers and reductions are the identity, and `barrier` does nothing.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.parallel import DistributedDataParallel


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


def sum_counters(counter: Counter) -> Counter:
    """`counter` summed over ranks (every rank must call this); itself on one process."""
    if get_world_size() == 1:
        return counter
    parts: list[Counter | None] = [None] * get_world_size()
    dist.all_gather_object(parts, counter)
    return sum(parts, Counter())


def count_weight(count: torch.Tensor) -> torch.Tensor:
    """A rank's item `count` over the mean count of the ranks (1 on one process). A per-rank mean
    loss times this weight, once DDP averages the gradients over ranks, has the gradient of the mean
    over every rank's items: sum_r n_r L_r / sum_r n_r, fairseq's normalisation by the item count
    summed over workers."""
    return count / reduce_mean(count)


def has_layer_drop(model: nn.Module) -> bool:
    """Whether a submodule skips whole layers at random in training (LayerDrop, Fan et al. 2020;
    torchaudio's wav2vec 2.0 Transformer keeps its rate in `layer_drop`)."""
    return any(float(getattr(m, "layer_drop", 0.0) or 0.0) > 0 for m in model.modules())


def global_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with its BatchNorm layers normalising over every rank's batch (SyncBatchNorm) when
    several GPU processes run; as it was on one process, or on CPUs, which SyncBatchNorm does not take."""
    if get_world_size() > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap_ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP around `model` on `device`. With LayerDrop each rank skips other layers in a step, so
    their parameters get no gradient there: DDP then has to look for unused parameters (as fairseq
    does), or its reducer stops the next step with "Expected to have finished reduction"."""
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                   find_unused_parameters=has_layer_drop(model))


@torch.no_grad()
def shuffled_forward(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`module(x)` with the batch shuffled over the ranks: MoCo's shuffling BN (He et al. 2020,
    Sec. 3.3; `_batch_shuffle_ddp` in facebookresearch/moco). The inputs of all ranks are gathered,
    permuted by one random permutation (rank 0's, broadcast), each rank runs its slice of the
    permuted batch, and the outputs are gathered and put back in order, so each rank gets the rows
    of its own `x`, but computed with BatchNorm statistics of a random subset of the global batch.
    Without it the query and its key share their BN statistics' subset, a signal that lets the
    contrastive task be solved without learning good features. No gradient (keys need none); `x`
    must have the same shape on every rank. One process: `module(x)` (like MoCo's code, there is
    nothing to shuffle over)."""
    if get_world_size() == 1:
        return module(x)
    full = gather_no_grad(x)
    order = torch.randperm(len(full), device=full.device)
    dist.broadcast(order, src=0)
    own = slice(get_rank() * len(x), (get_rank() + 1) * len(x))
    outputs = gather_no_grad(module(full[order[own]]))
    return outputs[order.argsort()[own]]
