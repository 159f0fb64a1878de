"""An encoder exported on its own: its weights in a `.safetensors` (or `.pt`) file and a JSON beside it
(same name, `.json`) that says what it is and how to feed it.

The weights are under the keys of the library model the encoder is: torchvision's own for its video
backbones (r3d_18, mc3_18, r2plus1d_18, s3d: `torchvision.models.video.<name>(...).load_state_dict(w,
strict=False)` leaves only the classifier missing), the mmssl class's for the others (tiny3d, the ViTs,
the audio encoders), which `load_exported_encoder(FILE)` builds and fills in one line.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmssl.models import AudioEncoder, TorchvisionVideoEncoder, VideoEncoder, build_encoder

SUFFIXES = (".safetensors", ".pt")


def weights_module(encoder: VideoEncoder | AudioEncoder) -> nn.Module:
    """The module whose state dict is the export: torchvision's model for its backbones, else the encoder."""
    return encoder.model if isinstance(encoder, TorchvisionVideoEncoder) else encoder


def metadata_path(path: str | Path) -> Path:
    """The JSON that describes the export at `path`: the same name with `.json`."""
    return Path(path).with_suffix(".json")


def save_exported_encoder(encoder: VideoEncoder | AudioEncoder, path: str | Path, metadata: dict) -> Path:
    """Write `encoder`'s weights to `path` (.safetensors or .pt) and `metadata` (which names the encoder
    under "encoder") to the JSON beside it; return `path`."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: an export is a {' or '.join(SUFFIXES)} file")
    # clones: safetensors refuses tensors that share memory (views of one buffer)
    weights = {key: value.detach().cpu().contiguous().clone() for key, value in
               weights_module(encoder).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(weights, path)
    else:
        torch.save(weights, path)
    metadata_path(path).write_text(json.dumps(metadata, indent=2) + "\n")
    return path


def load_exported_weights(path: str | Path) -> dict[str, Tensor]:
    """The weights of an export (.safetensors or .pt), on the CPU."""
    path = Path(path)
    return load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                            weights_only=True)


def load_exported_encoder(path: str | Path) -> VideoEncoder | AudioEncoder:
    """The encoder of an export, in eval mode: built by the name in its JSON, its weights loaded (strict)."""
    encoder = build_encoder(json.loads(metadata_path(path).read_text())["encoder"])
    weights_module(encoder).load_state_dict(load_exported_weights(path))
    return encoder.eval()
