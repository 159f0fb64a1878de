"""Shuffle and Learn tuples (docs/methods.md#order): a < b < c < d < e, gaps, labels, reversal, positive share,
and the high-motion window choice (mean absolute frame difference as the proxy for optical flow)."""
from __future__ import annotations

import numpy as np
import pytest

from mmssl.data.manifest import ManifestRow
from mmssl.data.motion import (
    MotionConfig,
    cumulative_motion,
    frame_motion,
    pick_by_motion,
    tuple_motion,
)
from mmssl.io import TooShortError
from mmssl.tasks.order import OrderConfig, OrderVerification

FPS, NUM_FRAMES = 16.0, 48
TAU_MAX, TAU_MIN = 32, 8  # 2 s and 0.5 s at 16 fps


def row(path: str = "video.mp4", num_frames: int = NUM_FRAMES) -> ManifestRow:
    return ManifestRow(path, fps=FPS, num_frames=num_frames, duration=num_frames / FPS)


def task_with_motion(motion: np.ndarray, candidates: int = 16, power: float = 2.0,
                     **config: float) -> OrderVerification:
    """A task whose motion profile for row() is given (no decoding)."""
    task = OrderVerification(OrderConfig(motion=MotionConfig(candidates, power), **config))
    task.motion.cache.get(row().path, lambda: motion)
    return task


def draws(task: OrderVerification, count: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [(w.frames, w.targets["label"]) for w in (task.window(row(), rng) for _ in range(count))]


@pytest.mark.parametrize("candidates", [1, 16])
def test_tuple_rules(candidates: int) -> None:
    """Positives (b, c, d): b < c < d, 2 <= d - b <= tau_max. Negatives keep b and d as first and
    last frame and take the middle one (a or e, both used) at least tau_min outside [b, d]. Either order."""
    task = task_with_motion(np.random.default_rng(1).uniform(0, 1, NUM_FRAMES - 1),
                            candidates=candidates)
    orders: dict[int, set[bool]] = {1: set(), 0: set()}
    sides = set()
    for frames, label in draws(task, 3000):
        assert len(frames) == 3 and frames.min() >= 0 and frames.max() < NUM_FRAMES
        forward = frames[0] < frames[2]
        orders[label].add(bool(forward))
        b, middle, d = frames if forward else frames[::-1]
        assert 2 <= d - b <= TAU_MAX
        if label == 1:
            assert b < middle < d
        else:
            assert middle <= b - TAU_MIN or middle >= d + TAU_MIN
            sides.add(bool(middle > d))
    assert sides == {True, False}
    assert orders == {1: {True, False}, 0: {True, False}}  # reversed positives stay positive


def test_label_is_drawn_after_the_tuple() -> None:
    """b and d, their gap and place, are alike for both labels (one a < b < c < d < e, then the
    label), so how far apart the first and last frames look says nothing of the label."""
    task = task_with_motion(np.random.default_rng(1).uniform(0, 1, NUM_FRAMES - 1), positive_share=0.5)
    by_label: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for frames, label in draws(task, 4000):
        by_label[label].append((abs(int(frames[2]) - int(frames[0])), int(min(frames[0], frames[2]))))
    negatives, positives = (np.array(by_label[label], dtype=float) for label in (0, 1))
    for column in range(2):  # d - b, then b
        se = np.sqrt(negatives[:, column].var() / len(negatives) + positives[:, column].var() / len(positives))
        assert abs(negatives[:, column].mean() - positives[:, column].mean()) < 4 * se


def test_positive_share_is_about_a_quarter() -> None:
    task = task_with_motion(np.ones(NUM_FRAMES - 1))
    labels = np.array([label for _, label in draws(task, 4000)])
    assert abs(labels.mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / len(labels))
    half = OrderVerification(OrderConfig(positive_share=0.5, motion=MotionConfig(candidates=1)))
    rng = np.random.default_rng(2)
    labels = np.array([half.window(row(), rng).targets["label"] for _ in range(4000)])
    assert abs(labels.mean() - 0.5) < 4 * np.sqrt(0.25 / len(labels))


def test_too_short_video_raises() -> None:
    """a < b < c < d < e needs b + 2 = d and a, e tau_min outside: 3 + 2 tau_min frames."""
    task = OrderVerification(OrderConfig(motion=MotionConfig(candidates=1)))
    assert task.min_frames(FPS) == 3 + 2 * TAU_MIN
    frames = task.window(row(num_frames=3 + 2 * TAU_MIN), np.random.default_rng(0)).frames
    assert abs(int(frames[2]) - int(frames[0])) == 2
    with pytest.raises(TooShortError):
        task.window(row(num_frames=2 + 2 * TAU_MIN), np.random.default_rng(0))


def test_motion_proxy_and_tuple_score() -> None:
    frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    frames[1:, :4] = 255  # half the image changes between frames 0 and 1, then nothing moves
    np.testing.assert_allclose(frame_motion(frames), [0.5, 0.0, 0.0])
    cum = cumulative_motion(frame_motion(frames))
    np.testing.assert_allclose(cum, [0.0, 0.5, 0.5, 0.5])
    assert tuple_motion(cum, np.array([0, 1, 3])) == 0.0  # frames 1 and 3 look the same
    assert tuple_motion(cum, np.array([3, 1, 0])) == 0.0  # order of the tuple does not matter
    cum = cumulative_motion(np.ones(9))
    assert tuple_motion(cum, np.array([0, 2, 9])) == 2.0  # the smaller gap counts
    rng = np.random.default_rng(0)
    picks = [pick_by_motion([np.array([0, 1, 2]), np.array([0, 4, 8])], cum, rng) for _ in range(2000)]
    assert 0.7 < np.mean(picks) < 0.9  # scores 1 and 4: the second 80% of the time
    static = cumulative_motion(np.zeros(9))
    picks = [pick_by_motion([np.array([0, 1, 2]), np.array([0, 4, 8])], static, rng) for _ in range(2000)]
    assert 0.4 < np.mean(picks) < 0.6  # all static: uniform


def test_motion_weighting_prefers_high_motion_windows() -> None:
    """A video that is static in its first half and moves in its second: uniform sampling puts
    many tuples in the static half (unlearnable: the frames look alike); motion weighting few."""
    motion = np.where(np.arange(NUM_FRAMES - 1) < NUM_FRAMES // 2, 0.0, 1.0) + 1e-3
    cum = cumulative_motion(motion)

    def static_share(task: OrderVerification) -> float:
        return float(np.mean([tuple_motion(cum, frames) < 1.0 for frames, _ in draws(task, 2000)]))

    uniform = static_share(task_with_motion(motion, candidates=1))
    weighted = static_share(task_with_motion(motion, candidates=16, power=1.0))
    assert uniform > 0.3 and weighted < 0.1
    assert static_share(task_with_motion(motion, candidates=16, power=2.0)) <= weighted
