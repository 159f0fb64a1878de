"""The loss library: every loss against its slow reference (value and gradient), known limits,
stop-gradients, MoCo's queue, the EMA helpers, triplet mining, the 2-process gather, the benchmark."""
from __future__ import annotations

import doctest
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import join_gloo, run_ranks  # tests/ is on sys.path under pytest
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from mmssl.engine import distributed as mdist
from mmssl.losses import (
    LOSSES,
    BarlowTwinsLoss,
    BYOLLoss,
    InfoNCELoss,
    MarginContrastiveLoss,
    MoCoLoss,
    NTXentLoss,
    SimSiamLoss,
    TripletLoss,
    VICRegLoss,
    build_loss,
    squared_distances,
)
from mmssl.losses.reference import CASES, moco
from mmssl.models.ema import cosine_momentum, momentum_update

BATCH, DIM = 12, 6
TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_losses.py"


def _leaves(inputs: dict[str, Tensor]) -> list[Tensor]:
    """The floating inputs, made leaves that require grad (labels and masks are left as they are)."""
    return [v.requires_grad_() for v in inputs.values() if v.is_floating_point()]


def _grads(loss: Tensor, leaves: list[Tensor]) -> list[Tensor]:
    """d loss / d leaf, zeros where the loss does not depend on a leaf (a stopped gradient)."""
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True)]


# --- every loss against its reference -------------------------------------------------------------

