"""A checkpoint file in: `torch.load` with `weights_only=True`, and one line naming the file for one
that is not a readable checkpoint (never PyTorch's text, which offers to load it unsafely)."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mmssl.errors import CheckpointError

REMEDY = "name another checkpoint (a run folder keeps its last train.keep_last as checkpoint_*.pt)"


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False,
                    needs: tuple[str, ...] = ()) -> dict[str, Any]:
    """The entries of the checkpoint at `path`, or a CheckpointError when it is no readable checkpoint
    or lacks one of the entries it `needs`.
    `mmap`: its tensors are mapped, not read (nor checked); otherwise each stored record is checked
    against its CRC: `torch.load` does not, and a file damaged inside a tensor would load wrong weights."""
    try:
        with zipfile.ZipFile(path) as archive:  # a torch.save file is a zip archive
            if not mmap and (damaged := archive.testzip()) is not None:
                raise CheckpointError(path, f"is damaged (its record {damaged} fails its checksum)", REMEDY)
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except OSError as e:
        raise CheckpointError(path, f"is not a readable checkpoint ({e.strerror or e})", REMEDY) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:  # truncated, or damaged in its archive structure
        reason = str(e).split(". ")[0][:160]
        raise CheckpointError(path, f"is not a readable checkpoint (truncated, damaged or not a checkpoint: {reason})",
                              REMEDY) from None
    except pickle.UnpicklingError:  # PyTorch's text would invite weights_only=False: loading code from the file
        raise CheckpointError(path, "is not a checkpoint of tensors and plain values (not one mmssl wrote), and "
                                    "other objects are never loaded", REMEDY) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(path, f"holds a {type(checkpoint).__name__}, not a checkpoint's entries", REMEDY)
    if missing := [name for name in needs if name not in checkpoint]:
        raise CheckpointError(path, f"has no {', '.join(missing)} (not a checkpoint of this kind)", REMEDY)
    return checkpoint
