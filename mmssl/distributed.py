"""Distributed primitives for losses and tasks: rank queries, gathers with and without autograd,
reductions over ranks, MoCo's shuffled forward and count weights. They import nothing else of mmssl;
the process group they use is set up by `mmssl.engine.distributed`.

Every helper is safe to call in a plain single-process run: queries return rank 0 of a world of 1,
gathers and reductions are the identity, and `barrier` does nothing.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

T = TypeVar("T")


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


def barrier() -> None:
    """Wait for all ranks; a no-op when not distributed."""
    if is_distributed():
        dist.barrier()


def broadcast_from_main(value: T) -> T:
    """Rank 0's `value` (any picklable object) on every rank; the value itself in a single process."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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


def gather_objects(value: T) -> list[T]:
    """Every rank's `value` (any picklable object), in rank order (every rank must call this);
    [value] on one process."""
    if get_world_size() == 1:
        return [value]
    parts: list[T | None] = [None] * get_world_size()
    dist.all_gather_object(parts, value)
    return parts


def gather_to_main(value: T) -> list[T] | None:
    """Every rank's `value` (any picklable object) on rank 0, in rank order, and None on the others
    (every rank must call this); [value] on one process. For large values only rank 0 needs."""
    if get_world_size() == 1:
        return [value]
    parts: list[T | None] | None = [None] * get_world_size() if get_rank() == 0 else None
    dist.gather_object(value, parts, dst=0)
    return parts


def sum_counters(counter: Counter) -> Counter:
    """`counter` summed over ranks (every rank must call this); itself on one process."""
    return counter if get_world_size() == 1 else sum(gather_objects(counter), Counter())


def count_weight(count: torch.Tensor) -> torch.Tensor:
    """A rank's item `count` over the mean count of the ranks (1 on one process). A per-rank mean
    loss times this weight, once DDP averages the gradients over ranks, has the gradient of the mean
    over every rank's items: sum_r n_r L_r / sum_r n_r, fairseq's normalisation by the item count
    summed over workers."""
    return count / reduce_mean(count)


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
