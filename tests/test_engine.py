"""The pretraining spine: configs, dataset seeding and skipping, trainer, resume, DDP, transfer."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PRETRAINING_CONFIGS, damage_a_tensor, shipped_config_batches  # tests/ is on sys.path under pytest

from mmssl.cli import visualize
from mmssl.config import ABSENT, Config, ConfigError, TransferConfig, config_changes, from_dict, load_config, to_dict
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.dataset import EpochSampler, PretextDataset, SkipCounter, SkipLimitExceeded, collate, kinds
from mmssl.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest
from mmssl.data.physav import PhysAVConfig
from mmssl.data.physav import generate as generate_physav
from mmssl.engine.checkpoint import latest_checkpoint
from mmssl.engine.data import load_rows, pretraining_data
from mmssl.engine.optim import build_optimizer, cosine_schedule
from mmssl.engine.precision import to_channels_last_3d
from mmssl.engine.trainer import NonFiniteLossError, drop_replayed, pretrain
from mmssl.errors import CheckpointError
from mmssl.eval.transfer import Transfer, load_encoder
from mmssl.models.vit import VideoViT, build_videomae_decoder
from mmssl.tasks import build_task
from mmssl.tasks.model import build_run_encoder

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model.video_encoder=tiny3d", "data.frame_size=32", "data.batch_size=8", "data.num_workers=0",
        "train.log_every=1"]


def fast_config(synthav: Path, *overrides: str) -> Config:
    return load_config(None, [*FAST, f"data.synthav_dir={synthav}", *overrides])


# --- config --------------------------------------------------------------------------------------


def test_every_shipped_config_loads() -> None:
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert files
    for path in files:
        root = TransferConfig if "transfer" in path.parts else Config
        load_config(path, root=root)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # mkldnn.flags restores its TF32 flag
@pytest.mark.parametrize("path", PRETRAINING_CONFIGS, ids=lambda path: path.stem)
def test_every_pretraining_config_steps_under_bf16_autocast(tiny_synthav: Path, path: Path) -> None:
    """The trainer's default on a GPU (bf16 autocast), on the CPU: one step of each shipped config.
    oneDNN is off: its CPU bf16 conv3d backward gave non-finite weight gradients now and then (3 of 100
    fresh tiny3d jigsaw steps, none of 100 without it), a kernel's fault, not the task code's this
    tests; the CPU never trains in bf16 (mmssl.engine.precision)."""
    model, (batch,) = shipped_config_batches(path, tiny_synthav)
    with torch.backends.mkldnn.flags(enabled=False), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(batch)["loss"]
        loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_saved_configs_with_keys_since_renamed_still_load() -> None:
    saved = to_dict(Config())
    saved["task"]["order"]["motion_candidates"] = 12  # renamed to task.order.motion.candidates
    saved["optim"]["lr"] = 0.5
    config = from_dict(saved)  # the old key's value, not the new key's default
    assert config.optim.lr == 0.5 and config.task.order.motion.candidates == 12


def test_config_changes_lists_dotted_keys_both_ways() -> None:
    saved = {"data": {"crop_scale": (0.5, 1.0), "flip": True}, "optim": {"lr": 1e-3}, "old": 1}
    current = {"data": {"crop_scale": [0.5, 1.0], "flip": False}, "optim": {"lr": 1e-3}, "new": {"key": 2}}
    assert config_changes(saved, current) == {"data.flip": (True, False), "new.key": (ABSENT, 2), "old": (1, ABSENT)}
    assert config_changes(to_dict(Config()), to_dict(Config())) == {}


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'optim.lrr'"):
        load_config(None, ["optim.lrr=0.1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 2\n  nope: 1\n")
    with pytest.raises(ConfigError, match="'train.nope'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="'train.epochs' expects int"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["optim=3"])
    config = load_config(None, ["optim.lr=1e-2", "data.crop_scale=[0.3, 1]", "train.compile=true"])
    assert (config.optim.lr, config.data.crop_scale, config.train.compile) == (0.01, [0.3, 1.0], True)


def test_train_amp_is_auto_or_off() -> None:
    """Any other value would silently turn autocast off on a GPU."""
    assert load_config(None, ["train.amp='off'"]).train.amp == load_config(None, ["train.amp=off"]).train.amp == "off"
    with pytest.raises(ConfigError, match="'train.amp' expects one of 'auto', 'off', got 'bf16'"):
        load_config(None, ["train.amp=bf16"])


@pytest.mark.parametrize(("loss", "overrides", "temperature"), [
    ("nt_xent", [], 0.1), ("moco", [], 0.07), ("moco", ["task.clip_contrastive.temperature=0.2"], 0.2)])
def test_clip_contrastive_temperature_defaults_by_loss(loss: str, overrides: list[str],
                                                       temperature: float) -> None:
    """SimCLR's T = 0.1 for nt_xent, MoCo's 0.07 for moco (docs/methods.md#clip_contrastive), unless set
    (moco.yaml: MoCo v2's 0.2)."""
    config = load_config(None, ["task.name=clip_contrastive", f"task.clip_contrastive.loss={loss}",
                                "task.clip_contrastive.queue_size=8", *overrides])
    assert build_task(config).build_head(build_run_encoder(config)).criterion.temperature == temperature


def test_cosine_schedule_warms_up_then_decays() -> None:
    lr = cosine_schedule(1.0, 0.1, total_steps=20, warmup_steps=5)
    assert len(lr) == 20 and lr[0] == 0 and lr[5] == pytest.approx(1.0)
    assert np.all(np.diff(lr[:6]) > 0) and np.all(np.diff(lr[5:]) < 0) and lr[-1] > 0.1



def test_optimizer_takes_betas_and_spares_biases_and_norms_from_decay() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = build_optimizer(model, load_config(None, ["optim.betas=[0.9, 0.95]", "optim.weight_decay=0.1"]).optim)
    decayed, spared = optimizer.param_groups
    assert all(group["betas"] == (0.9, 0.95) for group in optimizer.param_groups)
    assert [p.ndim for p in decayed["params"]] == [2] and decayed["weight_decay"] == 0.1
    assert len(spared["params"]) == 3 and spared["weight_decay"] == 0.0
    # MAE/VideoMAE's no_weight_decay(): the decoder's mask token and a learned position table
    encoder = VideoViT(dim=32, depth=1, heads=2, tubelet=(2, 8, 8), pos_embed="learned", num_frames=4, image_size=16)
    model = torch.nn.ModuleDict({"encoder": encoder, "decoder": build_videomae_decoder(encoder, depth=1)})
    decayed, spared = build_optimizer(model, load_config(None, []).optim).param_groups
    spared_ids = {id(p) for p in spared["params"]}
    assert {id(model["decoder"].mask_token), id(encoder.pos_embed.table)} <= spared_ids
    assert id(encoder.patch_embed.weight) in {id(p) for p in decayed["params"]}

# --- dataset ---------------------------------------------------------------------------------------


def test_samples_reproducible_across_worker_counts_and_vary_by_epoch(tiny_synthav: Path) -> None:
    config = fast_config(tiny_synthav)
    rows = read_manifest(tiny_synthav / "manifest.csv", "pretrain")
    task = build_task(config)

    def first_batches(workers: int, epoch: int, seed: int = 0) -> list[dict]:
        dataset = PretextDataset(rows, task, 32, seed=seed)
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=6, num_workers=workers, collate_fn=collate)
        return [b for _, b in zip(range(2), loader)]

    base = first_batches(0, epoch=0)
    for a, b in zip(base, first_batches(2, epoch=0)):
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(base[0]["frames"], first_batches(0, epoch=1)[0]["frames"])
    assert not torch.equal(base[0]["frames"], first_batches(0, epoch=0, seed=1)[0]["frames"])


def test_corrupt_files_are_skipped_counted_and_limited(tiny_synthav: Path, tmp_path: Path) -> None:
    rows = read_manifest(tiny_synthav / "manifest.csv", "pretrain")[:10]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 5000)
    missing = tmp_path / "gone.mp4"
    bad = [ManifestRow(str(corrupt), num_frames=24, fps=8.0), ManifestRow(str(missing), num_frames=24, fps=8.0)]
    dataset = PretextDataset(rows + bad, build_task(fast_config(tiny_synthav)), 32)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["frames"].shape[0] == 10
    assert [(Path(s.path).name, s.kind) for s in batch["skipped"]] == [("corrupt.mp4", "corrupt"),
                                                                       ("gone.mp4", "missing")]
    counter = SkipCounter(max_share=0.1, size=len(dataset))  # 1.2: the run goes on with 1 bad file
    counter.update(batch["skipped"][:1])
    counter.update(batch["skipped"][:1])  # the same file again: an attempt, not another bad file
    assert counter.attempts == {"corrupt": 2} and counter.bad == {str(corrupt): "corrupt"}
    with pytest.raises(SkipLimitExceeded, match=r"2 distinct files failed to decode \(corrupt: 1, missing: 1; 3 "):
        counter.update(batch["skipped"][1:])
    summary = counter.summary(counter.attempts)
    assert "corrupt: 2, missing: 1, distinct bad files so far: 2 of 12 (limit 1)" in summary


