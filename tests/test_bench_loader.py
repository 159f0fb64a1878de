"""tools/bench_loader.py --quick end to end: every backend and pattern measured, pyav frame-exact."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_loader.py"
FILES = ("synthav", "long_gop", "short_gop", "short_gop_cut", "mpeg2_ps_split")
PATTERNS = ("clip16", "clip16_stride4", "scattered4", "frame_first10pct", "frame_last10pct")


def test_quick_run_writes_complete_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(TOOL), "--quick", "--work", str(tmp_path / "media"),
                           "--out", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "default backend:" in done.stdout
    data = json.loads(out.read_text())

    backends = {name for name, status in data["backends"].items() if status == "benchmarked"}
    assert {"pyav", "decord"} <= backends
    assert data["backends"]["torchcodec"] in ("not installed", "installed, but mmssl has no backend for it")
    assert set(data["files"]) == set(FILES)
    for name, info in data["files"].items():
        assert info["sequential_fps"] > 0 and info["num_frames"] == info["sequential_frames"] > 0
        assert name == "mpeg2_ps_split" or info["audio_window_ms"] > 0  # the one without audio
    assert data["files"]["short_gop_cut"]["edit_list_preroll"]
    assert not data["files"]["short_gop"]["edit_list_preroll"]

    for name in FILES:
        assert set(data["results"][name]) == set(PATTERNS)
        for pattern in PATTERNS:
            cells = data["results"][name][pattern]
            assert set(cells) == backends
            for backend, cell in cells.items():
                assert cell["clips_per_s"] > 0 and cell["frames_per_s"] > 0
                assert cell["ratio_to_sequential"] > 0 and cell["work_ratio"] > 0
                assert cell["checked_reads"] == cell["reads"] > 0
                assert 0 <= cell["exact_share"] <= 1
                assert cell["exact_share"] == cell["exact_reads"] / cell["checked_reads"]
            pyav = cells["pyav"]
            assert pyav["exact_share"] == 1 and pyav["wrong_frames"] == {}, (name, pattern, pyav)

    for backend in backends:
        memory = data["memory"][backend]
        assert memory["reads"] > 0 and memory["rss_after_mb"] > 0
    chosen = data["choice"]["backend"]  # correctness first: the default is exact everywhere
    assert chosen in backends and chosen not in data["choice"]["rejected"]
    assert all(cells[chosen]["exact_share"] == 1 for by_pattern in data["results"].values()
               for cells in by_pattern.values())
    assert data["machine"]["cpu_count"] >= 1
