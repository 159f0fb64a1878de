"""Sharded datasets: a manifest's files packed into tar shards (WebDataset's format) and streamed back
as a task's samples, for runs whose data sits on network or object storage.

A shard folder holds `shards.csv` (its index: a manifest whose rows name their shard in the `shard`
column and their member in `path`, `<shard>/<key>.<ext>`) and the shards `shard-NNNNNN.tar`. A
member is the file's bytes (`<key>.<ext>`, key = the row's number in the index), its row as JSON
(`<key>.json`) and its stored motion profiles (`<key>.motion<size>.npy`). Shards are plain tar
files, read sequentially: from the folder, over http(s), or from a shell command's output
(`ShardSource.command`: taken from the command line only, never from a config file).

An epoch of rank r (`StreamPlan`): the shards are dealt to ranks and, within a rank, to its DataLoader
workers once for the run (largest first to the least loaded, so the counts stay even); every epoch a
worker reads its shards in a new order through a shuffle buffer, and each worker gives whole batches,
padded by reading on into its shards again; a rank's batches are padded to the most any rank has, so
every rank takes the same number of steps (DDP). The DataLoader takes the workers' batches in turn,
so the batches of an epoch are a function of (seed, epoch, rank, world size, workers): a resumed run
goes on at its batch, each worker passing over the members it had already given without decoding them.
A sample of row i in epoch e draws from `default_rng([seed, e, i])`, as `PretextDataset`'s: a video
gives the same sample from its file and from its shard. A member that fails to decode is counted
and replaced by another member of the buffer; one whose decode kills its worker is found and never
decoded again, as `RecoveringLoader` does for files.
"""
from __future__ import annotations

import io
import json
import os
import shlex
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmssl.config import ConfigError
from mmssl.data.clip import DecodedClip, Skipped
from mmssl.data.dataset import PretextDataset, SampleMaker, Unreplaced, collate, sample_or_replacement
from mmssl.data.loader import PREFETCH_BATCHES, SurvivingLoader, report_worker_deaths_when_waiting
from mmssl.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest
from mmssl.data.motion import MOTION_COLUMN, MotionWeighting, StoredProfiles, profile_file, row_motion

INDEX = "shards.csv"
SHARD_COLUMN = "shard"
MOTION_SIZES_COLUMN = "motion_sizes"  # the profile sizes (px) a member carries, space-separated
SHARD_BYTES = 256 * 2**20
BUFFER_MEMBERS = 64  # shuffle buffer, per worker: its members' bytes are held in memory
RECENT_MEMBERS = 8  # the members a buffer gave last, kept as replacements for a failed one
PIPE = "pipe:"  # webdataset's shell-command URLs


# ----------------------------------------------------------------------------- writing

def member_key(number: int) -> str:
    return f"{number:09d}"


@dataclass
class PackResult:
    """What `pack_shards` wrote: the index's rows, the files left out, the shards, the seconds taken."""

    rows: list[ManifestRow]
    left_out: list[Skipped]
    shards: list[str]
    seconds: float


def group_rows(rows: Sequence[ManifestRow], shard_bytes: int) -> tuple[list[list[int]], list[Skipped]]:
    """The rows' numbers in shards of about `shard_bytes` (in row order; a shard holds at least one file),
    and the rows whose file is not there to pack."""
    shards: list[list[int]] = [[]]
    size, left_out = 0, []
    for number, row in enumerate(rows):
        try:
            length = os.path.getsize(row.path)
        except OSError as e:
            left_out.append(Skipped(row.path, "missing", e.strerror or str(e)))
            continue
        if shards[-1] and size + length > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(number)
        size += length
    return [shard for shard in shards if shard], left_out


def write_shard(path: Path, members: list[tuple[int, ManifestRow, dict[int, np.ndarray]]]) -> list[int]:
    """Write one shard of (number, row, profiles by size) members; the numbers written (a file that
    cannot be read is left out)."""
    written = []
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "wb") as stream, wds.TarWriter(stream) as tar:
        for number, row, profiles in members:
            try:
                data = Path(row.path).read_bytes()
            except OSError:
                continue
            sample = {"__key__": member_key(number), extension(row.path): data,
                      "json": json.dumps(row_record(row)).encode()}
            for size, steps in profiles.items():
                buffer = io.BytesIO()
                np.save(buffer, np.asarray(steps, np.float16))
                sample[f"motion{size}.npy"] = buffer.getvalue()
            tar.write(sample)
            written.append(number)
    os.replace(partial, path)
    return written


