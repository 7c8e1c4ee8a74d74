"""EnvPool pools for training and evaluation, seeded from the run seed, and the facts about them.

Training pools hold `num_seeds * num_envs` environments: agent `s` owns the block
`[s * num_envs, (s + 1) * num_envs)`. Pools run in sync mode (batch size = pool size), the mode in
which EnvPool is byte-for-byte repeatable whatever its thread count.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from dqn_jax.config import Config
from dqn_jax.games import task_id


def agent_seed(config: Config, agent: int) -> int:
    """Returns the seed of agent `agent` of a run (`config.seed + agent`)."""
    return config.seed + agent


def env_seeds(seed: int, count: int, stream: int | tuple[int, ...]) -> list[int]:
    """Returns `count` independent environment seeds derived from an agent seed.

    EnvPool seeds env i of a pool with `seed + i`, so runs with neighbouring seeds would share
    most of their environments; we hash the seed instead. `stream` separates training (0) from
    evaluation (1) environments; `(0, env_steps)` seeds training envs restarted on resume.
    """
    spawn_key = stream if isinstance(stream, tuple) else (stream,)
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=spawn_key)
    return [int(s) for s in sequence.generate_state(count, dtype=np.uint32) % (2**31 - 1)]


@dataclasses.dataclass(frozen=True)
class EnvFacts:
    """What the learner needs to know about an environment."""

    obs_shape: tuple[int, ...]
    """Shape of one observation (Atari: (4, 84, 84) stacked frames; CartPole: (4,))."""
    obs_dtype: np.dtype
    """Observation dtype (uint8 for Atari frames, float32 for CartPole)."""
    num_actions: int
    """Number of discrete actions."""

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of the part of an observation that is new at each step (one frame or the vector)."""
        return self.obs_shape[1:] if len(self.obs_shape) == 3 else self.obs_shape


def _make(config: Config, num_envs: int, seeds: list[int], evaluation: bool):
    import envpool

    threads = config.env_threads or min(num_envs, os.cpu_count() or 1)
    kwargs: dict = dict(
        env_type="gymnasium", num_envs=num_envs, batch_size=num_envs, seed=seeds,
        num_threads=threads,
    )
    if config.is_atari:
        kwargs.update(
            episodic_life=config.episodic_life and not evaluation,
            reward_clip=config.reward_clip and not evaluation,
            repeat_action_probability=config.repeat_action_probability,
            full_action_space=config.full_action_space,
            noop_max=config.noop_max,
            use_fire_reset=config.fire_reset,
            max_episode_steps=config.eval_max_episode_steps if evaluation else config.max_episode_steps,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium's Box precision notes for CartPole
        return envpool.make(task_id(config.game), **kwargs)


def make_train_pool(config: Config, resumed_at: int = 0, agents: range | None = None):
    """Returns a training pool: `num_envs` envs for each agent of `agents` (default: all
    `num_seeds`), agent-major, with derived seeds.

    `resumed_at` (env steps) gives envs restarted on resume their own seeds, so a resumed run does
    not replay the games it started with. An agent's envs get the same seeds whichever pool holds
    them, so agents sharded over devices (one pool each) play the games they would play together.
    """
    stream = (0, resumed_at) if resumed_at else 0
    agents = range(config.num_seeds) if agents is None else agents
    seeds = []
    for agent in agents:
        seeds += env_seeds(agent_seed(config, agent), config.num_envs, stream=stream)
    return _make(config, len(agents) * config.num_envs, seeds, evaluation=False)


def make_eval_pool(config: Config, stream: int = 1):
    """Returns the evaluation pool: `num_seeds * eval_episodes` envs, raw rewards, whole games.

    `stream` 1 seeds the evaluations during training, 2 the scoring of the best params at the end
    of a run, 3 `python -m dqn_jax.evaluate` (`evaluate.*_STREAM`): no two play the same games.
    """
    seeds = []
    for agent in range(config.num_seeds):
        seeds += env_seeds(agent_seed(config, agent), config.eval_episodes, stream=stream)
    return _make(config, config.num_seeds * config.eval_episodes, seeds, evaluation=True)


def facts(pool) -> EnvFacts:
    """Returns the observation shape and dtype and the action count of a pool."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium's Box precision notes for CartPole
        space = pool.observation_space
        return EnvFacts(tuple(space.shape), np.dtype(space.dtype), int(pool.action_space.n))


def hard_done(terminated, truncated, info):
    """Returns where an episode really ended (game over or time limit), not only a life.

    With `episodic_life`, EnvPool sets `terminated` at every life loss but `info["terminated"]`
    only at the game over. Works on NumPy and JAX arrays alike.
    """
    real_terminal = info["terminated"] != 0 if "terminated" in info else terminated
    return real_terminal | truncated


def raw_reward(reward, info):
    """Returns the unclipped reward (Atari's `info["reward"]`), the one users see as returns."""
    return info["reward"] if "reward" in info else reward
