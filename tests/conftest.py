"""Shared fixtures: a tiny SynthAV dataset made once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmssl.data.synthetic import SynthAVConfig, generate

TINY_SYNTHAV = SynthAVConfig(size=32, fps=8.0, duration=3.0, num_pretrain=24, train_per_class=2,
                             test_per_class=2, no_audio_share=0.2, short_share=0.0)


@pytest.fixture(scope="session")
def tiny_synthav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a tiny SynthAV (32 px, 8 fps, 3 s; 24 pretrain, 20 train, 20 test videos)."""
    folder = tmp_path_factory.mktemp("synthav")
    generate(folder, TINY_SYNTHAV, workers=1)
    return folder
