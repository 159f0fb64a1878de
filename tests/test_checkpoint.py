"""Checkpoints: exact resume, atomic writes, weights_only loading, wrapper prefixes, auto-resume."""
from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from helpers import damage_a_tensor  # tests/ is on sys.path under pytest
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR

from mmssl.engine.checkpoint import (
    capture_rng_state,
    checkpoint_entries,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    remove_partial_writes,
    restore_rng_state,
    save_checkpoint,
)
from mmssl.errors import CheckpointError
from mmssl.io.checkpoint import read_checkpoint


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(8, 3))


def _trainer(seed: int) -> tuple[nn.Module, torch.optim.AdamW, LambdaLR]:
    model = _model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    scheduler = LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))  # warmup
    return model, optimizer, scheduler


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LambdaLR) -> None:
    """One step using all three RNGs: torch (data, dropout), numpy (order), random (scale)."""
    x = torch.randn(16, 5) * random.uniform(0.5, 2.0)
    x = x[torch.from_numpy(np.random.permutation(16))]
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def _fingerprint(model: nn.Module, scheduler: LambdaLR) -> dict:
    """State after training plus the next numbers of every RNG."""
    return {"params": {k: v.clone() for k, v in model.state_dict().items()},
            "lr": scheduler.get_last_lr(), "torch": torch.rand(3),
            "numpy": np.random.rand(3).tolist(), "random": [random.random() for _ in range(3)]}


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    model, optimizer, scheduler = _trainer(seed=1)
    for _ in range(3):
        _train_step(model, optimizer, scheduler)
    path = save_checkpoint(checkpoint_path(tmp_path, 3), model=model, optimizer=optimizer,
                           scheduler=scheduler, step=3, rng=capture_rng_state())
    for _ in range(2):
        _train_step(model, optimizer, scheduler)
    uninterrupted = _fingerprint(model, scheduler)

    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # as in a new process
    model, optimizer, scheduler = _trainer(seed=2)
    extra = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
    assert extra.keys() == {"step", "rng"} and extra["step"] == 3
    restore_rng_state(extra["rng"])
    for _ in range(2):
        _train_step(model, optimizer, scheduler)
    torch.testing.assert_close(_fingerprint(model, scheduler), uninterrupted, rtol=0, atol=0)


def test_rng_state_round_trip_with_cached_gaussians() -> None:
    np.random.seed(5), random.seed(5)
    np.random.standard_normal(), random.gauss(0, 1)  # both now hold a second gaussian in cache
    state = capture_rng_state()
    expected = (torch.rand(2), np.random.standard_normal(2).tolist(), random.gauss(0, 1))
    torch.rand(7), np.random.rand(7), random.random()
    restore_rng_state(state)
    again = (torch.rand(2), np.random.standard_normal(2).tolist(), random.gauss(0, 1))
    torch.testing.assert_close(again, expected, rtol=0, atol=0)


@dataclasses.dataclass
class _Config:
    name: str = "simclr"
    out_dir: Path = Path("runs/x")
    crop: tuple[int, int] = (112, 112)


def test_everything_loads_with_weights_only(tmp_path: Path) -> None:
    model, optimizer, scheduler = _trainer(seed=0)
    _train_step(model, optimizer, scheduler)
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer,
                           scheduler=scheduler, scaler=torch.amp.GradScaler("cpu"), step=1,
                           epoch=np.int64(0), config=_Config(), rng=capture_rng_state())
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {"model", "optimizer", "scheduler", "scaler", "step", "epoch", "config",
                           "rng"}
    assert loaded["config"] == {"name": "simclr", "out_dir": "runs/x", "crop": (112, 112)}
    assert loaded["epoch"] == 0 and type(loaded["epoch"]) is int
    assert loaded["scaler"]["scale"] == 65536.0


def test_unsupported_value_fails_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"config\['hook'\]"):
        save_checkpoint(tmp_path / "c.pt", config={"hook": object()})
    assert list(tmp_path.iterdir()) == []


