"""Video colorization by pointing: Vondrick, Shrivastava, Fathi, Guadarrama, Murphy, "Tracking Emerges by
Colorizing Videos", ECCV 2018.

Window: `num_references` reference frames and one target frame, `gap` frames apart (the target last),
at a random start. On the device, after the run's crop, flip and jitter: Lab (kornia), each 4x4 block's
mean ab assigned to the nearest colour of a small palette (`palette_size` colours fitted by k-means,
mmssl.cluster.kmeans, on the ab of the first batch the model sees, then kept in the head as a buffer,
saved with the checkpoint). The encoder sees each frame's lightness on its own (the `lightness` front
end, frames as 1-frame clips); the head (UpsamplingDecoder, L as its skip) gives every pixel of the
4x-reduced grid an embedding f. Each target pixel j points at the reference pixels i with attention
A_ij = softmax_i(f_i . f_j), and its colour distribution is sum_i A_ij onehot(c_i). Loss: the negative
log-likelihood of the target pixel's palette colour under it. Trivial predictor ("trivial_loss"): the
same with uniform attention, the reference frames' colour histogram.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from kornia.color import lab_to_rgb
from torch import Tensor, nn

from mmssl.cluster import kmeans
from mmssl.config import AT_LEAST_1, AT_LEAST_2, Bound, Config
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import random_clip
from mmssl.models import VideoEncoder
from mmssl.models.heads import UpsamplingDecoder
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.tasks.colorization import OUT_STRIDE
from mmssl.transforms.video import VideoAugment, lab, to_model_input, unnormalize


@dataclass
class VideoColorizationConfig:
    """Vondrick et al.'s colorization by pointing (docs/methods.md#video_colorization)."""

    num_references: int = 3
    gap: int = 3  # frames between consecutive frames of the window, the target after the last reference
    palette_size: int = 16  # colours of the k-means palette over ab
    embed_dim: int = 64
    decoder_width: int = 64  # channels of the decoder's first stage, halved by each of its stages
    decoder_stages: int = 1

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "num_references": AT_LEAST_1, "gap": AT_LEAST_1, "palette_size": AT_LEAST_2, "embed_dim": AT_LEAST_1,
        "decoder_width": AT_LEAST_1, "decoder_stages": Bound(0, 5)}


def pointing(reference: Tensor, target: Tensor, reference_colours: Tensor, colours: int) -> Tensor:
    """Each target pixel's colour distribution [B, N_t, colours] by attention over the reference pixels:
    softmax over i of (reference_i . target_j), reference [B, N_r, E], target [B, N_t, E], applied to the
    one-hot palette colours `reference_colours` [B, N_r]."""
    attention = torch.softmax(target @ reference.transpose(1, 2), dim=-1)
    return attention @ F.one_hot(reference_colours, colours).to(attention.dtype)


def pointing_nll(probabilities: Tensor, target_colours: Tensor) -> Tensor:
    """The mean negative log-likelihood of the target pixels' colours [B, N_t] under `probabilities`."""
    return -probabilities.gather(-1, target_colours[..., None]).clamp(min=1e-8).log().mean()


class VideoColorizationHead(nn.Module):
    """The per-pixel embedding decoder and the palette (a buffer, fitted on the first batch)."""

    def __init__(self, map_dim: int, config: VideoColorizationConfig) -> None:
        super().__init__()
        self.decoder = UpsamplingDecoder(map_dim, config.embed_dim, config.decoder_width, config.decoder_stages,
                                         skip_channels=1)
        nn.init.normal_(self.decoder.out[-1].weight, std=0.01)  # not the zero start: all-equal embeddings point nowhere
        self.register_buffer("palette", torch.zeros(config.palette_size, 2))
        self.register_buffer("fitted", torch.tensor(False))
        self.fitted_here = False  # this process has seen `fitted` set

    def forward(self, grid: Tensor, size: tuple[int, int, int], lightness: Tensor) -> Tensor:
        return self.decoder(grid, size, skip=lightness)

    @torch.compiler.disable  # fits the palette once (k-means on the CPU): eager, outside the graph
    def colours(self, ab: Tensor) -> Tensor:
        """ab [N, 2] -> the nearest palette colour of each row [N]; the palette is fitted on these rows
        (k-means) if it has not been yet."""
        if not self.fitted_here:  # the buffer is read (a device sync) only until it is known to be set
            if not self.fitted:
                result = kmeans(ab.detach().float().cpu().numpy(), len(self.palette), seed=0)
                self.palette.copy_(torch.from_numpy(result.centroids))
                self.fitted.fill_(True)
            self.fitted_here = True
        return torch.cdist(ab.float(), self.palette).argmin(1)


@register_task("video_colorization", label_family="object", encoder_input="lightness",
               metric=PretextMetric("loss", higher_is_better=False, chance_key="trivial_loss"))
