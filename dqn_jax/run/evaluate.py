"""Evaluation: whole games on a separate pool, raw rewards, ε = `eval_epsilon`, and videos.

    python -m dqn_jax.evaluate RUN_DIR [--params=best|last|mean] [--episodes=30] [--epsilon=E] [--video] [--seed=S]

Each evaluation env plays exactly one game, so short games are not over-represented. The
exploration key is derived from the agent's seed and the env-step count, never from the training
key, so evaluating more or less often does not change training. The command scores a trained
run's agents on fresh games (its own env seeds, not those the run was evaluated on), prints
mean ± std, min and max per agent, and writes `evaluation.json` into the run directory;
`load_policy` gives Python code a policy from a run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dqn_jax import determinism, games
from dqn_jax.agent.acting import epsilon_greedy
from dqn_jax.agent.learner import played_params
from dqn_jax.agent.networks import make_network
from dqn_jax.config import Config, ConfigError, validate
from dqn_jax.loop import envs
from dqn_jax.run import checkpoint, presets
from dqn_jax.run.checkpoint import CheckpointError
from dqn_jax.run.metrics import CONFIG_FILE, write_json_atomic

EVAL_KEY_STREAM = 0x5EED_E7A1  # folds the agents' seeds into a key stream separate from training
# Env seeds and exploration keys of each kind of evaluation, so that no two play the same games:
TRAINING_STREAM = 1  # the evaluations during training (which choose the best params)
FINAL_SCORING_STREAM = 2  # the run's last act: its best params scored on fresh games
COMMAND_STREAM = 3  # `python -m dqn_jax.evaluate`, after the run
PARAMS_CHOICES = ("best", "last", "mean")  # `load_params`'s choices of params to score


class EvalResult(NamedTuple):
    """One evaluation's games, [S, eval_episodes] each."""

    returns: np.ndarray  # float64: raw (unclipped) game scores
    lengths: np.ndarray  # int64: env steps per game
    truncated: np.ndarray  # bool: the game was cut by `eval_max_episode_steps`, not finished
    frames: list[np.ndarray] | None  # agent `record_agent`'s first game, [H, W] uint8 each (Atari)
    q_start: np.ndarray | None = None  # float64: max_a Q(s_0, a), the network's value of each game's first state
    value_realized: np.ndarray | None = None  # float64: what Q(s_0) estimates, as it happened (`realized_values`)


def training_rewards(config: Config, raw_rewards: np.ndarray) -> np.ndarray:
    """Returns the rewards the learner would have stored for these raw rewards: clipped to their
    sign (Atari with `reward_clip`) and multiplied by `reward_scale`."""
    rewards = np.sign(raw_rewards) if config.is_atari and config.reward_clip else raw_rewards
    return rewards * config.reward_scale


class Evaluator:
    """Plays `eval_episodes` games per agent on its own pool with given parameters."""

    def __init__(self, config: Config, network=None, stream: int = TRAINING_STREAM):
        """`network`: the agents' Q-network (default: the config's, for the pool's action count);
        `stream` selects the pool's seeds and exploration keys (1: the evaluations during training)."""
        self.config = config
        self.pool = envs.make_eval_pool(config, stream)
        self.num_actions = envs.facts(self.pool).num_actions
        if network is None:
            network = make_network(config, self.num_actions)
        seeds = jnp.array([envs.agent_seed(config, s) for s in range(config.num_seeds)])
        key_stream = EVAL_KEY_STREAM + stream - 1
        self.base_keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), key_stream))(seeds)

        def act(params, obs, keys):
            # The keys are split inside the program: split eagerly, op by op, their dispatch cost
            # more than a small network's acting (docs/results.md, "Evaluation's cost per step").
            pairs = jax.vmap(jax.random.split)(keys)  # [S, 2, ...]: the next keys, this step's

            def act_one(agent_params, agent_obs, key):
                q_values = network.apply(agent_params, agent_obs)
                return epsilon_greedy(key, q_values, config.eval_epsilon), jnp.max(q_values, axis=-1)

            return (*jax.vmap(act_one)(params, obs, pairs[:, 1]), pairs[:, 0])

        self._act = jax.jit(act)

    def run(self, params, env_steps: int, record_agent: int | None = None) -> EvalResult:
        """Plays one game per evaluation env with `params` (leading [S] axis); returns its `EvalResult`
        (frames only when `record_agent` is given and the game is Atari).

        Beside the score, each game measures over-estimation (van Hasselt et al. 2016): the
        network's value of the first state, max_a Q(s_0, a), against what it estimates as it then
        happened — the discounted sum of the rewards the learner would have stored (clipped and
        scaled), up to the first lost life under `episodic_life` (the learner's terminal), else to
        the game's end.
        """
        config = self.config
        S, N = config.num_seeds, config.eval_episodes
        keys = jax.vmap(lambda k: jax.random.fold_in(k, env_steps))(self.base_keys)
        obs, info = self.pool.reset()
        returns = np.zeros(S * N)
        lengths = np.zeros(S * N, np.int64)
        running = np.ones(S * N, bool)
        cut = np.zeros(S * N, bool)
        q_start = None
        value_realized, discount = np.zeros(S * N), np.ones(S * N)
        valuing = np.ones(S * N, bool)  # still inside the stretch Q(s_0) estimates
        lives = np.asarray(info["lives"]) if "lives" in info else None
        frames = [] if record_agent is not None and config.is_atari else None
        recorded = record_agent * N if frames is not None else None
        while running.any():
            if frames is not None and running[recorded]:
                frames.append(obs[recorded, -1])
            actions, q_max, keys = self._act(params, jnp.asarray(obs).reshape(S, N, *obs.shape[1:]), keys)
            if q_start is None:
                q_start = np.asarray(q_max, np.float64).reshape(-1)
            obs, reward, terminated, truncated, info = self.pool.step(np.asarray(actions).reshape(-1))
            raw = np.asarray(envs.raw_reward(reward, info), np.float64)
            returns += np.where(running, raw, 0.0)
            lengths += running
            value_realized += np.where(valuing, discount * training_rewards(config, raw), 0.0)
            discount *= config.gamma
            done = envs.hard_done(terminated, truncated, info)
            cut |= running & done & np.asarray(truncated) & ~np.asarray(terminated)
            running &= ~done
            valuing &= running
            if lives is not None and config.episodic_life:
                valuing &= ~(np.asarray(info["lives"]) < lives)
            lives = np.asarray(info["lives"]) if lives is not None else None
        return EvalResult(returns.reshape(S, N), lengths.reshape(S, N), cut.reshape(S, N), frames,
                          q_start.reshape(S, N), value_realized.reshape(S, N))


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


