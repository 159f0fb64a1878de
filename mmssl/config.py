"""One dataclass tree for a run: defaults here <- a YAML file in configs/ <- dotted CLI overrides.

Unknown keys are errors that name the key; values are checked against the field's type. The `task`
section is assembled from the registered tasks (`mmssl.registry.TASKS`): `task.name` picks the task,
and each task's own settings dataclass (its `config_class`, defined in its file) is `task.<name>`.
This module imports no task: import `mmssl.tasks` (and your own task modules) before building a config.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from mmssl.errors import MmsslError
from mmssl.registry import TASKS


class ConfigError(MmsslError, ValueError):
    """A config key or value that does not fit the tree."""


ABSENT = "<absent>"  # config_changes: the key is not in that tree


@dataclass(frozen=True)
class Bound:
    """The range of a numeric setting: at least `low` (above it, when `strict`), at most `high` (below
    it, when `strict_high`)."""

    low: float | None = None
    high: float | None = None
    strict: bool = False
    strict_high: bool = False

    def admits(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.strict else value >= self.low)
        return above and (self.high is None or (value < self.high if self.strict_high else value <= self.high))

    def __str__(self) -> str:
        low = "" if self.low is None else f"{'>' if self.strict else '>='} {self.low:g}"
        high = "" if self.high is None else f"{'<' if self.strict_high else '<='} {self.high:g}"
        return " and ".join(part for part in (low, high) if part)


POSITIVE, AT_LEAST_1, NON_NEGATIVE, SHARE = Bound(0, strict=True), Bound(1), Bound(0), Bound(0, 1)
AT_LEAST_2, OPEN_SHARE = Bound(2), Bound(0, 1, strict=True, strict_high=True)
SHARE_ABOVE_0, SHARE_BELOW_1 = Bound(0, 1, strict=True), Bound(0, 1, strict_high=True)  # (0, 1] and [0, 1)


@dataclass
class DataConfig:
    manifest: str = ""  # empty: SynthAV under synthav_dir, generated on first use
    shards: str = ""  # a shard folder or URL (tools/make_shards.py), streamed instead of a manifest's files
    shard_buffer: int = 64  # shards: members each DataLoader worker holds in memory to shuffle
    synthav_dir: str = "data/synthav"
    split: str = "pretrain"
    frame_size: int = 64  # decoder: short side scaled to frame_size (aspect kept), centre crop to a square
    backend: str = "pyav"
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # random resized crop area
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # its width / height (log-uniform)
    flip: bool = True
    batch_size: int = 32
    num_workers: int = 2
    max_skip_share: float = 0.05  # of the dataset's files (rows): more distinct files failing to decode stop the run


@dataclass
class ModelConfig:
    video_encoder: str = "tiny3d"
    audio_encoder: str = "tiny_audio"  # audio-visual tasks: logmel_cnn (L3's tower) or tiny_audio


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # for batch_size 32 per optimizer step; scaled linearly with the total batch
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only (VideoMAE: 0.9, 0.95)
    warmup_epochs: float = 1.0
    min_lr: float = 1e-5
    grad_clip: float = 0.0  # 0: off
    accumulate: int = 1  # micro-batches per optimizer step


@dataclass
class TrainConfig:
    epochs: int = 15
    max_steps: int = 0  # 0: epochs decide; else stop after this many optimizer steps
    seed: int = 0
    amp: Literal["auto", "off"] = "auto"  # auto: bf16 autocast on CUDA; off
    compile: bool = False
    channels_last: bool = False
    log_every: int = 10
    checkpoint_every: int = 200  # optimizer steps; a checkpoint is also written at the end
    keep_last: int = 2


@dataclass
class MonitorConfig:
    """The online kNN monitor: weighted-kNN video top-1 (%) of the encoder being trained, on a labeled
    manifest's train/test splits, every `every` optimizer steps (cost: docs/training.md#online-knn-monitor).
    Frames are data.frame_size; clips are uniform, as transfer's (`TransferConfig`). Apart from it,
    `nmi_columns`: what a pseudo-label task's labelling passes are compared with."""

    every: int = 0  # optimizer steps between measurements (also before the first step and at the last); 0: off
    manifest: str = ""  # empty: SynthAV under data.synthav_dir
    train_split: str = "train"  # the videos that vote
    test_split: str = "test"  # the videos scored
    label_column: str = "label"
    num_clips: int = 1  # uniform clips per video: 1 costs half of transfer's 4
    clip_len: int = 8
    stride: int = 2
    k: int = 20
    temperature: float = 0.07
    # columns of the pretraining rows (e.g. SynthAV's label, shape) whose NMI with each labelling pass's
    # pseudo-labels is logged (DeepCluster's NMI against the classes), over the rows with a value
    nmi_columns: list[str] = field(default_factory=list)


