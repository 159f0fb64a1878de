"""Two CPU processes with gloo: a loss over the gathered batch must get full-batch gradients, MoCo's
shuffling BN must give each rank its own rows computed on a shuffled slice, DDP must train a model
with LayerDrop (ranks skipping different layers), and the reductions behind losses, logging and
the non-finite stop must agree over ranks."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from helpers import join_gloo, run_ranks  # tests/ is on sys.path under pytest
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmssl import distributed as mdist
from mmssl.data.clip import Skipped
from mmssl.data.dataset import SkipCounter, SkipLimitExceeded
from mmssl.engine.distributed import DistInfo, cleanup, has_layer_drop, init_distributed, wrap_ddp
from mmssl.engine.trainer import NonFiniteLossError, check_finite_loss, window_means
from mmssl.models.audio import Wav2Vec2Encoder

WORLD_SIZE = 2
BATCH = 8  # full batch; each rank holds BATCH // WORLD_SIZE rows
TEMPERATURE = 0.5
SPAWN_TIMEOUT_S = 60.0
SHUFFLE_SEED = 3  # every rank seeds this before `shuffled_forward`: rank 0's permutation is reproducible
LAYER_DROP_STEPS = 6

# each rank's batches: (files that failed, samples that gave up); "a" fails on both ranks
SKIP_UNION = [[(["a"], 0), (["b", "b"], 0), ([], 0)], [(["a"], 0), ([], 0), (["c"], 0)]]
SKIP_GIVE_UP = [[([], 0), ([], 0)], [([], 0), ([], 1)]]
RANK_ITEMS = ([1.0, 2.0, 3.0], [7.0])  # per-item losses of rank 0 and rank 1 (masked steps, say)

Gather = Callable[[torch.Tensor], torch.Tensor]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(6, 4).double()


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    """Two "augmented views" of the full batch."""
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(2, BATCH, 6, generator=g, dtype=torch.float64)
    return x1, x2


def _nt_xent(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, gather: Gather,
             rank: int) -> torch.Tensor:
    """Symmetric InfoNCE of the local rows against the gathered batch, mean over local rows."""
    z = F.normalize(model(torch.cat([x1, x2])), dim=1)
    z1, z2 = z.chunk(2)
    all1, all2 = gather(z1), gather(z2)
    labels = torch.arange(len(x1)) + rank * len(x1)
    return (F.cross_entropy(z1 @ all2.T / TEMPERATURE, labels)
            + F.cross_entropy(z2 @ all1.T / TEMPERATURE, labels)) / 2


def _plain_all_gather(x: torch.Tensor) -> torch.Tensor:
    """The common mistake: `dist.all_gather` (no autograd), own slice put back to keep its graph."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _run(info: DistInfo) -> dict[str, object]:
    """What each rank reports. Kept apart from `_worker` so DDP is freed before the group is."""
    rank = info.rank
    ddp = DistributedDataParallel(_model())
    x1, x2 = (v.chunk(WORLD_SIZE)[rank] for v in _views())
    result: dict[str, object] = {
        "info": (info.rank, info.world_size, info.local_rank, str(info.device), info.is_main),
        "queries": (mdist.get_rank(), mdist.get_world_size(), mdist.is_main_process()),
    }
    for name, gather in [("gather_with_grad", mdist.gather_with_grad),
                         ("plain_all_gather", _plain_all_gather)]:
        ddp.zero_grad()
        _nt_xent(ddp, x1, x2, gather, rank).backward()  # DDP averages the grads over ranks
        result[name] = _grads(ddp)
    local = _views()[0].chunk(WORLD_SIZE)[rank]
    for name, module in [("shuffled_linear", _model()), ("shuffled_bn", nn.BatchNorm1d(6).double())]:
        torch.manual_seed(SHUFFLE_SEED)
        result[name] = mdist.shuffled_forward(module, local)
    result["layer_drop"] = _train_with_layer_drop(rank)
    rank_values = torch.arange(3.0, requires_grad=True) + 10 * rank
    result["gather_no_grad"] = mdist.gather_no_grad(rank_values)
    result["reduce_mean"] = mdist.reduce_mean(torch.tensor(rank))
    result["skips"] = mdist.sum_counters(Counter({"corrupt": 1}) if rank == 0 else Counter(corrupt=2, empty=1))
    result["count_weight"] = mdist.count_weight(torch.tensor(len(RANK_ITEMS[rank]), dtype=torch.float32))
    # the window's mean on each rank (2 and 7), then their mean: the micro-batches are not weighted
    result["window_means"] = window_means({"loss": RANK_ITEMS[rank],
                                           "accuracy": [0.25 + 0.5 * rank]}, torch.device("cpu"))
    result["skip_stops"] = [_skip_stop(batches[rank]) for batches in (SKIP_UNION, SKIP_GIVE_UP)]
    result["skip_resume"] = _skip_resume(rank)
    result["stopped"] = []
    for bad_rank in (None, 1):  # a non-finite loss on rank 1 stops rank 0 too (not left waiting in DDP)
        try:
            check_finite_loss(torch.tensor(math.nan if rank == bad_rank else 1.0), step=7, epoch=0)
            result["stopped"].append(None)
        except NonFiniteLossError as error:
            result["stopped"].append(str(error))
    mdist.barrier()
    return result


