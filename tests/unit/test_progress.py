"""The time left shown on the progress bar: from the rate since learning started, never before."""

from __future__ import annotations

from dqn_jax.progress import Remaining


def test_time_left_counts_only_the_learning_rate():
    remaining = Remaining(total_steps=1_000_000, learning_starts=100_000)
    assert remaining.update(50_000, now=10.0) is None  # random steps: fast, and not the run's pace
    assert remaining.describe(50_000, None) == "learning from 100,000"
    assert remaining.update(100_000, now=20.0) is None  # the chunk that compiled the learner
    assert remaining.describe(100_000, None) == "measuring"
    left = remaining.update(110_000, now=120.0)  # 10,000 env steps in 100 s
    assert left == 890_000 / 100
    assert remaining.describe(110_000, left) == "2:28:20 left"
    assert remaining.describe(110_000, 2 * 86_400 + 61) == "2d 0:01:01 left"