def task_config_class() -> type:
    """The `task` section's dataclass: `name`, then one section per registered task with settings."""
    return _task_config_class(tuple((name, cls.config_class) for name, cls in TASKS.items()
                                    if getattr(cls, "config_class", None) is not None))


@functools.cache
def _task_config_class(sections: tuple[tuple[str, type], ...]) -> type:
    fields = [(name, config_class, field(default_factory=config_class)) for name, config_class in sections]
    cls = dataclasses.make_dataclass("TaskConfig", [("name", str, field(default="order")), *fields],
                                     namespace={"__reduce__": _reduce_task_config})
    cls.__module__ = __name__
    return cls


def _reduce_task_config(section: Any) -> tuple:
    """Pickle a task section by its values: its class is made at run time, not found by name."""
    return _rebuild_task_config, ({f.name: getattr(section, f.name) for f in dataclasses.fields(section)},)


def _rebuild_task_config(values: dict[str, Any]) -> Any:
    return task_config_class()(**values)


def renamed_keys() -> dict[str, str]:
    """Dotted keys renamed since a release, old -> new: each registered task's `renamed_keys` (relative
    to `task.<name>`). A config naming an old key fails naming the new one; a checkpoint's saved
    config has its values moved to the new keys."""
    return {f"task.{name}.{old}": f"task.{name}.{new}"
            for name, cls in TASKS.items() for old, new in getattr(cls, "renamed_keys", {}).items()}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: Any = field(default_factory=lambda: task_config_class()())  # assembled from the registry
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    # the settings with a range, checked when a config is loaded (one line naming the key)
    BOUNDS: ClassVar[dict[str, Bound]] = {
        "data.frame_size": AT_LEAST_1, "data.batch_size": AT_LEAST_1, "data.num_workers": NON_NEGATIVE,
        "data.shard_buffer": AT_LEAST_1,
        "data.max_skip_share": SHARE, "data.crop_scale": SHARE_ABOVE_0, "data.crop_ratio": POSITIVE,
        "optim.betas": SHARE_BELOW_1, "optim.lr": POSITIVE, "optim.weight_decay": NON_NEGATIVE,
        "optim.momentum": SHARE, "optim.warmup_epochs": NON_NEGATIVE, "optim.min_lr": NON_NEGATIVE,
        "optim.grad_clip": NON_NEGATIVE, "optim.accumulate": AT_LEAST_1, "train.epochs": AT_LEAST_1,
        "train.max_steps": NON_NEGATIVE, "train.log_every": AT_LEAST_1, "train.checkpoint_every": AT_LEAST_1,
        "train.keep_last": AT_LEAST_1, "monitor.every": NON_NEGATIVE, "monitor.num_clips": AT_LEAST_1,
        "monitor.clip_len": AT_LEAST_1, "monitor.stride": AT_LEAST_1, "monitor.k": AT_LEAST_1,
        "monitor.temperature": POSITIVE,
    }


