"""Video Vision Transformer on tubelets, and the VideoMAE decoder.

VideoMAE (Tong, Song, Wang, Wang, "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training", NeurIPS 2022) on a ViT (Dosovitskiy et al., ICLR 2021):
  - tubelet embedding: a Conv3d with kernel = stride = tubelet (2x16x16 in the paper) maps
    ``[B, C, T, H, W]`` to a ``T/t x H/p x W/p`` grid of tokens, flattened in (t, h, w) order;
  - position embedding added to every token, fixed sine-cosine by default (``pos_embed="learned"``:
    a learned table on the preset's grid, trilinearly resized to the input's grid);
  - pre-norm blocks: x + Attn(LN(x)), then x + MLP(LN(x)) (MLP ratio 4, GELU), attention through
    ``F.scaled_dot_product_attention``; a final LayerNorm.
``forward_features(x, keep)`` returns normalised tokens ``[B, N, D]``; with ``keep``, indices
``[B, N_visible]`` of the visible tokens (MAE's ``ids_keep``, from ``split_tokens``), only those
tokens enter the blocks, as in VideoMAE's encoder. Tokens are picked by index (gather/scatter), not
by a boolean mask: the shapes stay static and nothing waits on the device, so ``torch.compile``
takes the encoder and the decoder in one graph each. ``forward(x)`` (the ``VideoEncoder`` interface,
for linear probes and fine-tuning) is the final LayerNorm of the mean of all tokens, VideoMAE's mean
pooling + fc_norm. ``feature_map(x)`` (the grid that dense tasks read) is ``[B, D, t, h, w]``: each
cell is the token of the tubelet at that place in the grid, as the last block leaves it, before the
final LayerNorm (VideoMAE's fine-tuning encoder with mean pooling has no norm there either), so
``pool`` (the mean over the cells, then that LayerNorm) gives ``forward``'s features exactly. The
encoder has no class token; ``forward_features`` gives the tokens after the LayerNorm.

Departure: VideoMAE's fixed table is a 1D sine-cosine over the flattened token index of one fixed
grid; here the channels are split over the t, h and w coordinates (a 3D sine-cosine, as MAE's 2D
one), so the same encoder takes any clip length and frame size (e.g. 8-frame probe clips after
16-frame pretraining) without interpolation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from mmssl.models.video import VideoEncoder, register_video_encoder, repeat_frames

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class ViTPreset:
    """Encoder size and the input it is made for (the learned position table's grid)."""

    dim: int
    depth: int
    heads: int
    tubelet: tuple[int, int, int]  # frames, height, width of one token
    num_frames: int
    image_size: int


VIT_PRESETS: dict[str, ViTPreset] = {
    "vit_tiny": ViTPreset(192, 4, 3, (2, 8, 8), 16, 64),  # CPU-sized: 64 px frames, 8x8 patches
    "vit_small": ViTPreset(384, 12, 6, (2, 16, 16), 16, 224),  # VideoMAE ViT-S
    "vit_base": ViTPreset(768, 12, 12, (2, 16, 16), 16, 224),  # VideoMAE ViT-B
}


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """Transformer sine-cosine code (Vaswani et al. 2017) of float positions [N] -> [N, dim]:
    [sin(p w_i), cos(p w_i)] with w_i = 10000^(-2i/dim), i < dim/2."""
    omega = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim // 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_3d(grid: Grid, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed 3D position code of a (t, h, w) token grid -> [t*h*w, dim] in (t, h, w) order: the
    channels split into three even parts (t and h get 2*(dim//6) each, w the rest), each the
    1D sine-cosine code of its coordinate."""
    if dim % 2:
        raise ValueError(f"a sine-cosine position code needs an even width, got {dim}")
    part = 2 * (dim // 6)
    coords = torch.meshgrid(*(torch.arange(n, device=device) for n in grid), indexing="ij")
    return torch.cat([sincos_1d(c.reshape(-1), d) for c, d in zip(coords, (part, part, dim - 2 * part))], dim=1)


def split_tokens(mask: Tensor, num_masked: int) -> tuple[Tensor, Tensor]:
    """MAE's ``ids_keep`` and its complement: bool `mask` [B, N] (True: masked), `num_masked` True in
    every row -> indices of the visible tokens [B, N - num_masked] and of the masked ones
    [B, num_masked], each in grid order (a stable sort puts visible first)."""
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    num_visible = mask.shape[1] - num_masked
    return order[:, :num_visible], order[:, num_visible:]


def gather_tokens(tokens: Tensor, index: Tensor) -> Tensor:
    """Tokens [B, N, D] at `index` [B, M] -> [B, M, D]."""
    return tokens.gather(1, repeat(index, "b m -> b m d", d=tokens.shape[-1]))


class PositionEmbedding(nn.Module):
    """Position embedding of a token grid: fixed 3D sine-cosine, or (with `learned_grid`) a learned
    table on that grid, trilinearly resized to other grids. forward(grid) -> [t*h*w, dim]."""

    def __init__(self, dim: int, learned_grid: Grid | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.table = None if learned_grid is None else nn.Parameter(torch.zeros(1, dim, *learned_grid))
        if self.table is not None:
            nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, grid: Grid, device: torch.device) -> Tensor:
        if self.table is None:
            return sincos_3d(grid, self.dim, device)
        table = self.table
        if tuple(table.shape[2:]) != tuple(grid):
            table = F.interpolate(table, size=grid, mode="trilinear", align_corners=False)
        return rearrange(table, "1 d t h w -> (t h w) d")


class Block(nn.Module):
    """Pre-norm transformer block: x + proj(MHSA(LN(x))), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        x = x + self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)"))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """VideoMAE's pretraining init: Xavier-uniform linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class VideoViT(VideoEncoder):
    """Video ViT on `tubelet`-sized tokens (module docstring); `feature_dim` and `map_dim` are `dim`,
    and the feature grid is the token grid, `grid(x.shape)`.

    Clips shorter than a tubelet (single frames included) are stretched by ``repeat_frames``;
    frames past the last whole tubelet (in T, H or W) are not seen, as with a strided Conv3d."""

    def __init__(self, dim: int = 192, depth: int = 4, heads: int = 3, tubelet: tuple[int, int, int] = (2, 8, 8),
                 in_channels: int = 3, pos_embed: str = "sincos", num_frames: int = 16, image_size: int = 64,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed is sincos or learned, got {pos_embed!r}")
        self.feature_dim, self.map_dim, self.heads, self.in_channels = dim, dim, heads, in_channels
        self.tubelet = tuple(tubelet)
        self.min_frames = self.tubelet[0]
        self.patch_embed = nn.Conv3d(in_channels, dim, kernel_size=self.tubelet, stride=self.tubelet)
        self.pos_embed = PositionEmbedding(dim, self.grid((num_frames, image_size, image_size))
                                           if pos_embed == "learned" else None)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(init_weights)

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise lr decay (BEiT, VideoMAE's fine-tuning): the embedding, the blocks,
        and the top (final norm and whatever head follows)."""
        return len(self.blocks) + 2

    def layer_id(self, name: str) -> int:
        """Layer of parameter `name`: 0 for the tubelet and position embedding, i + 1 for block i,
        `num_layers - 1` for the rest (the final norm, and a head's parameters named outside the encoder)."""
        if name.startswith(("patch_embed.", "pos_embed.")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers - 1

    def grid(self, size: tuple[int, ...]) -> Grid:
        """Token grid (t, h, w) of an input whose last three sizes are (T, H, W)."""
        t, h, w = size[-3:]
        return max(t, self.min_frames) // self.tubelet[0], h // self.tubelet[1], w // self.tubelet[2]

    def forward_features(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Normalised tokens [B, N, D] of float [B, C, T, H, W]; with `keep` [B, N_visible] (indices
        into the token grid, `split_tokens`), only those tokens: [B, N_visible, D]."""
        tokens = self.embed(x)
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        return self.norm(self.blocks(tokens))

    def encode_map(self, x: Tensor) -> Tensor:
        """The last block's tokens, before the final LayerNorm, on their grid: [B, D, t, h, w]."""
        t, h, w = self.grid(x.shape)
        return rearrange(self.blocks(self.embed(x)), "b (t h w) d -> b d t h w", t=t, h=h, w=w)

    def pool(self, grid: Tensor) -> Tensor:
        """VideoMAE's mean pooling and fc_norm: the final LayerNorm of the mean token."""
        return self.norm(rearrange(grid, "b d t h w -> b (t h w) d").mean(1))

    def embed(self, x: Tensor) -> Tensor:
        """Tubelet tokens plus position embedding: [B, C, T, H, W] -> [B, t*h*w, D]."""
        tokens = self.patch_embed(repeat_frames(x, self.min_frames))
        grid = tuple(tokens.shape[2:])
        return rearrange(tokens, "b d t h w -> b (t h w) d") + self.pos_embed(grid, x.device)


class VideoMAEDecoder(nn.Module):
    """VideoMAE's decoder: encoder tokens of the visible positions -> Linear (no bias) to `dim`
    (half the encoder's width in the paper); a shared learned mask token at every masked position;
    fixed 3D sine-cosine position embedding on the whole grid; `depth` pre-norm blocks (4 in the
    paper); LayerNorm; Linear to the C * t * p * p pixels of each masked tubelet, in (t, p, p, c)
    order. forward(tokens [B, Nv, D_enc], keep [B, Nv], masked [B, Nm], grid) -> [B, Nm, patch_dim]:
    the pixels of the tokens `masked` indexes (`split_tokens`; `keep` indexes the encoder's)."""

    def __init__(self, encoder_dim: int, dim: int, depth: int, heads: int, patch_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(encoder_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = PositionEmbedding(dim)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, patch_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, keep: Tensor, masked: Tensor, grid: Grid) -> Tensor:
        embedded = self.embed(tokens)  # bf16 under autocast: the mask tokens take its dtype
        size = (len(keep), keep.shape[1] + masked.shape[1], self.dim)
        x = self.mask_token.to(embedded.dtype).expand(size).scatter(1, repeat(keep, "b n -> b n d", d=self.dim),
                                                                   embedded)
        x = self.norm(self.blocks(x + self.pos_embed(grid, tokens.device)))
        return self.head(gather_tokens(x, masked))


def build_videomae_decoder(encoder: VideoViT, depth: int = 4) -> VideoMAEDecoder:
    """The decoder for `encoder`: half its width, half its heads (at least one), `depth` blocks,
    one output per pixel value of a tubelet."""
    return VideoMAEDecoder(encoder.feature_dim, encoder.feature_dim // 2, depth, max(encoder.heads // 2, 1),
                           encoder.in_channels * math.prod(encoder.tubelet))


for _name, _preset in VIT_PRESETS.items():
    register_video_encoder(_name)(partial(VideoViT, **asdict(_preset)))
