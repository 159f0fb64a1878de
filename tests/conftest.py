"""Shared fixtures: a tiny SynthAV dataset made once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mmssl.data.synthetic import SynthAVConfig, generate

if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker per core: more threads than cores slows small ops ~4x
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and the tools the tests run as subprocesses

TINY_SYNTHAV = SynthAVConfig(size=32, fps=8.0, duration=3.0, num_pretrain=24, train_per_class=2,
                             test_per_class=2, no_audio_share=0.2, short_share=0.0)


@pytest.fixture(scope="session")
def tiny_synthav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a tiny SynthAV (32 px, 8 fps, 3 s; 24 pretrain, 20 train, 20 test videos)."""
    folder = tmp_path_factory.mktemp("synthav")
    generate(folder, TINY_SYNTHAV, workers=1)
    return folder