def extension(path: str) -> str:
    """A member's extension: the file's, lower case (`video` for a file without one)."""
    return Path(path).suffix.lower().lstrip(".") or "video"


def row_record(row: ManifestRow) -> dict[str, object]:
    return {"path": row.path, "label": row.label, "split": row.split, "duration": row.duration, "fps": row.fps,
            "num_frames": row.num_frames, "has_audio": row.has_audio, "extra": row.extra}


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def pack_shards(manifest: str | Path, out: str | Path, shard_bytes: int = SHARD_BYTES,
                workers: int | None = None, split: str | None = None) -> PackResult:
    """Pack every row of `manifest` (of `split`, when named: its file, its row, its stored motion
    profiles) into shards of about `shard_bytes` under `out`, `workers` shards at a time (default: all
    cores), and write the index. Files missing or unreadable are left out and reported."""
    started, out = time.perf_counter(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(manifest, split)
    profiles = stored_profiles(manifest)
    groups, left_out = group_rows(rows, shard_bytes)
    jobs = [(out / shard_name(i), [(n, rows[n], {size: steps for size, stored in profiles.items()
                                                 if (steps := stored.get(rows[n])) is not None})
                                   for n in group]) for i, group in enumerate(groups)]
    with ProcessPoolExecutor(max(1, min(workers or os.cpu_count() or 1, len(jobs)))) as pool:
        written = list(pool.map(write_shard, *zip(*jobs, strict=True))) if jobs else []
    index = []
    for (path, members), numbers in zip(jobs, written, strict=True):
        kept = set(numbers)
        left_out += [Skipped(row.path, "missing", "could not be read") for n, row, _ in members if n not in kept]
        for number, row, stored in members:
            if number in kept:
                extra = {k: v for k, v in row.extra.items() if k != MOTION_COLUMN}
                extra |= {SHARD_COLUMN: path.name, MOTION_SIZES_COLUMN: " ".join(map(str, sorted(stored)))}
                index.append(replace(row, path=str(out / path.name / f"{member_key(number)}.{extension(row.path)}"),
                                     extra=extra))
    write_manifest(index, out / INDEX)
    for stale in set(out.glob("shard-*.tar")) - {path for path, _ in jobs}:  # of an earlier packing into `out`
        stale.unlink()
    return PackResult(index, left_out, [path.name for path, _ in jobs], time.perf_counter() - started)


def stored_profiles(manifest: str | Path) -> dict[int, StoredProfiles]:
    """`manifest`'s stored motion profiles, by size (px)."""
    manifest = Path(manifest)
    found = {}
    for path in manifest.parent.glob(f"{manifest.stem}.motion[0-9]*.npy"):
        size = int(path.name.removeprefix(f"{manifest.stem}.motion").removesuffix(".npy"))
        if path == profile_file(manifest, size):
            found[size] = StoredProfiles(path)
    return found


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class ShardSource:
    """Where a shard folder is: a local folder or a URL (http, https; what webdataset's gopen opens).
    `command`: a shell command whose output is the file `{url}` names (an object store's client), run
    for the index and each shard; from the command line only (`mmssl pretrain --shard-command`)."""

    location: str
    command: str | None = None

    def __post_init__(self) -> None:
        if self.location.startswith(PIPE):
            raise ConfigError(f"data.shards={self.location!r} is a shell command: a command is accepted only "
                                "on the command line, as --shard-command 'CMD {url}' with data.shards naming where "
                                "the shards are")

    def url(self, name: str) -> str:
        """What opens the file `name` of the folder (for webdataset's gopen)."""
        url = f"{self.location.rstrip('/')}/{name}"
        return f"{PIPE}{self.command.format(url=shlex.quote(url))}" if self.command else url

    def rows(self, split: str | None = None) -> list[ManifestRow]:
        """The index's rows (of `split`, when named), each named `<location>/<shard>/<member>`."""
        if not self.command and os.path.isdir(self.location):
            return read_manifest(Path(self.location) / INDEX, split)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / INDEX
            with wds.gopen(self.url(INDEX)) as stream:
                local.write_bytes(stream.read())
            return [replace(row, path=f"{self.location.rstrip('/')}/{os.path.relpath(row.path, folder)}")
                    for row in read_manifest(local, split)]


def member_name(row: ManifestRow) -> str:
    """The row's member file in its shard (`<key>.<ext>`)."""
    return row.path.rsplit("/", 1)[-1]


@dataclass(eq=False)  # hashed by identity: a key of `crashing_files`
class Member:
    """One member of a shard as the stream holds it: its row's index in the dataset, its bytes, its profiles."""

    index: int
    data: bytes
    profiles: dict[int, np.ndarray] = field(default_factory=dict)


class MemberProfiles:
    """The `stored` profiles of a task's `MotionWeighting` on shards: the profile at `size` px of the
    member being sampled (`current`, set by `ShardDataset`), from the shard, else from a decode of its bytes."""

    def __init__(self, current: dict[str, Member], size: int) -> None:
        self.current, self.size = current, size

    def get(self, row: ManifestRow) -> np.ndarray:
        member = self.current[row.path]
        stored = member.profiles.get(self.size)
        return row_motion(row, self.size, member.data) if stored is None else stored


def deal(counts: Sequence[int], bins: int) -> list[list[int]]:
    """The items of `counts` (item -> weight) dealt to `bins`: the heaviest first, each to the bin
    holding the least so far (ties: the lower bin); each bin's items in their own order."""
    dealt: list[list[int]] = [[] for _ in range(bins)]
    loads = [0] * bins
    for item in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        target = min(range(bins), key=lambda b: (loads[b], b))
        dealt[target].append(item)
        loads[target] += counts[item]
    return [sorted(items) for items in dealt]


@dataclass
class StreamPlan:
    """Which shards each rank's workers read, and how many batches each gives per epoch (module docstring)."""

    members: list[list[int]]  # shard -> the dataset indices of its usable members, in shard order
    world_size: int
    workers: int  # per rank (1 without worker processes)
    batch_size: int

    def __post_init__(self) -> None:
        counts = [len(m) for m in self.members]
        self.shards = [[[r_shards[s] for s in w] for w in deal([counts[s] for s in r_shards], self.workers)]
                       for r_shards in deal(counts, self.world_size)]
        own = [[-(-sum(counts[s] for s in w) // self.batch_size) for w in rank] for rank in self.shards]
        self.rank_batches = max(sum(rank) for rank in own)
        self.batches = [self._padded(rank) for rank in own]

    def _padded(self, batches: list[int]) -> list[int]:
        """Per worker, its own batches and its share of the padding to `rank_batches` (to workers that
        have members, in turn)."""
        batches, readers = list(batches), [w for w, n in enumerate(batches) if n] or [0]
        for i in range(self.rank_batches - sum(batches)):
            batches[readers[i % len(readers)]] += 1
        return batches

    def samples_per_epoch(self) -> int:
        """Every rank's samples in an epoch."""
        return self.rank_batches * self.batch_size

    def given(self, rank: int, batches: int) -> list[int]:
        """Per worker of `rank`, its batches among the first `batches` the DataLoader took (in turn
        from each worker that has batches left)."""
        plan, given = self.batches[rank], [0] * self.workers
        for _ in range(batches):
            w = min((w for w in range(self.workers) if given[w] < plan[w]), key=lambda w: (given[w], w))
            given[w] += 1
        return given


class ShuffleBuffer:
    """Members in a random order, `size` at a time: each member taken is a random one of those held,
    and its place goes to the next that comes in. `candidates()`: those held and the last few taken,
    whichever a failed member's replacement may be (at the end of a pass the buffer holds none)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng, self.held = size, rng, []
        self.taken: deque[Member] = deque(maxlen=RECENT_MEMBERS)

    def candidates(self) -> list[Member]:
        return [*self.held, *self.taken]

    def shuffle(self, members: Iterator[Member]) -> Iterator[Member]:
        for member in members:
            self.held.append(member)
            if len(self.held) >= self.size:
                yield self._take()
        while self.held:
            yield self._take()

    def _take(self) -> Member:
        i = int(self.rng.integers(len(self.held)))
        self.held[i], self.held[-1] = self.held[-1], self.held[i]
        self.taken.append(self.held[-1])
        return self.held.pop()


class ShardTask(SampleMaker, Protocol):
    def motion_weightings(self) -> list[MotionWeighting]: ...


class ShardDataset(IterableDataset):
    """A task's samples streamed from shards (module docstring): the rows of the index, less those the
    task cannot use (`PretextDataset`'s `excluded`), decoded from the members' bytes; iterating gives
    this rank's samples of the epoch set with `set_epoch`, in the DataLoader worker's share. The task's
    high-motion tuple choices read the profiles in the shards (`missing_profiles`: what it does without)."""

    def __init__(self, source: ShardSource, task: ShardTask, frame_size: int | None = None, backend: str = "pyav",
                 seed: int = 0, sample_rate: int = 16000, *, split: str | None = None, rank: int = 0,
                 world_size: int = 1, workers: int = 0, batch_size: int = 1, buffer_size: int = BUFFER_MEMBERS) -> None:
        if backend != "pyav":
            raise ConfigError(f"data.backend={backend!r} reads files by name; shards decode from memory with pyav")
        self.source = source
        self.split_rows = rows = source.rows(split)
        self.samples = PretextDataset(rows, task, frame_size, backend, seed, sample_rate, replace_failed=True)
        self.rows, self.excluded, self.seed = self.samples.rows, self.samples.excluded, seed
        by_path = {row.path: i for i, row in enumerate(self.rows)}
        self.shard_names = sorted({row.extra[SHARD_COLUMN] for row in rows})
        number = {name: i for i, name in enumerate(self.shard_names)}
        members: list[list[int]] = [[] for _ in self.shard_names]
        for row in rows:
            if row.path in by_path:
                members[number[row.extra[SHARD_COLUMN]]].append(by_path[row.path])
        if sum(1 for m in members if m) < world_size:
            raise ManifestError(f"{source.location} has {len(self.shard_names)} shards with videos the task can use, "
                                f"fewer than the {world_size} ranks: pack it in smaller shards (--shard-size)")
        self.member_of = {member_name(row).split(".", 1)[0]: i for i, row in enumerate(self.rows)}  # key -> index
        self.plan = StreamPlan(members, world_size, max(workers, 1), batch_size)
        self.rank, self.buffer_size = rank, buffer_size
        self.current: dict[str, Member] = {}  # the member being sampled, by its row's path
        self.missing_profiles = self.use_member_profiles(task.motion_weightings())
        # (epoch, first batch) of the next iteration, in shared memory: persistent workers read it too
        self.position = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def use_member_profiles(self, weightings: Sequence[MotionWeighting]) -> str | None:
        """Point each weighting that weighs at the profiles in the shards; when they have none at its size,
        what the run does instead, to say once at start."""
        sizes = {int(s) for row in self.rows for s in row.extra.get(MOTION_SIZES_COLUMN, "").split()}
        missing = set()
        for weighting in weightings:
            weighting.stored = MemberProfiles(self.current, weighting.size)
            if weighting.candidates > 1 and weighting.size not in sizes:
                missing.add(weighting.size)
        if not missing:
            return None
        return (f"{self.source.location} has no motion profiles at {', '.join(map(str, sorted(missing)))} px: every "
                "DataLoader worker decodes each video it meets in full, every epoch, for the high-motion tuple choice; "
                "pack the shards from a manifest built with --motion (--motion-size) to carry them")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch the next iteration gives, from this rank's batch `start` on."""
        self.position[0], self.position[1] = epoch, start

    def __iter__(self) -> Iterator[dict[str, object] | Skipped | Unreplaced]:
        info = get_worker_info()
        worker = info.id if info else 0
        self.epoch, start = self.position.tolist()
        first = self.plan.given(self.rank, start)[worker]
        for member, buffer in self.stream(worker, first, self.plan.batches[self.rank][worker]):
            yield self.sample(member, buffer)

    def in_flight(self, epoch: int, start: int, batches: int) -> list[Member]:
        """The members of each worker's next `batches` batches of `epoch` from this rank's batch `start` on:
        those in flight when a worker died there (their first decodes)."""
        self.epoch = epoch
        given = self.plan.given(self.rank, start)
        return [member for worker, first in enumerate(given) for member, _ in
                self.stream(worker, first, min(first + batches, self.plan.batches[self.rank][worker]))]

    def stream(self, worker: int, first: int, end: int) -> Iterator[tuple[Member, ShuffleBuffer]]:
        """The members of the worker's batches `first` to `end` (excluded) of the epoch, each with the
        buffer it left; the members before are read and passed over, not decoded."""
        size = self.plan.batch_size
        if first >= end:
            return
        buffer = ShuffleBuffer(self.buffer_size, np.random.default_rng([self.seed, self.epoch, self.rank, worker]))
        for slot, member in enumerate(self.passes(worker, buffer)):
            if slot >= end * size:
                return
            if slot >= first * size:
                yield member, buffer

    def passes(self, worker: int, buffer: ShuffleBuffer) -> Iterator[Member]:
        """The worker's members, pass after pass over its shards in an order of this epoch, each pass
        shuffled through `buffer` to its end (the first pass gives every member once)."""
        shards = self.plan.shards[self.rank][worker]
        order = np.random.default_rng([self.seed, self.epoch, self.rank, worker, len(shards)]).permutation(shards)
        while True:
            yield from buffer.shuffle(member for shard in order.tolist() for member in self.read(shard))

    def read(self, shard: int) -> Iterator[Member]:
        """The usable members of shard number `shard`, in their order in it."""
        url = self.source.url(self.shard_names[shard])
        for sample in wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander(
                wds.tariterators.url_opener([{"url": url}]))):
            index = self.member_of.get(sample["__key__"])
            if index is None:
                continue  # a row the task cannot use
            ext = member_name(self.rows[index]).split(".", 1)[1]
            profiles = {int(k.removeprefix("motion").removesuffix(".npy")): np.load(io.BytesIO(v))
                        for k, v in sample.items() if k.startswith("motion") and k.endswith(".npy")}
            yield Member(index, sample[ext], profiles)

    def hold(self, member: Member) -> None:
        """Make `member` the one being sampled (`current`: its profiles for the task's window)."""
        self.current.clear()
        self.current[self.rows[member.index].path] = member

    @property
    def crashed(self) -> dict[str, str]:
        """Members whose decode killed a process, by path: never decoded again (`PretextDataset.crashed`)."""
        return self.samples.crashed

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        return self.samples.rng(index, self.epoch if epoch is None else epoch)

    def decode(self, index: int, rng: np.random.Generator, member: Member) -> DecodedClip:
        """The task's window of `member` (of row `index`), decoded from its bytes: `crashing_files`'s decode."""
        self.hold(member)
        return self.samples.decode(index, rng, member.data)

    def sample(self, member: Member, buffer: ShuffleBuffer) -> dict[str, object] | Skipped | Unreplaced:
        """The member's sample, or when its decode fails that of another of the buffer's `candidates`."""
        def make(item: Member, rng: np.random.Generator) -> dict[str, torch.Tensor]:
            self.hold(item)
            return self.samples.sample(item.index, rng, item.data)

        def replacement(failures: int, failed: Member) -> tuple[np.random.Generator, Member]:
            rng = np.random.default_rng([self.seed, self.epoch, member.index, failures])
            others = [m for m in buffer.candidates() if m.index != failed.index] or [member]
            return rng, others[int(rng.integers(len(others)))]

        return sample_or_replacement(make, lambda item: self.rows[item.index].path, member,
                                     self.rng(member.index), replacement,
                                     f"sample of {member_name(self.rows[member.index])}")


class ShardLoader(SurvivingLoader):
    """A `ShardDataset`'s batches, epoch by epoch, from a batch of the epoch on, surviving the death of a
    worker (as `RecoveringLoader`); `num_workers` persistent workers read the epoch set on the dataset."""

    def __init__(self, dataset: ShardDataset, *, batch_size: int, num_workers: int, device: torch.device) -> None:
        report_worker_deaths_when_waiting()
        self.dataset, self.batch_size, self.num_workers, self.device = dataset, batch_size, num_workers, device
        self.loader = self.build()

    def build(self) -> DataLoader:
        """A DataLoader with fresh workers (holding the dataset as it is now)."""
        return DataLoader(self.dataset, batch_size=self.batch_size, collate_fn=collate, num_workers=self.num_workers,
                          pin_memory=self.device.type == "cuda",
                          prefetch_factor=PREFETCH_BATCHES if self.num_workers else None,
                          persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(0))  # keeps the global RNG untouched

    def samples_per_epoch(self) -> int:
        """Every rank's samples in an epoch (whole batches)."""
        return self.dataset.plan.samples_per_epoch()

    def go_to(self, epoch: int, position: int) -> None:
        self.dataset.set_epoch(epoch, position // self.batch_size)

    def restart(self, epoch: int, position: int, error: Exception) -> None:
        """As `RecoveringLoader.restart`: the members in flight from sample `position` on whose decode kills
        its process are marked crashed (replaced and counted from then on), and fresh workers go on."""
        members = self.dataset.in_flight(epoch, position // self.batch_size, PREFETCH_BATCHES)
        self.blame(self.dataset, [(epoch, member.index, member) for member in members], max(self.num_workers, 1),
                   error, f"sample {position} of epoch {epoch}")
        self.loader = self.build()
