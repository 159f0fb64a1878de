"""tools/bench_motion.py --quick: both ways of Shuffle and Learn's loader measured, the memory part each way."""
from __future__ import annotations

from pathlib import Path

from helpers import run_quick_bench  # tests/ is on sys.path under pytest


def test_bench_motion_quick(tiny_synthav: Path, tmp_path: Path) -> None:
    result, report = run_quick_bench("bench_motion", tiny_synthav, tmp_path)
    (name, dataset), = report["datasets"].items()
    assert name == "synthav" and dataset["videos"] == 24 and dataset["store_seconds"] > 0
    for way in ("plain", "stored"):
        assert [e["epoch"] for e in dataset[way]] == [1, 2]
        assert all(e["samples"] == 32 and e["samples_per_s"] > 0 for e in dataset[way])
    assert result.stdout.count("has no stored motion profiles") == 1  # the plain manifest's run says so
    table = [line.split() for line in result.stdout.splitlines() if line.startswith(name)]
    assert len(table) == 1 and float(table[0][-1]) > 0  # epoch 1's row names the dataset, stored/plain last
    memory = report["memory"]
    assert memory["plain"]["cached"] == 2000 and memory["stored"]["cached"] == 0
    assert [r["videos"] for r in memory["stored"]["readings"]] == [0, 500, 1000, 1500, 2000]
