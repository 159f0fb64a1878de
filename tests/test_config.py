"""Config values with a range are checked at load time, and a bad YAML file is a ConfigError: one line
naming the key or the file, never a traceback from deep inside torch or the YAML parser."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import mmssl.tasks  # noqa: F401  (registers the tasks: their sections join the config)
from mmssl import cli
from mmssl.config import ConfigError, TransferConfig, load_config, to_dict

OUT_OF_RANGE = [("data.batch_size=0", ">= 1"), ("data.batch_size=-4", ">= 1"), ("data.num_workers=-1", ">= 0"),
                ("train.max_steps=-5", ">= 0"), ("train.checkpoint_every=0", ">= 1"), ("train.keep_last=0", ">= 1"),
                ("optim.lr=0", "> 0"), ("optim.accumulate=0", ">= 1"), ("data.max_skip_share=1.5", ">= 0 and <= 1"),
                ("monitor.every=-1", ">= 0"), ("monitor.num_clips=0", ">= 1"), ("monitor.k=0", ">= 1"),
                ("monitor.temperature=0", "> 0")]


# each task's settings (and its sections, e.g. the motion weighting), and the list-valued settings
SECTIONS_OUT_OF_RANGE = [
    ("task.order.positive_share=1.5", ">= 0 and <= 1"), ("task.order.motion.candidates=0", ">= 1"),
    ("task.opn.num_frames=2", ">= 3"), ("task.opn.dropout=1", ">= 0 and < 1"), ("task.vcop.num_clips=1", ">= 2"),
    ("task.vcop.interval=-1", ">= 0"), ("task.masked_video.mask_ratio=1", "> 0 and < 1"),
    ("task.clip_contrastive.temperature=0", "> 0"), ("task.clip_contrastive.hue=0.6", ">= 0 and <= 0.5"),
    ("task.avc.hard_share=-0.1", ">= 0 and <= 1"), ("task.av_contrastive.audio_s=0", "> 0"),
    ("task.wav2vec2.mask_length=0", ">= 1"), ("task.wav2vec2.temperature_decay=0", "> 0 and <= 1"),
    ("task.multitask.weights=[1, -1]", ">= 0"), ("data.crop_scale=[0, 1]", "> 0 and <= 1"),
    ("optim.betas=[0.9, 1.0]", ">= 0 and < 1")]


@pytest.mark.parametrize(("override", "rule"), OUT_OF_RANGE + SECTIONS_OUT_OF_RANGE)
def test_a_value_out_of_its_range_fails_naming_the_key(override: str, rule: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.+ is out of range: it must be {re.escape(rule)}$"):
        load_config(None, [override])


def test_the_defaults_and_unset_optional_values_are_in_range() -> None:
    config = load_config(None, ["task.name=clip_contrastive", "task.clip_contrastive.loss=moco"])
    assert config.task.clip_contrastive.temperature is None  # None: the method's own value, not checked
    assert load_config(None, ["task.clip_contrastive.temperature=0.2"]).task.clip_contrastive.temperature == 0.2


def test_transfer_values_are_checked_too_and_the_edges_pass() -> None:
    with pytest.raises(ConfigError, match="knn_k=0 is out of range"):
        load_config(None, ["knn_k=0"], root=TransferConfig)
    edges = ["data.num_workers=0", "train.max_steps=0", "optim.grad_clip=0", "data.max_skip_share=1"]
    config = load_config(None, edges)
    assert (config.data.num_workers, config.train.max_steps, config.data.max_skip_share) == (0, 0, 1.0)


def test_bad_yaml_and_empty_files_are_config_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("data:\n  batch_size: [8\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML: .*line"):
        load_config(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match="override 'optim.lr=\\[1' is not valid YAML"):
        load_config(None, ["optim.lr=[1"])


def test_the_command_line_reports_a_bad_value_in_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["pretrain", "data.batch_size=0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mmssl pretrain: error: data.batch_size=0 is out of range: it must be >= 1"]


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("argv", "root", "config", "overrides"), [
    (["pretrain", "--config", "configs/pretrain/multitask.yaml", "optim.lr=0.5", "--print-config",
      "data.crop_scale=[0.25, 1.0]"], None, "configs/pretrain/multitask.yaml",
     ["optim.lr=0.5", "data.crop_scale=[0.25, 1.0]"]),
    (["transfer", "--print-config", "--config", "configs/transfer/knn.yaml", "--protocol", "finetune", "knn_k=7"],
     TransferConfig, "configs/transfer/knn.yaml", ["protocol=finetune", "knn_k=7"]),
], ids=["pretrain", "transfer"])
def test_print_config_prints_the_resolved_tree_that_loads_back(argv: list[str], root: type | None, config: str,
                                                               overrides: list[str], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """`--print-config` prints the tree a run would use, as YAML that loads back to the same values,
    each setting's description (its comment in the source) as a comment, and starts nothing."""
    kwargs = {"root": root} if root else {}
    expected = load_config(ROOT / config, overrides, **kwargs)
    cli.main([argv[0], *(str(ROOT / a) if a.startswith("configs/") else a for a in argv[1:])])
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    assert to_dict(load_config(tmp_path / "printed.yaml", **kwargs)) == to_dict(expected)
    if root is None:
        assert ("\n  frame_size: 64  # decoder: short side scaled to frame_size (aspect kept), centre crop to a "
                "square\n") in printed
        assert "\n  lr: 0.5  # for batch_size 32 per optimizer step; scaled linearly with the total batch\n" in printed
        used = {"name", expected.task.name, *expected.task.multitask.tasks}
        task_section = printed.split("\ntask:")[1].split("\noptim:")[0]
        assert set(re.findall(r"^  (\w+):", task_section, re.MULTILINE)) == used  # no other task's section
        assert "\n    motion:  # " in printed  # a section's own description: its docstring's first sentence
    else:
        assert printed.startswith("protocol: finetune  # linear (probe on frozen features), knn (and retrieval), or "
                                  "finetune\n")
        assert "\nknn_k: 7  # weighted kNN: neighbours that vote (DINO's 20)\n" in printed
