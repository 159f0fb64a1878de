"""Clip contrastive learning: clips of the same video are positives.

rho = `num_clips` (2 by default) clips of `clip_len` frames every `stride` frames, from one decode of
one window: `sampler` "cvrl" draws two clips whose gap has a density decreasing linearly to 0 at the
largest possible gap (Qian et al., "Spatiotemporally Contrastive Video Representation Learning" (CVRL),
CVPR 2021); "uniform" draws rho independent uniform starts (rhoBYOL and co.: Feichtenhofer, Fan, Xiong,
Girshick, He, "A Large-Scale Study on Unsupervised Spatiotemporal Representation Learning", CVPR 2021).
Both give the same gap distribution up to discretisation (mmssl.data.sampling.independent_clips);
CVRL's sampler is defined for two clips only, so rho > 2 needs "uniform". Each clip is augmented on
its own on the device: one crop/flip/colour distortion shared by the frames of a clip, independent
between clips; the colour distortion is SimCLR's at strength 1 (brightness, contrast, hue, grayscale;
no saturation), which the clips of a video need more than images do: they share their colours.
One encoder (shared weights) embeds every clip; `loss` names the method, on projections z and
predictions p (mmssl.losses has the formulas):

- nt_xent (SimCLR, Chen et al. 2020): z = SimCLR's projector's L2-normalised embedding; NT-Xent over
  the batch gathered from all GPUs with gradient.
- moco (MoCo v2, He et al. 2020; Chen et al. 2020): the query is clip 0 through the online encoder and
  SimCLR's projector, the keys clips 1..rho-1 through the momentum copy, updated by
  theta_k <- m theta_k + (1 - m) theta_q before the key forward; logits [q.k+, q.queue] / T, label 0;
  the keys are enqueued after the logits (gathered from all GPUs); on several GPUs the keys' batch is
  shuffled over the GPUs for the key forward (shuffling BN). One query clip and every other clip a
  key, as rhoMoCo in pySlowFast (`ContrastiveModel`, type "moco").
- byol (Grill et al. 2020): 2-layer projector and predictor; target = EMA copy of encoder + projector,
  tau_k = 1 - (1 - tau_base)(1 + cos(pi k / K)) / 2; loss 2 - 2 cos(p_i, sg(z'_j)), symmetric.
- simsiam (Chen and He 2021): 3-layer projector with BN on its output, bottleneck predictor (hidden
  embed_dim / 4); -(cos(p_i, sg(z_j)) + cos(p_j, sg(z_i))) / 2.
- barlow_twins (Zbontar et al. 2021), vicreg (Bardes et al. 2022): 3-layer projector; the loss on
  z_i, z_j with batch statistics over all GPUs.

With rho > 2 clips the loss is the mean over the clip pairs i < j (MoCo: over the keys). The target
network of MoCo and BYOL lives in the task head with requires_grad=False (DDP and the optimizer skip
it; checkpoints keep it); the encoder exported for transfer is the online one.

Each method is one entry of `METHODS`, every part named: its projector and predictor
(mmssl.models.heads), its target network's momentum schedule, global BatchNorm or not, its pair loss
(a registered loss and its arguments) and how the loss is applied (`pairwise`, `predict_targets`,
`query_keys`). Adding a method is one entry plus its loss file.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mmssl.config import AT_LEAST_1, AT_LEAST_2, POSITIVE, SHARE, Bound, Config, ConfigError
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import cvrl_clips, independent_clips
from mmssl.distributed import shuffled_forward
from mmssl.losses import build_loss
from mmssl.models import VideoEncoder
from mmssl.models.ema import cosine_momentum, frozen_copy, momentum_update
from mmssl.models.heads import (
    barlow_twins_projector,
    byol_predictor,
    byol_projector,
    simclr_projector,
    simsiam_predictor,
    simsiam_projector,
    vicreg_expander,
)
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment, colour_distortion, to_model_input


@dataclass
class ClipContrastiveConfig:
    """Two (or num_clips >= 2) clips of one video as positives: SimCLR, MoCo, BYOL, SimSiam, Barlow
    Twins or VICReg on clips (docs/methods.md#clip_contrastive). None: the method's own value (its
    paper's), where it takes one."""

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

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "num_clips": AT_LEAST_2, "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "temperature": POSITIVE,
        "embed_dim": AT_LEAST_1, "hidden_dim": AT_LEAST_1, "queue_size": AT_LEAST_1, "momentum": SHARE,
        "brightness": SHARE, "contrast": SHARE, "hue": Bound(0, 0.5), "grayscale": SHARE}


