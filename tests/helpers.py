"""Helpers shared by several test files (tests/ is on sys.path under pytest)."""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from mmssl.models import VideoEncoder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker: Callable, out_dir: Path, world_size: int, timeout_s: float) -> list:
    """Spawn `world_size` processes running `worker(rank, port, out_dir)`, each saving
    `out_dir/rank{r}.pt`; fail the test (killing them) past `timeout_s`; return what they saved."""
    ctx = mp.spawn(worker, args=(free_port(), str(out_dir)), nprocs=world_size, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"distributed workers did not finish in {timeout_s} s")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world_size)]


class SpyEncoder(VideoEncoder):
    """Records its inputs; features are a linear map of the per-channel means."""

    feature_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, self.feature_dim)
        self.inputs: list[Tensor] = []

    def encode(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach())
        return self.proj(x.mean(dim=(2, 3, 4)))