class VideoColorization(PretextTask):
    config_class = VideoColorizationConfig
    feature_mode = "frames"

    def __init__(self, config: VideoColorizationConfig, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.augment = augment

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> VideoColorization:
        return cls(config.task.video_colorization, augment)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The references and the target, `gap` frames apart, the target last."""
        return Window(frames=random_clip(row.num_frames, self.config.num_references + 1, self.config.gap, rng))

    def build_head(self, encoder: VideoEncoder) -> VideoColorizationHead:
        return VideoColorizationHead(encoder.map_dim, self.config)

    def embed(self, x: Tensor, encoder: VideoEncoder, head: VideoColorizationHead) -> Tensor:
        """Per-pixel embeddings [B, T, h * w, E] of each frame of the model input x [B, 3, T, H, W], from
        its lightness alone (frames encoded one by one), on the 4x-reduced grid."""
        b, height, width = x.shape[0], *x.shape[3:]
        lightness = self.front_end(rearrange(x, "b c t h w -> (b t) c 1 h w"))
        size = (1, height // OUT_STRIDE, width // OUT_STRIDE)
        skip = F.avg_pool3d(lightness[:, :1], (1, OUT_STRIDE, OUT_STRIDE))
        embedding = head(encoder.feature_map(lightness), size, skip)
        return rearrange(embedding, "(b t) e 1 h w -> b t (h w) e", b=b)

    def point(self, x: Tensor, encoder: VideoEncoder,
              head: VideoColorizationHead) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For the model input x [B, 3, T, H, W] (references, then the target): its Lab frames, each cell's
        palette colour [B, T, cells], the target cells' colour distributions by pointing [B, cells,
        palette] and by uniform attention (the references' colour histogram, [B, 1, palette])."""
        frame_lab = lab(unnormalize(x))
        ab = F.avg_pool3d(frame_lab[:, 1:], (1, OUT_STRIDE, OUT_STRIDE))
        colours = head.colours(rearrange(ab, "b c t h w -> (b t h w) c")).view(ab.shape[0], ab.shape[2], -1)
        embedding = self.embed(x, encoder, head).float()
        reference_colours = colours[:, :-1].flatten(1)
        k = len(head.palette)
        probabilities = pointing(embedding[:, :-1].flatten(1, 2), embedding[:, -1], reference_colours, k)
        histogram = F.one_hot(reference_colours, k).float().mean(1, keepdim=True)
        return frame_lab, colours, probabilities, histogram

    def predicted_views(self, batch: dict[str, Tensor], encoder: VideoEncoder,
                        head: VideoColorizationHead) -> list[list[tuple[str, Tensor]]]:
        """Per sample: the reference frames, the target's lightness (what the encoder sees of it), the
        target coloured by pointing (each cell the expected palette colour under its attention), the same
        with uniform attention (the trivial predictor) and the target frame; the coloured ones keep the
        target's own lightness."""
        frame_lab, _, probabilities, histogram = self.point(to_model_input(batch["frames"], None), encoder, head)
        lightness = frame_lab[:, :1, -1]  # [B, 1, H, W]
        cells_h = lightness.shape[-2] // OUT_STRIDE

        def coloured(distribution: Tensor) -> Tensor:  # [B, cells or 1, palette] -> uint8 [B, H, W, 3]
            cells = (distribution @ head.palette).expand(-1, probabilities.shape[1], -1)
            grid = rearrange(cells, "b (h w) c -> b c h w", h=cells_h)
            rgb = lab_to_rgb(torch.cat([lightness, F.interpolate(grid, size=lightness.shape[-2:])], 1))
            return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)

        pointed, trivial = coloured(probabilities), coloured(histogram)
        grey = coloured(torch.zeros_like(histogram))  # no colour weighted in: ab = 0, the lightness in grey
        frames = batch["frames"]
        return [[*((f"reference {t}", frames[b, t]) for t in range(frames.shape[1] - 1)),
                 ("target: lightness in", grey[b]), ("coloured by pointing", pointed[b]),
                 ("uniform attention\n(trivial)", trivial[b]), ("target", frames[b, -1])] for b in range(len(frames))]

    def loss(self, batch: dict[str, Tensor], encoder: VideoEncoder, head: VideoColorizationHead) -> dict[str, Tensor]:
        _, colours, probabilities, histogram = self.point(to_model_input(batch["frames"], self.augment), encoder, head)
        with torch.no_grad():
            trivial = pointing_nll(histogram.expand_as(probabilities), colours[:, -1])
            accuracy = (probabilities.argmax(-1) == colours[:, -1]).float().mean()
        return {"loss": pointing_nll(probabilities, colours[:, -1]), "trivial_loss": trivial,
                "colour_accuracy": accuracy}
