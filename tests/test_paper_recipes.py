"""The paper recipes (configs/paper/): each matches the settings table of docs/paper_recipes.md, the one
place those values are written down, and steps once at a reduced size on the tiny SynthAV."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers import PRETRAINING_CONFIGS, shipped_config_batches  # tests/ is on sys.path under pytest

from mmssl.config import Config, load_config
from mmssl.registry import AUDIO_ENCODERS, VIDEO_ENCODERS

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs/paper").glob("*.yaml"))
DOC = ROOT / "docs/paper_recipes.md"
MANIFESTS = {"UCF101": "data/ucf101/ucf101_split1.csv", "K400": "data/kinetics400_256/k400.csv"}
REFERENCE_BATCH = 32  # optim.lr is the rate for this total batch (mmssl.engine.trainer)

# The reduced size: the CPU encoders at 32 px, and clips short enough for the tiny SynthAV's 24-frame videos.
SMALL_ENCODERS = {"vit": "model.video_encoder=vit_tiny", "wav2vec2": "model.audio_encoder=wav2vec2_tiny"}
SHORT_CLIPS = {
    "vcop": ["task.vcop.clip_len=4"], "avts": ["task.avc.clip_len=8"], "masked_video": ["task.masked_video.stride=2"],
    "wav2vec2": ["task.wav2vec2.audio_s=1.0"], "rotation": ["task.rotation.clip_len=8"],
    "multitask": ["task.masked_video.stride=2", "task.avc.stride=1"], "inpainting": ["task.inpainting.clip_len=8"],
    "super_resolution": ["task.super_resolution.clip_len=8"], "deepcluster": ["task.deepcluster.clip_len=8"],
    "selavi": ["task.selavi.clip_len=8"], "dino": ["task.dino.local_frames=4"],
    "jigsaw": ["task.jigsaw.num_permutations=24",  # choosing 1000 far-apart orders alone takes seconds
               "task.jigsaw.jitter_share=0.5"],  # 0.9 of 32 px frames' 10 px cells closes the gaps
    **{key: ["task.clip_contrastive.stride=2"] for key in ("simclr", "moco", "byol", "simsiam")},
    **{key: ["task.clip_contrastive.stride=2", "task.clip_contrastive.embed_dim=512",  # 8192 x 8192: seconds
             "task.clip_contrastive.hidden_dim=512"] for key in ("barlow_twins", "vicreg")},
}


def doc_table(heading: str) -> dict[str, dict[str, str]]:
    """The rows of the doc's table under `## heading`, by recipe: column -> cell."""
    section = DOC.read_text().split(f"\n## {heading}\n")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return {row["recipe"]: row for row in rows}


def number(text: str) -> float:
    """'100k' -> 100000.0, '1e-3' -> 0.001."""
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


def dotted(node: object, key: str) -> object:
    for part in key.split("."):
        node = getattr(node, part)
    return node


def test_every_method_has_one_recipe_and_one_documented_row() -> None:
    assert [path.stem for path in RECIPES] == [path.stem for path in PRETRAINING_CONFIGS]
    for heading in ("Settings", "Targets", "GPUs and hours"):
        assert sorted(doc_table(heading)) == [path.stem for path in RECIPES], heading


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_matches_its_documented_settings(path: Path) -> None:
    row, config = doc_table("Settings")[path.stem], load_config(path)
    assert config.task.name == load_config(ROOT / "configs/pretrain" / path.name).task.name  # the same method
    assert (config.data.manifest, config.data.split) == (MANIFESTS[row["data"]], "train")
    for name in row["encoder"].split(" + "):
        field = "video_encoder" if name in VIDEO_ENCODERS else "audio_encoder"
        assert name in VIDEO_ENCODERS or name in AUDIO_ENCODERS, name
        assert getattr(config.model, field) == name
    for setting in re.findall(r"`([^`]+)`", row["task settings"]):
        key, _, value = setting.partition("=")
        assert dotted(config.task, key) == yaml.safe_load(value), setting
    if row["px"] != "-":
        assert config.data.frame_size == int(row["px"])
    per_gpu, gpus, *accumulate = (int(part) for part in row["batch"].split(" x "))
    assert (config.data.batch_size, config.optim.accumulate) == (per_gpu, accumulate[0] if accumulate else 1)
    assert int(doc_table("GPUs and hours")[path.stem]["GPUs (H100)"]) == gpus  # the hours are for these GPUs
    assert config.optim.name == row["optimizer"]
    rate, reference = (number(part) for part in row["lr"].split(" / "))
    assert config.optim.lr == pytest.approx(rate * REFERENCE_BATCH / reference, rel=1e-6)
    amount, unit = row["length"].split()
    if unit == "epochs":
        assert (config.train.epochs, config.train.max_steps) == (int(amount), 0)
    else:
        assert config.train.max_steps == number(amount)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_steps_at_a_reduced_size(tiny_synthav: Path, path: Path) -> None:
    """One forward and backward of the recipe's task settings with a CPU encoder, 32 px frames and
    clips that fit the tiny SynthAV (SHORT_CLIPS); everything else is the recipe's."""
    recipe: Config = load_config(path)
    small = [SMALL_ENCODERS["vit"] if recipe.model.video_encoder.startswith("vit") else "model.video_encoder=tiny3d",
             SMALL_ENCODERS["wav2vec2"] if recipe.model.audio_encoder.startswith("wav2vec2")
             else "model.audio_encoder=tiny_audio"]
    overrides = ["data.manifest=''", "data.split=pretrain", "data.num_workers=0", *small,
                 *SHORT_CLIPS.get(path.stem, [])]
    model, (batch,) = shipped_config_batches(path, tiny_synthav, overrides=overrides)
    loss = model(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
