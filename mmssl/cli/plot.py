"""Draw the training curves of one or more pretraining runs against the step, overlaid, to a PNG.

  mmssl plot RUN [RUN ...] [--out FILE.png]
(`python tools/plot.py ...` is the same; `mmssl pretrain` draws its run's at the end, as RUN/metrics.png.)

Reads each RUN/metrics.jsonl (docs/training.md#logging-metricsjsonl) and draws, one panel each: the loss,
the pretext accuracy (where the task logs one), the online kNN top-1 (with the monitor on), the learning
rate, samples/s and the share of time spent waiting for data; one colour per run (the legend names the run
folder and its task), one line style per entry where a run logs several of a panel (a multi-task run's
<task>/loss, an audio-visual task's video_ and audio_accuracy). A step logged twice (before mmssl dropped
a killed run's records past its checkpoint on resume) is drawn with its last value; a last line a kill cut
short is left out. Writes RUN/metrics.png for one run, curves.png in this folder for several (--out to choose).
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mmssl.cli import command
from mmssl.errors import MmsslError


@dataclass(frozen=True)
class Panel:
    """One panel: the metrics.jsonl keys it draws (`takes(key)`), its axis label and the scale of the values."""

    label: str
    takes: Callable[[str], bool]
    scale: float = 1.0


PANELS = (
    Panel("loss", lambda key: key == "loss" or key.endswith("/loss")),
    Panel("pretext accuracy (%)", lambda key: key.endswith("accuracy"), 100.0),
    Panel("kNN top-1 (%)", lambda key: key == "knn_top1"),
    Panel("learning rate", lambda key: key == "lr"),
    Panel("samples/s", lambda key: key == "samples_per_s"),
    Panel("data wait (% of time)", lambda key: key == "data_wait_share", 100.0),
)
STYLES = ("-", "--", ":", "-.")  # a run's entries within one panel
MARKED_BELOW = 30  # series shorter than this get a marker on each point


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> Path:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a pretraining run's folder (its --out), holding "
                                                              "metrics.jsonl")
    parser.add_argument("--out", help="the PNG to write (default RUN/metrics.png for one run, curves.png for several)")
    args = parser.parse_args(argv)
    runs = [Path(run) for run in args.runs]
    for run in runs:
        if not (run / "metrics.jsonl").is_file():
            parser.error(f"{run} holds no metrics.jsonl: name the --out of a pretraining run")
    out = Path(args.out) if args.out else runs[0] / "metrics.png" if len(runs) == 1 else Path("curves.png")
    plot_runs(runs, out)
    print(f"wrote {out}")
    return out


def plot_runs(runs: list[Path], out: Path) -> Path:
    """The curves of the runs in folders `runs`, overlaid, as a PNG at `out`."""
    figure = draw(runs)
    figure.savefig(out, dpi=100)
    return out


def draw(runs: list[Path]) -> Figure:
    """The figure of `plot_runs`: a panel per kind of metric that any of the runs logged, in two columns
    sharing the step axis; in a panel a colour per run (named in the legend on top) and a line style per key."""
    matplotlib.use("Agg")  # drawn to a file, never to a window
    records = [read_records(run / "metrics.jsonl") for run in runs]
    logged = {key for run in records for record in run for key in record}
    # per panel its keys, a run's total loss before the tasks' own (a multi-task run's <task>/loss), else by name
    panels = [(panel, sorted(filter(panel.takes, logged), key=lambda key: ("/" in key, key))) for panel in PANELS]
    panels = [(panel, keys) for panel, keys in panels if keys]
    if not panels:
        raise MmsslError(f"{', '.join(str(run / 'metrics.jsonl') for run in runs)}: no training record yet")
    rows = math.ceil(len(panels) / 2)
    figure = Figure(figsize=(12, 0.6 + 2.6 * rows), layout="constrained")
    grid = figure.subplots(rows, 2, sharex=True, squeeze=False)
    colours = cycle(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    colour_of = {run: next(colours) for run in runs}
    labels = run_labels(runs)
    for ax, (panel, keys) in zip(grid.flat, panels, strict=False):
        style_of = dict(zip(keys, cycle(STYLES)))
        for run, label, run_records in zip(runs, labels, records, strict=True):
            for key in keys:
                steps, values = series(run_records, key)
                if steps:
                    ax.plot(steps, [v * panel.scale for v in values], style_of[key], color=colour_of[run],
                            marker="o" if len(steps) < MARKED_BELOW else None, markersize=3, label=f"{label}: {key}")
        ax.set_ylabel(panel.label)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        if len(keys) > 1:  # which key each line style draws; the colours are the runs
            ax.legend([Line2D([], [], color="0.3", linestyle=style) for style in style_of.values()], keys,
                      fontsize="small")
    for ax in grid.flat[len(panels):]:
        ax.set_visible(False)
    for column in range(min(len(panels), 2)):  # the lowest panel of each column
        bottom = grid[(len(panels) - 1 - column) // 2, column]
        bottom.set_xlabel("optimizer step")
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))  # shared by the column: whole steps
        bottom.xaxis.set_tick_params(labelbottom=True)
    figure.legend([Line2D([], [], color=colour_of[run], linewidth=2) for run in runs], labels,
                  loc="outside upper center", ncols=min(len(runs), 4), frameon=False)
    return figure


def run_labels(runs: list[Path]) -> list[str]:
    """Each run's legend entry: its folder's name (its path where two share a name) and its task, where the
    name does not say it."""
    names = [run.name for run in runs]
    labels = [str(run) if names.count(run.name) > 1 else run.name for run in runs]
    return [label if (task := task_of(run)) in label else f"{label} ({task})" for label, run in zip(labels, runs, strict=True)]


def task_of(run: Path) -> str:
    """The task the run in folder `run` trained (from its config.json), "?" when it has none."""
    config = run / "config.json"
    return json.loads(config.read_text())["task"]["name"] if config.is_file() else "?"


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The steps that logged `key` in order, and its values (a step logged twice: its last value)."""
    by_step = {r["step"]: r[key] for r in records if key in r and "step" in r}
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
