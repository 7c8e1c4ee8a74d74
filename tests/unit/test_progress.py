"""The console: the time left on the progress bar (from the rate since learning started, never
before) and warnings as one line."""

from __future__ import annotations

import warnings

from dqn_jax.loop.loop import FusedLoopUnavailable
from dqn_jax.run.cli import one_line_warnings
from dqn_jax.run.progress import Remaining


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


def test_command_line_warnings_are_one_line_without_a_source_location(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    one_line_warnings()
    message = FusedLoopUnavailable("training with --loop=host instead")
    shown = warnings.formatwarning(message, FusedLoopUnavailable, "/site-packages/dqn_jax/loop/loop.py", 120,
                                   "warn(...)")
    assert shown == "warning: training with --loop=host instead\n"
