"""One dataclass tree for a run: defaults here <- a YAML file in configs/ <- dotted CLI overrides.

Unknown keys are errors that name the key; values are checked against the field's type.
"""
from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config key or value that does not fit the tree."""


ABSENT = "<absent>"  # config_changes: the key is not in that tree


@dataclass
class DataConfig:
    manifest: str = ""  # empty: SynthAV under synthav_dir, generated on first use
    synthav_dir: str = "data/synthav"
    split: str = "pretrain"
    frame_size: int = 64  # decoder: short side scaled to frame_size (aspect kept), centre crop to a square
    backend: str = "pyav"
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # random resized crop area
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # its width / height (log-uniform)
    flip: bool = True
    batch_size: int = 32
    num_workers: int = 2
    max_skip_share: float = 0.05  # stop when more of an epoch's samples than this fail to decode


@dataclass
class ModelConfig:
    video_encoder: str = "tiny3d"
    audio_encoder: str = "tiny_audio"  # audio-visual tasks: logmel_cnn (L3's tower) or tiny_audio


@dataclass
class MotionConfig:
    """High-motion tuple choice (S&L, OPN): keep one of `candidates` uniformly drawn tuples with
    probability proportional to its motion ** `power` (mean absolute frame difference, per video
    from one decode at `size` px). candidates 1: uniform sampling, no motion decode."""

    candidates: int = 16
    power: float = 2.0
    size: int = 32


@dataclass
class OrderConfig:
    """Shuffle and Learn frame-order verification (SPEC.md): gaps in seconds, so fps-independent."""

    tau_max_s: float = 2.0  # max |d - b| (60 frames at 30 fps)
    tau_min_s: float = 0.5  # min gap of a and e (a negative's middle frame) from [b, d] (15 frames at 30 fps)
    positive_share: float = 0.25
    hidden_dim: int = 256
    motion: MotionConfig = field(default_factory=MotionConfig)


@dataclass
class OPNConfig:
    """OPN sequence sorting (SPEC.md): a tuple of `num_frames` frames, num_frames!/2 classes."""

    num_frames: int = 4  # 4 in the paper: 12 classes
    gap_s: float = 0.25  # time between consecutive frames of a tuple [unverified]
    jitter: float = 0.05  # max per-frame shift after the shared crop, share of the frame side [unverified]
    channel_split: bool = True
    hidden_dim: int = 512  # shared pair layer (OPN's fc7) [unverified]
    dropout: float = 0.5  # before the classifier [unverified]
    motion: MotionConfig = field(default_factory=MotionConfig)  # OPN's high-motion windows


@dataclass
class VCOPConfig:
    """VCOP clip order prediction (SPEC.md): `num_clips` clips, num_clips! classes."""

    num_clips: int = 3
    clip_len: int = 16
    stride: int = 1  # frame step inside a clip (1 in the paper)
    interval: int = 8  # frames between the end of a clip and the start of the next
    hidden_dim: int = 512
    dropout: float = 0.5


@dataclass
class AVCConfig:
    """Audio-visual correspondence (L3) with AVTS hard negatives (SPEC.md)."""

    clip_len: int = 8  # 1: L3's single frame
    stride: int = 2
    audio_s: float = 1.0
    positive_share: float = 0.5
    hard_negatives: bool = True
    min_offset_s: float = 1.0  # a hard negative's shift: >= audio_s (checked), so it never overlaps the positive
    hard_share: float = 0.25  # of the negatives, once the curriculum allows hard ones
    curriculum_share: float = 0.3  # share of training with easy negatives only
    loss: str = "ce"  # ce (L3's fusion head) or margin (AVTS)
    margin: float = 1.0  # eta of the margin loss
    embed_dim: int = 128
    fusion_dim: int = 128


@dataclass
class AVContrastiveConfig:
    """Cross-modal InfoNCE between clips and their audio (AVID / CLIP-style, SPEC.md)."""

    clip_len: int = 8
    stride: int = 2
    audio_s: float = 1.0
    temperature: float = 0.07
    learn_temperature: bool = False  # true: the shared head's learnable temperature (CLIP)
    embed_dim: int = 128


@dataclass
class MaskedVideoConfig:
    """VideoMAE tube masking and pixel reconstruction (SPEC.md); the tubelet is the ViT encoder's."""

    clip_len: int = 16
    stride: int = 4  # frame step inside the clip (4 on Kinetics, 2 on SSv2 in the paper)
    mask_ratio: float = 0.9  # share of each frame's patches masked, the same patches in every slot
    decoder_depth: int = 4  # the decoder is half the encoder's width
    norm_target: bool = True  # per-tubelet, per-channel normalised pixels as the target