def test_pretraining_replaces_failed_samples_so_batches_stay_whole(tiny_synthav: Path, tmp_path: Path) -> None:
    """DDP's gathers, BatchNorm and accumulation need whole batches: a failed decode is replaced by
    another row's sample (seeded), and still counted."""
    rows = read_manifest(tiny_synthav / "manifest.csv", "pretrain")[:6]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 5000)
    bad = ManifestRow(str(corrupt), num_frames=24, fps=8.0)
    task = build_task(fast_config(tiny_synthav))
    dataset = PretextDataset([bad, *rows, bad], task, 32, replace_failed=True)
    batch = collate([dataset[(0, i)] for i in range(len(dataset))])
    assert batch["frames"].shape[0] == 8 and kinds(batch["skipped"])["corrupt"] >= 2
    again = collate([dataset[(0, i)] for i in range(len(dataset))])
    assert torch.equal(batch["frames"], again["frames"]) and batch["skipped"] == again["skipped"]
    one_good = PretextDataset([bad, rows[0]], task, 32, replace_failed=True)  # never the failed row again
    assert all(len(one_good[(epoch, 0)]["skipped"]) == 1 for epoch in range(20))
    all_bad = PretextDataset([bad, bad], task, 32, replace_failed=True)  # gives up after 10 replacements
    gave_up = collate([all_bad[(0, 0)], dataset[(0, 1)]])
    assert gave_up["frames"].shape[0] == 1 and kinds(gave_up["skipped"]) == {"corrupt": 11}


