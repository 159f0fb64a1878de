"""torch.compile on one shipped pretraining config per task (`train.compile=true`; the methods of a family
share its task code): the compiled step computes the eager loss and gradients, later steps compile nothing
new, and the task code compiles in one graph (breaks only where a function is marked `torch.compiler.disable`
or inside a library). Every config takes a step (bf16 autocast) in test_engine.py.

The graphs are checked with the "aot_eager" backend (Dynamo's capture and AOTAutograd's joint graph,
without code generation: seconds per config); one run goes through the trainer with the default
backend, inductor, end to end."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo
from helpers import PRETRAINING_CONFIGS, one_config_per_task, shipped_config_batches  # tests/ is on sys.path
from torch._dynamo.backends.debugging import ExplainWithBackend
from torch._dynamo.utils import counters

from mmssl.config import load_config
from mmssl.engine.trainer import pretrain
from mmssl.tasks.model import TaskModel

ROOT = Path(__file__).resolve().parents[1]
# wav2vec 2.0's masked steps differ in number from batch to batch: boolean indexing by the mask breaks
# its graph (Dynamo then compiles those parts for dynamic sizes, after a few recompilations), so its
# graph count and breaks are not checked; its loss and gradients are.
DATA_DEPENDENT = {"wav2vec2"}


def without_dropout(model: TaskModel) -> TaskModel:
    """Dropout off (modules, and wav2vec 2.0's on the quantiser input): a compiled graph may draw its
    random numbers in another order than eager, and dropout masks would then differ."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model.task, "config", None)
    if hasattr(config, "feature_dropout"):
        config.feature_dropout = 0.0
    return model


def loss_and_grads(model: torch.nn.Module, forward, batch: dict[str, torch.Tensor]) -> tuple[float, list]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same augmentation, pairs and masks draws
    loss = forward(batch)["loss"]
    loss.backward()
    return float(loss.detach()), [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("path", one_config_per_task(PRETRAINING_CONFIGS), ids=lambda p: p.stem)
def test_compiled_step_matches_eager_and_compiles_once(path: Path, tiny_synthav: Path) -> None:
    eager, data = shipped_config_batches(path, tiny_synthav, count=3)  # steps 1-2 compile, step 3 must not
    without_dropout(eager)
    # before the copy: both tasks at the same step (schedules such as the Gumbel temperature); steps of
    # one curriculum phase (AVTS recompiles once, when hard negatives start)
    eager.task.set_step(1, 1000)
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    counters.clear()
    backend = ExplainWithBackend("aot_eager")  # keeps each graph's break reason: no second capture to explain it
    forward = torch.compile(compiled, backend=backend)
    expected, expected_grads = loss_and_grads(eager, eager, data[0])
    got, grads = loss_and_grads(compiled, forward, data[0])
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(grads) == len(expected_grads) > 0
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-3 * float(e.abs().max()) + 1e-8)

    for step, batch in enumerate(data[1:], start=2):
        compiled.task.set_step(step, 1000)
        loss_and_grads(compiled, forward, batch)
        if step == 2:
            graphs = counters["stats"]["unique_graphs"]
    if path.stem not in DATA_DEPENDENT:  # new step numbers, new masks and pairs: no recompilation
        assert counters["stats"]["unique_graphs"] == graphs

    ours = [b for b in backend.output().break_reasons if "torch.compiler.disable" not in str(b.reason)
            and "/mmssl/" in b.user_stack[-1].filename]
    if path.stem not in DATA_DEPENDENT:
        assert not ours, [f"{b.user_stack[-1].filename}:{b.user_stack[-1].lineno} {b.reason}" for b in ours]


def test_pretraining_with_compile_through_the_trainer(tiny_synthav: Path, tmp_path: Path) -> None:
    """train.compile=true with the default backend (inductor) for a whole, short run."""
    torch._dynamo.reset()
    config = load_config(ROOT / "configs/pretrain/masked_video.yaml", [
        f"data.synthav_dir={tiny_synthav}", "data.frame_size=32", "data.batch_size=4", "data.num_workers=0",
        "train.max_steps=3", "train.log_every=1", "train.compile=true"])
    checkpoint = pretrain(config, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and np.isfinite(losses).all()
    state = torch.load(checkpoint, weights_only=True)["model"]
    assert not any("_orig_mod" in key for key in state)  # saved as a plain model
