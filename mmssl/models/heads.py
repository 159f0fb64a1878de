"""Task heads, each named after the method it comes from and citing its paper (lightly's `heads.py`
is the model): the projectors and predictors of the contrastive and siamese methods, the shared
contrastive head and the head of the audio-visual tasks, the order classifiers and the reconstruction
tasks' upsampling decoder."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mmssl.models.audio import AudioEncoder


def mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU (-> Dropout) -> Linear."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                   out_bn: bool = False) -> nn.Sequential:
    """(num_layers - 1) x [Linear -> BN -> ReLU], then Linear (-> BN without affine if `out_bn`):
    the block of every named projector and predictor below."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    if out_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class ContrastiveHead(nn.Module):
    """One projection per modality into a shared embedding space, L2-normalised, and a learnable
    temperature (CLIP's parameterisation: logit scale = exp(t), initialised to 1/0.07, capped at 100).
    The audio-visual tasks share it between video and audio; SimCLR and MoCo use its video side."""

    def __init__(self, video_dim: int, audio_dim: int | None, embed_dim: int = 128, hidden_dim: int = 512,
                 temperature: float = 0.07, learn_temperature: bool = True) -> None:
        super().__init__()
        self.video = projection_mlp(video_dim, hidden_dim, embed_dim)
        self.audio = projection_mlp(audio_dim, hidden_dim, embed_dim) if audio_dim else None
        log_scale = torch.tensor(math.log(1 / temperature))
        if learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:  # a buffer: no parameter without gradient for DDP to wait on
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    def forward(self, features: Tensor) -> Tensor:
        """`embed_video`: the head as the projector of a video-only method (SimCLR, MoCo)."""
        return self.embed_video(features)

    def embed_video(self, features: Tensor) -> Tensor:
        return F.normalize(self.video(features), dim=-1)

    def embed_audio(self, features: Tensor) -> Tensor:
        if self.audio is None:
            raise ValueError("this head has no audio projection")
        return F.normalize(self.audio(features), dim=-1)


# --- projectors and predictors of the clip-contrastive methods: (in, hidden, out) -> module ----------


def simclr_projector(in_dim: int, hidden_dim: int, out_dim: int) -> ContrastiveHead:
    """SimCLR's projection head g (Chen et al., ICML 2020: "a MLP with one hidden layer"; BN as in its
    code), also MoCo v2's (Chen et al. 2020), L2-normalised: a video-only ContrastiveHead, whose
    temperature buffer the losses do not read (they hold their own)."""
    return ContrastiveHead(in_dim, None, out_dim, hidden_dim, learn_temperature=False)


def byol_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector (Grill et al., NeurIPS 2020): "a linear layer ... followed by batch
    normalization, rectified linear units (ReLU), and a final linear layer"."""
    return projection_mlp(in_dim, hidden_dim, out_dim)


def byol_predictor(dim: int, hidden_dim: int) -> nn.Sequential:
    """BYOL's predictor q (Grill et al., NeurIPS 2020): it "uses the same architecture" as the projector."""
    return projection_mlp(dim, hidden_dim, dim)


def simsiam_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimSiam's projector (Chen and He, CVPR 2021): "BN applied to each fully-connected layer,
    including its output fc ... This MLP has 3 layers" (the output BN without affine, as in its code)."""
    return projection_mlp(in_dim, hidden_dim, out_dim, num_layers=3, out_bn=True)


