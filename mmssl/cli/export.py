"""Export a pretrained encoder on its own: its weights for your own training script, and a JSON of how to feed it.

  mmssl export --checkpoint CKPT|RUN_DIR [--out FILE.safetensors|FILE.pt] [--import MODULE]
(`python tools/export.py ...` is the same.)

Writes the encoder's weights (default: encoder.safetensors beside the checkpoint; .pt for torch.save)
and FILE.json beside them: the encoder's name, the library model its keys fit, its input (frames,
frame size, normalisation, front end; or the audio's sample rate), the method and the whole
pretraining config. The keys are torchvision's for r3d_18, mc3_18, r2plus1d_18 and s3d:

  model = torchvision.models.video.r2plus1d_18(num_classes=101)
  model.load_state_dict(safetensors.torch.load_file("encoder.safetensors"), strict=False)  # fc.* stays new

and the mmssl class's for the others (tiny3d, vit_*, the audio encoders), which
`mmssl.models.export.load_exported_encoder("encoder.safetensors")` builds and fills.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mmssl.cli import add_import_option, checkpoint_of, command, import_user_modules
from mmssl.config import Config, to_dict
from mmssl.eval.transfer import load_encoder
from mmssl.models import AudioEncoder, TorchvisionVideoEncoder, VideoEncoder
from mmssl.models.export import SUFFIXES, save_exported_encoder
from mmssl.tasks.model import checkpoint_config, saved_entries
from mmssl.transforms.video import MEAN, STD


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> Path:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="pretraining checkpoint, or a run folder (its newest)")
    parser.add_argument("--out", help="the weights file, .safetensors or .pt (default: encoder.safetensors "
                                      "beside the checkpoint); its JSON goes beside it")
    add_import_option(parser)
    args = parser.parse_args(argv)
    import_user_modules(parser, args.imports)
    if args.out and Path(args.out).suffix not in SUFFIXES:
        parser.error(f"--out {args.out}: name a {' or '.join(SUFFIXES)} file")
    checkpoint = checkpoint_of(parser, args.checkpoint)
    out = Path(args.out or checkpoint.parent / "encoder.safetensors")
    pretrained = load_encoder(checkpoint)
    metadata = export_metadata(pretrained.encoder, pretrained.name, pretrained.feature_mode,
                               pretrained.encoder_input, checkpoint_config(checkpoint))
    metadata["checkpoint"] = {"path": str(checkpoint), "step": saved_entries(checkpoint).get("step")}
    save_exported_encoder(pretrained.encoder, out, metadata)
    print(f"wrote {out} ({metadata['weights_for']}) and {out.with_suffix('.json')}")
    return out


def export_metadata(encoder: VideoEncoder | AudioEncoder, name: str, feature_mode: str, encoder_input: str, config: Config) -> dict:
    """What the JSON beside an export says: the encoder, the model its keys fit, its input, the method
    and the pretraining config."""
    if isinstance(encoder, AudioEncoder):
        model_input = {"layout": "[B, samples]", "sample_rate": 16000, "channels": "mono",
                       "front_end": encoder_input}
    else:
        section = getattr(config.task, config.task.name, None)
        model_input = {
            "layout": "[B, C, T, H, W] float", "channels": "RGB",
            "frames": 1 if feature_mode == "frames" else getattr(section, "clip_len", None),
            "feature_mode": feature_mode,  # frames: each frame alone (T=1), its features concatenated in time
            "frame_size": config.data.frame_size,  # short side scaled to it, centre-cropped to a square
            "normalisation": {"scale": 1 / 255, "mean": list(MEAN), "std": list(STD)},  # (x / 255 - mean) / std
            "front_end": encoder_input,  # applied after the normalisation (mmssl.transforms.inputs)
        }
    weights_for = (f"torchvision.models.video.{name}" if isinstance(encoder, TorchvisionVideoEncoder)
                   else f"mmssl.models.export.load_exported_encoder ({type(encoder).__name__})")
    return {"encoder": name, "weights_for": weights_for, "feature_dim": encoder.feature_dim, "input": model_input,
            "method": config.task.name, "pretraining_config": to_dict(config)}
