"""Sharded datasets: packing a manifest into tar shards, and streaming them as a task's samples with the
manifest's exactness (the same samples), every video in each epoch on every rank layout, failed members
counted, and a resumed run at the same weights."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import join_gloo, run_ranks  # tests/ is on sys.path under pytest
from test_loader import crash_when

from mmssl.config import ConfigError, load_config
from mmssl.data.dataset import PretextDataset, SkipCounter
from mmssl.data.manifest import read_manifest
from mmssl.data.shards import INDEX, ShardDataset, ShardLoader, ShardSource, StreamPlan, pack_shards
from mmssl.engine.checkpoint import checkpoint_path
from mmssl.engine.distributed import cleanup
from mmssl.engine.trainer import pretrain
from mmssl.tasks import build_task

BATCH = 4
FAST = ["model.video_encoder=tiny3d", "data.frame_size=32", f"data.batch_size={BATCH}", "data.num_workers=0",
        "monitor.every=0"]


@pytest.fixture(scope="module")
def shards(tiny_synthav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny SynthAV's 24 pretraining videos in shards of 3 or so, with their motion profiles."""
    out = tmp_path_factory.mktemp("shards")
    result = pack_shards(tiny_synthav / "manifest.csv", out, shard_bytes=70_000, workers=1, split="pretrain")
    assert len(result.rows) == 24 and not result.left_out and len(result.shards) >= 6
    return out


def config_for(synthav: Path, *overrides: str):
    return load_config(None, [*FAST, f"data.synthav_dir={synthav}", *overrides])


def digest(batch: dict, k: int) -> str:
    """Sample k of a batch, as a fingerprint of its exact frames and target."""
    return hashlib.sha1(batch["frames"][k].numpy().tobytes() + batch["label"][k].numpy().tobytes()).hexdigest()


def manifest_samples(synthav: Path, epoch: int) -> dict[str, int]:
    """Fingerprint -> row of every pretraining video's sample in `epoch`, decoded from its file."""
    config = config_for(synthav)
    rows = read_manifest(synthav / "manifest.csv", "pretrain")
    dataset = PretextDataset(rows, build_task(config), 32)
    return {digest({k: v[None] for k, v in dataset[(epoch, i)].items()}, 0): i for i in range(len(rows))}


def shard_loader(shards: Path, synthav: Path, rank: int = 0, world_size: int = 1, workers: int = 0) -> ShardLoader:
    dataset = ShardDataset(ShardSource(str(shards)), build_task(config_for(synthav)), 32, split="pretrain", rank=rank,
                           world_size=world_size, workers=workers, batch_size=BATCH)
    return ShardLoader(dataset, batch_size=BATCH, num_workers=workers, device=torch.device("cpu"))


def streamed(shards: Path, synthav: Path, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0) -> list[dict]:
    return list(shard_loader(shards, synthav, rank, world_size).epoch(epoch, start))


def test_shards_give_each_epoch_the_manifests_videos_as_the_same_samples(shards: Path, tiny_synthav: Path) -> None:
    index = read_manifest(shards / INDEX)
    assert [Path(r.path).relative_to(shards).parts[0] for r in index] == [r.extra["shard"] for r in index]
    assert all(r.extra["motion_sizes"] == "32" for r in index)  # SynthAV stores them: carried along
    loader = shard_loader(shards, tiny_synthav, workers=2)  # its persistent workers read each epoch set
    for epoch in (0, 1):
        expected = manifest_samples(tiny_synthav, epoch)
        batches = list(loader.epoch(epoch))
        seen = Counter(expected.get(digest(b, k)) for b in batches for k in range(BATCH))
        assert None not in seen and set(seen) == set(range(24))  # decoded from the shards: the same samples
        assert 24 <= sum(seen.values()) < 24 + 2 * BATCH  # each of the two workers pads to whole batches
        assert all(not b["skipped"] for b in batches)


