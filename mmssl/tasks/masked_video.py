"""Masked video reconstruction: VideoMAE (Tong, Song, Wang, Wang, "VideoMAE: Masked Autoencoders
are Data-Efficient Learners for Self-Supervised Video Pre-Training", NeurIPS 2022).

Window: one clip of `clip_len` frames every `stride` frames at a uniformly random start.
Tube masking, in the workers with the sample's rng: on the (t, h, w) token grid of the model input
(the encoder's tubelet, 2x16x16 in the paper, tiles the clip), one random spatial mask with exactly
int(mask_ratio * h * w) masked patches, repeated in every temporal slot (16 frames at 224 px,
ratio 0.9: 1408 of 1568 tokens masked, 160 visible). The sample carries the uint8 frames and the
bool mask [t, h, w] (True: masked).

On the device: random resized crop + flip only (VideoMAE's augmentation; colour jitter off), to the
decoded frame size, so the crop never changes the token grid and the mask applies to the cropped
clip. The encoder sees the visible tokens only; the decoder (half the encoder's width) predicts the
pixels of every masked tubelet. Target: the model input's pixels in [0, 1], per tubelet and per
channel normalised, (x - mean) / (std + 1e-6) with the unbiased std over the t*p*p values
(`norm_target`). Loss: mean squared error over the masked tubelets only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, OPEN_SHARE, Bound, Config, ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import random_clip
from mmssl.models import VIT_PRESETS, VideoEncoder, VideoViT
from mmssl.models.vit import Grid, VideoMAEDecoder, build_videomae_decoder, gather_tokens, split_tokens
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment, to_model_input, unnormalize


@dataclass
class MaskedVideoConfig:
    """VideoMAE tube masking and pixel reconstruction (docs/methods.md#masked_video); the tubelet is
    the ViT encoder's."""

    clip_len: int = 16
    stride: int = 4  # frame step inside the clip (4 on Kinetics, 2 on SSv2 in the paper)
    mask_ratio: float = 0.9  # share of each frame's patches masked, the same patches in every slot
    decoder_depth: int = 4  # the decoder is half the encoder's width
    norm_target: bool = True  # per-tubelet, per-channel normalised pixels as the target

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "mask_ratio": OPEN_SHARE, "decoder_depth": NON_NEGATIVE}


def masked_per_slot(height: int, width: int, ratio: float) -> int:
    """Patches a tube mask hides in each temporal slot: int(ratio * h * w), rounded down as VideoMAE."""
    return int(ratio * height * width)


def tube_mask(grid: Grid, ratio: float, rng: np.random.Generator) -> torch.Tensor:
    """VideoMAE tube mask: bool [t, h, w], True on `masked_per_slot` random patches of a frame,
    the same patches in every temporal slot."""
    t, h, w = grid
    spatial = np.zeros(h * w, dtype=bool)
    spatial[rng.permutation(h * w)[:masked_per_slot(h, w, ratio)]] = True
    return torch.from_numpy(np.ascontiguousarray(repeat(spatial, "(h w) -> t h w", t=t, h=h)))


CLIP, TUBELETS = "b c (t p0) (h p1) (w p2)", "b (t h w) (p0 p1 p2) c"  # einops layouts: tubelets in grid order


def tubelet_targets(pixels: torch.Tensor, tubelet: tuple[int, int, int], normalize: bool) -> torch.Tensor:
    """Pixels [B, C, T, H, W] -> one target row per tubelet [B, N, t*p*p*C] in the decoder's (t, p, p, c)
    order, tokens in (t, h, w) grid order. `normalize`: per tubelet and channel,
    (x - mean) / (unbiased std + 1e-6) over the tubelet's t*p*p values (VideoMAE)."""
    patches = rearrange(pixels, f"{CLIP} -> {TUBELETS}", **dict(zip(("p0", "p1", "p2"), tubelet)))
    if normalize:
        patches = (patches - patches.mean(2, keepdim=True)) / (patches.std(2, keepdim=True) + 1e-6)
    return rearrange(patches, "b n p c -> b n (p c)")