@dataclass
class TransferConfig:
    """Transfer to action recognition on a labeled manifest (SynthAV's train/test by default).
    YAML recipes: configs/transfer/<protocol>.yaml."""

    protocol: str = "linear"  # linear (probe on frozen features), knn (and retrieval), or finetune
    manifest: str = ""  # empty: SynthAV under synthav_dir
    synthav_dir: str = "data/synthav"
    train_split: str = "train"  # "a+b": the rows of both splits
    test_split: str = "test"
    label_column: str = "label"  # the manifest column to predict: label, or another (SynthAV: shape, heard as timbre)
    feature_mode: str = "auto"  # auto (the pretext task's), clip, or frames (T=1 each, concatenated)
    clip_len: int = 8
    stride: int = 2
    num_clips: int = 4  # uniform clips per video: clip-level scores, averaged for video-level
    audio_s: float = 1.0  # audio probe: num_clips uniform windows of this length per video
    frame_size: int = 64
    batch_size: int = 16
    num_workers: int = 2
    seed: int = 0
    linear_normalise: Literal["shared", "per_feature", "l2", "none"] = "shared"  # linear probe: mmssl/eval/probe.py
    linear_penalty: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 0.1, 1.0])  # its L2 penalty: of several,
    linear_folds: int = 5  # the best by video top-1 on this many stratified folds of the train videos (drawn by seed)
    linear_epochs: int = 100  # at most this many full-batch L-BFGS iterations per fit
    finetune_epochs: int = 30
    finetune_lr: float = 3e-4
    finetune_weight_decay: float = 0.05
    finetune_layer_decay: float = 1.0  # layer-wise lr decay of a ViT (VideoMAE: 0.75); 1: off
    knn_k: int = 20  # weighted kNN: neighbours that vote (DINO's 20)
    knn_temperature: float = 0.07  # their weights exp(cosine similarity / T)

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "num_clips": AT_LEAST_1, "audio_s": POSITIVE,
        "frame_size": AT_LEAST_1, "batch_size": AT_LEAST_1, "num_workers": NON_NEGATIVE,
        "linear_penalty": NON_NEGATIVE, "linear_folds": Bound(2), "linear_epochs": AT_LEAST_1,
        "finetune_epochs": AT_LEAST_1, "finetune_lr": POSITIVE, "finetune_weight_decay": NON_NEGATIVE,
        "finetune_layer_decay": SHARE_ABOVE_0, "knn_k": AT_LEAST_1, "knn_temperature": POSITIVE,
    }


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                root: type = Config) -> Any:
    """Defaults of `root`, then the YAML file (if any), then `key.sub=value` overrides (values
    parsed as YAML)."""
    config = root()
    if path is not None:
        data = _read_yaml(Path(path).read_text(), str(path))
        if data is None:
            raise ConfigError(f"{path} is empty: a config names at least the settings it changes")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        merge(config, data)
    return apply_overrides(config, overrides)


def apply_overrides(config: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """`config` with `key.sub=value` overrides set (values parsed as YAML), in place; then its
    settings' ranges (`BOUNDS`) are checked."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        merge(config, _nest(key.strip().split("."), _read_yaml(value, f"override {item!r}")))
    check_bounds(config)
    return config


def check_bounds(config: Any, prefix: str = "") -> None:
    """ConfigError, naming the key and its range, for the first setting out of its range: the `BOUNDS`
    of the tree's root and of each section (a task's settings, ...), keys relative to the section."""
    for key, bound in getattr(type(config), "BOUNDS", {}).items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        values = value if isinstance(value, list) else [value]  # a list: each item, and at least one
        if value is not None and (not values or not all(map(bound.admits, values))):  # None: the default
            raise ConfigError(f"{prefix}{key}={value!r} is out of range: it must be {bound}")
    for section in dataclasses.fields(config):
        if dataclasses.is_dataclass(value := getattr(config, section.name)):
            check_bounds(value, f"{prefix}{section.name}.")


def _read_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(e).split())}") from None


def merge(node: Any, data: dict[str, Any], prefix: str = "", unknown: list[str] | None = None) -> None:
    """Set the fields of dataclass `node` from nested dict `data`, checking keys and types. Unknown
    keys are errors, or, given an `unknown` list, collected there and skipped."""
    fields = {f.name: f for f in dataclasses.fields(node)}
    hints = typing.get_type_hints(type(node))
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            if unknown is None:
                if (new := renamed_keys().get(name)) is not None:
                    raise ConfigError(f"config key {name!r} is now {new!r}: rename it in your config or override")
                hint = ("; tasks register when their module is imported (mmssl.tasks; your own: --import MODULE)"
                        if prefix == "task." else "")
                raise ConfigError(f"unknown config key {name!r}; known here: {', '.join(sorted(fields))}{hint}")
            unknown.append(name)
            continue
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{name!r} is a section: give it a mapping, not {value!r}")
            merge(current, value, f"{name}.", unknown)
        else:
            setattr(node, key, _coerce(value, hints[key], name))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def field_comments(cls: type) -> dict[str, str]:
    """A dataclass's field descriptions: the comment after each field in the source of the class and of
    the dataclasses it extends ({} for a class made at run time, which has no source)."""
    comments: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        by_line = {token.start[0]: token.string.lstrip("#").strip()
                   for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
        body = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)).body
        comments |= {node.target.id: by_line[node.end_lineno] for node in body if isinstance(node, ast.AnnAssign)
                     and isinstance(node.target, ast.Name) and node.end_lineno in by_line}
    return comments


def section_summary(cls: type) -> str:
    """The first sentence of a section's docstring ("" for one without: dataclass writes its signature there)."""
    doc = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
    return "" if doc.startswith(f"{cls.__name__}(") else doc.split(". ")[0]