def test_audio_tasks_exclude_silent_files_and_count_them(tiny_synthav: Path) -> None:
    rows = read_manifest(tiny_synthav / "manifest.csv", "pretrain")
    task = build_task(fast_config(tiny_synthav))
    task.needs_audio = True
    dataset = PretextDataset(rows, task, 32)
    no_audio = sum(not r.has_audio for r in rows)
    assert no_audio > 0 and len(dataset) == len(rows) - no_audio
    assert dataset.excluded == {"no_audio": no_audio}


def test_videos_too_short_for_the_window_are_left_out_and_counted(tiny_synthav: Path) -> None:
    """VCOP's 3 clips of 4 frames, 4 apart, span 20 frames: a 10-frame video is left out up front."""
    rows = read_manifest(tiny_synthav / "manifest.csv", "pretrain")[:6]
    short = dataclasses.replace(rows[0], num_frames=10)
    task = build_task(fast_config(tiny_synthav, "task.name=vcop", "task.vcop.clip_len=4", "task.vcop.interval=4"))
    assert task.min_frames(8.0) == 20
    dataset = PretextDataset([*rows, short], task, 32)
    assert dataset.rows == rows and dataset.excluded == {"too_short": 1}
    assert "too_short (excluded before the run): 1" in SkipCounter(0.05, len(dataset), dataset.excluded).summary(kinds([]))


def test_a_split_no_video_fits_is_refused_naming_what_the_task_needs(tiny_synthav: Path) -> None:
    config = fast_config(tiny_synthav, "task.name=vcop", "task.vcop.clip_len=16", "task.vcop.interval=4")
    with pytest.raises(ManifestError, match=r"no video fits: .*'too_short': \d+.* needs 56 frames at 8 fps"):
        pretraining_data(config, build_task(config))
    with pytest.raises(ManifestError, match=r"no rows in split 'val'; its splits: 'pretrain' \(\d+\), 'test'"):
        load_rows(fast_config(tiny_synthav, "data.split=val"))


