"""`mmssl export`: a pretraining checkpoint's encoder as a weights file that loads into the library model
(torchvision's for its backbones, mmssl's own class for the others) with the same outputs, and its JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from mmssl import cli
from mmssl.config import load_config, to_dict
from mmssl.engine.checkpoint import checkpoint_path, save_checkpoint
from mmssl.eval.transfer import load_encoder, random_encoder
from mmssl.models.export import load_exported_encoder
from mmssl.tasks import build_task
from mmssl.tasks.model import TaskModel, build_run_encoder


def fresh_checkpoint(run: Path, *overrides: str) -> Path:
    """A run folder's checkpoint at step 1 of a freshly initialised model, its BatchNorm statistics moved
    away from their defaults by one forward pass in training mode (so that a loader that left them out fails)."""
    config = load_config(None, ["data.frame_size=32", *overrides])
    torch.manual_seed(0)
    model = TaskModel(build_task(config), build_run_encoder(config))
    if not config.model.video_encoder.startswith("vit") and config.task.name != "wav2vec2":
        with torch.no_grad():
            model.encoder(torch.randn(2, 3, 4, 16, 16))
    return save_checkpoint(checkpoint_path(run, 1), model=model, config=to_dict(config), step=1)


def test_export_loads_into_torchvision_r2plus1d_18_as_the_readme_shows(tmp_path: Path) -> None:
    checkpoint = fresh_checkpoint(tmp_path / "run", "model.video_encoder=r2plus1d_18", "task.name=vcop",
                                  "task.vcop.clip_len=4")
    out = tmp_path / "export" / "encoder.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out)]) == 0
    # the README's three lines
    model = torchvision.models.video.r2plus1d_18(num_classes=101)
    missing, unexpected = model.load_state_dict(load_file(out), strict=False)
    assert unexpected == [] and sorted(missing) == ["fc.bias", "fc.weight"]
    model.fc = nn.Identity()
    encoder = load_encoder(checkpoint).encoder
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), encoder(x))
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["encoder"] == "r2plus1d_18"
    assert metadata["weights_for"] == "torchvision.models.video.r2plus1d_18"
    assert metadata["method"] == "vcop" and metadata["pretraining_config"]["task"]["vcop"]["clip_len"] == 4
    assert metadata["input"]["frames"] == 4 and metadata["input"]["frame_size"] == 32
    assert metadata["input"]["normalisation"] == {"scale": 1 / 255, "mean": [0.45] * 3, "std": [0.225] * 3}
    assert metadata["checkpoint"]["step"] == 1 and metadata["feature_dim"] == 512


@pytest.mark.parametrize(("overrides", "suffix", "shape"), [
    (["model.video_encoder=vit_tiny", "task.name=rotation", "task.rotation.clip_len=4"], ".pt", (2, 3, 4, 32, 32)),
    (["model.video_encoder=tiny3d", "task.name=order"], ".safetensors", (2, 3, 1, 32, 32)),
    (["model.audio_encoder=wav2vec2_tiny", "task.name=wav2vec2"], ".safetensors", (2, 16000)),
], ids=["vit_tiny", "tiny3d", "wav2vec2_tiny"])
def test_export_of_our_own_encoders_loads_in_one_line(tmp_path: Path, overrides: list[str], suffix: str,
                                                      shape: tuple[int, ...]) -> None:
    checkpoint = fresh_checkpoint(tmp_path, *overrides)
    out = tmp_path / f"encoder{suffix}"
    cli.main(["export", "--checkpoint", str(checkpoint), "--out", str(out)])
    exported = load_exported_encoder(out)
    pretrained = load_encoder(checkpoint)
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["encoder"] == pretrained.name
    assert metadata["weights_for"].startswith("mmssl.models.export.load_exported_encoder")
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(exported(x), pretrained.encoder(x))
        assert not torch.equal(exported(x), random_encoder(pretrained.name, seed=1).eval()(x))  # weights matter


def test_export_refuses_another_suffix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "encoder.bin")])
    assert exited.value.code == 2
    assert "--out " in (err := capsys.readouterr().err) and "name a .safetensors or .pt file" in err