def commented_yaml(config: Any, indent: int = 0) -> str:
    """The tree `config` as YAML that `load_config` reads back to the same values, each setting's
    description (`field_comments`) as its comment; of the `task` section, only the tasks the run uses."""
    comments = field_comments(type(config))
    used = _used_tasks(to_dict(config)) if type(config).__name__ == "TaskConfig" else None
    lines = []
    for f in dataclasses.fields(config):
        value, pad = getattr(config, f.name), "  " * indent
        if used is not None and f.name != "name" and f.name not in used:
            continue
        if dataclasses.is_dataclass(value):
            note = comments.get(f.name) or section_summary(type(value))
            lines += [f"{pad}{f.name}:" + (f"  # {note}" if note else ""), commented_yaml(value, indent + 1)]
        else:
            note = f"  # {comments[f.name]}" if f.name in comments else ""
            text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True,
                                  width=float("inf")).removesuffix("...\n").strip()
            lines.append(f"{pad}{f.name}: {text}{note}")
    return "\n".join(lines)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two `to_dict` trees, as (saved, current); a key
    only one side has (a setting added or removed since) shows `ABSENT` on the other."""
    old, new = _flatten(saved), _flatten(current)
    return {key: (old.get(key, ABSENT), new.get(key, ABSENT)) for key in sorted(old.keys() | new.keys())
            if old.get(key, ABSENT) != new.get(key, ABSENT)}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:  # a tuple as saved and the list JSON gives back compare equal
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def from_dict(data: dict[str, Any]) -> Config:
    """A saved run's config (a checkpoint's), to exactly the values it was trained with: renamed keys
    take their new names (`upgrade`), sections of tasks the run did not use are ignored, and any other
    key this version does not know (a setting removed since, or the section of a task whose module is
    not imported) is a ConfigError that says what to do. Settings added since take their defaults
    (a default that changes what a run computes comes with an `upgrade_section` of its task)."""
    data = upgrade(data)
    name = data.get("task", {}).get("name", "order")
    if name not in TASKS:
        raise ConfigError(f"the saved config's task {name!r} is not registered (known: {', '.join(TASKS)}): "
                          "if it is a task of your own, import its module first (--import MODULE)")
    config = Config()
    unknown: list[str] = []
    merge(config, data, unknown=unknown)
    used = _used_tasks(data.get("task", {}))
    missing = [key for key in unknown if not (key.startswith("task.") and key.split(".")[1] not in used)]
    if missing:
        raise ConfigError(
            f"the saved config has settings this version of mmssl does not know: {', '.join(missing)}. "
            "If they belong to a task of your own, import its module first (--import MODULE); otherwise "
            "load the checkpoint with the mmssl version that wrote it (its config.json lists every setting)")
    return config


def run_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """A `to_dict` tree without the task sections of the tasks the run does not use."""
    task = tree["task"]
    used = _used_tasks(task)
    return {**tree, "task": {key: value for key, value in task.items() if key == "name" or key in used}}


def _used_tasks(task: dict[str, Any]) -> set[str]:
    """The tasks a `task` tree runs: its `name`, and a multi-task run's tasks."""
    return {task.get("name"), *task.get(task.get("name"), {}).get("tasks", [])}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config tree in this version's keys: each registered task's `upgrade_section` on its
    section, then the renamed keys (`renamed_keys`) under their new names."""
    data = {**data, "task": dict(data.get("task", {}))}
    for name, cls in TASKS.items():
        if isinstance(data["task"].get(name), dict):
            data["task"][name] = cls.upgrade_section(dict(data["task"][name]))
    flat = _flatten(data)
    renames = renamed_keys()
    flat = {renames.get(key, key): value for key, value in flat.items()}
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    return {keys[0]: _nest(keys[1:], value)} if len(keys) > 1 else {keys[0]: value}


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name!r} expects a list, got {value!r}")
        (item,) = set(typing.get_args(hint)) - {Ellipsis}
        items = [_coerce(v, item, name) for v in value]
        return items if origin is list else tuple(items)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name!r} expects {hint}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted off / on as a boolean
            value = "on" if value else "off"
        if value not in typing.get_args(hint):
            raise ConfigError(f"{name!r} expects one of {', '.join(map(repr, typing.get_args(hint)))}, got {value!r}")
        return value
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{name!r} expects None")
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name!r} expects float, got {value!r}") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{name!r} expects {hint.__name__}, got {value!r}")
    return value