def test_crash_during_write_keeps_previous_checkpoint(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(seed=0)
    save_checkpoint(checkpoint_path(tmp_path, 1), model=model, step=1)
    last = save_checkpoint(tmp_path / "last.pt", model=model, step=1)

    def crashing_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        f.write(b"PK\x03\x04 partial bytes")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    for target in (checkpoint_path(tmp_path, 2), last):  # a new file, and overwriting one
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(target, model=model, step=2)
    monkeypatch.undo()

    # no half file, no temp file left behind; the old contents intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000001.pt", "last.pt"]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1)
    assert load_checkpoint(last, model=_model(seed=3))["step"] == 1


def test_a_write_killed_midway_leaves_a_temp_file_that_the_next_run_removes(tmp_path: Path) -> None:
    """SIGKILL inside torch.save: the half-written temporary file stays (nothing can remove it then), is no
    checkpoint for --resume auto, and the next run on the folder removes it (`remove_partial_writes`)."""
    save_checkpoint(checkpoint_path(tmp_path, 1), step=1)
    killed_in_write = ("import os, signal, sys, torch\n"
                       "from mmssl.engine.checkpoint import checkpoint_path, save_checkpoint\n"
                       "def save(obj, f):\n"
                       "    f.write(b'PK\\x03\\x04 half'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
                       "torch.save = save\n"
                       "save_checkpoint(checkpoint_path(sys.argv[1], 2), step=2)\n")
    done = subprocess.run([sys.executable, "-c", killed_in_write, str(tmp_path)], capture_output=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == -signal.SIGKILL, done.stderr
    (partial,) = tmp_path.glob(".checkpoint_000002.pt.*.tmp")
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1)
    assert remove_partial_writes(tmp_path) == [partial]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000001.pt"]


def test_every_unreadable_checkpoint_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """Missing, a folder, empty, truncated, damaged inside a tensor, a pickle of other objects, not a dict:
    a CheckpointError naming the file, never PyTorch's offer to load with weights_only=False."""
    good = save_checkpoint(tmp_path / "good.pt", model=_model(seed=0), step=1)
    data = good.read_bytes()
    files = {"empty.pt": b"", "truncated.pt": data[: len(data) // 2], "damaged.pt": data}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    damage_a_tensor(tmp_path / "damaged.pt")
    torch.save({"step": Fraction(1, 2)}, tmp_path / "foreign.pt")
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    for name in ["missing.pt", ".", *files, "foreign.pt", "tensor.pt"]:
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(tmp_path / name, model=_model(seed=0))
        message = str(error.value)
        assert message.startswith(str(tmp_path / name)) and "\n" not in message and "weights_only" not in message
    assert "damaged" in str(pytest.raises(CheckpointError, read_checkpoint, tmp_path / "damaged.pt").value)
    with pytest.raises(CheckpointError, match="good.pt has no config "):
        checkpoint_entries(tmp_path / "good.pt", "config", "step")


def test_latest_checkpoint_skips_partial_and_foreign_files(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 120, 999_999, 1_000_000):  # as text, 1000000 sorts before 999999
        save_checkpoint(checkpoint_path(tmp_path, step), step=step)
    good = checkpoint_path(tmp_path, 1_000_000).read_bytes()
    checkpoint_path(tmp_path, 2_000_000).write_bytes(good[: len(good) // 2])  # truncated copy
    checkpoint_path(tmp_path, 3_000_000).write_bytes(b"")
    (tmp_path / ".checkpoint_004000000.pt.1234.tmp").write_bytes(good)  # left by a killed writer
    (tmp_path / "checkpoint_best.pt").write_bytes(good)
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1_000_000)


def test_prune_checkpoints_keeps_newest(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        save_checkpoint(checkpoint_path(tmp_path, step), step=step)
    (tmp_path / "best.pt").write_bytes(b"x")
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(removed) == [checkpoint_path(tmp_path, 10), checkpoint_path(tmp_path, 20)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "checkpoint_000030.pt", "checkpoint_000040.pt"]
    with pytest.raises(ValueError):
        prune_checkpoints(tmp_path, keep_last=0)


@pytest.fixture
def process_group() -> Iterator[None]:
    """A one-process gloo group, so DDP can wrap a model inside the test process."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 2)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_wrapper_prefixes_are_stripped(tmp_path: Path, process_group: None) -> None:
    torch.manual_seed(0)
    net = _Net()
    net.encoder = torch.compile(net.encoder)  # a compiled submodule: "encoder._orig_mod.0.weight"
    plain_keys = list(_Net().state_dict())
    for name, wrapped in [("ddp", DistributedDataParallel(net)), ("compile", torch.compile(net)),
                          ("compile_ddp", torch.compile(DistributedDataParallel(net)))]:
        path = save_checkpoint(tmp_path / f"{name}.pt", model=wrapped)
        assert list(torch.load(path, weights_only=True)["model"]) == plain_keys, name
        fresh = _Net()
        load_checkpoint(path, model=fresh)  # strict: every key matches
        torch.testing.assert_close(list(fresh.state_dict().values()),
                                   list(net.state_dict().values()))

    # a foreign checkpoint holding a raw DDP state dict loads into a plain or a wrapped model
    torch.save({"model": DistributedDataParallel(_Net()).state_dict()}, tmp_path / "raw.pt")
    load_checkpoint(tmp_path / "raw.pt", model=_Net())
    load_checkpoint(tmp_path / "raw.pt", model=DistributedDataParallel(_Net()))


def test_plain_model_with_a_child_named_module_round_trips(tmp_path: Path) -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)

    path = save_checkpoint(tmp_path / "c.pt", model=Wrapper())
    assert list(torch.load(path, weights_only=True)["model"]) == ["module.weight", "module.bias"]
    load_checkpoint(path, model=Wrapper())


def test_missing_entry_is_an_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", model=_model(seed=0))
    with pytest.raises(KeyError, match="optimizer"):
        load_checkpoint(path, optimizer=torch.optim.SGD(_model(seed=0).parameters(), lr=0.1))
