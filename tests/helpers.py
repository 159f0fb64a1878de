"""Helpers shared by several test files (tests/ is on sys.path under pytest)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from mmssl.config import load_config, to_dict
from mmssl.data.dataset import PretextDataset, collate
from mmssl.engine.checkpoint import save_checkpoint
from mmssl.engine.data import load_rows
from mmssl.engine.distributed import DistInfo, init_distributed
from mmssl.engine.labelling import label_dataset, label_rows
from mmssl.models import VideoEncoder
from mmssl.tasks import build_task, task_class
from mmssl.tasks.model import TaskModel, build_run_encoder

ROOT = Path(__file__).resolve().parents[1]
PRETRAINING_CONFIGS = sorted((ROOT / "configs/pretrain").glob("*.yaml"))


def run_quick_bench(tool: str, synthav: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """`tools/<tool>.py --quick` on `synthav` (as its --data's synthav) in `tmp_path`: the finished process
    (it must succeed) and the JSON it wrote."""
    out = tmp_path / f"{tool}.json"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synthav").symlink_to(synthav)
    result = subprocess.run([sys.executable, str(ROOT / f"tools/{tool}.py"), "--quick", "--data", str(tmp_path / "data"),
                             "--work", str(tmp_path / "work"), "--out", str(out)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(out.read_text())


def one_config_per_task(paths: list[Path]) -> list[Path]:
    """The first of `paths` (by name) for each task they train (`task.name`): one per family of methods,
    e.g. simclr, moco, byol, ... are all clip_contrastive."""
    first: dict[str, Path] = {}
    for path in sorted(paths):
        first.setdefault(load_config(path).task.name, path)
    return list(first.values())


def damage_a_tensor(path: Path) -> None:
    """Flip a byte in the middle of the first tensor stored in the torch.save file at `path`, as a disk
    or a copy might: the archive stays whole, and `torch.load` alone would load the wrong value."""
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if "/data/" in info.filename and info.file_size)
    with open(path, "r+b") as f:
        f.seek(record.header_offset + 26)  # the local header's name and extra-field lengths
        name_length, extra_length = struct.unpack("<HH", f.read(4))
        f.seek(record.header_offset + 30 + name_length + extra_length + record.file_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_config_batches(path: Path, synthav: Path, count: int = 1, overrides: Sequence[str] = (),
                           ) -> tuple[TaskModel, list[dict[str, Tensor]]]:
    """A shipped pretraining config on tiny SynthAV (32 px; or what `overrides` say, e.g. another
    data.manifest): its seeded TaskModel (a task trained on pseudo-labels holds those of a labelling pass)
    and `count` batches of 4 decoded samples (batch k: epoch k's samples 4k .. 4k + 3)."""
    overrides = [f"data.synthav_dir={synthav}", "data.frame_size=32", *overrides]
    config = load_config(path, overrides)
    config = load_config(path, [*overrides, *task_class(config.task.name).smoke_overrides])
    task = build_task(config)
    dataset = PretextDataset(load_rows(config), task, config.data.frame_size, config.data.backend)
    torch.manual_seed(0)
    model = TaskModel(task, build_run_encoder(config))
    if task.pseudo_labelled:  # the labelling pass the engine runs before the first step
        windows = label_dataset(dataset)
        label_batches = [collate([windows[(0, i)] for i in range(start, min(start + 8, len(windows)))])
                         for start in range(0, len(windows), 8)]
        task.set_labels(torch.from_numpy(label_rows(model, label_batches, len(windows), torch.device("cpu"), 0)))
    batches = []
    for k in range(count):
        batch = collate([dataset[(k, i % len(dataset))] for i in range(4 * k, 4 * k + 4)])
        batch.pop("skipped")
        batches.append(batch)
    return model, batches


def random_init_checkpoint(task: str, synthav: Path, out: Path, overrides: Sequence[str] = ()) -> Path:
    """A checkpoint of a shipped config's seeded model at random init (tiny SynthAV at 32 px, the
    task's smoke overrides), with its config, as a run would save it."""
    config = load_config(ROOT / f"configs/pretrain/{task}.yaml",
                         [f"data.synthav_dir={synthav}", "data.frame_size=32", *task_class(task).smoke_overrides,
                          *overrides])
    torch.manual_seed(0)
    return save_checkpoint(out, config=to_dict(config), model=TaskModel(build_task(config), build_run_encoder(config)))


def join_gloo(rank: int, world_size: int, port: int) -> DistInfo:
    """This process as rank `rank` of a gloo group of `world_size` on localhost, as torchrun would
    start it (its environment), with one torch thread: the ranks share the machine's cores."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    return init_distributed(backend="gloo")


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


def tool_module(name: str) -> ModuleType:
    """tools/<name>.py as a module, to call its main in this process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def put(media: dict[str, Path], kind: str, path: Path) -> Path:
    """Copy the `kind` file of `media` to `path` (parents made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(media[kind], path)
    return path