SAMPLERS = ("cvrl", "uniform")


def pair_mean(loss_fn: Callable[..., Tensor], *per_clip: Tensor) -> Tensor:
    """Mean over the clip pairs i < j of loss_fn(a_i, a_j, b_i, b_j, ...) for per_clip = (a, b, ...),
    each [clips, B, D]."""
    pairs = itertools.combinations(range(len(per_clip[0])), 2)
    return torch.stack([loss_fn(*(t[c] for t in per_clip for c in pair)) for pair in pairs]).mean()


class ClipContrastiveHead(nn.Module):
    """What the task adds to the encoder: the projector, the predictor (BYOL, SimSiam), the loss module
    (it holds MoCo's queue) and, given `encoder`, the target network: frozen copies of the encoder and
    the projector that follow the online ones by EMA (`follow`)."""

    target_step: Tensor

    def __init__(self, projector: nn.Module, criterion: nn.Module, predictor: nn.Module | None = None,
                 encoder: VideoEncoder | None = None) -> None:
        super().__init__()
        self.projector = projector
        self.predictor = predictor
        self.criterion = criterion
        self.target_encoder = frozen_copy(encoder) if encoder is not None else None
        self.target_projector = frozen_copy(projector) if encoder is not None else None
        # the optimizer step whose online weights the target last took in (a buffer: saved, resumed)
        self.register_buffer("target_step", torch.zeros((), dtype=torch.long))

    def project(self, features: Tensor, target: bool = False) -> Tensor:
        return (self.target_projector if target else self.projector)(features)

    @torch.no_grad()
    def embed_target(self, x: Tensor) -> Tensor:
        return self.project(self.target_encoder(x), target=True)

    @torch.compiler.disable  # eager under torch.compile: a graph per step number would recompile every step
    @torch.no_grad()
    def follow(self, encoder: VideoEncoder, step: int, momentum: float) -> None:
        """theta_target <- m theta_target + (1 - m) theta_online (encoder and projector), once per
        optimizer step: at the first forward of a step past `target_step` (micro-batches of an
        accumulated step see the same online weights, so a second update would be a wrong one)."""
        if step <= int(self.target_step):
            return
        momentum_update(encoder, self.target_encoder, momentum)
        momentum_update(self.projector, self.target_projector, momentum)
        self.target_step.fill_(step)


# --- how a method applies its loss -------------------------------------------------------------------
# (head, encoder, x [clips * B, C, T, H, W] clip-major, clips) -> the loss and two clips' embeddings [B, D]
Outcome = tuple[Tensor, Tensor, Tensor]
Objective = Callable[[ClipContrastiveHead, VideoEncoder, Tensor, int], Outcome]


def _per_clip(z: Tensor, num_clips: int) -> Tensor:
    return rearrange(z, "(k b) d -> k b d", k=num_clips)


def pairwise(head: ClipContrastiveHead, encoder: VideoEncoder, x: Tensor, num_clips: int) -> Outcome:
    """The loss on the projections z_i, z_j of every clip pair (SimCLR, Barlow Twins, VICReg)."""
    z = _per_clip(head.project(encoder(x)), num_clips)
    return pair_mean(head.criterion, z), z[0], z[1]


def predict_targets(head: ClipContrastiveHead, encoder: VideoEncoder, x: Tensor, num_clips: int) -> Outcome:
    """The loss on the predictions p_i, p_j against the targets z'_i, z'_j of every clip pair (BYOL,
    SimSiam): the target network's projections, or without one the online projections (SimSiam is
    "BYOL without the momentum encoder"), which the loss takes under stop-gradient."""
    z = head.project(encoder(x))
    predictions = _per_clip(head.predictor(z), num_clips)
    targets = head.embed_target(x) if head.target_encoder is not None else z
    per_clip = _per_clip(z, num_clips)
    return pair_mean(head.criterion, predictions, _per_clip(targets, num_clips)), per_clip[0], per_clip[1]


