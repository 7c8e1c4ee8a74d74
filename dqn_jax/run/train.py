"""`python -m dqn_jax.train --game=Pong`: train DQN and write a run directory.

The game's preset sets the defaults (`presets.py`); every config field can be overridden on the
command line (`--seed=3 --total-steps=50000`), and `--config=NAME_OR_FILE` layers an overlay
between the two (`cli.py`).

Here are the entry points, `train()` from Python and `main()` for the command line; the run
itself is `trainer.Trainer`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Sequence

import jax

from dqn_jax import determinism
from dqn_jax.config import Config, ConfigError, validate
from dqn_jax.loop import distributed
from dqn_jax.run import checkpoint, preflight
from dqn_jax.run.checkpoint import CheckpointError
from dqn_jax.run.cli import one_line_warnings, parse_command
from dqn_jax.run.trainer import Trainer


def default_run_dir(config: Config) -> Path:
    """Returns `runs/<game>-s<seed>-<timestamp>`."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.game}-s{config.seed}-{stamp}"


def train(config: Config, run_dir: Path | str | None = None, network=None, optimizer=None,
          resume: bool = False) -> dict:
    """Trains `config.num_seeds` agents and writes the run directory; returns the summary.

    Args:
      config: a validated config. `Config(game="Pong")` holds the Nature defaults alone; the
        command line's settings for a game are `presets.preset("Pong")` (its overlays layered on).
      run_dir: where to write (default: `config.run_dir`, else `runs/<game>-s<seed>-<time>`).
      network: a Flax Q-network to use instead of the config's (tests plant faults this way).
      optimizer: an optax transformation to use instead of the config's Adam.
      resume: continue from the newest checkpoint in `run_dir` (metrics are appended).

    Raises:
      CheckpointError: `resume` and the checkpoint is missing, corrupted or from another config.
      ConfigError: the run's replay and parameters do not fit in the memory available (checked
        before anything is allocated).
    """
    config = validate(config)
    memory = preflight.check(config)
    unrepeatable = determinism.missing_on_gpu(jax.default_backend())
    if unrepeatable and distributed.is_main():
        warnings.warn(unrepeatable, stacklevel=2)
    run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
    if resume:
        check_resume(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, run_dir, network, optimizer, resume)
    built = sum(leaf.size for leaf in jax.tree.leaves(trainer.state.agents.params)) // config.num_seeds
    trainer.progress.log(preflight.describe(config, dataclasses.replace(memory, num_params=built),
                                            devices=trainer.loop.num_devices))
    trainer.progress.log(f"run directory: {run_dir}" + (
        f" (resumed from its checkpoint at env step {trainer.resumed_at:,} of {config.total_steps:,})"
        if resume else ""))
    summary = trainer.run()
    distributed.barrier("summary written")  # the other processes read it next (a sweep's `state_of`)
    return summary


def check_resume(config: Config, run_dir: Path) -> None:
    """Refuses, before anything is built, a resume that would train nothing.

    Raises:
      CheckpointError: the run has no checkpoint to resume from.
      ConfigError: `total_steps` is at or below the newest checkpoint's env steps.
    """
    at = checkpoint.require_latest_step(run_dir)
    if config.total_steps <= at:
        raise ConfigError(f"total_steps = {config.total_steps:,} is not past the checkpoint of {run_dir} at env step "
                          f"{at:,}: nothing to train; pass --total-steps above {at:,} to continue the run")


def final_line(summary: dict, run_dir: Path) -> str:
    """Returns the last line `python -m dqn_jax.train` prints: the returns, then the env steps and the
    time of this process alone (a resumed run says from where), then the run directory."""
    def shown(key: str) -> str:
        return "none" if summary[key] is None else f"{summary[key]:.2f}"

    steps, since = summary["env_steps"], summary["resumed_from"]
    trained = f"{steps - since:,} env steps ({since:,} → {steps:,})" if since else f"{steps:,} env steps"
    score = ("" if summary["best_params_return"] is None else
             f"score {shown('best_params_return')} (best params on {summary['best_params_games']} fresh games), ")
    return (f"{score}last evaluation {shown('final_eval_return')}, {trained} in {summary['wall_seconds']:.1f} s "
            f"({summary['steps_per_sec']:,.0f} steps/s, {summary['loop']} loop); run directory {run_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    determinism.request_deterministic_ops()  # before anything starts a JAX backend
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's INFO/WARNING chatter
    one_line_warnings()
    try:
        group, argv = distributed.split_flags(argv)
        config, resume_dir = parse_command(argv)
        if group is not None:
            distributed.initialize(group)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = train(config, run_dir=resume_dir, resume=resume_dir is not None)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk or a vanished directory while writing
        print(f"error: could not write the run directory ({err.strerror or err}); metrics written so far "
              f"and earlier checkpoints are intact", file=sys.stderr)
        return 1
    if summary["halted"]:
        return 1
    if not distributed.is_main():
        return 0
    print(final_line(summary, Path(summary["run_dir"])))
    return 0
