"""`python -m dqn_jax.train --game=Pong`: train DQN and write a run directory.

The game's preset (`configs/<game>.toml`, else `configs/atari.toml`) sets the defaults; every
config field can be overridden on the command line (`--seed=3 --total-steps=50000`), and
`--config=FILE.toml` layers a file of your own between the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from dqn_jax import config as config_lib
from dqn_jax import envs
from dqn_jax.config import Config, ConfigError
from dqn_jax.evaluate import Evaluator, write_video
from dqn_jax.loop import StepRecord, agent_keys, build_loop
from dqn_jax.metrics import CONFIG_FILE, SUMMARY_FILE, RunWriter, write_json_atomic


def parse_config(argv: Sequence[str]) -> Config:
    """Returns the validated config for a command line (preset, then `--config`, then flags).

    Raises:
      ConfigError: an unknown game, an unreadable config file or an invalid value.
    """
    import tyro

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--game", default=Config.game)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    game = envs.canonical_game(known.game)
    base = config_lib.preset(game)
    if known.config:
        base = dataclasses.replace(config_lib.load_toml(known.config, base), game=game)
    config = tyro.cli(Config, default=base, args=rest, prog="python -m dqn_jax.train",
                      description=__doc__.split("\n\n")[0])
    return config_lib.validate(config)


def default_run_dir(config: Config) -> Path:
    """Returns `runs/<game>-s<seed>-<timestamp>`."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.game}-s{config.seed}-{stamp}"


def train_rows(config: Config, records: StepRecord, env_steps: int, steps_per_sec: float) -> list[dict]:
    """Returns one `train` row per agent summarising a chunk's stacked records [K, ...]."""
    r = jax.tree.map(np.asarray, records)
    learned = r.learned
    rows = []
    for s in range(config.num_seeds):
        row = {"kind": "train", "env_steps": env_steps, "seed": envs.agent_seed(config, s),
               "epsilon": float(r.epsilon[-1, s]), "steps_per_sec": steps_per_sec}
        if learned.any():
            for key in ("loss", "q_mean", "td_abs_mean"):
                row[key] = float(getattr(r, key)[learned, s].mean())
            row["learning_rate"] = float(r.learning_rate[learned, s][-1])
        else:
            row.update(loss=None, q_mean=None, td_abs_mean=None, learning_rate=None)
        done = r.episode_done[:, s]
        row["episodes"] = int(done.sum())
        if done.any():
            row["train_return_mean"] = float(r.episode_return[:, s][done].mean())
            row["train_length_mean"] = float(r.episode_length[:, s][done].mean())
        rows.append(row)
    return rows


