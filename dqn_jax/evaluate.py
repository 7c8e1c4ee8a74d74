"""Evaluation: whole games on a separate pool, raw rewards, ε = `eval_epsilon`, and videos.

Each evaluation env plays exactly one game, so short games are not over-represented. The
exploration key is derived from the agent's seed and the env-step count, never from the training
key, so evaluating more or less often does not change training.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dqn_jax import envs
from dqn_jax.acting import epsilon_greedy
from dqn_jax.config import Config

EVAL_KEY_STREAM = 0x5EED_E7A1  # folds the agents' seeds into a key stream separate from training


class Evaluator:
    """Plays `eval_episodes` games per agent on its own pool with given parameters."""

    def __init__(self, config: Config, network):
        self.config = config
        self.pool = envs.make_eval_pool(config)
        self.num_actions = envs.facts(self.pool).num_actions
        seeds = jnp.array([envs.agent_seed(config, s) for s in range(config.num_seeds)])
        self.base_keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), EVAL_KEY_STREAM))(seeds)

        def act(params, obs, keys):
            def act_one(agent_params, agent_obs, key):
                q_values = network.apply(agent_params, agent_obs)
                return epsilon_greedy(key, q_values, config.eval_epsilon)

            return jax.vmap(act_one)(params, obs, keys)

        self._act = jax.jit(act)

    def run(self, params, env_steps: int, record_agent: int | None = None):
        """Plays one game per evaluation env with `params` (leading [S] axis).

        Returns:
          (returns [S, eval_episodes] float64, lengths [S, eval_episodes] int64, frames), where
          frames is a list of [H, W] uint8 frames of agent `record_agent`'s first game (Atari) or
          None when not recording.
        """
        S, N = self.config.num_seeds, self.config.eval_episodes
        keys = jax.vmap(lambda k: jax.random.fold_in(k, env_steps))(self.base_keys)
        obs, _ = self.pool.reset()
        returns = np.zeros(S * N)
        lengths = np.zeros(S * N, np.int64)
        running = np.ones(S * N, bool)
        frames = [] if record_agent is not None and self.config.is_atari else None
        recorded = record_agent * N if frames is not None else None
        while running.any():
            if frames is not None and running[recorded]:
                frames.append(obs[recorded, -1])
            keys, step_keys = jnp.split(jax.vmap(jax.random.split)(keys), 2, axis=1)
            keys, step_keys = keys[:, 0], step_keys[:, 0]
            actions = self._act(params, jnp.asarray(obs).reshape(S, N, *obs.shape[1:]), step_keys)
            obs, reward, terminated, truncated, info = self.pool.step(np.asarray(actions).reshape(-1))
            returns += np.where(running, envs.raw_reward(reward, info), 0.0)
            lengths += running
            running &= ~envs.hard_done(terminated, truncated, info)
        return returns.reshape(S, N), lengths.reshape(S, N), frames


def write_video(frames: list[np.ndarray], path: Path, fps: int = 30, scale: int = 4) -> Path:
    """Writes grey frames [H, W] uint8, upscaled `scale` times, as an MP4 (imageio-ffmpeg), or as a
    GIF when no MP4 writer is available; returns the path written."""
    import imageio.v2 as imageio

    big = np.stack([np.kron(frame, np.ones((scale, scale), np.uint8)) for frame in frames])
    try:
        imageio.mimwrite(path.with_suffix(".mp4"), big, fps=fps, macro_block_size=1)
        return path.with_suffix(".mp4")
    except (ImportError, RuntimeError, ValueError):
        imageio.mimwrite(path.with_suffix(".gif"), big, duration=1000 / fps, loop=0)
        return path.with_suffix(".gif")
