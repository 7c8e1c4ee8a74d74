"""`python -m dqn_jax.sweep --games=Pong,Breakout|atari5|atari57 --num-seeds=5 --out=SWEEP_DIR [training flags]`

Trains one run directory per game, `SWEEP_DIR/<Game>`, each holding every seed (one program per
game, seeds vmapped), with any training flag passed through. Running the same command again skips
the games that finished, resumes those that were interrupted (from their newest checkpoint) and
starts the rest, so a sweep cut short by a cluster's time limit is continued by re-submitting it.
`python -m dqn_jax.report SWEEP_DIR` then scores it. Exit status: 0 when every game finished,
1 when one failed (the others still ran), 2 for a bad command line.

Several processes share a sweep in one of two ways:
- `--share=I/N`: process I (0-based) of N trains every N-th game from game I, each game in one
  process. Under SLURM with several tasks and no `--share`, the task's `SLURM_PROCID` and
  `SLURM_NTASKS` are the share; for a job array pass
  `--share=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`.
- the process-group flags of `python -m dqn_jax.train` (`--distributed`, or
  `--coordinator-address=... --num-processes=N --process-id=I`): all N processes train every
  game together, its seeds spread over all their devices.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from dqn_jax import determinism, games
from dqn_jax.config import ConfigError
from dqn_jax.loop import distributed
from dqn_jax.run import checkpoint
from dqn_jax.run.cli import parse_config
from dqn_jax.run.metrics import SUMMARY_FILE
from dqn_jax.run.train import main as train_main

# Named sets of games. Atari-5: Aitchison, Jackson and Sanderson 2023, "Atari-5: Distilling the
# Arcade Learning Environment down to Five Games" (the five games whose scores best predict the
# 57-game median). Atari-57: the games with human and random scores (`scores.RANDOM_AND_HUMAN`).
GAME_SETS: dict[str, tuple[str, ...]] = {
    "atari5": ("BattleZone", "DoubleDunk", "NameThisGame", "Phoenix", "Qbert"),
}


def atari57() -> tuple[str, ...]:
    """Returns the 57 Atari games that have human scores, by their EnvPool names."""
    from dqn_jax.tools.scores import RANDOM_AND_HUMAN

    return tuple(g for g in games.atari_games() if games.ale_name(g) in RANDOM_AND_HUMAN)


def resolve_games(spec: str) -> tuple[str, ...]:
    """Returns the canonical games of `--games`: comma-separated names and named sets.

    Raises:
      ConfigError: an unknown game or set, or no game at all.
    """
    chosen: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item.lower() == "atari57":
            chosen += atari57()
        elif item.lower() in GAME_SETS:
            chosen += GAME_SETS[item.lower()]
        else:
            chosen.append(games.canonical_game(item))
    if not chosen:
        raise ConfigError(f"--games={spec!r} names no game; e.g. --games=Pong,Breakout or --games=atari5")
    return tuple(dict.fromkeys(chosen))


def state_of(run_dir: Path, total_steps: int | None) -> str:
    """Returns `done` (finished: not interrupted or halted, at its total steps), `resume` (has a
    checkpoint to continue from) or `new`."""
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        finished = not summary.get("interrupted") and not summary.get("halted")
        if finished and (total_steps is None or summary.get("env_steps", 0) >= total_steps):
            return "done"
    return "resume" if checkpoint.latest_step(run_dir) is not None else "new"


def _total_steps(flags: Sequence[str]) -> int | None:
    """Returns `--total-steps` among the training flags, if given (None: the preset's)."""
    for i, flag in enumerate(flags):
        if flag.startswith("--total-steps="):
            return int(flag.split("=", 1)[1].replace("_", ""))
        if flag == "--total-steps" and i + 1 < len(flags):
            return int(flags[i + 1].replace("_", ""))
    return None


def parse_share(spec: str | None, environ=os.environ) -> tuple[int, int]:
    """Returns `(index, count)` of this process's share of the games: `--share=I/N`, else SLURM's
    task id and task count when the job has several tasks, else `(0, 1)`.

    Raises:
      ConfigError: a share that is not `I/N` with 0 <= I < N.
    """
    if spec is None:
        tasks = int(environ.get("SLURM_NTASKS", "1") or 1)
        return (int(environ.get("SLURM_PROCID", "0") or 0), tasks) if tasks > 1 else (0, 1)
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise ConfigError(f"--share={spec}: expected I/N with 0 <= I < N (process I of N takes every N-th game)")
    return index, count


def sweep(games_spec: str | Sequence[str], out: Path | str, num_seeds: int = 5, flags: Sequence[str] = (),
          share: str | None = None, say=print) -> list[str]:
    """Trains (or resumes, or skips when finished) one run directory per game under `out`; returns
    the games of this process's share that did not finish.

    `games_spec`: `"Pong,Breakout"`, `"atari5"`, or a list of names; `flags`: training flags, as on
    the command line (`["--total-steps=500000"]`). Every game's config is built and validated
    before the first one trains, so a bad flag stops the sweep at once.

    Raises:
      ConfigError: an unknown game or set, a bad share, or a training flag the command line would
        refuse (one line, as `python -m dqn_jax.sweep` prints it).
    """
    flags = list(flags)
    bad = [f for f in flags if f.split("=")[0] in ("--game", "--run-dir", "--resume")]
    if bad:
        raise ConfigError(f"{bad[0].split('=')[0]} is set by the sweep itself (one run directory per game "
                          "under --out); leave it out")
    if num_seeds < 1:
        raise ConfigError(f"num_seeds = {num_seeds} is invalid: must be a positive integer")
    chosen = resolve_games(games_spec if isinstance(games_spec, str) else ",".join(games_spec))
    group, training_flags = distributed.split_flags(flags)
    for game in chosen:  # refuse a bad flag before any game trains
        parse_config([f"--game={game}", f"--num-seeds={num_seeds}", *training_flags])
    total = _total_steps(flags)
    if group is not None and share is not None:
        raise ConfigError("--share splits the games between processes, the process-group flags train each "
                          "game with all of them: pass one or the other")
    share_index, share_count = (0, 1) if group is not None else parse_share(share)
    if group is not None:
        distributed.initialize(group)  # once, for every game's run (train's own call is then a no-op)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if group is not None and not distributed.is_main():
        say = lambda *a, **k: None  # noqa: E731 - process 0 speaks for the group
    failed = []
    mine = [(index, game) for index, game in enumerate(chosen, start=1) if (index - 1) % share_count == share_index]
    of_share = f", share {share_index}/{share_count}" if share_count > 1 else ""
    for done_before, (index, game) in enumerate(mine):
        run_dir = out / game
        state = state_of(run_dir, total)
        say(f"sweep: {game} (game {index} of {len(chosen)}{of_share}; {done_before - len(failed)}/{len(mine)} done): "
            + {"done": "finished, skipped", "resume": "resuming", "new": "starting"}[state], flush=True)
        if state == "done":
            continue
        if state == "resume":
            code = train_main([f"--resume={run_dir}", *flags])
        else:
            code = train_main([f"--game={game}", f"--num-seeds={num_seeds}", f"--run-dir={run_dir}", *flags])
        if code != 0 or state_of(run_dir, total) != "done":
            failed.append(game)
    say(f"sweep: {len(mine) - len(failed)}/{len(mine)} games finished in {out}{of_share}"
        + (f"; not finished: {', '.join(failed)} (run the same command again to resume)" if failed else "")
        + f". Scores: python -m dqn_jax.report {out}")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    determinism.request_deterministic_ops()  # before anything starts a JAX backend
    parser = argparse.ArgumentParser(prog="python -m dqn_jax.sweep", description=__doc__.split("\n\n")[0],
                                     epilog="Any other flag is a training flag (python -m dqn_jax.train --help).")
    parser.add_argument("--games", required=True, help="comma-separated games and sets (atari5, atari57)")
    parser.add_argument("--out", type=Path, required=True, help="the sweep directory (one run directory per game)")
    parser.add_argument("--num-seeds", type=int, default=5, help="seeds per game, trained together (default 5)")
    parser.add_argument("--share", default=None,
                        help="I/N: this process trains games I, I+N, I+2N, ... (default: SLURM's task, else all)")
    args, flags = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        failed = sweep(args.games, args.out, args.num_seeds, flags, args.share)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if failed else 0