def query_keys(head: ClipContrastiveHead, encoder: VideoEncoder, x: Tensor, num_clips: int) -> Outcome:
    """MoCo: clip 0 through the online encoder is the query, clips 1..rho-1 through the target network
    the keys, whose batch is shuffled over the GPUs for their forward (shuffling BN)."""
    x = rearrange(x, "(k b) c t h w -> k b c t h w", k=num_clips)
    query = head.project(encoder(x[0]))
    keys = shuffled_forward(head.embed_target, rearrange(x[1:], "k b c t h w -> (k b) c t h w"))
    return head.criterion(query.repeat(num_clips - 1, 1), keys), query, keys[:len(query)]


# --- the methods -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Momentum:
    """The target network's EMA rate: `base` at every step ("constant"), or raised from `base` to 1 on
    BYOL's cosine schedule ("cosine")."""

    base: float
    schedule: Literal["constant", "cosine"]

    def rate(self, step: int, total_steps: int, base: float | None = None) -> float:
        """The rate of the update at the first forward of `step` (`base` in place of the method's own):
        the cosine schedule's tau of the previous step (BYOL updates after optimizer step k - 1 with tau_{k-1})."""
        base = self.base if base is None else base
        return base if self.schedule == "constant" else cosine_momentum(step - 1, total_steps, base=base)


@dataclass(frozen=True)
class Method:
    """One clip-contrastive method, every part named."""

    loss: str  # its pair loss, registered in mmssl.losses
    projector: Callable[[int, int, int], nn.Module]  # (feature_dim, hidden_dim, embed_dim) -> module
    objective: Objective  # how the loss is applied
    predictor: Callable[[int, int], nn.Module] | None = None  # (embed_dim, hidden_dim) -> module
    momentum: Momentum | None = None  # the target network's EMA; None: no target network
    global_bn: bool = True  # BatchNorm statistics over the global batch on several GPUs
    loss_kwargs: Mapping[str, object] = field(default_factory=dict)  # fixed arguments of the loss
    # loss argument -> config field that sets it; unset (None) leaves the loss's own default
    loss_settings: Mapping[str, str] = field(default_factory=dict)

    def criterion(self, config: ClipContrastiveConfig) -> nn.Module:
        settings = {arg: getattr(config, name) for arg, name in self.loss_settings.items()}
        return build_loss(self.loss, **self.loss_kwargs, **{k: v for k, v in settings.items() if v is not None})


METHODS: dict[str, Method] = {
    # SimCLR (Chen et al., ICML 2020): NT-Xent over the batch gathered from all GPUs with gradient
    "nt_xent": Method(loss="nt_xent", projector=simclr_projector, objective=pairwise,
                      loss_kwargs={"gather_distributed": True}, loss_settings={"temperature": "temperature"}),
    # MoCo v2 (He et al., CVPR 2020; Chen et al. 2020): per-GPU BatchNorm on shuffled keys is the point
    "moco": Method(loss="moco", projector=simclr_projector, objective=query_keys,
                   momentum=Momentum(0.999, "constant"), global_bn=False, loss_kwargs={"gather_distributed": True},
                   loss_settings={"dim": "embed_dim", "temperature": "temperature", "queue_size": "queue_size"}),
    # BYOL (Grill et al., NeurIPS 2020)
    "byol": Method(loss="byol", projector=byol_projector, objective=predict_targets, predictor=byol_predictor,
                   momentum=Momentum(0.996, "cosine")),
    # SimSiam (Chen and He, CVPR 2021); its predictor's bottleneck is embed_dim / 4 wide, whatever hidden_dim
    "simsiam": Method(loss="simsiam", projector=simsiam_projector, objective=predict_targets,
                      predictor=lambda dim, _: simsiam_predictor(dim)),
    # Barlow Twins (Zbontar et al., ICML 2021)
    "barlow_twins": Method(loss="barlow_twins", projector=barlow_twins_projector, objective=pairwise,
                           loss_kwargs={"gather_distributed": True}),
    # VICReg (Bardes et al., ICLR 2022)
    "vicreg": Method(loss="vicreg", projector=vicreg_expander, objective=pairwise,
                     loss_kwargs={"gather_distributed": True}),
}


@register_task("clip_contrastive", label_family="object", encoder_input="rgb",
               metric=PretextMetric("top1_in_batch", chance=lambda _, batch_size: 1 / batch_size))
