"""Config values with a range are checked at load time, and a bad YAML file is a ConfigError: one line
naming the key or the file, never a traceback from deep inside torch or the YAML parser."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmssl import cli
from mmssl.config import ConfigError, TransferConfig, load_config

OUT_OF_RANGE = [("data.batch_size=0", ">= 1"), ("data.batch_size=-4", ">= 1"), ("data.num_workers=-1", ">= 0"),
                ("train.max_steps=-5", ">= 0"), ("train.checkpoint_every=0", ">= 1"), ("train.keep_last=0", ">= 1"),
                ("optim.lr=0", "> 0"), ("optim.accumulate=0", ">= 1"), ("data.max_skip_share=1.5", ">= 0 and <= 1"),
                ("monitor.every=-1", ">= 0"), ("monitor.num_clips=0", ">= 1"), ("monitor.k=0", ">= 1"),
                ("monitor.temperature=0", "> 0")]


@pytest.mark.parametrize(("override", "rule"), OUT_OF_RANGE)
def test_a_value_out_of_its_range_fails_naming_the_key(override: str, rule: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}=\S+ is out of range: it must be {rule}"):
        load_config(None, [override])


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
    assert err[-1] == "mmssl pretrain: error: data.batch_size=0 is out of range: it must be >= 1"