# --- scoring a trained run -------------------------------------------------------------------------


def run_config(run_dir: Path | str) -> Config:
    """Returns the config a run directory was trained with.

    Raises:
      ConfigError: no run directory there, or its `config.toml` cannot be read.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {CONFIG_FILE} there; pass the directory of a training run")
    return validate(presets.load_toml(path))


def num_actions_of(config: Config) -> int:
    """Returns the game's number of actions (from a one-game evaluation pool)."""
    pool = envs.make_eval_pool(dataclasses.replace(config, num_seeds=1, eval_episodes=1))
    count = envs.facts(pool).num_actions
    pool.close()
    return count


def load_params(run_dir: Path | str, config: Config, which: str) -> tuple[object, list[dict]]:
    """Returns `(params [S, ...], sources)`: every agent's `best`, `last` or `mean` params, and where each came from.

    `best` reads each seed's best-evaluation params; `last` the params the newest state checkpoint's
    evaluations play (its running average with `eval_average_updates`, else the online params; the
    whole state is restored, replay included, so it needs the run's memory); `mean` the uniform
    average of those params over every state checkpoint the run keeps (`keep_checkpoints`), as
    checkpoint averaging does.

    Raises:
      CheckpointError: the params are missing or cannot be read.
    """
    seeds = [envs.agent_seed(config, s) for s in range(config.num_seeds)]
    if which == "best":
        loaded = [checkpoint.load_best_params(run_dir, seed) for seed in seeds]
        params = jax.tree.map(lambda *leaves: np.stack(leaves), *[p for p, _ in loaded])
        return params, [{"seed": seed, "env_steps": meta["env_steps"], "eval_return_mean": meta["eval_return_mean"]}
                        for seed, (_, meta) in zip(seeds, loaded, strict=True)]
    from dqn_jax.loop.loop import agent_keys, build_loop

    loop = build_loop(config)
    abstract = loop.abstract_agents(agent_keys(config))
    loop.pool.close()
    if which == "last":
        agents, _, step = checkpoint.restore_state(run_dir, abstract)
        return played_params(agents), [{"seed": seed, "env_steps": step} for seed in seeds]
    steps = checkpoint.all_steps(run_dir) or [checkpoint.require_latest_step(run_dir)]
    total = None
    for step in steps:  # one state in memory at a time: each holds its replay
        played = jax.device_get(played_params(checkpoint.restore_state(run_dir, abstract, step)[0]))
        total = played if total is None else jax.tree.map(np.add, total, played)
    mean = jax.tree.map(lambda x: (x / len(steps)).astype(x.dtype), total)
    return mean, [{"seed": seed, "env_steps": steps[-1], "averaged_env_steps": steps} for seed in seeds]


