"""The `mmssl` command: its subcommands, their help, and the error for an unknown one."""
from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import tomllib
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from mmssl import cli
from mmssl.io.checkpoint import REMEDY

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["audit-dataset", "build-manifest", "eval-av", "eval-pretext", "export", "make-shards", "make-synthetic",
            "plot", "pretrain", "transfer", "visualize"]


def mmssl(*args: str) -> subprocess.CompletedProcess:
    """`mmssl ARGS` as the console script runs it (`python -m mmssl.cli` where the script is not installed),
    with -X importtime: the modules it imported, on stderr."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "mmssl.cli", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_console_script_is_the_dispatcher() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert pkgutil.resolve_name(scripts["mmssl"]) is cli.main
    assert list(cli.commands()) == COMMANDS


def test_help_lists_every_command_without_loading_torch() -> None:
    done = mmssl("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: mmssl [-h] command [args ...]")
    for command in COMMANDS:
        assert re.search(rf"^  {command} +\S", done.stdout, re.MULTILINE), command
    assert not re.search(r"\|\s+torch$", done.stderr, re.MULTILINE)  # only the command that runs imports torch


def test_unknown_or_missing_command_fails_naming_the_commands() -> None:
    done = mmssl("pretrian", "--out", "x")
    assert done.returncode == 2
    assert "mmssl: error: argument command: invalid choice: 'pretrian'" in done.stderr
    assert all(f"'{command}'" in done.stderr for command in COMMANDS)
    done = mmssl()
    assert done.returncode == 2 and "the following arguments are required: command" in done.stderr


def test_pretrain_help_through_the_console_entry_point(capsys: pytest.CaptureFixture) -> None:
    """In this process (a new one would spend seconds importing torch): the script's function itself."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["pretrain", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mmssl pretrain [-h] [--config CONFIG] [--out OUT] [--resume RESUME]")
    assert "Self-supervised pretraining of a video encoder on a pretext task." in out
    assert re.search(r"--resume RESUME +'auto': continue the run in --out", out)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_its_arguments_under_its_own_name(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mmssl {command} [-h]")
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--no-such-option"])
    assert exited.value.code == 2
    assert f"mmssl {command}: error: " in capsys.readouterr().err


@pytest.mark.parametrize("command", ["pretrain", "transfer"])
def test_import_of_a_missing_module_fails_naming_it(command: str, capsys: pytest.CaptureFixture) -> None:
    """`--import MODULE` registers a user's own tasks (tests/test_registry.py runs one); a module that
    is not there is a usage error that names it."""
    args = ["--random-init", "tiny3d"] if command == "transfer" else []
    with pytest.raises(SystemExit) as exited:
        cli.main([command, *args, "--import", "no_such_tasks_module"])
    assert exited.value.code == 2
    assert "--import no_such_tasks_module: No module named 'no_such_tasks_module'" in capsys.readouterr().err


def one_line_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """The stderr of `mmssl ARGV`, which must fail with exit status 2 and print one line."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_the_projects_own_errors_are_one_line_and_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A bad config value, a missing manifest, a file that is no checkpoint (never PyTorch's offer to load it
    with weights_only=False), a damaged metrics file: each command says so in one line, no traceback."""
    assert one_line_error(capsys, "pretrain", "task.order.positive_share=1.5") == (
        "mmssl pretrain: error: task.order.positive_share=1.5 is out of range: it must be >= 0 and <= 1")
    missing = tmp_path / "missing.csv"
    assert one_line_error(capsys, "transfer", "--random-init", "tiny3d", "--manifest", str(missing)).startswith(
        f"mmssl transfer: error: no manifest at {missing}")
    notes = tmp_path / "notes.pt"
    notes.write_text("not a checkpoint")
    line = one_line_error(capsys, "eval-av", "--checkpoint", str(notes))
    assert line.startswith(f"mmssl eval-av: error: {notes} is not a readable checkpoint") and "weights_only" not in line
    torch.save({"config": Fraction(1, 2)}, notes)
    line = one_line_error(capsys, "eval-pretext", str(notes))
    assert line.startswith(f"mmssl eval-pretext: error: {notes} is not a checkpoint of tensors and plain values")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\nnot json\n{"step": 2, "loss": 0.4}\n')
    assert one_line_error(capsys, "plot", str(tmp_path)) == (
        f"mmssl plot: error: {tmp_path / 'metrics.jsonl'}:2 is not a JSON record: 'not json'")


def test_the_scripts_in_tools_report_the_same_way(tmp_path: Path) -> None:
    missing = tmp_path / "checkpoint_000001.pt"
    done = subprocess.run([sys.executable, str(ROOT / "tools/transfer.py"), "--checkpoint", str(missing),
                           f"synthav_dir={tmp_path}"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    expected = f"transfer.py: error: {missing} is not a readable checkpoint (No such file or directory): {REMEDY}"
    assert done.stderr.splitlines() == [expected]
    assert not list(tmp_path.iterdir())  # it failed before it made (or read) any data