def test_epoch_sampler_splits_ranks_and_resumes_mid_epoch() -> None:
    ranks = [EpochSampler(10, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    shares = [list(s) for s in ranks]
    assert {epoch for share in shares for epoch, _ in share} == {1}
    assert sorted(i for share in shares for _, i in share) == list(range(10))
    ranks[0].set_epoch(1, start=2)
    assert list(ranks[0]) == shares[0][2:]
    ranks[1].set_epoch(2)
    assert list(ranks[1]) != shares[1]
    # whole batches: 10 samples on 2 ranks in batches of 4 -> 8 per rank, the first 6 of the
    # permutation seen twice
    batched = [EpochSampler(10, seed=3, rank=r, world_size=2, batch_size=4) for r in range(2)]
    shares = [[i for _, i in s] for s in batched]
    assert [len(share) for share in shares] == [8, 8]
    assert sorted(shares[0] + shares[1]) == sorted([*range(10), *shares[0][:3], *shares[1][:3]])


def test_accumulation_longer_than_an_epoch_is_refused(tiny_synthav: Path, tmp_path: Path) -> None:
    config = fast_config(tiny_synthav, "optim.accumulate=4")  # 24 videos, batch 8: 3 batches an epoch
    with pytest.raises(ValueError, match="optim.accumulate=4 is more than the 3 batches"):
        pretrain(config, tmp_path)


# --- trainer -----------------------------------------------------------------------------------------


def test_trainer_steps_and_writes_metrics_and_checkpoint(tiny_synthav: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    final = pretrain(fast_config(tiny_synthav, "train.max_steps=4", "train.checkpoint_every=2"), tmp_path)
    # stderr is not a terminal here: the progress bar is drawn at its start and end (and once a minute
    # between), not at each of the 4 steps
    assert capsys.readouterr().err.count("pretrain order") <= 3
    assert final == tmp_path / "checkpoint_000004.pt" and final.exists()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and 0 <= r["data_wait_share"] <= 1 for r in steps)
    # 24 videos in batches of 8: 3 steps an epoch, so step 4 is in epoch 1
    assert [r for r in records if "loss" not in r] == [{"epoch": e, "skipped": {}, "bad_files": {}, "excluded": {}}
                                                       for e in (0, 1)]
    state = torch.load(final, weights_only=True)
    assert state["step"] == 4 and state["config"]["task"]["name"] == "order"


def test_channels_last_run_of_an_audio_visual_task(tiny_synthav: Path, tmp_path: Path) -> None:
    config = fast_config(tiny_synthav, "task.name=avc", "train.max_steps=2", "train.channels_last=true")
    assert pretrain(config, tmp_path).exists()  # the audio tower's 2D convs stay as they are
    model = to_channels_last_3d(torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not model[0].weight.is_contiguous() and model[1].weight.is_contiguous()


def test_non_finite_loss_stops_naming_the_step(tiny_synthav: Path, tmp_path: Path) -> None:
    config = fast_config(tiny_synthav, "train.max_steps=20", "optim.lr=1e30", "optim.warmup_epochs=0")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step \d+"):
        pretrain(config, tmp_path)


def _pretrain_cmd(synthav: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "tools/pretrain.py"), *FAST, "--out", str(out),  # options between overrides
            f"data.synthav_dir={synthav}", "train.max_steps=30", "train.checkpoint_every=2",
            "train.keep_last=20", *extra]


def test_killed_run_resumes_to_the_same_weights(tiny_synthav: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_pretrain_cmd(tiny_synthav, straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_pretrain_cmd(tiny_synthav, killed), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(killed) is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = latest_checkpoint(killed)
    assert interrupted_at is not None and interrupted_at.name != "checkpoint_000030.pt"
    subprocess.run(_pretrain_cmd(tiny_synthav, killed, "--resume", "auto"), check=True, env=env,
                   capture_output=True)

    a = torch.load(straight / "checkpoint_000030.pt", weights_only=True)["model"]
    b = torch.load(killed / "checkpoint_000030.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_auto_refuses_a_run_written_with_other_settings(tiny_synthav: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    final = pretrain(fast_config(tiny_synthav, "train.max_steps=2"), tmp_path)
    recorded = (tmp_path / "config.json").read_text()
    with pytest.raises(ConfigError, match=r"other settings \(optim.lr: 0.001 -> 0.5\)"):
        pretrain(fast_config(tiny_synthav, "train.max_steps=2", "optim.lr=0.5"), tmp_path, "auto")
    assert (tmp_path / "config.json").read_text() == recorded  # the run's record is left as it was
    # how a run executes or logs may change: the finished run is picked up as it is
    assert pretrain(fast_config(tiny_synthav, "train.max_steps=2", "train.log_every=5"), tmp_path, "auto") == final
    # a checkpoint named on purpose resumes, here to extend the run, with the changes printed
    capsys.readouterr()
    longer = pretrain(fast_config(tiny_synthav, "train.max_steps=3"), tmp_path, str(final))
    assert "changed settings: train.max_steps: 2 -> 3" in capsys.readouterr().out
    assert torch.load(longer, weights_only=True)["step"] == 3


def test_a_fresh_run_refuses_a_folder_that_holds_checkpoints(tiny_synthav: Path, tmp_path: Path) -> None:
    """Pruning keeps the highest steps in the folder: a fresh run there would delete its own checkpoints."""
    pretrain(fast_config(tiny_synthav, "train.max_steps=2"), tmp_path)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(tmp_path))} holds the checkpoints of another run "
                                          r"\(checkpoint_000002.pt\): pass --resume auto .* or choose a new --out"):
        pretrain(fast_config(tiny_synthav, "train.max_steps=1", "train.keep_last=1"), tmp_path)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_000002.pt"


def test_resume_checks_the_checkpoint_before_loading_its_weights(tiny_synthav: Path, tmp_path: Path) -> None:
    """Another task's checkpoint, a file that is no checkpoint, and a run past this run's end: one line
    each (a ConfigError naming the file), before any weight is loaded."""
    final = pretrain(fast_config(tiny_synthav, "train.max_steps=2"), tmp_path / "order")
    vcop = fast_config(tiny_synthav, "train.max_steps=2", "task.name=vcop", "task.vcop.interval=0", "task.vcop.clip_len=2")
    with pytest.raises(ConfigError, match=r"other settings \(.*task.name: 'order' -> 'vcop'"):
        pretrain(vcop, tmp_path / "order", "auto")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(final))} holds a model state that does not fit this "
                                              r"run's \(.*\): use it with the settings it was written with"):
        pretrain(vcop, tmp_path / "vcop", str(final))  # named on purpose, even at this run's end: its weights do not fit
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(final.read_bytes()[:1000])
    for broken in (truncated, tmp_path / "missing.pt"):
        with pytest.raises(ConfigError, match=rf"--resume: {re.escape(str(broken))} is not a readable checkpoint"):
            pretrain(fast_config(tiny_synthav, "train.max_steps=2"), tmp_path / "other", str(broken))
    with pytest.raises(ConfigError, match=r"is at step 2, past this run's 1 steps: raise train.max_steps"):
        pretrain(fast_config(tiny_synthav, "train.max_steps=1"), tmp_path / "shorter", str(final))


