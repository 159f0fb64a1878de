"""The house contract: one registry style, tasks with their settings, declarations and shipped configs,
names that agree, renamed keys, and a task of the user's own registered from outside the package."""
from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import PRETRAINING_CONFIGS  # tests/ is on sys.path under pytest

from mmssl.config import Config, ConfigError, TransferConfig, from_dict, load_config, to_dict
from mmssl.engine.trainer import _check_resumed_config, pretrain
from mmssl.eval.pretext import evaluate_pretext
from mmssl.eval.transfer import Transfer, load_encoder
from mmssl.registry import ENCODER_INPUTS, LABEL_FAMILIES, LOSSES, TASKS, Registry, UnknownNameError, register_task
from mmssl.tasks import build_task
from mmssl.tasks.base import PretextMetric

PLUGINS = Path(__file__).resolve().parent / "plugins"
BUILT_IN = {name: cls for name, cls in TASKS.items() if cls.__module__.startswith("mmssl.")}


def test_every_registered_task_has_a_shipped_config_and_every_config_a_registered_task() -> None:
    named = {yaml.safe_load(path.read_text())["task"]["name"] for path in PRETRAINING_CONFIGS}
    assert set(BUILT_IN) <= named, f"registered tasks without a config in configs/pretrain/: {set(BUILT_IN) - named}"
    assert named <= set(TASKS), f"configs naming no registered task: {named - set(TASKS)}"


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_task_key_file_and_class_agree(name: str) -> None:
    cls = BUILT_IN[name]
    assert cls.__module__ == f"mmssl.tasks.{name}" and cls.name == name
    assert cls.__name__.lower().startswith(name.replace("_", "")), f"{cls.__name__} does not start with {name!r}"
    assert cls.config_class is None or cls.config_class.__module__ == cls.__module__  # settings live with the task


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_built_in_task_declares_its_metric_label_family_and_input(name: str) -> None:
    cls = BUILT_IN[name]
    assert {"metric", "label_family", "encoder_input"} <= set(vars(cls)), "declare them in @register_task"
    assert isinstance(cls.metric, PretextMetric) and cls.label_family in LABEL_FAMILIES
    assert cls.encoder_input in ENCODER_INPUTS


def test_registration_refuses_an_unknown_label_family_or_input() -> None:
    with pytest.raises(ValueError, match="label_family 'scene' is not one of action, object"):
        register_task("scene_task", label_family="scene")
    with pytest.raises(UnknownNameError, match="unknown encoder input 'edges'; known: lightness, luma, rgb, sobel, waveform"):
        register_task("edge_task", encoder_input="edges")
    assert "scene_task" not in TASKS and "edge_task" not in TASKS


def test_task_sections_are_assembled_from_the_registry() -> None:
    config = Config()
    assert {f for f in vars(config.task) if f != "name"} == {n for n, c in TASKS.items() if c.config_class}
    assert all(isinstance(getattr(config.task, n), c.config_class) for n, c in TASKS.items() if c.config_class)


def test_registry_lists_rejects_twice_and_names_the_known() -> None:
    registry: Registry[torch.nn.Module] = Registry("thing")
    registry.register("linear")(torch.nn.Linear)
    assert list(registry) == ["linear"] and registry.items() == [("linear", torch.nn.Linear)]
    with pytest.raises(ValueError, match="already registered"):
        registry.register("linear")(torch.nn.Linear)
    with pytest.raises(UnknownNameError, match="unknown thing 'conv'; known: linear"):
        registry.get("conv")
    with pytest.raises(ConfigError, match="unknown task .nope."):
        build_task(load_config(None, ["task.name=nope"]))
    assert {"nt_xent", "moco", "byol", "simsiam", "barlow_twins", "vicreg"} <= set(LOSSES)  # registered on import


def test_a_renamed_key_fails_naming_the_new_one() -> None:
    with pytest.raises(ConfigError, match="'task.order.motion_candidates' is now 'task.order.motion.candidates'"):
        load_config(None, ["task.order.motion_candidates=4"])


