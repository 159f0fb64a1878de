"""Work on one file per task in child processes, so a file that crashes or hangs a decoder library
(a segfault in FFmpeg, a demuxer that never returns) costs only itself: manifest probing, and the
search for the file that killed a DataLoader worker."""
from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError
from itertools import islice
from typing import TypeVar

import pebble

Item = TypeVar("Item")
Result = TypeVar("Result")


def isolated_map(pool: pebble.ProcessPool, fn: Callable[[Item], Result], items: Iterable[Item],
                 failed: Callable[[Item, str, str], Result], in_flight: int, timeout_s: float,
                 what: str) -> Iterator[Result]:
    """`fn(item)` of each item in order, each in a process of `pool`, at most `in_flight` scheduled at
    once (one future each); for an item whose call runs past `timeout_s` or whose process dies,
    ``failed(item, kind, detail)`` with kind "timeout" or "crashed" and `what` naming the work in
    the detail ("the probe's process died (killed by SIGSEGV)")."""
    scheduled = ((item, pool.schedule(fn, (item,), timeout=timeout_s)) for item in items)  # lazily
    pending = deque(islice(scheduled, in_flight))
    while pending:
        item, future = pending.popleft()
        pending.extend(islice(scheduled, 1))
        try:
            yield future.result()
        except TimeoutError:
            yield failed(item, "timeout", f"{what} still running after {timeout_s:g} s; stopped")
        except pebble.ProcessExpired as e:
            yield failed(item, "crashed", f"the {what}'s process died ({exit_reason(e.exitcode)})")


def exit_reason(exitcode: int) -> str:
    """`exitcode` as a process reports it: negative for the signal that killed it."""
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
