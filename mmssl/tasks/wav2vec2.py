"""wav2vec 2.0 (Baevski, Zhou, Mohamed, Auli, "wav2vec 2.0: A Framework for Self-Supervised Learning
of Speech Representations", NeurIPS 2020) on the audio track of the videos; semantics of fairseq's
reference code where the paper leaves them open (docs/methods.md#wav2vec2).

A sample is `audio_s` seconds of audio at a random start (no frames are decoded) and a span mask
over the feature encoder's T frames, drawn in the worker (`span_mask`). On the device: conv
features z -> layer norm; the quantiser on these unmasked features gives the targets q (then a
linear map); the projected features with the masked steps replaced by one learned embedding go
through the Transformer, and a linear map of its output c_t is scored at each masked step t against
q_t and K distractors q_j from other masked steps of the same window:
    L_m = -log exp(cos(c_t, q_t) / kappa) / sum_{q~ in {q_t} + Q_t} exp(cos(c_t, q~) / kappa),
    L = mean_t L_m + alpha * L_d + lambda * mean(z^2),
with L_d the codebook diversity loss (`mmssl.models.quantizer.diversity_loss`) and mean(z^2) the
feature penalty. fairseq sums L_m over masked steps and divides the gradient by their number summed
over workers, and scales L_d and the penalty by the local number: the same as the means here, with
each rank's L weighted by its masked count over the ranks' mean count (`count_weight`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.config import (
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    SHARE,
    SHARE_ABOVE_0,
    SHARE_BELOW_1,
    Bound,
    Config,
    ConfigError,
)
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import frames_for
from mmssl.distributed import count_weight
from mmssl.io import TooShortError
from mmssl.models.audio import WAV2VEC2_SPECS, Wav2Vec2Encoder, feature_frames
from mmssl.models.quantizer import GumbelQuantizer, diversity_loss, gumbel_temperature, perplexity
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment


@dataclass
class Wav2Vec2Config:
    """wav2vec 2.0 masked contrastive prediction of quantised audio features (docs/methods.md#wav2vec2)."""

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

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "audio_s": POSITIVE, "mask_prob": SHARE, "mask_length": AT_LEAST_1, "min_masks": NON_NEGATIVE,
        "num_negatives": AT_LEAST_1, "codebooks": AT_LEAST_1, "codebook_entries": AT_LEAST_1, "final_dim": AT_LEAST_1,
        "temperature_start": POSITIVE, "temperature_decay": SHARE_ABOVE_0, "temperature_floor": POSITIVE,
        "logit_temperature": POSITIVE, "diversity_weight": NON_NEGATIVE, "feature_penalty": NON_NEGATIVE,
        "feature_grad_scale": NON_NEGATIVE, "feature_dropout": SHARE_BELOW_1}


def span_mask(num_frames: int, mask_prob: float, mask_length: int, min_masks: int,
              rng: np.random.Generator) -> np.ndarray:
    """fairseq's `compute_mask_indices` for one unpadded window: bool [num_frames].

    num_spans = max(int(mask_prob * T / M + u), min_masks), u ~ U[0, 1); the span starts are drawn
    without replacement from 0 .. T - M - 1 (fairseq's range: every span fits; 0 .. num_spans when
    T is too short for that); each span masks M steps; spans may overlap. At mask_prob 0.65 and
    M = 10 about 49% of the steps are masked, in runs of 14.7 steps on average."""
    num_spans = max(int(mask_prob * num_frames / mask_length + rng.random()), min_masks)
    starts = rng.choice(max(num_frames - mask_length, num_spans + 1), num_spans, replace=False)
    steps = (starts[:, None] + np.arange(mask_length)).ravel()
    mask = np.zeros(num_frames, dtype=bool)
    mask[steps[steps < num_frames]] = True
    return mask


def sample_distractors(mask: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
    """Distractors for the masked steps of bool `mask` [B, T], numbered in `mask.nonzero()` order:
    [N, num] such numbers, each drawn uniformly (with replacement) from the *other* masked steps of
    the same window (fairseq's `sample_negatives`: K = 100 even where a window has fewer other
    masked steps, which then recur)."""
    counts = mask.sum(1)
    if int(counts.min()) < 2:
        raise ValueError("every window needs at least 2 masked steps to draw distractors")
    window = mask.nonzero()[:, 0]
    first = (counts.cumsum(0) - counts)[window]  # number of the window's first masked step
    rank = torch.arange(len(window), device=mask.device) - first
    others = (counts[window] - 1)[:, None]
    # empty().uniform_(), not rand(): torch.compile fails on rand(sizes, generator=None) of dynamic sizes
    u = torch.empty(len(window), num, dtype=torch.float64, device=mask.device).uniform_(generator=generator)
    draws = torch.minimum((u * others).long(), others - 1)  # uniform over 0 .. others - 1
    return first[:, None] + draws + (draws >= rank[:, None]).long()  # skip the step itself


def contrastive_logits(context: Tensor, targets: Tensor, distractors: Tensor, temperature: float) -> Tensor:
    """[N, 1 + K] logits cos(c_n, q) / kappa, column 0 the step's own target q_n, then the targets of
    its distractors [N, K]; a distractor whose target equals q_n (the same codewords) gets -inf."""
    candidates = torch.cat([targets[:, None], targets[distractors]], 1).float()
    logits = F.cosine_similarity(context[:, None].float(), candidates, dim=-1) / temperature
    same = (candidates[:, 1:] == candidates[:, :1]).all(-1)
    return torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], 1)


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """x in the forward pass, bit for bit (in bf16 too), and `scale` times its gradient in the backward
    pass (fairseq's GradMultiply)."""
    frozen = x.detach()
    return frozen + scale * (x - frozen)