def test_every_registered_loss_has_a_reference_case() -> None:
    assert {type(case.build(DIM)) for case in CASES.values()} == {cls for _, cls in LOSSES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference_value_and_gradient(name: str) -> None:
    case = CASES[name]
    torch.manual_seed(0)
    module = case.build(DIM).double()
    inputs = case.inputs(BATCH, DIM, torch.Generator().manual_seed(len(name)))
    leaves = _leaves(inputs)
    expected = case.reference(module, **inputs)  # first: MoCo's forward changes the queue
    got = module(**inputs)
    torch.testing.assert_close(got, expected)
    grads = _grads(got, leaves)
    for g, e in zip(grads, _grads(expected, leaves), strict=True):
        torch.testing.assert_close(g, e)
    assert any(g.abs().sum() > 0 for g in grads)


def test_build_loss_by_name() -> None:
    loss = build_loss("nt_xent", temperature=0.3)
    assert isinstance(loss, NTXentLoss) and loss.temperature == 0.3
    with pytest.raises(KeyError, match="known: barlow_twins"):
        build_loss("simclr")


def test_docstring_examples_run() -> None:
    """Each registered loss's docstring has an Examples block, and every loss module's doctests pass."""
    for name, cls in LOSSES.items():
        assert ">>> " in (cls.__doc__ or ""), f"{name}: no example in the docstring"
    for module in sorted({sys.modules[cls.__module__] for _, cls in LOSSES.items()}, key=lambda m: m.__name__):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, f"{module.__name__}: {failed} of {attempted} examples failed"


# --- known limits --------------------------------------------------------------------------------

def _decorrelated(n: int, d: int, std: float) -> Tensor:
    """[n, d] features with zero mean, uncorrelated columns of std `std` (unbiased), then scaled and
    shifted per feature (what standardisation undoes) when used for Barlow Twins."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))  # orthonormal columns, each with zero mean
    return q * std * math.sqrt(n - 1)


def test_nt_xent_counts_2n_minus_2_negatives() -> None:
    z = torch.eye(4, 8, dtype=torch.float64)  # identical views, orthogonal samples: s_pos = 1/T, s_neg = 0
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * 4 - 2))
    got = NTXentLoss(temperature=t)(z, z.clone())
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("loss_class", [NTXentLoss, InfoNCELoss])
def test_unique_labels_give_the_plain_loss(loss_class: type[nn.Module]) -> None:
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, BATCH, DIM, generator=g, dtype=torch.float64)
    ids = torch.randperm(BATCH, generator=g) + 100
    torch.testing.assert_close(loss_class()(a, b, ids), loss_class()(a, b))


def test_byol_and_simsiam_minimum_on_identical_views() -> None:
    p1, p2 = torch.randn(2, BATCH, DIM, dtype=torch.float64)
    zero = torch.tensor(0.0, dtype=torch.float64)
    torch.testing.assert_close(BYOLLoss()(p1, p2, z1=p2.clone(), z2=p1.clone()), zero)
    torch.testing.assert_close(SimSiamLoss()(p1, p2, z1=p2 * 3, z2=p1 * 2), zero - 1)


@pytest.mark.parametrize("loss_class", [BYOLLoss, SimSiamLoss])
def test_stop_gradient_on_the_target_branch(loss_class: type[nn.Module]) -> None:
    p1, p2, z1, z2 = (x.requires_grad_() for x in torch.randn(4, BATCH, DIM, dtype=torch.float64))
    loss_class()(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_barlow_twins_near_zero_on_decorrelated_identical_views() -> None:
    z = _decorrelated(16, DIM, std=1.0) * torch.arange(1.0, DIM + 1) + 5.0  # BN removes scale and shift
    assert BarlowTwinsLoss()(z, z.clone()) < 1e-6
    assert BarlowTwinsLoss()(z, torch.randn_like(z)) > 1.0


def test_vicreg_zero_on_decorrelated_identical_views_with_std_above_one() -> None:
    z = _decorrelated(16, DIM, std=2.0)
    assert VICRegLoss()(z, z.clone()) < 1e-12
    assert VICRegLoss()(z / 4, z / 4) > 1.0  # std 0.5: the variance hinge is active


def test_margin_loss_limits_and_label_convention() -> None:
    x = torch.randn(4, DIM, dtype=torch.float64)
    far = x + 10.0  # distance 10 * sqrt(DIM) > margin
    positive = torch.tensor([True, True, False, False])
    loss = MarginContrastiveLoss(margin=1.0)
    assert loss(x, x.clone(), positive=torch.ones(4, dtype=torch.bool)) == 0  # matching pairs at D = 0
    assert loss(x, far, positive=torch.zeros(4, dtype=torch.bool)) == 0  # non-matching beyond the margin
    x2 = x.clone().requires_grad_()
    at_zero = loss(x, x2, positive=~positive)  # non-matching pairs at D = 0 pay m^2 / 2 each
    torch.testing.assert_close(at_zero, torch.tensor(0.5 * 2 / 4, dtype=torch.float64))
    at_zero.backward()
    assert torch.isfinite(x2.grad).all()
    hadsell, avts = MarginContrastiveLoss(2.0), MarginContrastiveLoss(2.0, scale=1.0)
    torch.testing.assert_close(avts(x, x + 0.1, positive), 2 * hadsell(x, x + 0.1, positive))


# --- MoCo's queue --------------------------------------------------------------------------------

def test_moco_enqueues_after_the_logits_and_stops_the_keys_gradient() -> None:
    torch.manual_seed(0)
    loss = MoCoLoss(dim=4, queue_size=6).double()
    old_queue = loss.queue.clone()
    q = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    # the current keys (a key among the negatives would be a perfect match), requiring grad like an encoder output
    k = (q.detach() * 2).requires_grad_()
    got = loss(q, k)
    torch.testing.assert_close(got, moco(q, k, old_queue, 0.07))
    assert not torch.isclose(got, moco(q, k, loss.queue, 0.07))
    torch.testing.assert_close(loss.queue[:4], F.normalize(k, dim=1))
    torch.testing.assert_close(loss.queue[4:], old_queue[4:])
    assert loss.queue_ptr.item() == 4
    got.backward()  # the enqueue after the logits does not break the graph
    k2 = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)  # not parallel to q: a nonzero gradient if any
    loss(q, k2).backward()
    torch.testing.assert_close(loss.queue[[4, 5, 0, 1]], F.normalize(k2, dim=1))  # FIFO, wrapping around
    assert loss.queue_ptr.item() == 2
    assert q.grad.abs().sum() > 0 and k.grad is None and k2.grad is None  # stop-gradient on the keys
    with pytest.raises(ValueError, match="do not fit"):
        loss(torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64))


# --- EMA -----------------------------------------------------------------------------------------

def test_byol_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 1000) == pytest.approx(0.996)
    assert cosine_momentum(500, 1000) == pytest.approx(0.998)
    assert cosine_momentum(1000, 1000) == pytest.approx(1.0)
    assert cosine_momentum(250, 1000) == pytest.approx(1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_momentum(2000, 1000) == pytest.approx(1.0)


def test_momentum_update_moves_parameters_only() -> None:
    torch.manual_seed(0)
    online, target = (nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)) for _ in range(2))
    online[1].running_mean.fill_(7.0)
    before_t = [p.detach().clone() for p in target.parameters()]
    before_o = [p.detach().clone() for p in online.parameters()]
    momentum_update(online, target, m=0.9)
    for t, t0, o0, o in zip(target.parameters(), before_t, before_o, online.parameters(), strict=True):
        torch.testing.assert_close(t.detach(), 0.9 * t0 + 0.1 * o0)
        torch.testing.assert_close(o.detach(), o0)
    assert (target[1].running_mean == 0).all()
    with pytest.raises(ValueError, match="parameters"):
        momentum_update(nn.Linear(3, 2), target, m=0.9)


# --- triplet mining ------------------------------------------------------------------------------

def test_triplet_mining_on_a_hand_made_example() -> None:
    """Points on a line; squared distances are worked out in the comments."""
    x = torch.tensor([[0.0], [1.0], [3.0], [1.5], [4.0], [-0.9]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # label 2 has no positive: never an anchor
    distances = squared_distances(x, x)
    own = torch.arange(6)
    # batch hard: farthest positive, closest negative, e.g. anchor 0: positives 1 (1), 2 (9) -> 2;
    # negatives 3 (2.25), 4 (16), 5 (0.81) -> 5
    batch_hard = TripletLoss(mining="batch_hard", normalize=False)
    anchor, positive, negative = batch_hard.mine(distances, labels, labels, own)
    assert anchor.tolist() == [0, 1, 2, 3, 4]
    assert positive.tolist() == [2, 2, 0, 4, 3]
    assert negative.tolist() == [5, 3, 4, 1, 2]
    # semi-hard: per (anchor, positive), the closest negative with D_an > D_ap, else the farthest;
    # e.g. (1, 0): D_ap 1, negatives 3 (0.25), 4 (9), 5 (3.61) -> 5; (3, 4): D_ap 6.25, negatives
    # 0 (2.25), 1 (0.25), 2 (2.25), 5 (5.76) are all closer -> the farthest, 5
    semi_hard = TripletLoss(mining="semi_hard", normalize=False)
    anchor, positive, negative = semi_hard.mine(distances, labels, labels, own)
    assert anchor.tolist() == [0, 0, 1, 1, 2, 2, 3, 4]
    assert positive.tolist() == [1, 2, 0, 2, 0, 1, 4, 3]
    assert negative.tolist() == [3, 4, 5, 4, 5, 5, 5, 1]
    expected = F.relu(distances[anchor, positive] - distances[anchor, negative] + 0.2).mean()
    torch.testing.assert_close(semi_hard(x, labels), expected)
    assert TripletLoss()(x, torch.zeros(6, dtype=torch.long)) == 0  # no negatives: no triplet


# --- two processes: gathered losses give full-batch gradients ------------------------------------

WORLD_SIZE = 2
DIST_BATCH = 8  # full batch, 4 rows per rank
DIST_CASES = ("dense_predictive", "nt_xent", "nt_xent_labels", "info_nce", "info_nce_labels", "moco", "barlow_twins", "vicreg",
              "triplet_batch_hard", "triplet_semi_hard")
SPAWN_TIMEOUT_S = 120.0


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(DIM, DIM).double()


def _full_inputs(name: str) -> dict[str, Tensor]:
    inputs = CASES[name].inputs(DIST_BATCH, DIM, torch.Generator().manual_seed(DIST_CASES.index(name)))
    if name.startswith("triplet"):  # ranks with unequal numbers of triplets (4 and 2 anchors; 8 and 4 pairs)
        inputs["labels"] = torch.tensor([0, 0, 0, 1, 1, 1, 2, 3])
    return inputs


def _train_step(name: str, model: nn.Module, inputs: dict[str, Tensor], gather: bool
                ) -> tuple[Tensor, list[Tensor], dict[str, Tensor]]:
    """Loss, parameter gradients of `model` and the loss's state (MoCo's queue) after one step in
    which every floating input goes through `model` (one forward, as DDP wants)."""
    torch.manual_seed(1)  # the same initial MoCo queue everywhere
    loss_fn = CASES[name].build(DIM).double()
    loss_fn.gather_distributed = gather
    keys = [k for k, v in inputs.items() if v.is_floating_point()]
    features = model(torch.cat([inputs[k] for k in keys])).chunk(len(keys))
    model.zero_grad()
    loss = loss_fn(**{**inputs, **dict(zip(keys, features, strict=True))})
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()], loss_fn.state_dict()


def _run_rank(rank: int) -> dict[str, tuple]:
    ddp = DistributedDataParallel(_linear())  # averages the gradients over ranks
    results = {}
    for name in DIST_CASES:
        local = {k: v.chunk(WORLD_SIZE)[rank] for k, v in _full_inputs(name).items()}
        results[name] = _train_step(name, ddp, local, gather=True)
    return results


def _worker(rank: int, port: int, out_dir: str) -> None:
    join_gloo(rank, WORLD_SIZE, port)
    try:
        torch.save(_run_rank(rank), Path(out_dir) / f"rank{rank}.pt")
    finally:
        mdist.cleanup()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, tuple]]:
    out_dir = tmp_path_factory.mktemp("dist_losses")
    return run_ranks(_worker, out_dir, WORLD_SIZE, SPAWN_TIMEOUT_S)


def _check_full_batch(name: str, rank_results: list[dict[str, tuple]]) -> None:
    loss, grads, state = _train_step(name, _linear(), _full_inputs(name), gather=False)
    rank_losses = torch.stack([r[name][0] for r in rank_results])
    torch.testing.assert_close(rank_losses.mean(), loss)  # DDP's objective: the mean of the ranks' losses
    for r in rank_results:
        _, rank_grads, rank_state = r[name]
        for got, expected in zip(rank_grads, grads, strict=True):
            torch.testing.assert_close(got, expected)
        for key, value in state.items():  # MoCo: the same queue and pointer on every rank
            torch.testing.assert_close(rank_state[key], value)


def test_gathered_losses_have_full_batch_gradients(rank_results: list[dict[str, tuple]]) -> None:
    """One test for all cases, so that a parallel run (pytest -n) spawns the process group once."""
    failures = []
    for name in DIST_CASES:
        try:
            _check_full_batch(name, rank_results)
        except AssertionError as error:
            failures.append(f"{name}: {error}")
    assert not failures, "\n".join(failures)


# --- benchmark -----------------------------------------------------------------------------------

def test_bench_quick_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(TOOL), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert set(data["results"]) == set(CASES)
    for by_device in data["results"].values():
        row = by_device["cpu"]["32"]
        assert row["optimised_ms"] > 0 and row["naive_ms"] > 0 and row["ratio"] > 0
        assert row["loss_rel_diff"] < 1e-4
