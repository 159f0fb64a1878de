"""The skip policy: a run stops when more distinct files than data.max_skip_share of the dataset's
files fail to decode, never with fewer (over many epochs of the project's own sampler), within one
epoch with more; the stop is one line and exit code 2, on every rank of a DDP run together; a resumed
run still counts the bad files its checkpoint met."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port  # tests/ is on sys.path under pytest

from mmssl.config import load_config
from mmssl.data.clip import Skipped
from mmssl.data.dataset import MAX_REPLACEMENTS, EpochSampler, SkipCounter, SkipLimitExceeded, replacement
from mmssl.data.manifest import ManifestRow, read_manifest, write_manifest
from mmssl.engine.trainer import pretrain
from mmssl.io.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FILES, BATCH, SHARE = 300, 32, 0.05  # the default share: the run goes on with up to 15 bad files


def failures(bad: set[int], epoch: int, index: int) -> list[Skipped]:
    """The failed decodes of sample `index`: its row, then its seeded replacements (the dataset's rule)."""
    row, failed = index, []
    while row in bad and len(failed) <= MAX_REPLACEMENTS:
        failed.append(Skipped(f"v{row}.mp4", "empty", ""))
        _, row = replacement(0, epoch, index, len(failed), row, FILES)
    return failed


def samples_to_stop(num_bad: int, placement: int, epochs: int) -> int | None:
    """The samples a run of `epochs` epochs over FILES files, `num_bad` of them bad at random places,
    reads before it stops (None: it does not)."""
    bad = set(np.random.default_rng([placement, num_bad]).choice(FILES, num_bad, replace=False).tolist())
    sampler, counter, seen = EpochSampler(FILES, seed=placement, batch_size=BATCH), SkipCounter(SHARE, FILES), 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        for start in range(0, len(keys), BATCH):
            seen += BATCH
            try:
                counter.update([f for e, i in keys[start:start + BATCH] for f in failures(bad, e, i)])
            except SkipLimitExceeded:
                assert len(counter.bad) > counter.limit == 15  # the batch that brought the 16th
                return seen
    assert len(counter.bad) == num_bad  # every bad file was met, and counted once
    return None


@pytest.mark.parametrize("num_bad", [3, 9, 15])  # 1%, 3%, and exactly the share
def test_fewer_bad_files_than_the_share_never_stop_a_run(num_bad: int) -> None:
    assert all(samples_to_stop(num_bad, placement, epochs=30) is None for placement in range(4))


@pytest.mark.parametrize("num_bad", [16, 30])  # one more than the share allows, and 10%
def test_more_bad_files_than_the_share_stop_within_one_epoch(num_bad: int) -> None:
    stops = [samples_to_stop(num_bad, placement, epochs=2) for placement in range(20)]
    epoch = len(EpochSampler(FILES, seed=0, batch_size=BATCH))
    assert all(stop is not None and stop <= epoch for stop in stops)
    if num_bad == 30:  # about 16/31 of the files are read when the 16th bad one comes up
        assert 0.3 * epoch < np.mean(stops) < 0.7 * epoch


def test_a_sample_that_gives_up_stops_the_run_naming_the_counts() -> None:
    counter = SkipCounter(0.5, 40)
    with pytest.raises(SkipLimitExceeded) as stop:
        counter.update([Skipped("a.mp4", "missing", "")] * 11, unreplaced=1)
    assert str(stop.value).startswith("stopping: 1 sample(s) and their 10 replacements all failed to decode; "
                                      "1 distinct files failed to decode (missing: 1; 11 failed decodes in all) "
                                      "of the 40 in the dataset, more than data.max_skip_share=0.5 of them allows (20)")


def _manifest_with_bad_files(synthav: Path, folder: Path) -> Path:
    """Tiny SynthAV's 24 pretraining videos and an empty and a corrupt file: 26 rows."""
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "corrupt.mp4").write_bytes(b"\x00" * 5000)
    bad = [ManifestRow(str(folder / name), split="pretrain", num_frames=24, fps=8.0)
           for name in ("empty.mp4", "corrupt.mp4")]
    return write_manifest([*read_manifest(synthav / "manifest.csv", "pretrain"), *bad], folder / "manifest.csv")


