"""The memory check before a run allocates: what it counts, and the one line that refuses a run."""

from __future__ import annotations

import dataclasses

import pytest

from dqn_jax.config import ConfigError
from dqn_jax.run import preflight, presets


def test_plan_counts_the_replay_and_four_copies_of_the_params():
    pong = dataclasses.replace(presets.preset("Pong"), num_seeds=2, replay_capacity=1_000_000)
    memory = preflight.plan(pong)
    assert preflight.transition_bytes(pong) == 7_067  # as measured: docs/results.md
    assert memory.replay == 2 * 1_000_000 * 7_067
    nature_cnn = (8 * 8 * 4 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64) + (3136 * 512 + 512)
    assert memory.num_params == nature_cnn + 512 * 18 + 18  # full action space: an upper bound
    assert memory.params == 2 * memory.num_params * 4 * 4
    # Prioritized replay adds its sum tree: 2 × 2^20 float32 nodes for 1,000,000 slots, per agent.
    prioritized = preflight.plan(dataclasses.replace(pong, prioritized_replay=True))
    assert prioritized.replay - memory.replay == 2 * (2 * 2**20 * 4)


def test_a_replay_over_the_available_memory_is_refused_in_one_line():
    pong = dataclasses.replace(presets.preset("Pong"), num_seeds=4)
    with pytest.raises(ConfigError) as caught:
        preflight.check(pong, host_bytes=24 * 10**9)
    message = str(caught.value)
    assert "needs about 28.38 GB for its replay (1,000,000 transitions × 7,067 B × 4 agents)" in message
    assert "only 24.00 GB of memory is available; lower --replay-capacity or --num-seeds" in message
    assert preflight.check(dataclasses.replace(pong, replay_capacity=100_000), host_bytes=24 * 10**9).total > 0
    with pytest.raises(ConfigError, match=r"× 7,067 B \+ 8.4 MB of priorities × 4 agents"):
        preflight.check(dataclasses.replace(pong, prioritized_replay=True), host_bytes=24 * 10**9)


def test_the_first_line_of_a_run_names_its_size():
    cartpole = presets.preset("CartPole")
    line = preflight.describe(cartpole, preflight.plan(cartpole))
    assert line.startswith("CartPole: 8 envs, mlp Q-network of ") and "parameters, replay " in line