def simsiam_predictor(dim: int) -> nn.Sequential:
    """SimSiam's predictor h (Chen and He, CVPR 2021): 2 layers, BN on the hidden one, "a bottleneck
    structure" dim -> dim / 4 -> dim."""
    return projection_mlp(dim, dim // 4, dim)


def barlow_twins_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Barlow Twins' projector (Zbontar et al., ICML 2021): "three linear layers ... The first two
    ... followed by a batch normalization layer and rectified linear units"."""
    return projection_mlp(in_dim, hidden_dim, out_dim, num_layers=3)


def vicreg_expander(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """VICReg's expander (Bardes et al., ICLR 2022): "two fully-connected layers with batch
    normalization (BN) and ReLU, and a third linear layer"."""
    return projection_mlp(in_dim, hidden_dim, out_dim, num_layers=3)


class DINOHead(nn.Module):
    """DINO's head (Caron et al., ICCV 2021, `DINOHead` in its code): a 3-layer MLP with GELU to a
    `bottleneck_dim` embedding, L2-normalised, then a weight-normalised linear layer without bias whose
    norm is fixed at 1 (its `norm_last_layer`): each of the K outputs is a cosine in [-1, 1]. `batch_norm`:
    BatchNorm after each hidden layer (its `use_bn_in_head`), which takes out what every sample's
    features share (a small random convnet's are nearly alike).
    While `last_layer_frozen`, that layer's gradient is zero (DINO freezes it for the first epoch, as
    training is unstable otherwise); zero rather than none, as DDP expects every parameter's."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for dim in (in_dim, hidden_dim):
            layers += [nn.Linear(dim, hidden_dim), *([nn.BatchNorm1d(hidden_dim)] if batch_norm else []), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_layer, std=0.02)
        self.last_layer_frozen = False

    def forward(self, features: Tensor) -> Tensor:
        weight = self.last_layer
        if self.last_layer_frozen:
            weight = weight.detach() + 0 * weight
        return F.normalize(self.mlp(features), dim=-1) @ F.normalize(weight, dim=-1).T


# --- audio-visual ------------------------------------------------------------------------------------


class AudioVisualHead(nn.Module):
    """What an audio-visual task adds to the run's video encoder: the audio encoder `audio` and the
    head its loss reads, either `shared` (a ContrastiveHead embedding both modalities: AVID's InfoNCE,
    AVTS's margin loss) or `fusion` (L3-Net's classifier of the concatenated video and audio
    features, Arandjelovic and Zisserman, ICCV 2017). The other stays None, so DDP sees no unused
    parameters."""

    def __init__(self, audio: AudioEncoder, shared: ContrastiveHead | None = None,
                 fusion: nn.Module | None = None) -> None:
        super().__init__()
        self.audio = audio
        self.shared = shared
        self.fusion = fusion


# --- order classifiers -------------------------------------------------------------------------------


class ConcatHead(nn.Module):
    """Features of the K inputs of a sample, concatenated, then an MLP classifier.

    Shuffle and Learn's head (Misra et al. 2016): the shared-weight encoder's features of the three
    frames are concatenated and classified."""

    def __init__(self, feature_dim: int, num_inputs: int, hidden_dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        self.classifier = mlp(feature_dim * num_inputs, hidden_dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """features [B * K, D] (sample-major) -> logits [B, num_classes]."""
        return self.classifier(features.reshape(-1, self.num_inputs * features.shape[-1]))


class PairwiseHead(nn.Module):
    """Order classifier over the K inputs of a sample, pair by pair.

    For every pair i < j (in `itertools.combinations` order) the two feature vectors are
    concatenated and passed through one shared Linear(2D, hidden_dim) + ReLU; the K(K-1)/2 pair
    outputs are concatenated, then Dropout and Linear(hidden_dim * pairs, num_classes).
    OPN's head (Lee et al. 2017: fc7 per frame pair, fc8 on their concatenation) and VCOP's
    (Xu et al. 2019: Linear(2d, 512) + ReLU per clip pair, dropout 0.5, Linear(512 * pairs, n!)).
    """

    def __init__(self, feature_dim: int, num_inputs: int, hidden_dim: int, num_classes: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        first, second = torch.triu_indices(num_inputs, num_inputs, offset=1)  # (0,1), (0,2), ...
        self.register_buffer("first", first, persistent=False)
        self.register_buffer("second", second, persistent=False)
        self.pair = nn.Sequential(nn.Linear(2 * feature_dim, hidden_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim * len(first), num_classes))

    def forward(self, features: Tensor) -> Tensor:
        """features [B * K, D] (sample-major) -> logits [B, num_classes]."""
        f = features.reshape(-1, self.num_inputs, features.shape[-1])
        pairs = torch.cat([f[:, self.first], f[:, self.second]], dim=-1)  # [B, pairs, 2D]
        return self.classifier(self.pair(pairs).flatten(1))


# --- dense decoders ----------------------------------------------------------------------------------


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3d 3x3x3 (padded) -> BN -> ReLU."""
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True))


class UpsamplingDecoder(nn.Module):
    """A light decoder from an encoder's feature grid to one output per pixel of the clip: the
    reconstruction tasks' head (Context Encoders' decoder, Pathak et al., CVPR 2016, cut to CPU size).

    A 1x1x1 convolution to `width` channels, then `stages` of (x2 trilinear upsampling -> conv block),
    each halving the width, then trilinear resizing to (T, H / 2, W / 2). `skip_channels` > 0: the model
    input is concatenated there, each 2x2 block of its pixels as channels (U-Net's skip at the
    output's resolution, so that what the input already holds need not pass through the coarse grid).
    Then a conv block and a 1x1x1 convolution to `out_channels` x 4, rearranged into the 2x2 block of
    each position (ESPCN's sub-pixel convolution, Shi et al., CVPR 2016: the last layers run at a
    quarter of the pixels). That last convolution starts at zero: a restoration head starts as the
    identity on its input.

    Examples:
        >>> decoder = UpsamplingDecoder(map_dim=128, out_channels=3, skip_channels=3)
        >>> grid, x = torch.randn(2, 128, 1, 4, 4), torch.randn(2, 3, 8, 64, 64)
        >>> decoder(grid, x.shape[2:], skip=x).shape
        torch.Size([2, 3, 8, 64, 64])
    """

    def __init__(self, map_dim: int, out_channels: int, width: int = 64, stages: int = 2,
                 skip_channels: int = 0) -> None:
        super().__init__()
        self.reduce = nn.Conv3d(map_dim, width, 1)
        self.stages = nn.ModuleList(conv_block(width >> k, width >> (k + 1)) for k in range(stages))
        last = width >> stages
        self.out = nn.Sequential(conv_block(last + 4 * skip_channels, last), nn.Conv3d(last, 4 * out_channels, 1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, grid: Tensor, size: Sequence[int], skip: Tensor | None = None) -> Tensor:
        """grid [B, map_dim, T', H', W'] -> [B, out_channels, *size] (H and W even); `skip` [B, skip_channels, *size]."""
        t, h, w = size
        x = self.reduce(grid)
        for stage in self.stages:
            x = stage(F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))
        x = F.interpolate(x, size=(t, h // 2, w // 2), mode="trilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, rearrange(skip.to(x.dtype), "b c t (h p) (w q) -> b (c p q) t h w", p=2, q=2)], dim=1)
        return rearrange(self.out(x), "b (c p q) t h w -> b c t (h p) (w q)", p=2, q=2)
