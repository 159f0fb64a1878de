"""Process-group setup for torchrun: this process's rank and device, DDP wrapping, global BatchNorm.

The primitives that losses and tasks use (rank queries, gathers, reductions) are in
`mmssl.distributed`. A plain single-process run needs no process group: `init_distributed` then
returns rank 0 of a world of 1 and `cleanup` does nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmssl.distributed import get_world_size, is_distributed


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job, and the device it should use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool


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
