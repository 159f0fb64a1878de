"""The pretraining loader goes on when a DataLoader worker dies: the file that killed it is found
alone in a child process, never decoded again and counted, and the run sees the batches it would
have seen but for that file."""
from __future__ import annotations

import faulthandler
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from test_engine import fast_config  # tests/ is on sys.path under pytest
from torch.utils.data import DataLoader
from torch.utils.data._utils import signal_handling

from mmssl.config import Config
from mmssl.data import dataset as dataset_module
from mmssl.data.dataset import EpochSampler, PretextDataset
from mmssl.data.loader import MAX_UNEXPLAINED_RESTARTS, RecoveringLoader, WorkerDeathError
from mmssl.engine.data import pretraining_data
from mmssl.engine.trainer import pretrain
from mmssl.tasks import build_task

CPU = torch.device("cpu")


def recovering_loader(dataset: PretextDataset, sampler: EpochSampler, config: Config) -> RecoveringLoader:
    """The loader of `config`'s run (its batch size, workers and seed), on the CPU."""
    return RecoveringLoader(dataset, sampler, batch_size=config.data.batch_size, num_workers=config.data.num_workers,
                            seed=config.train.seed, device=CPU)


def crash_when(monkeypatch: pytest.MonkeyPatch, dies) -> None:
    """No file makes FFmpeg segfault on demand, so the window decode is wrapped (workers and child
    processes fork after the patch): where `dies(row)` holds, it kills its process with SIGSEGV."""
    real_decode = dataset_module.decode_window

    def crashing_decode(row, *args, **kwargs):
        if dies(row):
            faulthandler.disable()  # pytest's traceback dump of the dying process is not wanted
            os.kill(os.getpid(), signal.SIGSEGV)
        return real_decode(row, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "decode_window", crashing_decode)


def test_a_file_that_kills_a_worker_costs_only_that_file(tiny_synthav: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = fast_config(tiny_synthav, "data.num_workers=2")
    task = build_task(config)
    dataset, sampler = pretraining_data(config, task)
    doomed = dataset.rows[5].path
    crash_when(monkeypatch, lambda row: row.path == doomed)
    loader = recovering_loader(dataset, sampler, config)
    batches = [*loader.epoch(0), *loader.epoch(1)]
    assert list(dataset.crashed) == [doomed] and "killed by SIGSEGV" in dataset.crashed[doomed]
    assert loader.unexplained_restarts == 0

    # the same two epochs, with the file known to crash from the start, in this process
    reference_data, reference_sampler = pretraining_data(fast_config(tiny_synthav), task)
    reference_data.crashed.update(dataset.crashed)
    reference = recovering_loader(reference_data, reference_sampler, fast_config(tiny_synthav))
    expected = [*reference.epoch(0), *reference.epoch(1)]
    assert len(batches) == len(expected) == 2 * len(sampler) // config.data.batch_size
    for got, want in zip(batches, expected):
        assert got.keys() == want.keys() and got["skipped"] == want["skipped"]
        assert all(torch.equal(got[key], want[key]) for key in got if key != "skipped")
    crashed = [s for batch in batches for s in batch["skipped"] if s.kind == "crashed"]
    assert len(crashed) >= 2 and {s.path for s in crashed} == {doomed}  # drawn in each epoch, replaced


def test_a_batch_lost_in_transit_from_a_dying_worker_is_fetched_again(tiny_synthav: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that dies just after queueing a batch takes the sharer of its tensors' file descriptors
    with it: the main process gets an EOFError instead of PyTorch's message of a dead worker. The loader
    restarts there as after any death, and the epoch has the batches it would have had."""
    config = fast_config(tiny_synthav)
    dataset, sampler = pretraining_data(config, build_task(config))
    expected = [*recovering_loader(dataset, sampler, config).epoch(0)]
    real_build, builds = RecoveringLoader.build, []

    def broken_after_one_batch(loader: DataLoader):
        for k, batch in enumerate(loader):
            if k == 1:
                raise EOFError
            yield batch

    def build_broken_once(self: RecoveringLoader):
        builds.append(loader := real_build(self))
        return loader if len(builds) > 1 else broken_after_one_batch(loader)

    monkeypatch.setattr(RecoveringLoader, "build", build_broken_once)
    loader = recovering_loader(dataset, sampler, config)
    batches = [*loader.epoch(0)]
    assert len(builds) == 2 and loader.unexplained_restarts == 1 and len(batches) == len(expected)
    for got, want in zip(batches, expected):
        assert all(torch.equal(got[key], want[key]) for key in got if key != "skipped")


def test_deaths_no_file_explains_restart_the_workers_a_few_times(tiny_synthav: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed whatever it decodes (as by the kernel's OOM killer) while each file decodes
    alone: restarted MAX_UNEXPLAINED_RESTARTS times, then a WorkerDeathError."""
    config = fast_config(tiny_synthav, "data.num_workers=2")
    dataset, sampler = pretraining_data(config, build_task(config))
    crash_when(monkeypatch, lambda row: torch.utils.data.get_worker_info() is not None)
    loader = recovering_loader(dataset, sampler, config)
    with pytest.raises(WorkerDeathError, match="no file to blame"):
        next(loader.epoch(0))
    assert loader.unexplained_restarts == MAX_UNEXPLAINED_RESTARTS + 1 and not dataset.crashed


def test_pretraining_goes_on_past_a_crashing_file(tiny_synthav: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch's SIGCHLD handler (set here by a first DataLoader with workers, as any earlier one in
    a process sets it) would raise the worker's death mid-step; pretraining takes it out."""
    monkeypatch.setattr(signal_handling, "_SIGCHLD_handler_set", False)
    list(DataLoader(range(2), num_workers=1))
    assert signal.getsignal(signal.SIGCHLD).__module__ == signal_handling.__name__
    config = fast_config(tiny_synthav, "data.num_workers=2", "train.max_steps=6")
    doomed = pretraining_data(config, build_task(config))[0].rows[0].path
    crash_when(monkeypatch, lambda row: row.path == doomed)
    assert pretrain(config, tmp_path).exists()
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    epochs = [r for r in records if "loss" not in r]
    assert [r["epoch"] for r in epochs] == [0, 1] and all(r["skipped"]["crashed"] >= 1 for r in epochs)