def _skip_stop(batches: list[tuple[list[str], int]]) -> tuple[int, str, list[str]] | None:
    """Feed a SkipCounter this rank's (failed files, samples that gave up) of each batch: at which
    batch it stops, saying what, with which bad files."""
    counter = SkipCounter(0.05, 40)  # the run goes on with 2 bad files
    for step, (files, unreplaced) in enumerate(batches):
        try:
            counter.update([Skipped(f"{name}.mp4", "corrupt", "") for name in files], unreplaced)
        except SkipLimitExceeded as stop:
            return step, str(stop), sorted(counter.bad)
    return None


def _skip_resume(rank: int) -> tuple[dict, list[str], Counter]:
    """A checkpoint's state of a SkipCounter whose ranks met other files ("b" twice on rank 1), and a
    counter restored from it for a manifest without "c": its bad files, and its failed decodes summed."""
    counter = SkipCounter(0.5, 40)
    counter.update([Skipped(f"{name}.mp4", "corrupt", "") for name in (["a"] if rank == 0 else ["b", "b", "c"])])
    state = counter.state()
    resumed = SkipCounter(0.5, 40)
    resumed.restore(state, {"a.mp4", "b.mp4"}, is_main=rank == 0)
    return state, sorted(resumed.bad), mdist.sum_counters(resumed.attempts)


