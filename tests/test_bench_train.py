"""tools/bench_train.py --quick: both parts run on a CPU and report consistent numbers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_quick(tiny_synthav: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench_train.json"
    result = subprocess.run([sys.executable, str(ROOT / "tools/bench_train.py"), "--quick", "--synthav-dir",
                             str(tiny_synthav), "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    variants = report["compute"]["variants"]
    assert report["compute"]["flops_per_step"] > 0
    assert variants["fp32 eager"]["speedup_vs_fp32_eager"] == 1.0
    assert {"bf16 autocast", "bf16 + channels_last_3d"} <= set(variants)
    assert report["end_to_end"]["task"] == "avc"  # AVTS, the default --pretrain-config
    assert report["end_to_end"]["decode_samples_per_s"] > 0 and report["end_to_end"]["workers_to_feed_compute"] >= 1
    for workers in ("0", "1"):
        r = report["end_to_end"]["workers"][workers]
        assert r["step_s"] > 0 and 0 <= r["data_wait_share"] <= 1
    assert "x fp32 eager" in result.stdout and "e2e / compute" in result.stdout
