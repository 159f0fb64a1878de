"""tools/bench_train.py --quick: both parts run on a CPU and report consistent numbers (MFU included)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_quick(tiny_synthav: Path, tmp_path: Path) -> None:
    out, peak = tmp_path / "bench_train.json", 1.0
    result = subprocess.run([sys.executable, str(ROOT / "tools/bench_train.py"), "--quick", "--peak-tflops", str(peak),
                             "--synthav-dir", str(tiny_synthav), "--out", str(out)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    variants, flops = report["compute"]["variants"], report["compute"]["flops_per_step"]
    assert flops > 0 and {"fp32 eager", "bf16 autocast", "bf16 + channels_last_3d"} <= set(variants)
    for name, r in variants.items():
        assert r["tflops"] == pytest.approx(flops / r["step_s"] / 1e12), name
        assert r["mfu"] == pytest.approx(r["tflops"] / peak), name
        assert r["speedup_vs_fp32_eager"] == pytest.approx(variants["fp32 eager"]["step_s"] / r["step_s"]), name
        assert any(line.startswith(name) and line.endswith("%") for line in result.stdout.splitlines()), name
    assert report["end_to_end"]["task"] == "avc"  # AVTS, the default --pretrain-config
    assert report["end_to_end"]["decode_samples_per_s"] > 0 and report["end_to_end"]["workers_to_feed_compute"] >= 1
    for workers in ("0", "1"):
        r = report["end_to_end"]["workers"][workers]
        assert r["step_s"] > 0 and 0 <= r["data_wait_share"] <= 1
    assert "x fp32 eager" in result.stdout and "e2e / compute" in result.stdout
