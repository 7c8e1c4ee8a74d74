"""The Atari replay's memory: one 84x84 frame per transition plus a few bytes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dqn_jax.agent.replay import bytes_per_transition, make_replay


def test_atari_replay_costs_about_7kb_per_transition():
    replay = make_replay(ring_steps=1_000, num_envs=8, frame_shape=(84, 84), frame_dtype=jnp.uint8,
                         stack=4, batch_size=32, gamma=0.99)
    shapes = jax.eval_shape(replay.init)  # no allocation: the 1M replay has the same layout
    per_transition = bytes_per_transition(shapes)
    # frame + int32 action + float32 reward + 3 bool flags; the 4-byte step counter is shared.
    assert abs(per_transition - (84 * 84 + 4 + 4 + 3)) < 0.01
    # A naive buffer storing obs and next_obs stacks costs 2 * 4 * 84 * 84 = 56,448 B.
    assert per_transition * 1_000_000 < 7.1e9
