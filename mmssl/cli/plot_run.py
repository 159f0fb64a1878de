"""Draw a pretraining run's loss, and its online kNN top-1 when the monitor was on, against the step.

  mmssl plot-run RUN_DIR [--out FILE.png]
(`python tools/plot_run.py ...` is the same.)

Reads RUN_DIR/metrics.jsonl and writes a PNG (default RUN_DIR/metrics.png): the loss on top and,
below it on the same steps, `knn_top1` (monitor.every, docs/training.md#online-knn-monitor). A step
logged twice (before mmssl dropped a killed run's records past its checkpoint on resume) is drawn with
its last value; a last line a kill cut short is left out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from mmssl.cli import command
from mmssl.errors import MmsslError


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> Path:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a pretraining run's folder (its --out), holding metrics.jsonl")
    parser.add_argument("--out", help="the PNG to write (default RUN/metrics.png)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not (run / "metrics.jsonl").is_file():
        parser.error(f"{run} holds no metrics.jsonl: name the --out of a pretraining run")
    out = plot_run(run, Path(args.out) if args.out else run / "metrics.png")
    print(f"wrote {out}")
    return out


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The steps that logged `key` in order, and its values (a step logged twice: its last value)."""
    by_step = {r["step"]: r[key] for r in records if key in r}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def read_records(metrics: Path) -> list[dict]:
    """The records of a metrics.jsonl; a last line a kill cut short is left out, any other bad line is an
    MmsslError naming it."""
    lines = metrics.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number < len(lines):
                raise MmsslError(f"{metrics}:{number} is not a JSON record: {line[:80]!r}") from None
    return records


def plot_run(run: Path, out: Path) -> Path:
    """Loss (and kNN top-1, when logged) of the run in folder `run` against the step, as a PNG at `out`."""
    records = read_records(run / "metrics.jsonl")
    knn = series(records, "knn_top1")
    config = run / "config.json"
    task = json.loads(config.read_text())["task"]["name"] if config.is_file() else "?"
    matplotlib.use("Agg")  # drawn to a file, never to a window
    panels = [("loss", series(records, "loss"))] + ([("kNN top-1 (%)", knn)] if knn[0] else [])
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(7, 2.6 * len(panels)), squeeze=False)
    for ax, (label, (steps, values)) in zip(axes[:, 0], panels, strict=True):
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("optimizer step")
    axes[0, 0].set_title(f"{run.name} ({task})" + (f": kNN top-1 {knn[1][-1]:.1f}% at step {knn[0][-1]}"
                                                     if knn[0] else ""))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
