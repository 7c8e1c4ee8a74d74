"""One run's driver: `Trainer.run` reads as the run does — chunks of the fused (or host) loop,
and after each one the phases record → diagnose (maybe halt) → maybe evaluate → maybe checkpoint
→ maybe stop. Each phase is a short method; the trainer's own counters and evaluation record live
in one `Bookkeeping` that round-trips through checkpoints. `train.py` holds the entry points.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import numpy as np

from dqn_jax.agent.learner import played_params
from dqn_jax.config import Config
from dqn_jax.health.diagnostics import Finding, History, across_seeds, diagnose
from dqn_jax.loop import distributed, envs
from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.loop.records import chunk_rows, eval_rows
from dqn_jax.loop.schedule import Chunk, ChunkSchedule, run_chunks
from dqn_jax.run import checkpoint, presets
from dqn_jax.run.bookkeeping import Bookkeeping, finite_or_none
from dqn_jax.run.evaluate import FINAL_SCORING_STREAM, Evaluator, load_params, write_video
from dqn_jax.run.metrics import CONFIG_FILE, SUMMARY_FILE, NoWriter, RunWriter, read_metrics, write_json_atomic
from dqn_jax.run.progress import Progress, Remaining, StopRequests

RULE_ROW_KINDS = ("train", "eval", "health")  # the rows the health rules read


def small_machine_figure() -> str:
    """Returns the `cpu_atari` run the days-on-CPU note quotes, in words ("Pong on 2 CPU cores
    (AMD EPYC), seed 0: <return> at <env steps> after <minutes>"), from `presets.measured`."""
    m = presets.measured("cpu_atari")
    what = "" if m["reached_target"] else f", not yet {m['target_return']:g}"
    return (f"{m['game']} on {m['cores']} CPU cores ({m['cpu']}), seed {m['seed']}: {m['eval_return']:.1f} at "
            f"{m['env_steps'] / 1e6:.2f}M env steps after {m['minutes']:.0f} minutes{what}")


class Trainer:
    """One run: its loop and agents, its bookkeeping, and the sinks it writes to."""

    def __init__(self, config: Config, run_dir: Path, network=None, optimizer=None, resume: bool = False):
        """Builds (or, with `resume`, restores from the newest checkpoint in `run_dir`) everything a run needs.

        Raises:
          CheckpointError: `resume` and the checkpoint is missing, corrupted or from another config.
        """
        self.started = time.perf_counter()  # building pools and restoring count as the run's time
        self.config, self.run_dir = config, run_dir
        self.main = distributed.is_main()  # the process that writes rows, summary and messages
        self.seeds = [envs.agent_seed(config, s) for s in range(config.num_seeds)]
        self.resumed_at = checkpoint.require_latest_step(run_dir) if resume else None
        self.loop = build_loop(config, network, optimizer, resumed_at=self.resumed_at or 0)
        if resume:
            agents, meta, _ = checkpoint.restore_state(run_dir, self.loop.abstract_agents(agent_keys(config)),
                                                       step=self.resumed_at)
            self.book = Bookkeeping.from_meta(meta, config.num_seeds, config.num_envs)
            self.state = self.loop.resume(agents, self.book.iteration)
        else:
            self.book = Bookkeeping.fresh(config.num_seeds, config.num_envs)
            self.state = self.loop.init(agent_keys(config))
        # What the health rules read: each agent's recent rows, and folds of the older ones.
        self.histories = {seed: History.bounded(config) for seed in self.seeds}
        if resume:
            self.remember([r for r in read_metrics(run_dir) if r["kind"] in RULE_ROW_KINDS])
        if self.main:
            (run_dir / CONFIG_FILE).write_text(presets.to_toml(config), encoding="utf-8")
        self.evaluator = Evaluator(config, self.loop.learner.network)
        self.checkpoints = checkpoint.StateCheckpoints(run_dir, keep=config.keep_checkpoints)
        self.writer = RunWriter(run_dir, multi_seed=config.num_seeds > 1) if self.main else NoWriter()
        self.progress = Progress(config.total_steps, config.progress, silent=not self.main)
        self.progress.update(self.book.env_steps)  # a resumed run's bar starts where its checkpoint was
        self.remaining = Remaining(config.total_steps, config.learning_starts)
        self.warned_cpu_duration = False
        self.halted: str | None = None  # the rule (or `non_finite_loss`) that stopped the run
        self.stop_signal: str | None = None  # the signal (or `time_limit_minutes`) that ended the run early
        self.reached_target = False
        self.best_params_returns: list[float] | None = None  # set by score_best_params
        self.last_checkpoint: Path | None = None

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> dict:
        """Trains to `total_steps` (or a halt, or a stop signal); returns the summary, as written."""
        schedule = ChunkSchedule.for_run(self.config)
        try:
            with StopRequests() as stop:
                for chunk in run_chunks(self.loop, self.state, schedule, self.book.iteration):
                    self.state, self.book.iteration = chunk.state, chunk.end_iteration
                    losses = self.record(chunk)
                    if self.halt_if_unhealthy(losses):
                        break
                    if schedule.crossed(self.config.eval_every, self.book.evaluated_at, self.book.env_steps):
                        self.evaluate()
                        if self.reached_target:
                            break
                    if schedule.crossed(self.config.checkpoint_every, max(self.book.checkpointed_at, 0),
                                        self.book.env_steps):
                        self.save_checkpoint()
                    out_of_time = self.out_of_time(chunk.seconds)
                    # Every process leaves at the same chunk, whichever of them was signalled.
                    if distributed.any_process(bool(stop.signal_name) or out_of_time):
                        self.stop_signal = stop.signal_name or (
                            "time_limit_minutes" if out_of_time else "a stop signal to another process")
                        break
                if self.halted is None:
                    self.finish()
        except KeyboardInterrupt:  # a second Ctrl-C: leave now, metrics are flushed below
            self.stop_signal = "SIGINT (twice)"
        finally:
            self.close()
        return self.summarize(time.perf_counter() - self.started)

    # --- the phases ----------------------------------------------------------------------------
    def record(self, chunk: Chunk) -> list[float]:
        """Writes the chunk's rows and moves the progress bar; returns the chunk's mean losses (learned only)."""
        E = self.config.num_envs
        rate = (chunk.end_iteration - chunk.start_iteration) * E / chunk.seconds
        rows = chunk_rows(chunk.records, self.seeds, E, chunk.start_iteration * E, rate)
        for row in rows.all():
            self.writer.write(row)
        self.remember(rows.train + rows.health)
        seconds_left = self.remaining.update(self.book.env_steps, time.perf_counter())
        self.warn_if_days_on_cpu(seconds_left)
        self.progress.update(self.book.env_steps, rate=f"{rate:,.0f}", eps=f"{rows.train[0]['epsilon']:.3f}",
                             eta=self.remaining.describe(self.book.env_steps, seconds_left),
                             eval=f"{np.mean(self.book.last_eval):.1f}")
        return [row["loss"] for row in rows.train if row["loss"] is not None]

    def warn_if_days_on_cpu(self, seconds_left: float | None) -> None:
        """Once, when an Atari run on a machine without an accelerator will take more than a day, says so."""
        if self.warned_cpu_duration or seconds_left is None or not self.config.is_atari:
            return
        self.warned_cpu_duration = True
        if jax.default_backend() == "cpu" and seconds_left > 86_400:
            days = seconds_left / 86_400
            self.progress.log(f"note: at the rate since learning started this run needs about {days:.1f} more days "
                              "on this CPU; --config=cpu_atari is tuned to learn in fewer updates on a small machine "
                              f"({small_machine_figure()}; docs/results.md, 'Pong on 2 CPU cores'), "
                              "--config=breakout_cpu_1h takes a quick look at Breakout, "
                              "or use a GPU (README: On a GPU)")

    def halt_if_unhealthy(self, losses: list[float]) -> bool:
        """Reports new findings; returns True (and says why) when the run must stop here.

        It stops at an error-level finding under `--halt-on=error` (saving a checkpoint unless the
        state holds NaNs), and always at a non-finite loss (keeping the last good checkpoint).
        """
        errors = self.report_findings()
        if errors and self.config.halt_on == "error":
            self.halted = errors[0].rule
            self.progress.log(f"--halt-on=error: stopping at env step {self.book.env_steps:,} on {self.halted}")
            if self.halted != "non_finite":
                self.save_checkpoint()
            return True
        if not all(math.isfinite(x) for x in losses):
            self.halted = "non_finite_loss"
            self.progress.log(f"error: the loss is not finite at env step {self.book.env_steps:,}; stopping. "
                              f"Last good checkpoint: {self.last_checkpoint or 'none yet'}")
            return True
        return False

    def remember(self, rows: list[dict]) -> None:
        """Gives the rows (any agents', in order) to their agents' histories."""
        for row in rows:
            if row.get("seed") in self.histories:
                self.histories[row["seed"]].add([row])

    def report_findings(self) -> list[Finding]:
        """Runs the health rules; records each new finding once per seed and prints it once per rule
        ("3 of 8 seeds: ..." when several agents train). Returns the error-level ones."""
        errors, new = [], {}
        for seed in self.seeds:
            found_before = {rule for s, rule in self.book.reported_findings if s == seed}
            for finding in diagnose(self.histories[seed], found_before):
                if finding.severity == "error":
                    errors.append(finding)
                if (seed, finding.rule) in self.book.reported_findings:
                    continue
                self.book.reported_findings.add((seed, finding.rule))
                self.writer.write(finding.as_row(seed))
                new.setdefault(finding.rule, []).append((seed, finding))
        for rule, found in new.items():
            if len(self.seeds) == 1:
                self.progress.log(found[0][1].render())
                continue
            named = sum(r == rule for _, r in self.book.reported_findings)
            self.progress.log(across_seeds(found[0][1], named, len(self.seeds), [seed for seed, _ in found]))
        return errors

    def evaluate(self) -> None:
        """Plays the evaluation games, writes `eval` rows, and saves each agent's params at a new best."""
        config, env_steps = self.config, self.book.env_steps
        # Every process plays every agent's games (the same games: they all need the returns to
        # decide alike), from the params gathered off all processes' devices.
        played = played_params(self.state.agents)
        params = played if jax.process_count() == 1 else distributed.to_host(played)
        result = self.evaluator.run(params, env_steps, record_agent=0 if config.record_video and self.main else None)
        improved = self.book.record_evaluation(result.returns, config.eval_return_window)
        wall_seconds = self.wall_seconds()
        self.reached_target = self.book.reach_target(config.target_return, wall_seconds)
        for row in eval_rows(result, self.seeds, env_steps, self.book.window_means(),
                             config.eval_return_window, self.book.best, wall_seconds,
                             reward_unit=abs(config.reward_scale) or 1.0):
            self.writer.write(row)
            self.remember([row])
        for s in np.flatnonzero(improved):  # every process saves (orbax's saves are collective), process 0 writes
            best = jax.tree.map(lambda x, s=s: x[s], params)
            checkpoint.save_best_params(self.run_dir, self.seeds[s], best, self.book.best[s], env_steps)
            if s == 0 and result.frames:
                write_video(result.frames, self.run_dir / "best_eval")
        last = self.book.last_eval
        self.progress.log(f"env steps {env_steps:>9,}  eval return {np.mean(last):8.2f}"
                          + (f"  (seeds: {', '.join(f'{x:.1f}' for x in last)})" if len(last) > 1 else ""))
        self.progress.update(env_steps, eval=f"{np.mean(last):.1f}")
        if self.reached_target:
            self.progress.log(f"every agent reached the target return {config.target_return:g}: stopping")

    def wall_seconds(self) -> float:
        """Returns the run's wall-clock seconds so far, those of the processes before a resume included."""
        return self.book.wall_seconds_before + time.perf_counter() - self.started

    def out_of_time(self, chunk_seconds: float) -> bool:
        """True when another chunk like the last would end past `time_limit_minutes`."""
        limit = self.config.time_limit_minutes * 60
        return limit > 0 and time.perf_counter() - self.started + chunk_seconds >= limit

    def save_checkpoint(self) -> None:
        """Saves the whole agent state and the bookkeeping (once per env step count)."""
        if self.book.checkpointed_at == self.book.env_steps:
            return
        self.book.checkpointed_at = self.book.env_steps
        meta = self.book.to_meta(self.wall_seconds())
        self.last_checkpoint = self.checkpoints.save(self.book.env_steps, self.state.agents, meta)

    def finish(self) -> None:
        """At the end (or a stop signal): a last evaluation unless stopped, a last checkpoint, and
        unless stopped the best params scored again on fresh games."""
        if self.stop_signal is None and self.book.evaluated_at != self.book.env_steps:
            self.evaluate()
        self.save_checkpoint()
        if self.stop_signal is None:
            self.score_best_params()

    def score_best_params(self) -> None:
        """Plays `final_eval_episodes` fresh games (seeds apart from the run's evaluations) with each
        agent's best params: the best evaluation is a maximum over noisy means, biased upward, and
        these games say what the params chosen by it are worth."""
        config = self.config
        if not config.final_eval_episodes or not all(np.isfinite(self.book.best)):
            return
        self.progress.log(f"scoring the best params on {config.final_eval_episodes} fresh games "
                          "(whole games: minutes for a weak Atari agent; --final-eval-episodes=0 skips it)")
        params, _ = load_params(self.run_dir, config, "best")
        games = dataclasses.replace(config, eval_episodes=config.final_eval_episodes)
        evaluator = Evaluator(games, self.loop.learner.network, stream=FINAL_SCORING_STREAM)
        result = evaluator.run(params, self.book.env_steps)
        self.best_params_returns = result.returns.mean(axis=1).tolist()
        self.progress.log(f"best params on {config.final_eval_episodes} fresh games: "
                          f"{np.mean(self.best_params_returns):.2f}" + (
                              f"  (seeds: {', '.join(f'{x:.1f}' for x in self.best_params_returns)})"
                              if len(self.seeds) > 1 else ""))

    def close(self) -> None:
        """Flushes and closes every sink; after a stop signal, says how to resume."""
        self.progress.close()
        self.writer.close()
        self.checkpoints.close()
        if self.stop_signal:
            steps = self.book.env_steps
            saved = f"checkpoint saved at env step {steps:,}" if self.book.checkpointed_at == steps else "no checkpoint"
            self.progress.log(f"{self.stop_signal} at env step {steps:,}: metrics flushed, {saved}. "
                              f"Resume with: python -m dqn_jax.train --resume={self.run_dir}")

    def summarize(self, wall_seconds: float) -> dict:
        """Writes `summary.json` (atomically) and returns it."""
        book, steps = self.book, self.book.env_steps
        trained = steps - (self.resumed_at or 0)
        summary = {
            "game": self.config.game,
            "run_dir": str(self.run_dir),
            "final_eval_return": finite_or_none(float(np.mean(book.last_eval))),
            "best_eval_return": finite_or_none(float(np.mean(book.best))),
            "max_eval_return": finite_or_none(float(np.mean(book.best))),
            "best_params_return": (None if self.best_params_returns is None
                                   else float(np.mean(self.best_params_returns))),
            "best_params_games": self.config.final_eval_episodes if self.best_params_returns is not None else 0,
            "env_steps": steps,
            "wall_seconds": wall_seconds,
            "steps_per_sec": trained / wall_seconds,
            "total_steps_per_sec": trained * len(self.seeds) / wall_seconds,
            "loop": self.loop.mode,
            "devices": self.loop.num_devices,
            "processes": jax.process_count(),
            "device_kind": jax.devices()[0].device_kind,
            "interrupted": self.stop_signal is not None,
            "stop_signal": self.stop_signal,
            "halted": self.halted,
            "resumed_from": self.resumed_at,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "target_return": finite_or_none(self.config.target_return),
            "run_wall_seconds": self.wall_seconds(),
            "seeds": [{"seed": seed, "final_eval_return": finite_or_none(book.last_eval[s]),
                       "best_eval_return": finite_or_none(book.best[s]),
                       "max_eval_return": finite_or_none(book.best[s]),
                       "best_params_return": None if self.best_params_returns is None
                       else self.best_params_returns[s],
                       "target_reached": book.target_reached[s]} for s, seed in enumerate(self.seeds)],
        }
        if self.main:
            write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        return summary