def test_saved_configs_load_to_exactly_their_values_or_fail_saying_what_to_do() -> None:
    saved = to_dict(Config())
    saved["task"]["order"].pop("motion")
    saved["task"]["order"]["motion_candidates"] = 7  # an old checkpoint's key, renamed since
    saved["optim"]["lr"] = 0.5
    config = from_dict(saved)
    assert config.optim.lr == 0.5 and config.task.order.motion.candidates == 7
    saved["task"]["opn"]["gone"] = 1  # a setting of a task this run did not use: irrelevant
    assert from_dict(saved).task.order.motion.candidates == 7
    saved["task"]["order"]["gone"] = 1  # a setting of the run's own task that no longer exists
    with pytest.raises(ConfigError, match="task.order.gone.*mmssl version that wrote it"):
        from_dict(saved)
    saved["task"]["order"].pop("gone")
    saved["task"]["name"], saved["task"]["own_task"] = "own_task", {"k": 4}  # a task whose module is not imported
    with pytest.raises(ConfigError, match=r"task 'own_task' is not registered.*--import MODULE"):
        from_dict(saved)


def test_a_clip_contrastive_checkpoint_keeps_its_own_methods_momentum() -> None:
    """Before `momentum`, saved configs held moco_momentum and byol_momentum: the run's method picks."""
    for loss, wanted in (("moco", 0.99), ("byol", 0.9), ("nt_xent", None)):
        saved = to_dict(Config())
        section = saved["task"]["clip_contrastive"]
        section.pop("momentum")
        section |= {"loss": loss, "moco_momentum": 0.99, "byol_momentum": 0.9}
        assert from_dict(saved).task.clip_contrastive.momentum == wanted
    renamed = "'task.clip_contrastive.byol_momentum' is now 'task.clip_contrastive.momentum'"
    with pytest.raises(ConfigError, match=renamed):
        load_config(None, ["task.clip_contrastive.byol_momentum=0.99"])


def test_resume_auto_compares_only_what_the_run_uses_as_this_version_reads_it(tmp_path: Path) -> None:
    """A run saved before a rename in another task's section (or before a setting was added) resumes."""
    config = Config()
    saved = to_dict(config)
    clip = saved["task"]["clip_contrastive"]
    clip.pop("momentum")
    clip |= {"moco_momentum": 0.999, "byol_momentum": 0.996, "queue_size": 65536}  # the old keys and default
    saved["task"]["opn"].pop("motion")  # a section of a task the run does not use
    _check_resumed_config(saved, config, tmp_path / "checkpoint.pt", implicit=True, warn=False)
    saved["task"]["order"]["tau_max_s"] = 1.0  # but a change to the run's own task is refused
    with pytest.raises(ConfigError, match=r"other settings \(task.order.tau_max_s: 1.0 -> 2.0\)"):
        _check_resumed_config(saved, config, tmp_path / "checkpoint.pt", implicit=True, warn=False)


def test_a_task_of_ones_own_pretrains_and_transfers(tiny_synthav: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """One task file and one YAML outside the package: registered by importing the module."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setattr(TASKS, "_builders", dict(TASKS._builders))  # the registration ends with the test
    monkeypatch.delitem(sys.modules, "arrow_of_time", raising=False)
    module = importlib.import_module("arrow_of_time")
    assert TASKS.get("arrow_of_time") is module.ArrowOfTime
    with pytest.raises(ValueError, match="already registered"):
        register_task("arrow_of_time")(module.ArrowOfTime)
    config = load_config(PLUGINS / "arrow_of_time.yaml", [f"data.synthav_dir={tiny_synthav}"])
    checkpoint = pretrain(config, tmp_path / "run")
    encoder, name, mode, encoder_input = load_encoder(checkpoint)
    assert (name, mode, encoder_input) == ("tiny3d", "clip", "rgb")  # it declares nothing: the defaults
    transfer = TransferConfig(protocol="knn", synthav_dir=str(tiny_synthav), frame_size=32, clip_len=4,
                              num_clips=1, num_workers=0)
    result = Transfer(transfer).evaluate(encoder, mode, encoder_input)
    assert 0.0 <= result["video_top1"] <= 100.0 and result["num_test_videos"] == 20
    held_out = evaluate_pretext(checkpoint)  # its metric by default: the loss, with no known chance level
    loss = held_out["metrics"]["loss"]
    assert set(held_out["metrics"]) == {"loss"} and "z" not in loss  # no chance level: no distance from it
    assert (loss["value"], loss["higher_is_better"], loss["chance"]) == (held_out["loss_dict"]["loss"], False, None)
    assert loss["units"] == 1 and loss["se"] is None  # 20 videos in one batch of 32: no spread to measure
    assert (held_out["label_family"], held_out["samples"]) == ("action", 20)
    assert inspect.getsourcefile(module.ArrowOfTime).startswith(str(PLUGINS))
