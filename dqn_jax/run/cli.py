"""The training command line: `python -m dqn_jax.train [--resume=RUN_DIR] [--game=G] [--config=F] [flags]`.

Parsing lives here, apart from training, so that `train`, `repro` and the benchmarks read a
command line the same way. The layers, each over the one before: the game's preset
(`presets.preset`), the `--config` overlay (a shipped overlay's name or a TOML file), then
every other flag (one per `Config` field). With `--resume`, the run's own `config.toml` is the base.
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path
from typing import Sequence

from dqn_jax import games
from dqn_jax.config import Config, ConfigError, validate
from dqn_jax.run import presets
from dqn_jax.run.metrics import CONFIG_FILE

DEFAULT_GAME = games.CARTPOLE  # `python -m dqn_jax.train` alone trains the fast sanity problem
PROG = "python -m dqn_jax.train"
DESCRIPTION = ("Train DQN on an EnvPool game and write a run directory. Settings come in layers: the game's "
               "preset (--game), then --config=NAME_OR_FILE.toml (a shipped overlay: "
               + ", ".join(presets.shipped_overlays()) + "; or your own TOML file of fields), then the flags "
               "below. --resume=RUN_DIR continues a run from its newest checkpoint with its own config.toml "
               "(flags after it override, e.g. a larger --total-steps). Several processes training one run add "
               "--coordinator-address=HOST:PORT --num-processes=N --process-id=I, or --distributed to read them "
               "from the cluster (docs/usage.md: Many devices and machines).")


def one_line_warnings() -> None:
    """Makes this process print each warning as one `warning: MESSAGE` line, without the source
    file and line that `warnings` adds by default (noise for a user of the command line)."""
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"


def parse_config(argv: Sequence[str]) -> Config:
    """Returns the validated config for a command line (preset, then `--config`, then flags).

    Raises:
      ConfigError: an unknown game, an unreadable config file or an invalid value.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--game", default=DEFAULT_GAME)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    game = games.canonical_game(known.game)
    base = presets.preset(game)
    if known.config:
        base = dataclasses.replace(presets.load_toml(presets.overlay_path(known.config), base), game=game)
    return validate(presets.override(base, rest, prog=PROG, description=DESCRIPTION))


def parse_command(argv: Sequence[str]) -> tuple[Config, Path | None]:
    """Returns `(config, resume_dir)` for a command line; `--resume=RUN_DIR` continues a run.

    On resume the run's own `config.toml` is the base and flags override it (`--total-steps=N`
    to train longer).

    Raises:
      ConfigError: as `parse_config`, or a `--resume` directory that is not a run directory.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--resume", default=None)
    known, rest = pre.parse_known_args(argv)
    if known.resume is None:
        return parse_config(rest), None
    run_dir = Path(known.resume)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume={run_dir}: no {CONFIG_FILE} there; pass the directory of an earlier run")
    base = dataclasses.replace(presets.load_toml(run_dir / CONFIG_FILE), run_dir=str(run_dir))
    config = presets.override(base, rest, prog=f"{PROG} --resume=RUN_DIR")
    if Path(config.run_dir) != run_dir:
        raise ConfigError("--run-dir cannot be combined with --resume (the run continues in its own directory)")
    return validate(config), run_dir