class Policy:
    """One agent's ε-greedy policy: `policy(observations [B, ...]) -> actions [B] int32`.

    Call number `calls` draws its exploration from `fold_in(PRNGKey(seed), calls)`: as many calls as
    wanted, and the same actions again for the same seed and call number.
    """

    def __init__(self, network, params, epsilon: float, seed: int):
        self._act = jax.jit(lambda obs, key, n: epsilon_greedy(jax.random.fold_in(key, n),
                                                               network.apply(params, obs), epsilon))
        self._key = jax.random.PRNGKey(seed)
        self.calls = 0

    def __call__(self, observations) -> np.ndarray:
        actions = self._act(jnp.asarray(observations), self._key, np.uint32(self.calls))
        self.calls += 1
        return np.asarray(actions)


def load_policy(run_dir: Path | str, params: str = "best", agent: int = 0, epsilon: float = 0.0,
                seed: int = 0) -> Policy:
    """Returns the `Policy` of one agent of a trained run: `policy(observations [B, ...]) -> actions [B] int32`.

    Greedy with probability 1 - `epsilon` (exploration drawn from `seed`); observations as the
    game's EnvPool pool returns them (Atari: [B, 4, 84, 84] uint8).
    """
    config = run_config(run_dir)
    all_params, _ = load_params(run_dir, config, params)
    agent_params = jax.tree.map(lambda leaf: jnp.asarray(leaf[agent]), all_params)
    return Policy(make_network(config, num_actions_of(config)), agent_params, epsilon, seed)


def score(run_dir: Path, which: str, episodes: int, epsilon: float | None, seed: int | None,
          video: bool) -> dict:
    """Plays `episodes` fresh games per agent of a run; returns the record written to `evaluation.json`.

    Raises:
      ConfigError: no run there, `which` is not one of `PARAMS_CHOICES`, fewer than one game, or an
        exploration rate outside [0, 1].
      CheckpointError: the params are missing or cannot be read.
    """
    if which not in PARAMS_CHOICES:
        raise ConfigError(f"params = {which!r}: choose best (each seed's best-evaluation params), last "
                          "(the newest state checkpoint) or mean (the average over the kept state checkpoints)")
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes}: play at least one game")
    run_dir = Path(run_dir)
    trained = run_config(run_dir)
    config = dataclasses.replace(trained, eval_episodes=episodes, seed=trained.seed if seed is None else seed,
                                 eval_epsilon=trained.eval_epsilon if epsilon is None else epsilon)
    config = validate(config)
    params, sources = load_params(run_dir, trained, which)
    evaluator = Evaluator(config, stream=COMMAND_STREAM)
    result = evaluator.run(params, env_steps=0, record_agent=0 if video else None)
    record = {"run_dir": str(run_dir), "game": trained.game, "params": which, "episodes": episodes,
              "epsilon": config.eval_epsilon,
              "seed": config.seed, "eval_max_episode_steps": config.eval_max_episode_steps, "agents": []}
    for s, source in enumerate(sources):
        returns = result.returns[s]
        record["agents"].append({
            **source, "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "return_min": float(returns.min()), "return_max": float(returns.max()),
            "length_mean": float(result.lengths[s].mean()), "truncated": int(result.truncated[s].sum()),
            "returns": returns.tolist()})
    if video:
        record["video"] = str(write_video(result.frames, run_dir / "evaluation")) if result.frames else None
    write_json_atomic(run_dir / "evaluation.json", record)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    determinism.request_deterministic_ops()  # before anything starts a JAX backend
    parser = argparse.ArgumentParser(prog="python -m dqn_jax.evaluate",
                                     description="Score a trained run's agents on fresh games.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--params", choices=PARAMS_CHOICES, default="best",
                        help="each seed's best-evaluation params; the newest state checkpoint's (its running "
                             "average when the run keeps one: eval_average_updates); or the mean of those of "
                             "every state checkpoint the run keeps")
    parser.add_argument("--episodes", type=int, default=30, help="games per agent (default 30)")
    parser.add_argument("--epsilon", type=float, default=None, help="exploration (default: the run's eval_epsilon)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the games (default: the run's)")
    parser.add_argument("--video", action="store_true", help="write the first agent's first game (Atari)")
    args = parser.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        record = score(args.run_dir, args.params, args.episodes, args.epsilon, args.seed, args.video)
    except (ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    for agent in record["agents"]:
        # CartPole-v1 ends every game at 500 steps: a game that lasts them is won, not cut short.
        ends = ("lasted CartPole's full 500 steps" if record["game"] == games.CARTPOLE
                else f"cut at the {record['eval_max_episode_steps']:,}-step limit")
        where = (f"env step {agent['env_steps']:,}" if "averaged_env_steps" not in agent else
                 f"env steps {', '.join(f'{step:,}' for step in agent['averaged_env_steps'])}")
        print(f"seed {agent['seed']} ({args.params} params, {where}): "
              f"{agent['return_mean']:.2f} ± {agent['return_std']:.2f} over {args.episodes} games "
              f"(min {agent['return_min']:.1f}, max {agent['return_max']:.1f}, {agent['truncated']} {ends})")
    print(f"wrote {args.run_dir / 'evaluation.json'}" + (f" and {record['video']}" if record.get("video") else ""))
    return 0