@register_task("wav2vec2", label_family="object", encoder_input="waveform",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / (task.config.num_negatives + 1)))
class Wav2Vec2(PretextTask):
    config_class = Wav2Vec2Config
    needs_audio = True
    encoder_kind = "audio"
    feature_mode = "audio"

    def __init__(self, config: Wav2Vec2Config, audio_encoder: str, sample_rate: int = 16000) -> None:
        if audio_encoder not in WAV2VEC2_SPECS:
            raise ConfigError(f"wav2vec2 needs a wav2vec 2.0 audio encoder ({', '.join(WAV2VEC2_SPECS)}), "
                             f"not {audio_encoder!r}: set model.audio_encoder")
        self.config = config
        self.sample_rate = sample_rate
        self.num_frames = feature_frames(round(config.audio_s * sample_rate), WAV2VEC2_SPECS[audio_encoder].conv_layers)
        self.temperature = config.temperature_start

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> Wav2Vec2:
        return cls(config.task.wav2vec2, config.model.audio_encoder)

    def min_frames(self, fps: float) -> int:
        return frames_for(self.config.audio_s, fps)

    def set_step(self, step: int, total_steps: int) -> None:
        c = self.config
        self.temperature = gumbel_temperature(step, c.temperature_start, c.temperature_decay, c.temperature_floor)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """`audio_s` seconds of audio at a uniformly random start; no frames."""
        duration, audio_s = row.num_frames / row.fps, self.config.audio_s
        if row.num_frames < self.min_frames(row.fps):
            raise TooShortError(row.path, f"{duration:.2f} s is shorter than the {audio_s} s audio window")
        start = float(rng.uniform(0, duration - audio_s))
        return Window(frames=np.zeros(0, dtype=np.int64), audio_start_s=start, audio_duration_s=audio_s)

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, Tensor]:
        c = self.config
        mask = span_mask(self.num_frames, c.mask_prob, c.mask_length, c.min_masks, rng)
        return {"audio": clip.audio, "mask": torch.from_numpy(mask)}

    def build_head(self, encoder: Wav2Vec2Encoder) -> nn.Module:
        """The quantiser (on the encoder's conv features) and the two linear maps into final_dim."""
        c = self.config
        return nn.ModuleDict({
            "quantizer": GumbelQuantizer(encoder.conv_dim, c.final_dim, c.codebooks, c.codebook_entries),
            "targets": nn.Linear(c.final_dim, c.final_dim),  # fairseq's project_q
            "context": nn.Linear(encoder.feature_dim, c.final_dim),  # fairseq's final_proj
        })

    def loss(self, batch: dict[str, Tensor], encoder: Wav2Vec2Encoder, head: nn.Module) -> dict[str, Tensor]:
        c = self.config
        mask = batch["mask"]
        features, _ = encoder.extract(self.front_end(batch["audio"]))
        if features.shape[1] != mask.shape[1]:
            raise ValueError(f"mask of {mask.shape[1]} steps for {features.shape[1]} feature frames")
        features = scale_gradient(features, c.feature_grad_scale)
        penalty = features.float().pow(2).mean()
        normalized = encoder.normalize(features)
        context = encoder.context(encoder.project(normalized), mask)
        quantized = head["quantizer"](F.dropout(normalized[mask], c.feature_dropout, head.training),
                                      self.temperature)
        targets = head["targets"](quantized.vectors)
        logits = contrastive_logits(head["context"](context[mask]), targets, sample_distractors(mask, c.num_negatives),
                                    c.logit_temperature)
        contrastive = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        diversity = diversity_loss(quantized.probs)
        with torch.no_grad():
            codes = F.one_hot(quantized.codes, c.codebook_entries).float()
            metrics = {"contrastive": contrastive, "diversity": diversity, "feature_penalty": penalty,
                       "perplexity": perplexity(codes), "prob_perplexity": perplexity(quantized.probs),
                       "accuracy": (logits.argmax(-1) == 0).float().mean(),
                       "temperature": torch.tensor(self.temperature)}
        loss = count_weight(mask.sum().float()) * (contrastive + c.diversity_weight * diversity
                                                   + c.feature_penalty * penalty)
        return {"loss": loss, **{k: v.detach() for k, v in metrics.items()}}