@dataclass
class Wav2Vec2Config:
    """wav2vec 2.0 masked contrastive prediction of quantised audio features (SPEC.md)."""

    audio_s: float = 1.0  # the window; the paper crops utterances to at most 250k samples (15.6 s)
    mask_prob: float = 0.65  # p * M: each step starts a span with probability p = 0.065 (fairseq's mask_prob)
    mask_length: int = 10  # M
    min_masks: int = 2  # spans per window at least
    num_negatives: int = 100  # K distractors per masked step, drawn with replacement
    codebooks: int = 2  # G
    codebook_entries: int = 320  # V
    final_dim: int = 256  # the space where context and quantised targets meet (also the codewords' total dim)
    temperature_start: float = 2.0  # Gumbel softmax: max(start * decay ** step, floor)
    temperature_decay: float = 0.999995
    temperature_floor: float = 0.5
    logit_temperature: float = 0.1  # kappa: cosine similarity / kappa
    diversity_weight: float = 0.1  # alpha
    feature_penalty: float = 10.0  # weight of the mean squared feature-encoder output (fairseq)
    feature_grad_scale: float = 0.1  # gradient into the feature encoder scaled by this (fairseq)
    feature_dropout: float = 0.1  # on the quantiser's input (fairseq's dropout_features)


@dataclass
class ClipContrastiveConfig:
    """Two (or num_clips >= 2) clips of one video as positives: SimCLR, MoCo, BYOL, SimSiam, Barlow
    Twins or VICReg on clips (SPEC.md). None: the method's own value (its paper's), where it takes one."""

    num_clips: int = 2  # rho
    clip_len: int = 8
    stride: int = 2
    sampler: str = "cvrl"  # cvrl (2 clips, gap density decreasing linearly to 0) | uniform (independent starts)
    loss: str = "nt_xent"  # the method: nt_xent (SimCLR) | moco | byol | simsiam | barlow_twins | vicreg
    temperature: float | None = None  # nt_xent and moco (SimCLR 0.1, MoCo 0.07; MoCo v2 0.2)
    embed_dim: int = 128  # projector output
    hidden_dim: int = 512  # projector hidden width (and BYOL's predictor)
    queue_size: int | None = None  # moco: negatives in the queue, at least the global batch (65536)
    momentum: float | None = None  # moco, byol: the target's EMA rate (MoCo: m 0.999; BYOL: 0.996, cosine to 1)
    # colour distortion per clip (SimCLR's strength 1): brightness/contrast factors 1 +- these, a hue
    # rotation of up to +- `hue` turns, grayscale with probability `grayscale`
    brightness: float = 0.8
    contrast: float = 0.8
    hue: float = 0.2
    grayscale: float = 0.2


@dataclass
class MultiTaskConfig:
    """Several tasks from one decoded window per sample; each task's own section configures it."""

    tasks: list[str] = field(default_factory=lambda: ["order", "avc", "masked_video"])
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # of each task's loss


@dataclass
class TaskConfig:
    name: str = "order"
    order: OrderConfig = field(default_factory=OrderConfig)
    opn: OPNConfig = field(default_factory=OPNConfig)
    vcop: VCOPConfig = field(default_factory=VCOPConfig)
    avc: AVCConfig = field(default_factory=AVCConfig)
    av_contrastive: AVContrastiveConfig = field(default_factory=AVContrastiveConfig)
    clip_contrastive: ClipContrastiveConfig = field(default_factory=ClipContrastiveConfig)
    masked_video: MaskedVideoConfig = field(default_factory=MaskedVideoConfig)
    wav2vec2: Wav2Vec2Config = field(default_factory=Wav2Vec2Config)
    multitask: MultiTaskConfig = field(default_factory=MultiTaskConfig)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # for batch_size 32 per optimizer step; scaled linearly with the total batch
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only (VideoMAE: 0.9, 0.95)
    warmup_epochs: float = 1.0
    min_lr: float = 1e-5
    grad_clip: float = 0.0  # 0: off
    accumulate: int = 1  # micro-batches per optimizer step