def test_resume_auto_skips_a_damaged_newest_checkpoint_and_logs_each_step_once(tiny_synthav: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    """The newest checkpoint damaged in the middle (it still opens as an archive; torch alone would load
    its wrong bytes): --resume auto sets it aside, saying so in one line, and resumes from the one before.
    Step 2, logged before the damage, is logged once. A run resumed at its last step says so and names
    a checkpoint that exists."""
    config = fast_config(tiny_synthav, "train.max_steps=2", "train.checkpoint_every=1")
    final = pretrain(config, tmp_path)
    damage_a_tensor(final)
    capsys.readouterr()
    assert pretrain(config, tmp_path, "auto") == final
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"--resume auto: skipped checkpoint_000002.pt, which is damaged \(.*\); "
                        r"set aside as checkpoint_000002.pt.damaged", out[0])
    assert out[1] == f"resumed from {tmp_path / 'checkpoint_000001.pt'} at step 1"
    assert torch.load(final, weights_only=True)["step"] == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("step", r.get("epoch")) for r in records] == [1, 2, 0]  # steps 1, 2, then epoch 0's skips

    elsewhere = tmp_path / "elsewhere"
    assert pretrain(config, elsewhere, str(final)) == final
    assert capsys.readouterr().out.strip().endswith(f"--resume: {final} is at step 2, this run's last: "
                                                    "nothing left to train")
    assert not list(elsewhere.glob("checkpoint_*"))


