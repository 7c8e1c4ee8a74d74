"""The loop's episode bookkeeping at EnvPool's soft resets (after a lost life, `episodic_life`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax.loop.iteration import episode_bookkeeping, initial_carry


def _step(carry, reward, lives, terminated=False, hard=False):
    one = lambda x, dtype: jnp.full((1, 1), x, dtype)  # noqa: E731  [S=1, E=1]
    return episode_bookkeeping(carry, jnp.zeros(1), carry.obs, one(terminated, bool), one(False, bool),
                               one(hard, bool), one(reward, jnp.float32), one(lives, jnp.int32))


@pytest.mark.parametrize("lives_after_reset, new_game", [(2, False), (3, True)])
def test_a_game_over_inside_a_soft_resets_no_ops_ends_the_game(lives_after_reset, new_game):
    carry = initial_carry(jnp.zeros((1, 1, 4)))
    _, carry = _step(carry, reward=0.0, lives=3)  # first step: the game's lives are known from here
    _, carry = _step(carry, reward=5.0, lives=3)
    experience, carry = _step(carry, reward=1.0, lives=2, terminated=True)  # a lost life: EnvPool's done
    assert int(experience.life_losses[0]) == 1 and not bool(experience.episode_done[0, 0])

    # EnvPool's reset step: its no-ops ran, and with lives back at 3 the game in them was lost.
    experience, carry = _step(carry, reward=0.0, lives=lives_after_reset)
    assert bool(experience.episode_done[0, 0]) == new_game
    assert bool(carry.first[0, 0]) == new_game  # a new game's observation starts a new stack
    if new_game:
        assert float(experience.episode_return[0, 0]) == 6.0 and int(experience.episode_length[0, 0]) == 3
        assert not bool(experience.episode_truncated[0, 0])
    np.testing.assert_array_equal(carry.episode_return, [[0.0 if new_game else 6.0]])
    np.testing.assert_array_equal(carry.episode_length, [[0 if new_game else 3]])
