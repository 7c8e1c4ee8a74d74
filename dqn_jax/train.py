"""`python -m dqn_jax.train --game=Pong`: train DQN and write a run directory.

The game's preset (`configs/<game>.toml`, else `configs/atari.toml`) sets the defaults; every
config field can be overridden on the command line (`--seed=3 --total-steps=50000`), and
`--config=FILE.toml` layers a file of your own between the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from dqn_jax import checkpoint, envs
from dqn_jax import config as config_lib
from dqn_jax.checkpoint import CheckpointError
from dqn_jax.config import Config, ConfigError
from dqn_jax.diagnostics import History, diagnose
from dqn_jax.evaluate import Evaluator, write_video
from dqn_jax.fingerprint import as_hex
from dqn_jax.health import aggregate
from dqn_jax.loop import StepRecord, agent_keys, build_loop
from dqn_jax.metrics import CONFIG_FILE, SUMMARY_FILE, RunWriter, read_metrics, write_json_atomic


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


def parse_command(argv: Sequence[str]) -> tuple[Config, Path | None]:
    """Returns `(config, resume_dir)` for a command line; `--resume=RUN_DIR` continues a run.

    On resume the run's own `config.toml` is the base and flags override it (`--total-steps=N`
    to train longer).

    Raises:
      ConfigError: as `parse_config`, or a `--resume` directory that is not a run directory.
    """
    import tyro

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--resume", default=None)
    known, rest = pre.parse_known_args(argv)
    if known.resume is None:
        return parse_config(rest), None
    run_dir = Path(known.resume)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume={run_dir}: no {CONFIG_FILE} there; pass the directory of an earlier run")
    base = config_lib.load_toml(run_dir / CONFIG_FILE)
    config = tyro.cli(Config, default=dataclasses.replace(base, run_dir=str(run_dir)), args=rest,
                      prog="python -m dqn_jax.train --resume=RUN_DIR")
    if Path(config.run_dir) != run_dir:
        raise ConfigError("--run-dir cannot be combined with --resume (the run continues in its own directory)")
    return config_lib.validate(config), run_dir


def default_run_dir(config: Config) -> Path:
    """Returns `runs/<game>-s<seed>-<timestamp>`."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.game}-s{config.seed}-{stamp}"


def fingerprint_rows(config: Config, records: StepRecord, chunk_start: int) -> list[dict]:
    """Returns the `fingerprint` rows of a chunk's stacked records [K, ...] (one per agent per hit).

    `chunk_start` is the env-step count before the chunk; iteration k ends at
    `chunk_start + (k + 1) * num_envs`.
    """
    r = jax.tree.map(np.asarray, records)
    rows = []
    for k in np.flatnonzero(r.fingerprint):
        for s in range(config.num_seeds):
            rows.append({
                "kind": "fingerprint", "env_steps": chunk_start + (int(k) + 1) * config.num_envs,
                "seed": envs.agent_seed(config, s), "updates": int(r.updates[k, s]),
                "params_hash": as_hex(r.params_hash[k, s]), "batch_hash": as_hex(r.batch_hash[k, s]),
                "params_norm": float(r.params_norm[k, s]),
            })
    return rows


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


def health_rows(config: Config, records: StepRecord, env_steps: int) -> list[dict]:
    """Returns one `health` row per agent summarising a chunk's stacked records [K, ...]."""
    r = jax.tree.map(np.asarray, records)
    learned = r.learned
    rows = []
    for s in range(config.num_seeds):
        row = {"kind": "health", "env_steps": env_steps, "seed": envs.agent_seed(config, s),
               "updates": int(r.updates[-1, s])}
        measured = r.health_measured & learned
        if measured.any():
            row.update({name: aggregate(name, values[measured, s]) for name, values in r.health.items()})
        real_steps = int(r.real_steps[:, s].sum())
        row["env_reward_nonzero"] = float(r.reward_nonzero_steps[:, s].sum() / max(real_steps, 1))
        row["life_losses"] = int(r.life_losses[:, s].sum())
        row["life_loss_terminals"] = int(r.life_loss_terminals[:, s].sum())
        done, truncated = r.episode_done[:, s], r.episode_truncated[:, s] & r.episode_done[:, s]
        row["episodes"] = int(done.sum())
        if done.any():
            lengths, returns = r.episode_length[:, s], r.episode_return[:, s]
            row["episode_length_mean"] = float(lengths[done].mean())
            row["episode_length_max"] = int(lengths[done].max())
            row["truncated_fraction"] = float(truncated.sum() / done.sum())
            finished = done & ~truncated
            row["truncated_return_mean"] = float(returns[truncated].mean()) if truncated.any() else None
            row["finished_return_mean"] = float(returns[finished].mean()) if finished.any() else None
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


