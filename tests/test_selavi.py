"""SeLaVi (docs/methods.md#selavi) and XDC (docs/methods.md#xdc): Sinkhorn-Knopp's equal-sized labels,
the labels each head of both towers learns, the denser passes early, and XDC's cross-modal labels."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mmssl.models import build_encoder
from mmssl.tasks.pseudo_labels import nmi
from mmssl.tasks.selavi import SeLaVi, SeLaViConfig, sinkhorn_knopp
from mmssl.tasks.xdc import AUDIO_LEARNS, VIDEO_LEARNS, XDC, XDCConfig


def test_sinkhorn_knopp_gives_equal_clusters_of_a_skewed_input_and_converges() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(600, 6))
    logits[:, 0] += 3  # argmax alone puts 558 of the 600 rows in cluster 0
    log_p = F.log_softmax(torch.tensor(logits), -1).numpy()
    assert np.bincount(log_p.argmax(1))[0] > 500
    labels, iterations = sinkhorn_knopp(log_p, lam=20.0, tolerance=1e-6, max_iterations=1000)
    assert iterations < 1000
    sizes = np.bincount(labels, minlength=6)
    assert sizes.min() >= 95 and sizes.max() <= 105  # 100 each, up to the argmax of the transport plan
    assert sinkhorn_knopp(log_p, lam=20.0, tolerance=1e-6, max_iterations=3)[1] == 3  # the cap stops it


def test_both_towers_heads_learn_the_same_labels() -> None:
    """Head h of either tower always answers cluster h (a bias): the loss is that of each head's
    answer scored against labels[h], alike for the video and the audio head."""
    task = SeLaVi(SeLaViConfig(clip_len=2, heads=2, clusters=3), "tiny_audio")
    encoder = build_encoder("tiny3d")
    head = task.build_head(encoder)
    with torch.no_grad():
        for h, (video, audio) in enumerate(zip(head.video_heads, head.audio_heads, strict=True)):
            for layer in (video, audio):
                layer.weight.zero_()
                layer.bias.copy_(F.one_hot(torch.tensor(h), 3) * 4.0)
    labels = torch.tensor([[0, 0, 1, 2], [1, 1, 1, 0]])
    task.set_labels(labels)
    batch = {"frames": torch.randint(0, 256, (4, 2, 16, 16, 3), dtype=torch.uint8), "audio": torch.randn(4, 16000),
             "row": torch.arange(4)}
    out = task.loss(batch, encoder, head)
    answers = torch.stack([F.one_hot(torch.full((4,), h), 3) * 4.0 for h in range(2)])
    expected = torch.stack([F.cross_entropy(answers[h], labels[h]) for h in range(2)]).mean()
    torch.testing.assert_close(out["loss"], expected)
    assert out["video_accuracy"] == out["audio_accuracy"] == 0.5


def test_labelling_passes_come_denser_early() -> None:
    task = SeLaVi(SeLaViConfig(label_spacing=1.0), "tiny_audio")
    assert [epoch for epoch in range(30) if task.labels_due(epoch)] == [0, 1, 4, 9, 16, 25]
    task.config.label_spacing = 2.0
    assert [epoch for epoch in range(30) if task.labels_due(epoch)] == [0, 2, 8, 18]


def test_xdc_labels_each_tower_by_the_other_modality_s_clusters() -> None:
    rng = np.random.default_rng(0)
    video_groups, audio_groups = rng.integers(0, 3, 300), rng.integers(0, 3, 300)  # unrelated partitions
    centres = rng.normal(size=(3, 16)) * 5
    features = {"video": (rng.normal(size=(300, 16)) + centres[video_groups]).astype(np.float32),
                "audio": (rng.normal(size=(300, 16)) + centres[audio_groups]).astype(np.float32)}
    task = XDC(XDCConfig(clusters=3, pca_dim=8), "tiny_audio")
    labels = task.assign(features, seed=0)
    assert labels.shape == (2, 300)
    assert nmi(labels[VIDEO_LEARNS], audio_groups) > 0.99 and nmi(labels[AUDIO_LEARNS], video_groups) > 0.99
