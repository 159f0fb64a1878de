"""Checkpoints: atomic save, restore by name, RNG state, and `--resume auto`.

A checkpoint is one `torch.save` file holding a flat dict: the state dict of every named object
that has one (modules, optimizers, LR schedulers, GradScaler, ...) and plain values (step, epoch,
config, RNG state). It holds only tensors, primitives, lists, tuples and dicts, so it loads with
`torch.load(..., weights_only=True)`. Module weights are stored without the DDP `module.` and
`torch.compile` `_orig_mod.` prefixes, so they load into a plain model.

Typical use (on the main process)::

    save_checkpoint(checkpoint_path(out_dir, step), model=model, optimizer=opt, scheduler=sched,
                    step=step, config=config, rng=capture_rng_state())
    prune_checkpoints(out_dir, keep_last=3)
    ...
    if (path := latest_checkpoint(out_dir)) is not None:
        extra = load_checkpoint(path, model=model, optimizer=opt, scheduler=sched)
        step = extra["step"]
        restore_rng_state(extra["rng"])
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from mmssl.errors import CheckpointError
from mmssl.io.checkpoint import read_checkpoint

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")
_COMPILE_ATTR = "_orig_mod"  # where torch.compile keeps the original module
_DDP_PREFIX = "module."
_LEAF_TYPES = (torch.Tensor, str, int, float, bool, complex, bytes, type(None), torch.dtype,
               torch.device)


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """The file name `latest_checkpoint` looks for: `folder/checkpoint_{step:06d}.pt`."""
    return Path(folder) / f"checkpoint_{step:06d}.pt"


# --------------------------------------------------------------------------- module state dicts
def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / `torch.compile` wrappers (any nesting)."""
    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif isinstance(getattr(model, _COMPILE_ATTR, None), nn.Module):
            model = getattr(model, _COMPILE_ATTR)
        else:
            return model