def test_a_resumed_run_drops_the_records_a_killed_run_wrote_past_its_checkpoint(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    lines = ['{"step": 0, "knn_top1": 10}', '{"step": 3, "loss": 1}', '{"epoch": 0, "skipped": {}}',
             '{"step": 4, "loss": 1}', '{"epoch": 1, "skipped": {}}', '{"step": 5, "lo']  # the last cut by a kill
    metrics.write_text("\n".join(lines))
    drop_replayed(metrics, 3)  # a checkpoint at the end of epoch 0: its record stays, as the run goes on at epoch 1
    assert metrics.read_text().splitlines() == lines[:3]
    drop_replayed(metrics, 0)  # a fresh run
    assert metrics.read_text() == ""


def test_a_named_checkpoint_resumes_with_the_changed_optimizer_settings(tiny_synthav: Path, tmp_path: Path) -> None:
    """The optimizer's state (AdamW's moments and step counts) comes from the checkpoint, its
    hyperparameters from the config, as the printed changes say."""
    final = pretrain(fast_config(tiny_synthav, "train.max_steps=2"), tmp_path)
    longer = pretrain(fast_config(tiny_synthav, "train.max_steps=3", "optim.weight_decay=0.2",
                                  "optim.betas=[0.8, 0.99]"), tmp_path, str(final))
    optimizer = torch.load(longer, weights_only=True)["optimizer"]
    assert [group["weight_decay"] for group in optimizer["param_groups"]] == [0.2, 0.0]  # biases and norms: none
    assert all(tuple(group["betas"]) == (0.8, 0.99) for group in optimizer["param_groups"])
    assert {int(state["step"]) for state in optimizer["state"].values()} == {3}


def test_two_process_gloo_ddp_run(tiny_synthav: Path, tmp_path: Path) -> None:
    """Two ranks, a loss that gathers the batch over them (NT-Xent) and a corrupt file listed twice
    in the manifest: the failed samples are replaced, so both ranks keep gathering batches of one
    size, and the epoch's skip counts are those of both ranks. The kNN monitor runs on rank 0 alone
    while rank 1 waits."""
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 5000)
    rows = read_manifest(tiny_synthav / "manifest.csv", "pretrain")
    broken = [ManifestRow(str(corrupt), split="pretrain", num_frames=24, fps=8.0)]
    manifest = write_manifest([*broken, *rows, *broken], tmp_path / "manifest.csv")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", *_pretrain_cmd(tiny_synthav, tmp_path)[1:],
           f"data.manifest={manifest}", "data.split=pretrain", "task.name=clip_contrastive",
           "task.clip_contrastive.clip_len=4", "train.epochs=1", "monitor.every=2", "monitor.clip_len=4"]
    cmd[cmd.index("train.max_steps=30")] = "train.max_steps=3"
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "checkpoint_000003.pt", weights_only=True)
    assert state["step"] == 3
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]  # rank 0 alone logs
    assert [r["step"] for r in records if "knn_top1" in r] == [0, 2, 3]
    # the file comes up once on each rank (rank 0 alone reported 1): counted over both ranks, as one bad file
    assert records[-1]["skipped"] == {"corrupt": 2} and records[-1]["bad_files"] == {"corrupt": 1}


# --- transfer ----------------------------------------------------------------------------------------


