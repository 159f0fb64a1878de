"""A run owns its output folder: `RunLock` keeps a second run (or a resume) out of a folder a live run
writes to, where both would write the same checkpoints, config.json and metrics.jsonl."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from mmssl.config import ConfigError

LOCK_NAME = ".lock"


class RunLock:
    """`out_dir/.lock`, created atomically on enter (it holds the owner's pid, host and start time) and
    removed on exit. A lock whose process is gone (a crash, a kill) on this host is stale and taken
    over; one held by a live process, or by another host, refuses the run in one line."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> Self:
        """Create the lock (taking over a stale one) and return it; ConfigError when a live run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        while True:
            try:
                with open(self.path, "x") as f:  # exclusive create: one of two racing runs wins
                    json.dump(owner, f)
                return self
            except FileExistsError:
                held = self._owner()
                if held is not None and _alive(held, owner["host"]):
                    raise ConfigError(
                        f"{self.path.parent} is in use by another run (pid {held['pid']} on {held['host']}, "
                        f"since {held['since']}): wait for it to end, or choose another --out (a run gone "
                        f"on another machine leaves {self.path}: delete it)") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def _owner(self) -> dict | None:
        """The lock's owner, or None for a lock file that is empty or half written (its writer died)."""
        try:
            held = json.loads(self.path.read_text())
            return held if {"pid", "host", "since"} <= held.keys() else None
        except (OSError, ValueError):
            return None


def _alive(owner: dict, host: str) -> bool:
    """Whether the lock's owner may still run: its process exists here, or it is on another host."""
    if owner["host"] != host:
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