FAST = ["model.video_encoder=tiny3d", "data.frame_size=32", "data.batch_size=8", "data.num_workers=0",
        "data.split=pretrain", "train.epochs=1", "monitor.every=0"]


def test_a_run_with_bad_files_under_the_share_completes_and_reports_them(tiny_synthav: Path, tmp_path: Path) -> None:
    manifest = _manifest_with_bad_files(tiny_synthav, tmp_path)
    config = load_config(None, [*FAST, f"data.manifest={manifest}", "data.max_skip_share=0.1"])  # 2 of 26
    pretrain(config, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["bad_files"] == {"corrupt": 1, "empty": 1}
    assert record["skipped"]["corrupt"] >= 1 and record["skipped"]["empty"] >= 1  # attempts, replacements' too


def test_a_ddp_run_with_more_bad_files_stops_on_every_rank_in_one_line_with_exit_code_2(
        tiny_synthav: Path, tmp_path: Path) -> None:
    """The two processes torchrun would start (gloo on CPU) each exit 2 without a traceback (a rank
    stopping alone would leave the other in a collective, or end it with a gloo error); rank 0 says why."""
    manifest = _manifest_with_bad_files(tiny_synthav, tmp_path)
    args = [sys.executable, str(ROOT / "tools/pretrain.py"), *FAST, f"data.manifest={manifest}",
            "data.max_skip_share=0.04", "--out", str(tmp_path / "run")]  # 1 of 26
    ranks = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    logs = [tmp_path / f"rank{rank}.err" for rank in range(2)]
    processes = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                                  env={**os.environ, **ranks, "RANK": str(rank), "LOCAL_RANK": str(rank)})
                 for rank, log in enumerate(logs)]
    assert [process.wait(timeout=300) for process in processes] == [2, 2]
    stderr = [log.read_text() for log in logs]
    assert not any("Traceback" in err for err in stderr)
    assert [[line for line in err.splitlines() if "error" in line] for err in stderr][1] == []
    (line,) = [line for line in stderr[0].splitlines() if "error" in line]
    assert line.startswith("pretrain.py: error: stopping: 2 distinct files failed to decode (corrupt: 1, empty: 1; ")
    assert "of the 26 in the dataset, more than data.max_skip_share=0.04 of them allows (1)" in line
    assert "tools/build_manifest.py --verify" in line


def test_a_resumed_run_still_counts_the_bad_files_its_checkpoint_met(tiny_synthav: Path, tmp_path: Path) -> None:
    """24 files, two bad, one allowed (5%): the first is read in the first batch, the second in the third
    and last, where the run stops, past its checkpoints of steps 1 and 2. Resumed from step 2 it reads
    only the second again, and stops there too: its checkpoint kept the first."""
    good = read_manifest(tiny_synthav / "manifest.csv", "pretrain")
    order = np.random.default_rng([0, 0]).permutation(24).tolist()  # epoch 0 of EpochSampler, seed 0
    places = {order[0]: tmp_path / "first.mp4", order[2 * 8]: tmp_path / "second.mp4"}  # batches 0 and 2 of 8
    rows = iter(good)
    manifest = write_manifest([ManifestRow(str(places[i]), split="pretrain", num_frames=24, fps=8.0)
                               if i in places else next(rows) for i in range(24)], tmp_path / "manifest.csv")
    for path in places.values():
        path.write_bytes(b"\x00" * 5000)
    config = load_config(None, [*FAST, f"data.manifest={manifest}", "train.checkpoint_every=1"])
    with pytest.raises(SkipLimitExceeded, match="stopping: 2 distinct files .* of the 24 in the dataset"):
        pretrain(config, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint_*.pt")) == ["checkpoint_000001.pt",
                                                                                 "checkpoint_000002.pt"]
    saved = read_checkpoint(tmp_path / "run" / "checkpoint_000002.pt")["skips"]
    assert saved == {"bad": {str(places[order[0]]): "corrupt"}, "attempts": {"corrupt": 1}}
    with pytest.raises(SkipLimitExceeded, match=r"stopping: 2 distinct files failed to decode \(corrupt: 2; 2 failed"):
        pretrain(config, tmp_path / "run", resume="auto")