def test_transfer_linear_and_finetune_from_a_checkpoint(tiny_synthav: Path, tmp_path: Path) -> None:
    final = pretrain(fast_config(tiny_synthav, "train.max_steps=2"), tmp_path / "run")
    encoder, name, mode, _ = load_encoder(final)
    assert (name, mode) == ("tiny3d", "frames")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 5000)
    rows = read_manifest(tiny_synthav / "manifest.csv")
    label = next(r.label for r in rows if r.label)
    broken = [ManifestRow(str(corrupt), label, split, 3.0, 8.0, 24) for split in ("train", "test")]
    manifest = write_manifest([*rows, *broken], tmp_path / "manifest.csv")
    config = TransferConfig(manifest=str(manifest), frame_size=32, clip_len=4, num_clips=2,
                            num_workers=0, linear_epochs=20, finetune_epochs=2)
    transfer = Transfer(config, torch.device("cpu"))
    assert (len(transfer.train_rows), len(transfer.test_rows)) == (21, 21)
    for result in (transfer.frozen_protocol(encoder, mode, "linear"), transfer.finetune(encoder, "clip")):
        assert 0 <= result["video_top1"] <= result["video_top5"] <= 100
        assert np.asarray(result["confusion"]).sum() == result["num_test_videos"] == 20
        # the file fails in both splits, and in each fine-tuning epoch: counted once per split
        assert result["skipped"] == {"corrupt": 2} and result["num_train_videos"] == 20
    out = subprocess.run([sys.executable, str(ROOT / "tools/transfer.py"), "--checkpoint", str(tmp_path / "run"),
                          "--compare-random", f"synthav_dir={tiny_synthav}", "frame_size=24", "clip_len=4",
                          "num_clips=2", "num_workers=0", "linear_epochs=20"],
                         capture_output=True, text=True, check=True)
    assert "random init (tiny3d)" in out.stdout and "pretrained" in out.stdout
    assert "pretrained on 32 px frames and this transfer uses frame_size=24" in out.stdout
    report = json.loads((tmp_path / "run" / "transfer_linear.json").read_text())
    assert len(report["results"]) == 2
    assert (report["config"]["frame_size"], report["config"]["synthav_dir"]) == (24, str(tiny_synthav))
    assert (tmp_path / "run" / "confusion_linear.png").stat().st_size > 1000


def test_bench_learning_table(tiny_synthav: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/bench_learning.py"), "--methods", "order", "avc", "--seeds", "2",
         "--knn", "--ceiling", "--data-dir", str(tiny_synthav),
         "--work", str(tmp_path / "runs"), "--out", str(out), "--transfer", "frame_size=32", "clip_len=4",
         "num_clips=2", "num_workers=0", "linear_epochs=10", "finetune_epochs=1", "--", *FAST,
         "train.max_steps=2", "task.avc.clip_len=4"], capture_output=True, text=True, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    recipes = {name: load_config(ROOT / f"configs/transfer/{name}.yaml", root=TransferConfig)
               for name in ("linear", "finetune")}  # the supervised rows train with the fine-tune recipe
    assert [report["recipes"]["finetune"][key] for key in ("stride", "finetune_lr")] == [
        recipes["finetune"].stride, recipes["finetune"].finetune_lr] != [TransferConfig.stride, TransferConfig.finetune_lr]
    assert report["recipes"]["frozen"]["linear_penalty"] == recipes["linear"].linear_penalty
    probes, families = ("linear probe", "kNN"), ("action", "object")
    frozen = {f"{method} ({family}, {probe})" for probe in probes for family in families for method in ("order", "avc")} | {
        f"random init tiny3d ({family}, {probe}, {mode}, rgb)" for probe in probes for family in families
        for mode in ("frames", "clip")} | {
        f"{encoder} (label, {probe})" for probe in probes for encoder in ("avc audio encoder", "random init tiny_audio")}
    supervised = {f"supervised tiny3d ({family}, {split})" for family in families
                  for split in ("train split, from scratch", "pretrain+train, ceiling")}
    assert set(rows) == frozen | supervised
    assert rows["avc audio encoder (label, kNN)"]["feature_mode"] == "audio"
    assert (rows["order (object, kNN)"]["task_family"], rows["avc (action, kNN)"]["task_family"]) == ("action", "object")
    assert "R@1" in rows["order (action, kNN)"]["runs"][0]["retrieval"]
    for row in rows.values():
        assert len(row["video_top1"]) == 2 and row["video_top1_std"] >= 0
    # judged on their own family: order on the action, avc on the object
    assert {method: set(probes) for method, probes in report["headline"].items()} == {
        "order": set(probes), "avc": set(probes)}
    gain = rows["order (action, kNN)"]["video_top1_mean"] - rows[
        "random init tiny3d (action, kNN, frames, rgb)"]["video_top1_mean"]
    assert report["headline"]["order"]["kNN"]["gain"] == pytest.approx(gain)
    assert set(report["gate"]) == {f"supervised tiny3d ({family}, pretrain+train, ceiling)" for family in families}
    assert set(report["pretext"]) == {"order", "avc"}
    assert all(m["chance"] is not None and 0 <= m["mean"] <= 1 for m in report["pretext"]["order"].values())
    assert "order (action, linear probe)" in result.stdout and "headline:" in result.stdout
    written = [line.split(" (up to ")[1] for line in result.stdout.splitlines() if line.startswith(f"wrote {out}")]
    assert written == ["order seed 0)", "order seed 1)", "avc seed 0)", "avc seed 1)"]  # kept if interrupted


