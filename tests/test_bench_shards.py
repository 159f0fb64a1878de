"""tools/bench_shards.py --quick: one epoch from the files and one from the shards, measured and tabled."""
from __future__ import annotations

from pathlib import Path

from helpers import run_quick_bench  # tests/ is on sys.path under pytest


def test_bench_shards_quick(tiny_synthav: Path, tmp_path: Path) -> None:
    result, report = run_quick_bench("bench_shards", tiny_synthav, tmp_path)
    (name, dataset), = report["datasets"].items()
    assert name == "synthav" and dataset["videos"] == 24 and dataset["pack_seconds"] > 0
    run = dataset["runs"]["1"]
    assert run["files"]["samples"] == run["shards"]["samples"] == 32  # 24 videos in whole batches of 16
    table = [line.split() for line in result.stdout.splitlines() if line.startswith(name)]
    assert len(table) == 1 and float(table[0][-1]) > 0  # shards/files last