class ClipContrastive(PretextTask):
    config_class = ClipContrastiveConfig
    renamed_keys: ClassVar[dict[str, str]] = {"moco_momentum": "momentum", "byol_momentum": "momentum"}
    feature_mode = "clip"

    @classmethod
    def upgrade_section(cls, section: dict) -> dict:
        """Before `momentum`, a saved config held both methods' rates: the run's own method's is its momentum."""
        old = {"moco": section.pop("moco_momentum", None), "byol": section.pop("byol_momentum", None)}
        if old["moco"] is not None or old["byol"] is not None:
            section["momentum"] = old.get(section.get("loss", "nt_xent"))
        return section

    def __init__(self, config: ClipContrastiveConfig, augment: VideoAugment | None = None) -> None:
        if config.num_clips < 2 or config.clip_len < 1 or config.stride < 1:
            raise ConfigError(f"clip_contrastive needs num_clips >= 2, clip_len >= 1 and stride >= 1, got {config}")
        if config.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {config.sampler!r}; choose {' or '.join(SAMPLERS)}")
        if config.sampler == "cvrl" and config.num_clips != 2:
            raise ConfigError("CVRL's sampler draws two clips; for num_clips > 2 use sampler 'uniform', whose "
                             "every pairwise gap has the same linearly decreasing density")
        if config.loss not in METHODS:
            raise ConfigError(f"unknown loss {config.loss!r}; choose one of {', '.join(METHODS)}")
        self.config = config
        self.method = METHODS[config.loss]
        self.global_batchnorm = self.method.global_bn
        self.augment = (dataclasses.replace(augment, brightness=config.brightness, contrast=config.contrast)
                        if augment is not None else None)  # None: no augmentation at all
        self.step, self.total_steps = 0, 1

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> ClipContrastive:
        return cls(config.task.clip_contrastive, augment)

    def set_step(self, step: int, total_steps: int) -> None:
        self.step, self.total_steps = step, total_steps

    @property
    def momentum(self) -> float | None:
        """The target's EMA rate for the update at this step's first forward; None without a target."""
        momentum = self.method.momentum
        return momentum.rate(self.step, self.total_steps, self.config.momentum) if momentum is not None else None

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The rho clips' frames, clip after clip, in one window (one decode)."""
        c = self.config
        clips = (cvrl_clips(row.num_frames, c.clip_len, c.stride, rng) if c.sampler == "cvrl"
                 else independent_clips(row.num_frames, c.clip_len, c.stride, c.num_clips, rng))
        return Window(frames=clips.reshape(-1))

    def build_head(self, encoder: VideoEncoder) -> ClipContrastiveHead:
        c, method = self.config, self.method
        projector = method.projector(encoder.feature_dim, c.hidden_dim, c.embed_dim)
        predictor = method.predictor(c.embed_dim, c.hidden_dim) if method.predictor is not None else None
        target = encoder if method.momentum is not None else None  # the target network copies it
        return ClipContrastiveHead(projector, method.criterion(c), predictor, target)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
             head: nn.Module) -> dict[str, torch.Tensor]:
        c = self.config
        clips = rearrange(batch["frames"], "b (k t) h w c -> (k b) t h w c", k=c.num_clips)
        x = to_model_input(clips, self.augment)  # each clip of each sample augmented on its own
        if self.augment is not None:
            x = colour_distortion(x, c.hue, c.grayscale)
        if self.method.momentum is not None:
            head.follow(encoder, self.step, self.momentum)  # before the target (key) forward
        loss, a, b = self.method.objective(head, encoder, self.front_end(x), c.num_clips)
        return {"loss": loss, **_agreement(a, b)}


@torch.no_grad()
def _agreement(a: Tensor, b: Tensor) -> dict[str, Tensor]:
    """Detached metrics of two clips' embeddings [B, D]: their mean cosine; the std over the batch of
    the L2-normalised embeddings, averaged over dimensions (about 1/sqrt(D) when spread, 0 when
    collapsed); and the in-batch top-1: the share of clips `a` whose most similar clip `b` is their
    own video's (chance 1/B; a tie, as in a collapse, goes to the first clip of the batch)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    top1 = ((a @ b.T).argmax(-1) == torch.arange(len(a), device=a.device)).float().mean()
    return {"positive_cos": (a * b).sum(-1).mean(), "embedding_std": a.std(0).mean(), "top1_in_batch": top1}
