"""The project's own errors: bad input, or a run that must stop, each with a message that names the
thing at fault and what to do. Every command prints one as a single line and exits with status 2
(`mmssl.cli.run`); anything else is a bug, and keeps its traceback."""
from __future__ import annotations

from pathlib import Path


class MmsslError(Exception):
    """Base of the errors a user can act on (a config, a manifest, a media file, a checkpoint, a run)."""


class CheckpointError(MmsslError, ValueError):
    """A checkpoint that cannot serve (missing, truncated or damaged, not one of ours, of another model):
    `problem` says how, the message adds the file and what to do."""

    def __init__(self, path: str | Path, problem: str, remedy: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path} {problem}: {remedy}")