def test_two_gloo_ranks_see_every_video_once_per_epoch_plus_padding(shards: Path, tiny_synthav: Path,
                                                                     tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text(f"{shards}\n{tiny_synthav}")
    results = run_ranks(_rank_epoch, tmp_path, 2, timeout_s=90)
    expected = manifest_samples(tiny_synthav, 0)
    counts = [len(r["digests"]) for r in results]
    assert counts[0] == counts[1]  # the same number of steps on every rank: DDP stays in lockstep
    seen = Counter(expected.get(d) for r in results for d in r["digests"])
    assert None not in seen and set(seen) == set(range(24))
    assert sum(seen.values()) == sum(counts) < 24 + 2 * BATCH  # repeats: the padding only


def _rank_epoch(rank: int, port: int, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # the DataLoader workers it starts
    dist = join_gloo(rank, 2, port)
    shards, synthav = map(Path, (Path(out_dir) / "data.txt").read_text().splitlines())
    batches = streamed(shards, synthav, 0, dist.rank, dist.world_size)  # workers: spawned ones start slowly here
    torch.save({"digests": [digest(b, k) for b in batches for k in range(BATCH)]}, Path(out_dir) / f"rank{rank}.pt")
    cleanup()


def test_a_corrupt_member_is_skipped_replaced_and_counted(shards: Path, tiny_synthav: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(shards, damaged)
    shard = damaged / "shard-000001.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    victim = next(m.name for m, _ in members if m.name.endswith(".mp4"))
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            data = data[: len(data) // 3] if member.name == victim else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    batches = streamed(damaged, tiny_synthav, 0)
    skips = SkipCounter(0.05, 24)
    for batch in batches:
        skips.update(batch["skipped"], unreplaced=BATCH - len(batch["frames"]))
    assert list(skips.bad) == [str(damaged / "shard-000001.tar" / victim)]
    assert sum(skips.attempts.values()) == 1 and len(batches) == 24 // BATCH  # replaced: every batch full


def test_a_member_that_kills_its_worker_is_found_and_replaced_and_the_epoch_goes_on(
        shards: Path, tiny_synthav: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loader = shard_loader(shards, tiny_synthav, workers=2)
    doomed = loader.dataset.rows[5].path
    crash_when(monkeypatch, lambda row: row.path == doomed)  # before the workers start: they fork patched
    batches = list(loader.epoch(0))
    assert list(loader.dataset.samples.crashed) == [doomed] and loader.unexplained_restarts == 0
    assert len(batches) == loader.dataset.plan.rank_batches and all(len(b["frames"]) == BATCH for b in batches)
    skipped = [(s.path, s.kind) for b in batches for s in b["skipped"]]
    assert set(skipped) == {(doomed, "crashed")}
    expected = manifest_samples(tiny_synthav, 0)
    seen = Counter(expected.get(digest(b, k)) for b in batches for k in range(BATCH))
    assert set(seen) - {None} == set(range(24)) - {5} and seen[None] == len(skipped)  # None: a replacement


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(shards: Path, tiny_synthav: Path,
                                                                      tmp_path: Path) -> None:
    """The run is killed after its checkpoint at step 4, mid-epoch 1 (its later files removed): resumed
    with `--resume auto`, its workers go on at the batch it had reached."""
    config = config_for(tiny_synthav, f"data.shards={shards}", "data.num_workers=2", "train.max_steps=8",
                        "train.checkpoint_every=2", "train.keep_last=10")
    straight = pretrain(config, tmp_path / "straight")
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "straight", killed)
    for step in (6, 8):
        checkpoint_path(killed, step).unlink()
    resumed = pretrain(config, killed, "auto")
    a, b = (torch.load(path, weights_only=True)["model"] for path in (straight, resumed))
    assert all(torch.equal(a[key], b[key]) for key in a)
    with pytest.raises(ConfigError, match="data.num_workers: 2 -> 1"):  # workers split the shards: kept
        pretrain(config_for(tiny_synthav, f"data.shards={shards}", "data.num_workers=1", "train.max_steps=8",
                            "train.checkpoint_every=2", "train.keep_last=10"), killed, "auto")


def test_a_shell_command_is_taken_only_from_the_command_line(shards: Path, tiny_synthav: Path,
                                                             tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--shard-command"):
        ShardSource("pipe:cat shards.csv")
    # the command reads the index and each shard: here `cat`, as an object store's client would
    batches = ShardLoader(ShardDataset(ShardSource(str(shards), "cat {url}"), build_task(config_for(tiny_synthav)),
                                       32, split="pretrain", batch_size=BATCH), batch_size=BATCH, num_workers=0,
                          device=torch.device("cpu")).epoch(0)
    assert sum(len(b["frames"]) for b in batches) == 24


def test_the_plan_deals_shards_evenly_and_resumes_at_the_batch_each_worker_reached() -> None:
    plan = StreamPlan([list(range(n)) for n in (5, 1, 4, 4, 2)], world_size=2, workers=2, batch_size=2)
    assert plan.shards == [[[0], [1, 4]], [[2], [3]]]  # counts 5 | 3 and 4 | 4
    assert plan.batches == [[3, 2], [3, 2]] and plan.samples_per_epoch() == 10  # rank 1 pads a batch (worker 0)
    assert plan.given(0, 3) == [2, 1] and plan.given(0, 5) == [3, 2]  # the DataLoader takes workers in turn