def reconstruct(prediction: torch.Tensor, pixels: torch.Tensor, masked: torch.Tensor,
                tubelet: tuple[int, int, int], normalized: bool) -> torch.Tensor:
    """The clip [B, C, T, H, W] (pixels in [0, 1]) with the tubelets `masked` indexes [B, N_masked]
    replaced by the decoder's prediction [B, N_masked, t*p*p*C]; a normalised prediction is mapped back
    with the original tubelet's own per-channel mean and unbiased std (as VideoMAE's visualisation does)."""
    sizes = dict(zip(("p0", "p1", "p2"), tubelet))
    patches = rearrange(pixels, f"{CLIP} -> {TUBELETS}", **sizes)
    index = repeat(masked, "b n -> b n p c", p=patches.shape[2], c=patches.shape[3])
    predicted = rearrange(prediction, "b n (p c) -> b n p c", c=pixels.shape[1]).to(patches.dtype)
    if normalized:
        original = patches.gather(1, index)
        predicted = predicted * (original.std(2, keepdim=True) + 1e-6) + original.mean(2, keepdim=True)
    t, h, w = (n // p for n, p in zip(pixels.shape[2:], tubelet))
    return rearrange(patches.scatter(1, index, predicted), f"{TUBELETS} -> {CLIP}", t=t, h=h, w=w, **sizes).clamp(0, 1)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked tokens only: prediction [B, N_masked, P] for the tokens
    `masked` indexes [B, N_masked], target [B, N, P] for all tokens."""
    return F.mse_loss(prediction, gather_tokens(target, masked))


@register_task("masked_video", label_family="object", encoder_input="rgb",
               metric=PretextMetric("loss", higher_is_better=False, chance_key="trivial_loss"))
class MaskedVideo(PretextTask):
    config_class = MaskedVideoConfig
    feature_mode = "clip"

    def __init__(self, config: MaskedVideoConfig, tubelet: tuple[int, int, int],
                 augment: VideoAugment | None = None) -> None:
        if not 0 < config.mask_ratio < 1 or config.clip_len < 1 or config.stride < 1 or config.decoder_depth < 0:
            raise ConfigError(f"VideoMAE needs 0 < mask_ratio < 1, clip_len, stride >= 1, decoder_depth >= 0, "
                             f"got {config}")
        if config.clip_len % tubelet[0]:
            raise ConfigError(f"clip_len {config.clip_len} is not a multiple of the tubelet's {tubelet[0]} frames")
        self.config = config
        self.tubelet = tuple(tubelet)
        self.augment = dataclasses.replace(augment, brightness=0.0, contrast=0.0) if augment else None

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> MaskedVideo:
        name = config.model.video_encoder
        if name not in VIT_PRESETS:
            raise ConfigError(f"masked_video needs a ViT encoder ({', '.join(VIT_PRESETS)}), got {name!r}")
        return cls(config.task.masked_video, VIT_PRESETS[name].tubelet, augment)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        return Window(frames=random_clip(row.num_frames, self.config.clip_len, self.config.stride, rng))

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        """The (t, h, w) token grid of a clip; the frames must tile into whole tubelets, of which the
        mask ratio must hide at least one per temporal slot (else the loss has no token to average)."""
        if num_frames % self.tubelet[0] or height % self.tubelet[1] or width % self.tubelet[2]:
            raise ValueError(f"a {num_frames}x{height}x{width} clip does not tile into {self.tubelet} tubelets")
        t, h, w = num_frames // self.tubelet[0], height // self.tubelet[1], width // self.tubelet[2]
        if masked_per_slot(h, w, self.config.mask_ratio) == 0:
            raise ValueError(f"mask_ratio {self.config.mask_ratio} masks no patch of a {h}x{w} token grid "
                             f"(int(ratio * {h * w}) = 0): raise it or the frame size")
        return t, h, w

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """The uint8 frames and the tube mask on their token grid."""
        grid = self.token_grid(*clip.video.shape[:3])
        return {"frames": clip.video, "mask": tube_mask(grid, self.config.mask_ratio, rng)}

    def split(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the visible and of the masked tokens ([B, N_visible], [B, N_masked], grid order)
        of tube masks [B, t, h, w] made by `tube_mask` at this task's ratio."""
        t, h, w = mask.shape[1:]
        return split_tokens(rearrange(mask, "b t h w -> b (t h w)"), t * masked_per_slot(h, w, self.config.mask_ratio))

    def build_head(self, encoder: VideoEncoder) -> VideoMAEDecoder:
        if not isinstance(encoder, VideoViT) or encoder.tubelet != self.tubelet:
            raise ValueError(f"masked_video masks {self.tubelet} tubelets: it needs a VideoViT with that tubelet, "
                             f"got {type(encoder).__name__} {getattr(encoder, 'tubelet', '')}")
        return build_videomae_decoder(encoder, self.config.decoder_depth)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoViT, head: nn.Module) -> dict[str, torch.Tensor]:
        x = self.front_end(to_model_input(batch["frames"], self.augment))
        mask = batch["mask"]
        grid = encoder.grid(x.shape)
        if tuple(mask.shape[1:]) != grid:
            raise ValueError(f"mask grid {tuple(mask.shape[1:])} does not match the model input's token grid {grid}")
        keep, masked = self.split(mask)
        prediction = head(encoder.forward_features(x, keep), keep, masked, grid)
        with torch.no_grad():
            target = tubelet_targets(unnormalize(x), self.tubelet, self.config.norm_target)
            hidden = gather_tokens(target, masked)  # the trivial predictor: the best constant, the mean target
            trivial = F.mse_loss(hidden, hidden.mean((0, 1)).expand_as(hidden))
        return {"loss": masked_mse(prediction, target, masked), "trivial_loss": trivial}