class _MaskedContext(nn.Module):
    """wav2vec 2.0's masked forward of pretraining (half the steps masked): only LayerDrop leaves
    parameters unused in it."""

    def __init__(self, encoder: Wav2Vec2Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features, _ = self.encoder.extract(waveform)
        mask = torch.rand(features.shape[:2]) < 0.5
        return self.encoder.context(self.encoder.project(self.encoder.normalize(features)), mask)


def _train_with_layer_drop(rank: int) -> dict[str, object]:
    """A few DDP steps of a wav2vec 2.0 encoder whose 2 blocks are each dropped half the time, the
    ranks drawing their drops apart."""
    torch.manual_seed(0)
    encoder = Wav2Vec2Encoder("wav2vec2_tiny")
    plain = has_layer_drop(encoder)
    encoder.model.encoder.transformer.layer_drop = 0.5
    ddp = wrap_ddp(_MaskedContext(encoder), torch.device("cpu"))
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    torch.manual_seed(100 + rank)
    for _ in range(LAYER_DROP_STEPS):
        optimizer.zero_grad()
        ddp(torch.randn(2, 3200)).pow(2).mean().backward()
        optimizer.step()
    return {"has_layer_drop": (plain, has_layer_drop(encoder)),
            "params": [p.detach().clone() for p in encoder.parameters()]}


def _worker(rank: int, port: int, out_dir: str) -> None:
    info = join_gloo(rank, WORLD_SIZE, port)
    try:
        torch.save(_run(info), Path(out_dir) / f"rank{rank}.pt")
    finally:
        cleanup()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("dist")
    return run_ranks(_worker, out_dir, WORLD_SIZE, SPAWN_TIMEOUT_S)


@pytest.fixture(scope="module")
def full_batch_grads() -> list[torch.Tensor]:
    model = _model()
    _nt_xent(model, *_views(), gather=lambda x: x, rank=0).backward()
    return _grads(model)


def test_init_distributed_reads_torchrun_env(results: list[dict]) -> None:
    for rank, r in enumerate(results):
        assert r["info"] == (rank, WORLD_SIZE, rank, "cpu", rank == 0)
        assert r["queries"] == (rank, WORLD_SIZE, rank == 0)


def test_gather_with_grad_matches_full_batch_gradient(results: list[dict],
                                                      full_batch_grads: list[torch.Tensor]) -> None:
    for r in results:
        for got, expected in zip(r["gather_with_grad"], full_batch_grads, strict=True):
            torch.testing.assert_close(got, expected)


def test_plain_all_gather_loses_gradient(results: list[dict],
                                         full_batch_grads: list[torch.Tensor]) -> None:
    for r in results:
        got, expected = r["plain_all_gather"][0], full_batch_grads[0]
        assert not torch.allclose(got, expected, rtol=1e-3, atol=1e-6)


def test_gather_no_grad_and_reduce_mean(results: list[dict]) -> None:
    for r in results:
        gathered = r["gather_no_grad"]
        assert not gathered.requires_grad
        torch.testing.assert_close(gathered, torch.tensor([0.0, 1, 2, 10, 11, 12]))
        torch.testing.assert_close(r["reduce_mean"], torch.tensor(0.5))


def test_logged_metrics_are_the_mean_over_the_window_then_over_ranks(results: list[dict]) -> None:
    for r in results:
        assert r["window_means"] == {"loss": 4.5, "accuracy": 0.5}


def test_skip_counts_are_summed_over_ranks(results: list[dict]) -> None:
    for r in results:
        assert r["skips"] == Counter(corrupt=3, empty=1)


def test_bad_files_are_a_union_over_ranks_and_every_rank_stops_at_the_same_batch(results: list[dict]) -> None:
    union, gave_up = results[0]["skip_stops"]
    assert results[1]["skip_stops"] == [union, gave_up]
    assert union[0] == 2 and union[2] == ["a.mp4", "b.mp4", "c.mp4"]  # "a" failed on both ranks: one bad file
    assert union[1].startswith("stopping: 3 distinct files failed to decode (corrupt: 3; 5 failed decodes in all) "
                               "of the 40 in the dataset")  # attempts summed over the ranks
    assert gave_up[0] == 1 and gave_up[1].startswith("stopping: 1 sample(s) and their 10 replacements all failed")


def test_a_resumed_skip_counter_keeps_the_bad_files_and_the_failed_decodes_summed_once(results: list[dict]) -> None:
    for r in results:
        state, bad, attempts = r["skip_resume"]
        assert state == {"bad": {"a.mp4": "corrupt", "b.mp4": "corrupt", "c.mp4": "corrupt"}, "attempts": {"corrupt": 4}}
        assert bad == ["a.mp4", "b.mp4"]  # "c" is no longer in the dataset
        assert attempts == Counter(corrupt=4)  # rank 0 holds the saved count: not counted once per rank


def test_count_weighted_rank_means_average_to_the_mean_over_all_items(results: list[dict]) -> None:
    weights = [r["count_weight"].item() for r in results]
    assert weights == [1.5, 0.5]
    rank_means = [sum(items) / len(items) for items in RANK_ITEMS]
    all_items = [x for items in RANK_ITEMS for x in items]
    ddp_mean = sum(w * m for w, m in zip(weights, rank_means)) / WORLD_SIZE  # what DDP's gradient average sees
    assert ddp_mean == pytest.approx(sum(all_items) / len(all_items))


def test_a_non_finite_loss_on_one_rank_stops_every_rank(results: list[dict]) -> None:
    for r in results:
        assert r["stopped"][0] is None
        assert "non-finite loss nan at step 7 (epoch 0, mean over ranks)" in r["stopped"][1]


def test_shuffled_forward_returns_own_rows(results: list[dict]) -> None:
    for rank, r in enumerate(results):
        with torch.no_grad():
            expected = _model()(_views()[0].chunk(WORLD_SIZE)[rank])
        torch.testing.assert_close(r["shuffled_linear"], expected)


def test_shuffled_forward_normalises_over_a_shuffled_slice(results: list[dict]) -> None:
    x = _views()[0]
    torch.manual_seed(SHUFFLE_SEED)
    order = torch.randperm(BATCH)
    local = BATCH // WORLD_SIZE
    assert set(order[:local].tolist()) != set(range(local))  # the permutation mixes the ranks' rows
    bn = nn.BatchNorm1d(6).double()
    shuffled = torch.cat([bn(x[order[r * local:(r + 1) * local]]) for r in range(WORLD_SIZE)])
    expected = shuffled[order.argsort()].detach()
    got = torch.cat([r["shuffled_bn"] for r in results])
    torch.testing.assert_close(got, expected)
    unshuffled = torch.cat([bn(part) for part in x.chunk(WORLD_SIZE)]).detach()
    assert not torch.allclose(got, unshuffled)


def test_ddp_trains_through_layer_drop(results: list[dict]) -> None:
    for r in results:
        assert r["layer_drop"]["has_layer_drop"] == (False, True)
    for a, b in zip(results[0]["layer_drop"]["params"], results[1]["layer_drop"]["params"], strict=True):
        torch.testing.assert_close(a, b)  # gradients were averaged over the ranks every step


def test_single_process_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert (info.rank, info.world_size, info.is_main, str(info.device)) == (0, 1, True, device)
    assert not mdist.is_distributed()
    assert (mdist.get_rank(), mdist.get_world_size(), mdist.is_main_process()) == (0, 1, True)
    x = torch.randn(3, 2, requires_grad=True)
    assert mdist.gather_with_grad(x) is x
    torch.testing.assert_close(mdist.shuffled_forward(lambda v: v * 2, x), x * 2)
    assert not mdist.gather_no_grad(x).requires_grad
    torch.testing.assert_close(mdist.reduce_mean(torch.tensor(3)), torch.tensor(3.0))
    mdist.barrier()
    cleanup()