def _rename_keys(state_dict: Mapping[str, Any], rename: Callable[[str], str]) -> OrderedDict:
    """Rename the keys of a module state dict, and of its `_metadata` (module versions) alike."""
    out = OrderedDict((rename(k), v) for k, v in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        # metadata keys are module prefixes without the trailing dot ("" is the root)
        out._metadata = OrderedDict((rename(k + ".")[:-1] if k else k, v)
                                    for k, v in metadata.items())
    return out


def _strip_compile_prefix(key: str) -> str:
    return ".".join(part for part in key.split(".") if part != _COMPILE_ATTR)


def _strip_ddp_prefix(key: str) -> str:
    return key.removeprefix(_DDP_PREFIX)


def module_state_dict(model: nn.Module) -> OrderedDict:
    """`model.state_dict()` with DDP and compile wrappers removed, also on compiled submodules."""
    return _rename_keys(unwrap_model(model).state_dict(), _strip_compile_prefix)


def load_module_state_dict(model: nn.Module, state_dict: Mapping[str, Any],
                           strict: bool = True) -> Any:
    """Load into `model` (wrapped or not) a state dict saved from a plain, DDP or compiled model;
    returns `load_state_dict`'s missing and unexpected keys."""
    target = unwrap_model(model)
    state_dict = _rename_keys(state_dict, _strip_compile_prefix)
    expected = target.state_dict().keys()
    if (state_dict and all(k.startswith(_DDP_PREFIX) for k in state_dict)
            and not any(k.startswith(_DDP_PREFIX) for k in expected)):
        state_dict = _rename_keys(state_dict, _strip_ddp_prefix)
    return target.load_state_dict(state_dict, strict=strict)


# --------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """RNG state of torch (CPU and every CUDA device), numpy's global RNG and `random`, stored
    as tensors and primitives. Each process has its own: capture it on every rank to keep all."""
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, py_state, py_gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": bit_generator, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "random": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `capture_rng_state` captured (CUDA states for the devices present)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
    np_state = state["numpy"]
    np.random.set_state((np_state["bit_generator"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    py_state = state["random"]
    random.setstate((py_state["version"], tuple(py_state["state"].tolist()),
                     py_state["gauss_next"]))


# --------------------------------------------------------------------------- save / load
def _to_plain(value: Any, where: str) -> Any:
    """`value` made of what `weights_only` loading accepts: dataclasses become dicts, paths
    strings, numpy scalars Python numbers; anything else unsupported raises TypeError."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _LEAF_TYPES):
        return value
    if isinstance(value, Mapping):
        return {k: _to_plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_to_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, (set, frozenset)):
        return {_to_plain(v, f"{where}{{...}}") for v in value}
    raise TypeError(f"checkpoint entry {where} is a {type(value).__name__}; store tensors, "
                    "primitives, lists, tuples, dicts or dataclasses of these")


def save_checkpoint(path: str | Path, **objects: Any) -> Path:
    """Write the named objects to `path` atomically and return `path`.

    Objects with a `state_dict` method are stored as their state dict (modules unwrapped from
    DDP/compile); other values must be plain (see `_to_plain`). The file is written to a temporary
    name in the same folder, flushed to disk, then renamed over `path`, so a crash at any point
    leaves either the old file or the new one, never a partial file under `path`.
    """
    path = Path(path)
    payload: dict[str, Any] = {}
    for name, obj in objects.items():
        if isinstance(obj, nn.Module):
            payload[name] = module_state_dict(obj)
        elif callable(getattr(obj, "state_dict", None)):
            payload[name] = obj.state_dict()
        else:
            payload[name] = _to_plain(obj, name)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Delete the temporary files that `save_checkpoint`s killed mid-write left in `folder`; return
    them. Only for a folder no live writer uses (a run holding its `RunLock`)."""
    partial = sorted(Path(folder).glob(".checkpoint_*.pt.*.tmp"))
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_entries(path: str | Path, *names: str) -> tuple[Any, ...]:
    """These entries of the checkpoint at `path` (memory-mapped: its tensors are not read), or a
    CheckpointError in one line naming the file when it is not a readable checkpoint (missing,
    truncated, not ours) or lacks one of them."""
    checkpoint = read_checkpoint(path, mmap=True, needs=names)
    return tuple(checkpoint[name] for name in names)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu",
                    strict: bool = True, **objects: Any) -> dict[str, Any]:
    """Restore the named objects from `path` and return the entries not restored (step, epoch, ...).

    Each keyword names an entry of the checkpoint and the object to load it into (modules may be
    wrapped in DDP or compiled; `strict` applies to them). Loading uses `weights_only=True`
    (`read_checkpoint`). Raises KeyError when a named entry is missing.
    """
    return restore_checkpoint(read_checkpoint(path, map_location), path, strict=strict, **objects)


def restore_checkpoint(checkpoint: dict[str, Any], path: str | Path, *, strict: bool = True,
                       **objects: Any) -> dict[str, Any]:
    """`load_checkpoint` of the entries already read from `path`; a state that does not fit its
    object (another task's or model's weights) is a CheckpointError naming the file."""
    missing = [name for name in objects if name not in checkpoint]
    if missing:
        raise KeyError(f"{path} has no entries {missing}; it has {sorted(checkpoint)}")
    for name, obj in objects.items():
        try:
            if isinstance(obj, nn.Module):
                load_module_state_dict(obj, checkpoint[name], strict=strict)
            else:
                obj.load_state_dict(checkpoint[name])
        except (RuntimeError, ValueError) as e:  # torch lists every key, over many lines
            reason = " ".join(str(e).split())[:160]
            raise CheckpointError(path, f"holds a {name} state that does not fit this run's ({reason})",
                                  "use it with the settings it was written with (its run's config.json)") from None
    return {k: v for k, v in checkpoint.items() if k not in objects}


# --------------------------------------------------------------------------- resume and pruning
def _is_complete(path: Path) -> bool:
    """Cheap check that `path` is a whole `torch.save` file: a readable zip central directory
    (written last) with the pickle record in it."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("/data.pkl") for name in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _checkpoints_by_step(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the files named like `checkpoint_path` in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_file()]
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `folder` (for `--resume auto`), or None.

    Temporary files, other names and truncated or unreadable files are skipped.
    """
    for _, path in reversed(_checkpoints_by_step(Path(folder))):
        if _is_complete(path):
            return path
    return None


def loadable_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu", needs: tuple[str, ...] = (),
                        report: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in `folder` that reads whole with the entries it `needs` (`read_checkpoint`),
    and its entries; None when there is none. Each newer one that does not is set aside as `<name>.damaged` (so that neither pruning nor a later
    resume takes it for the newest) and reported in one line."""
    for _, path in reversed(_checkpoints_by_step(Path(folder))):
        try:
            return path, read_checkpoint(path, map_location, needs=needs)
        except CheckpointError as e:
            aside = path.with_name(f"{path.name}.damaged")
            os.replace(path, aside)
            report(f"--resume auto: skipped {path.name}, which {e.problem}; set aside as {aside.name}")
    return None


def prune_checkpoints(folder: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the `keep_last` newest complete checkpoints in `folder`; return the deleted.

    Only files older than the oldest kept one are removed (incomplete ones included); other names
    (e.g. `best.pt`) are never touched.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    checkpoints = _checkpoints_by_step(Path(folder))
    kept = [(step, p) for step, p in checkpoints if _is_complete(p)][-keep_last:]
    if not kept:
        return []
    oldest_kept = kept[0][0]
    removed = [p for step, p in checkpoints if step < oldest_kept]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