class StopRequests:
    """Turns SIGINT / SIGTERM into a request to stop after the current chunk (a second SIGINT exits now)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def train(config: Config, run_dir: Path | str | None = None, network=None, optimizer=None,
          resume: bool = False) -> dict:
    """Trains `config.num_seeds` agents and writes the run directory.

    Chunks of `chunk_steps` env steps run as one compiled call; chunks end at every evaluation
    and checkpoint point. SIGINT / SIGTERM finish the current chunk, save a checkpoint and return.
    A non-finite loss stops the run without checkpointing the broken state.

    Args:
      config: a validated config.
      run_dir: where to write (default: `config.run_dir`, else `runs/<game>-s<seed>-<time>`).
      network: a Flax Q-network to use instead of the config's (tests plant faults this way).
      optimizer: an optax transformation to use instead of the config's Adam.
      resume: continue from the newest checkpoint in `run_dir` (metrics are appended).

    Returns:
      The summary, as written to `summary.json`.

    Raises:
      CheckpointError: `resume` and the checkpoint is missing, corrupted or from another config.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    S, E = config.num_seeds, config.num_envs
    seeds = [envs.agent_seed(config, s) for s in range(S)]
    keys = agent_keys(config)

    if resume:
        resumed_at = checkpoint.require_latest_step(run_dir)
        loop = build_loop(config, network, optimizer, resumed_at=resumed_at)
        agents, meta, _ = checkpoint.restore_state(run_dir, loop.abstract_agents(keys), step=resumed_at)
        state = loop.resume(agents, meta["iteration"])
        del agents
    else:
        resumed_at, meta = None, {}
        loop = build_loop(config, network, optimizer)
        state = loop.init(keys)
    (run_dir / CONFIG_FILE).write_text(config_lib.to_toml(config), encoding="utf-8")

    evaluator = Evaluator(config, loop.learner.network)
    checkpoints = checkpoint.StateCheckpoints(run_dir, keep=config.keep_checkpoints)
    writer = RunWriter(run_dir, multi_seed=S > 1)
    progress = Progress(config.total_steps, config.progress)
    chunk_iterations = max(1, config.chunk_steps // E)
    total_iterations = math.ceil(config.total_steps / E)
    # Trainer bookkeeping, carried across resumes in the checkpoint's JSON record.
    eval_history: list[list[float]] = meta.get("eval_history", [[] for _ in range(S)])
    best: list[float] = [(-math.inf if b is None else b) for b in meta.get("best", [None] * S)]
    last_eval: list[float] = [(math.nan if x is None else x) for x in meta.get("last_eval", [None] * S)]
    evaluated_at: int = meta.get("evaluated_at", 0)
    iterations: int = meta.get("iteration", 0)
    env_steps = iterations * E
    checkpointed_at = env_steps if resume else -1
    halted: str | None = None
    stop_signal: str | None = None
    last_checkpoint: Path | None = None

    def evaluate(env_steps: int) -> None:
        nonlocal evaluated_at
        returns, lengths, frames = evaluator.run(state.agents.params, env_steps,
                                                 record_agent=0 if config.record_video else None)
        for s in range(S):
            eval_history[s] = (eval_history[s] + returns[s].tolist())[-config.eval_return_window:]
            last_eval[s] = float(returns[s].mean())
            improved = last_eval[s] > best[s]
            best[s] = max(best[s], last_eval[s])
            eval_row = {
                "kind": "eval", "env_steps": env_steps, "seed": seeds[s],
                "eval_return_mean": last_eval[s], "eval_return_std": float(returns[s].std()),
                "eval_return_min": float(returns[s].min()), "eval_return_max": float(returns[s].max()),
                "eval_episodes": int(returns.shape[1]), "eval_length_mean": float(lengths[s].mean()),
                f"eval_return_mean{config.eval_return_window}": float(np.mean(eval_history[s])),
                "best_eval_return": best[s],
            }
            writer.write(eval_row)
            history.append(eval_row)
            if improved:
                params = jax.tree.map(lambda x, s=s: x[s], state.agents.params)
                checkpoint.save_best_params(run_dir, seeds[s], params, best[s], env_steps)
                if s == 0 and frames:
                    write_video(frames, run_dir / "best_eval")
        evaluated_at = env_steps
        progress.log(f"env steps {env_steps:>9,}  eval return {np.mean(last_eval):8.2f}"
                     + (f"  (seeds: {', '.join(f'{x:.1f}' for x in last_eval)})" if S > 1 else ""))

    def save_checkpoint() -> None:
        nonlocal last_checkpoint, checkpointed_at
        if checkpointed_at == env_steps:
            return
        meta = {"env_steps": env_steps, "iteration": iterations, "eval_history": eval_history,
                "best": [_finite(b) for b in best], "last_eval": [_finite(x) for x in last_eval],
                "evaluated_at": evaluated_at, "reported_findings": sorted(reported)}
        last_checkpoint = checkpoints.save(env_steps, state.agents, meta)
        checkpointed_at = env_steps

    # Rows the health rules read; a resumed run re-reads the ones already written.
    history = [r for r in read_metrics(run_dir) if r["kind"] in ("train", "eval", "health")] if resume else []
    reported: set[tuple[int, str]] = set(tuple(x) for x in meta.get("reported_findings", []))
    config_values = dataclasses.asdict(config)

    def report_findings() -> list:
        """Runs the health rules; prints and records each new finding once. Returns the error-level ones."""
        errors = []
        for s in range(S):
            for finding in diagnose(History.from_rows(config_values, history, seeds[s])):
                if finding.severity == "error":
                    errors.append(finding)
                if (seeds[s], finding.rule) in reported:
                    continue
                reported.add((seeds[s], finding.rule))
                writer.write(finding.as_row(seeds[s]))
                progress.log(("" if S == 1 else f"seed {seeds[s]}: ") + finding.render())
        return errors

    def next_boundary(every: int, done_at: int) -> int:
        return math.ceil((done_at // every + 1) * every / E) if every else total_iterations

    def crossed(every: int, done_at: int) -> bool:
        """True when `env_steps` has passed a multiple of `every` that `done_at` had not."""
        return bool(every) and env_steps // every > done_at // every

    try:
        with StopRequests() as stop:
            while iterations < total_iterations:
                # Chunks end at evaluation and checkpoint points, so both land on exact multiples.
                count = min(chunk_iterations, total_iterations - iterations,
                            next_boundary(config.eval_every, evaluated_at) - iterations,
                            next_boundary(config.checkpoint_every, max(checkpointed_at, 0)) - iterations)
                count = max(count, 1)
                chunk_start = time.perf_counter()
                state, records = loop.run_chunk(state, count)
                records = jax.device_get(records)  # once: three kinds of rows read it on the host
                chunk_start_steps = env_steps
                iterations += count
                env_steps = iterations * E
                rate = count * E / (time.perf_counter() - chunk_start)
                rows = train_rows(config, records, env_steps, rate)
                for row in fingerprint_rows(config, records, chunk_start_steps) + rows + health_rows(
                        config, records, env_steps):
                    writer.write(row)
                    if row["kind"] != "fingerprint":
                        history.append(row)
                errors = report_findings()
                if errors and config.halt_on == "error":
                    halted = errors[0].rule
                    progress.log(f"--halt-on=error: stopping at env step {env_steps:,} on {halted}")
                    if halted != "non_finite":
                        save_checkpoint()
                    break
                losses = [row["loss"] for row in rows if row["loss"] is not None]
                if not all(math.isfinite(x) for x in losses):
                    halted = "non_finite_loss"
                    progress.log(f"error: the loss is not finite at env step {env_steps:,}; stopping. "
                                 f"Last good checkpoint: {last_checkpoint or 'none yet'}")
                    break
                progress.update(env_steps, rate=f"{rate:,.0f}", eps=f"{rows[0]['epsilon']:.3f}",
                                eval=f"{np.mean(last_eval):.1f}")
                if crossed(config.eval_every, evaluated_at):
                    evaluate(env_steps)
                    progress.update(env_steps, eval=f"{np.mean(last_eval):.1f}")
                if crossed(config.checkpoint_every, max(checkpointed_at, 0)):
                    save_checkpoint()
                if stop.signal_name:
                    stop_signal = stop.signal_name
                    break
            if halted is None:
                if stop_signal is None and evaluated_at != env_steps:
                    evaluate(env_steps)
                save_checkpoint()
    except KeyboardInterrupt:  # a second Ctrl-C: leave now, metrics are flushed below
        stop_signal = "SIGINT (twice)"
    finally:
        progress.close()
        writer.close()
        checkpoints.close()
    if stop_signal:
        saved = f"checkpoint saved at env step {checkpointed_at:,}" if checkpointed_at == env_steps else "no checkpoint"
        progress.log(f"{stop_signal} at env step {env_steps:,}: metrics flushed, {saved}. "
                     f"Resume with: python -m dqn_jax.train --resume={run_dir}")

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
        "steps_per_sec": (env_steps - (resumed_at or 0)) / wall,
        "total_steps_per_sec": (env_steps - (resumed_at or 0)) * S / wall,
        "loop": loop.mode,
        "interrupted": stop_signal is not None,
        "stop_signal": stop_signal,
        "halted": halted,
        "resumed_from": resumed_at,
        "checkpoint": str(last_checkpoint) if last_checkpoint else None,
        "seeds": per_seed,
    }
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    return summary


def _finite(value: float):
    return value if math.isfinite(value) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's INFO/WARNING chatter
    try:
        config, resume_dir = parse_command(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = train(config, run_dir=resume_dir, resume=resume_dir is not None)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk or a vanished directory while writing
        print(f"error: could not write the run directory ({err.strerror or err}); metrics written so far "
              f"and earlier checkpoints are intact", file=sys.stderr)
        return 1
    if summary["halted"]:
        return 1
    print(f"final eval return {summary['final_eval_return']}, best {summary['best_eval_return']}, "
          f"{summary['env_steps']:,} env steps in {summary['wall_seconds']:.1f} s "
          f"({summary['steps_per_sec']:,.0f} steps/s, {summary['loop']} loop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
