"""A run owns its --out: a second run (or a resume) against a live run's folder is refused in one line;
the lock of a run that died is taken over; the lock goes with the run."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mmssl.config import ConfigError, load_config
from mmssl.engine.lock import LOCK_NAME, RunLock
from mmssl.engine.trainer import pretrain


def write_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01 00:00:00"}))
    return path


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_a_live_runs_folder_is_refused_and_released_after(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
        with pytest.raises(ConfigError, match=rf"{tmp_path} is in use by another run \(pid \d+ on "):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_dead_runs_lock_is_taken_over_and_another_hosts_is_not(tmp_path: Path) -> None:
    write_lock(tmp_path, dead_pid())
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] != 0
    write_lock(tmp_path, 1, host="another-machine")
    with pytest.raises(ConfigError, match=r"pid 1 on another-machine.*delete it"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text("")  # a writer killed mid-write leaves an empty file: stale
    with RunLock(tmp_path):
        pass


def test_pretraining_into_a_live_runs_folder_is_refused_before_it_starts(tiny_synthav: Path, tmp_path: Path) -> None:
    config = load_config(None, [f"data.synthav_dir={tiny_synthav}", "data.frame_size=32", "data.batch_size=8",
                                "data.num_workers=0", "train.max_steps=1"])
    with RunLock(tmp_path), pytest.raises(ConfigError, match="is in use by another run"):
        pretrain(config, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, the lock released
    (tmp_path / ".checkpoint_000001.pt.4242.tmp").write_bytes(b"half")  # a write a kill cut short
    pretrain(config, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000001.pt", "config.json", "metrics.jsonl"]