@pytest.mark.parametrize("task", ["order", "avc", "wav2vec2", "multitask"])
def test_visualize_draws_a_png(tiny_synthav: Path, tmp_path: Path, task: str) -> None:
    out = tmp_path / f"{task}.png"
    subprocess.run([sys.executable, str(ROOT / "tools/visualize.py"), "--task", task, "--num", "3",
                    f"data.synthav_dir={tiny_synthav}", "--out", str(out), "data.frame_size=32"],
                   check=True, capture_output=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000


def test_visualize_reports_failed_decodes_and_stops_when_none_is_left(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 5000)
    rows = [ManifestRow(str(corrupt), split="pretrain", num_frames=24, fps=8.0)] * 2
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    result = subprocess.run([sys.executable, str(ROOT / "tools/visualize.py"), "--task", "order",
                             f"data.manifest={manifest}", "data.split=pretrain", "--out", str(tmp_path / "x.png")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "skipped videos that failed to decode: {'corrupt': 2}" in result.stdout
    assert "none of the 2 videos could be decoded for order" in result.stderr


def test_visualize_draws_a_manifests_videos_with_their_contacts_marked(tmp_path: Path) -> None:
    tiny = PhysAVConfig(seed=5, size=16, duration=1.0, num_pretrain=0, train_per_class=0, test_per_class=1)
    manifest = generate_physav(tmp_path / "physav", tiny, workers=1)
    out = visualize.main(["--manifest", str(manifest), "--num", "2", "--out", str(tmp_path / "physav.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
    with open(manifest, newline="") as f:  # the main object's contact frames, as the manifest gives them
        contacts = {Path(r["path"]).name: [int(k) for k in r["impacts"].split(";") if k] for r in csv.DictReader(f)}
    assert sum(map(bool, contacts.values())) >= 2
    clips = [visualize.decode_video(row) for row in read_manifest(manifest)]
    fig = visualize.draw_videos(clips, "tiny")
    for subfig, clip in zip(fig.subfigs, clips, strict=True):
        *frames, spectrogram = subfig.axes
        expected = contacts[Path(clip.row.path).name]
        lines = sorted(line.get_xdata()[0] for line in spectrogram.lines)
        assert lines == pytest.approx([k / clip.row.fps for k in expected])  # seconds: frame / fps
        framed = [frame for ax, frame in zip(frames, clip.window.frames) if ax.axison]
        assert set(expected[:visualize.VIDEO_FRAMES // 2]) <= set(framed) <= set(expected)  # first contacts shown
        assert clip.video.shape[0] == len(clip.window.frames) and len(clip.audio) == 16000


def test_visualize_marks_a_contact_where_its_click_is_on_the_spectrogram() -> None:
    audio = torch.zeros(16000)
    audio[8000:8040] = 1.0  # a click at 0.5 s: frame 8 at 16 fps
    row = ManifestRow("click.mp4", split="test", duration=1.0, fps=16.0, num_frames=16, has_audio=True,
                      extra={"impacts": "8"})
    clip = DecodedClip(torch.zeros(1, 16, 16, 3, dtype=torch.uint8), audio, Window(np.array([8]), 0.0, 1.0), row)
    spectrogram = visualize.draw_videos([clip], "click").subfigs[0].axes[-1]
    left, right, _, _ = spectrogram.images[0].get_extent()
    energy = spectrogram.images[0].get_array().sum(0)
    peak = left + (np.argmax(energy) + 0.5) * (right - left) / len(energy)  # the loudest column's centre, in s
    assert spectrogram.lines[0].get_xdata()[0] == 0.5 and peak == pytest.approx(0.5, abs=0.005)
