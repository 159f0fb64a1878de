"""`mmssl plot` and the curves `mmssl pretrain` draws at the end of a run, from real short runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmssl import cli
from mmssl.cli.plot import draw

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model.video_encoder=tiny3d", "data.frame_size=32", "data.batch_size=8", "data.num_workers=0",
        "train.log_every=1", "train.max_steps=2", "monitor.clip_len=4"]


@pytest.fixture(scope="module")
def runs(tiny_synthav: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs of `mmssl pretrain`: Shuffle and Learn with the kNN monitor, and rotation."""
    folder = tmp_path_factory.mktemp("runs")
    for name, args in (("order", ["monitor.every=2"]),
                       ("rotation", ["--config", str(ROOT / "configs/pretrain/rotation.yaml")])):
        cli.main(["pretrain", "--out", str(folder / name), f"data.synthav_dir={tiny_synthav}", *FAST, *args])
    return [folder / "order", folder / "rotation"]


def png(path: Path) -> np.ndarray:
    """The pixels of the PNG at `path` (decoded in full: a damaged file fails)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def lines(figure_axes: list, ylabel: str) -> dict[str, tuple[list, list]]:
    """The lines of the panel labelled `ylabel`: label -> (steps, values)."""
    (ax,) = [ax for ax in figure_axes if ax.get_ylabel() == ylabel]
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_pretraining_draws_its_curves_at_the_end(runs: list[Path]) -> None:
    for run in runs:
        pixels = png(run / "metrics.png")
        assert pixels.shape == (840, 1200, 3)  # 3 rows of panels (order: 6, rotation: 5 without kNN), 100 dpi
        assert (pixels.min(axis=2) < 128).mean() > 0.01  # drawn on, not blank


def test_several_runs_are_overlaid(runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plot", *map(str, runs)]) == 0
    assert png(tmp_path / "curves.png").shape == (840, 1200, 3)
    figure = draw(runs)
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["order", "rotation"]
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in axes] == ["loss", "pretext accuracy (%)", "kNN top-1 (%)", "learning rate",
                                                "samples/s", "data wait (% of time)"]
    loss = lines(axes, "loss")
    assert set(loss) == {"order: loss", "rotation: loss"}
    for run in runs:
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert loss[f"{run.name}: loss"] == ([1, 2], [r["loss"] for r in logged if "loss" in r])
        accuracy = lines(axes, "pretext accuracy (%)")[f"{run.name}: accuracy"][1]
        assert accuracy == pytest.approx([100 * r["accuracy"] for r in logged if "accuracy" in r])
    assert list(lines(axes, "kNN top-1 (%)")) == ["order: knn_top1"]  # rotation ran without the monitor
    assert lines(axes, "kNN top-1 (%)")["order: knn_top1"][0] == [0, 2]


def test_a_replayed_step_is_drawn_once_and_a_cut_last_line_left_out(tmp_path: Path) -> None:
    """A resumed run's records as written before mmssl dropped those past the checkpoint, the last line
    cut by a kill; the run has no config.json: its task is unknown."""
    run = tmp_path / "killed"
    run.mkdir()
    records = [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.8}, {"step": 2, "loss": 0.7}, {"step": 3, "loss": 0.6}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records)[:-10])
    figure = draw([run])
    assert lines(figure.axes, "loss") == {"killed (?): loss": ([1, 2], [0.9, 0.7])}


def test_a_folder_without_metrics_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["plot", str(tmp_path)])
    assert exited.value.code == 2
    assert f"{tmp_path} holds no metrics.jsonl: name the --out of a pretraining run" in capsys.readouterr().err