class Progress:
    """A rich progress bar showing env steps, steps/s, ε and the last evaluation return."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]env steps"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8} steps/s  ε {task.fields[eps]}  eval {task.fields[eval]}"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, rate="-", eps="-", eval="-")
            self.bar.start()

    def update(self, completed: int, **fields) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, **fields)

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.log(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(config: Config, run_dir: Path | str | None = None, network=None, optimizer=None) -> dict:
    """Trains `config.num_seeds` agents and writes the run directory.

    Args:
      config: a validated config.
      run_dir: where to write (default: `config.run_dir`, else `runs/<game>-s<seed>-<time>`).
      network: a Flax Q-network to use instead of the config's (tests plant faults this way).
      optimizer: an optax transformation to use instead of the config's Adam.

    Returns:
      The summary, as written to `summary.json`.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config_lib.to_toml(config), encoding="utf-8")

    S, E = config.num_seeds, config.num_envs
    loop = build_loop(config, network, optimizer)
    evaluator = Evaluator(config, loop.learner.network)
    state = loop.init(agent_keys(config))

    writer = RunWriter(run_dir, multi_seed=S > 1)
    progress = Progress(config.total_steps, config.progress)
    chunk_iterations = config.chunk_steps // E
    total_iterations = math.ceil(config.total_steps / E)
    seeds = [envs.agent_seed(config, s) for s in range(S)]
    eval_history: list[list[float]] = [[] for _ in range(S)]
    best = [-math.inf] * S
    last_eval: list[float] = [math.nan] * S
    evaluated_at = 0
    interrupted = False
    env_steps = 0

    def evaluate(env_steps: int) -> None:
        nonlocal evaluated_at
        returns, lengths, frames = evaluator.run(state.agents.params, env_steps,
                                                 record_agent=0 if config.record_video else None)
        for s in range(S):
            eval_history[s].extend(returns[s].tolist())
            window = eval_history[s][-config.eval_return_window:]
            last_eval[s] = float(returns[s].mean())
            improved = last_eval[s] > best[s]
            best[s] = max(best[s], last_eval[s])
            writer.write({
                "kind": "eval", "env_steps": env_steps, "seed": seeds[s],
                "eval_return_mean": last_eval[s], "eval_return_std": float(returns[s].std()),
                "eval_return_min": float(returns[s].min()), "eval_return_max": float(returns[s].max()),
                "eval_episodes": int(returns.shape[1]), "eval_length_mean": float(lengths[s].mean()),
                f"eval_return_mean{config.eval_return_window}": float(np.mean(window)),
                "best_eval_return": best[s],
            })
            if improved and s == 0 and frames:
                write_video(frames, run_dir / "best_eval")
        evaluated_at = env_steps
        progress.log(f"env steps {env_steps:>9,}  eval return {np.mean(last_eval):8.2f}"
                     + (f"  (seeds: {', '.join(f'{x:.1f}' for x in last_eval)})" if S > 1 else ""))

    try:
        iterations = 0
        while iterations < total_iterations:
            # Chunks end at evaluation points, so evaluations land exactly on multiples of eval_every.
            next_eval = math.ceil((evaluated_at // config.eval_every + 1) * config.eval_every / E)
            count = min(chunk_iterations, total_iterations - iterations, next_eval - iterations)
            chunk_start = time.perf_counter()
            state, records = loop.run_chunk(state, count)
            jax.block_until_ready(records)
            iterations += count
            env_steps = iterations * E
            rate = count * E / (time.perf_counter() - chunk_start)
            rows = train_rows(config, records, env_steps, rate)
            for row in rows:
                writer.write(row)
            progress.update(env_steps, rate=f"{rate:,.0f}", eps=f"{rows[0]['epsilon']:.3f}",
                            eval=f"{np.mean(last_eval):.1f}")
            if env_steps // config.eval_every > evaluated_at // config.eval_every:
                evaluate(env_steps)
                progress.update(env_steps, eval=f"{np.mean(last_eval):.1f}")
        if evaluated_at != env_steps:
            evaluate(env_steps)
    except KeyboardInterrupt:
        interrupted = True
        progress.log(f"interrupted at env step {env_steps:,}: metrics flushed, summary written")
    finally:
        progress.close()
        writer.close()

    wall = time.perf_counter() - start
    per_seed = [
        {"seed": seeds[s], "final_eval_return": _finite(last_eval[s]), "best_eval_return": _finite(best[s])}
        for s in range(S)
    ]
    summary = {
        "game": config.game,
        "final_eval_return": _finite(float(np.mean(last_eval))),
        "best_eval_return": _finite(float(np.mean(best))),
        "env_steps": env_steps,
        "wall_seconds": wall,
        "steps_per_sec": env_steps / wall,
        "total_steps_per_sec": env_steps * S / wall,
        "loop": loop.mode,
        "interrupted": interrupted,
        "seeds": per_seed,
    }
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    return summary


def _finite(value: float):
    return value if math.isfinite(value) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parse_config(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = train(config)
    print(f"final eval return {summary['final_eval_return']}, best {summary['best_eval_return']}, "
          f"{summary['env_steps']:,} env steps in {summary['wall_seconds']:.1f} s "
          f"({summary['steps_per_sec']:,.0f} steps/s, {summary['loop']} loop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