@dataclass
class TrainConfig:
    epochs: int = 15
    max_steps: int = 0  # 0: epochs decide; else stop after this many optimizer steps
    seed: int = 0
    amp: Literal["auto", "off"] = "auto"  # auto: bf16 autocast on CUDA; off
    compile: bool = False
    channels_last: bool = False
    log_every: int = 10
    checkpoint_every: int = 200  # optimizer steps; a checkpoint is also written at the end
    keep_last: int = 2


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class TransferConfig:
    """Transfer to action recognition on a labeled manifest (SynthAV's train/test by default).
    YAML recipes: configs/transfer/<protocol>.yaml."""

    protocol: str = "linear"  # linear (probe on frozen features), knn (and retrieval), or finetune
    manifest: str = ""  # empty: SynthAV under synthav_dir
    synthav_dir: str = "data/synthav"
    train_split: str = "train"
    test_split: str = "test"
    label_column: str = "label"  # the manifest column to predict: label, or another (SynthAV: shape, heard as timbre)
    feature_mode: str = "auto"  # auto (the pretext task's), clip, or frames (T=1 each, concatenated)
    clip_len: int = 8
    stride: int = 2
    num_clips: int = 4  # uniform clips per video: clip-level scores, averaged for video-level
    audio_s: float = 1.0  # audio probe: num_clips uniform windows of this length per video
    frame_size: int = 64
    batch_size: int = 16
    num_workers: int = 2
    seed: int = 0
    linear_epochs: int = 300  # full-batch steps of the linear probe on frozen features
    linear_lr: float = 0.01
    linear_weight_decay: float = 1e-3
    finetune_epochs: int = 30
    finetune_lr: float = 1e-3
    finetune_weight_decay: float = 0.05
    finetune_layer_decay: float = 1.0  # layer-wise lr decay of a ViT (VideoMAE: 0.75); 1: off
    knn_k: int = 20  # weighted kNN: neighbours that vote (DINO's 20)
    knn_temperature: float = 0.07  # their weights exp(cosine similarity / T)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                root: type = Config) -> Any:
    """Defaults of `root`, then the YAML file (if any), then `key.sub=value` overrides (values
    parsed as YAML)."""
    config = root()
    if path is not None:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        merge(config, data)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        merge(config, _nest(key.strip().split("."), yaml.safe_load(value)))
    return config


def merge(node: Any, data: dict[str, Any], prefix: str = "", unknown: list[str] | None = None) -> None:
    """Set the fields of dataclass `node` from nested dict `data`, checking keys and types. Unknown
    keys are errors, or, given an `unknown` list, collected there and skipped."""
    fields = {f.name: f for f in dataclasses.fields(node)}
    hints = typing.get_type_hints(type(node))
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            if unknown is None:
                raise ConfigError(f"unknown config key {name!r}; known here: {', '.join(sorted(fields))}")
            unknown.append(name)
            continue
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{name!r} is a section: give it a mapping, not {value!r}")
            merge(current, value, f"{name}.", unknown)
        else:
            setattr(node, key, _coerce(value, hints[key], name))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two `to_dict` trees, as (saved, current); a key
    only one side has (a setting added or removed since) shows `ABSENT` on the other."""
    old, new = _flatten(saved), _flatten(current)
    return {key: (old.get(key, ABSENT), new.get(key, ABSENT)) for key in sorted(old.keys() | new.keys())
            if old.get(key, ABSENT) != new.get(key, ABSENT)}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:  # a tuple as saved and the list JSON gives back compare equal
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def from_dict(data: dict[str, Any]) -> Config:
    """A saved run's config (a checkpoint's). It holds every task's section, so keys this version
    no longer has (a setting renamed or removed since) are skipped with a warning, and their
    defaults apply: old checkpoints keep loading."""
    config = Config()
    dropped: list[str] = []
    merge(config, data, unknown=dropped)
    if dropped:
        warnings.warn(f"saved config keys unknown to this version, ignored: {', '.join(dropped)}", stacklevel=2)
    return config


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    return {keys[0]: _nest(keys[1:], value)} if len(keys) > 1 else {keys[0]: value}


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name!r} expects a list, got {value!r}")
        (item,) = set(typing.get_args(hint)) - {Ellipsis}
        items = [_coerce(v, item, name) for v in value]
        return items if origin is list else tuple(items)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name!r} expects {hint}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted off / on as a boolean
            value = "on" if value else "off"
        if value not in typing.get_args(hint):
            raise ConfigError(f"{name!r} expects one of {', '.join(map(repr, typing.get_args(hint)))}, got {value!r}")
        return value
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{name!r} expects None")
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name!r} expects float, got {value!r}") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{name!r} expects {hint.__name__}, got {value!r}")
    return value
