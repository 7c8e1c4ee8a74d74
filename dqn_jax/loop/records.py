"""What one loop iteration reports, and the `metrics.jsonl` rows built from it.

One iteration returns a `StepRecord` split by what each part is: `LearnRecord` (the update
round), `ExperienceRecord` (acting and the episodes it ended), `HealthRecord` (statistics of one
update in `health_every`) and `FingerprintRecord` (hashes every `fingerprint_every` updates).
`lax.scan` stacks them along a leading [K] axis; `chunk_rows` turns a chunk of them into the
`fingerprint`, `train` and `health` rows, and `eval_rows` turns an evaluation into `eval` rows.
The records and the rows sit in one module because together they are the schema of the run
directory that the rules, the doctor, `repro` and users' own tools read (an interface: extend it,
rename nothing).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from flax import struct

from dqn_jax.agent import health_fields as fields
from dqn_jax.agent.fingerprint import as_hex

# Fields of `train` and `eval` rows that code reads back (the rules, the doctor, the trainer).
LEARNING_RATE, EPSILON = "learning_rate", "epsilon"
EVAL_RETURN_MEAN, BEST_EVAL_RETURN = "eval_return_mean", "best_eval_return"
NEURONS_RECYCLED = "neurons_recycled"  # train rows: neurons ReDo recycled in the chunk (`redo_every`)
# Over-estimation, measured on the evaluation games (see `evaluate.Evaluator.run`).
EVAL_Q_START = "eval_q_start"  # mean of max_a Q(s_0, a) over the games' first states
EVAL_VALUE_REALIZED = "eval_value_realized"  # mean discounted (training) reward that followed s_0
Q_OVERESTIMATION = "q_overestimation"  # (Q - realized) / max(|realized|, one reward): ratio - 1 when both > 0


@struct.dataclass
class LearnRecord:
    """The update round after one env step (zeros where none ran)."""

    learned: jax.Array  # [] bool, an update round ran after this step
    updates: jax.Array  # [S] int32 updates so far
    loss: jax.Array  # [S] mean over the round
    q_mean: jax.Array  # [S]
    td_abs_mean: jax.Array  # [S]
    learning_rate: jax.Array  # [S]
    recycled: jax.Array  # [S] int32 neurons ReDo recycled in the round (0 without `redo_every`)


@struct.dataclass
class ExperienceRecord:
    """What acting and the env step did, per agent [S] or per environment [S, E]."""

    epsilon: jax.Array  # [S] exploration rate used
    episode_done: jax.Array  # [S, E] bool, a game ended at this step
    episode_return: jax.Array  # [S, E] its raw return (valid where episode_done)
    episode_length: jax.Array  # [S, E] its length in env steps
    episode_truncated: jax.Array  # [S, E] bool, the game that ended hit the time limit
    real_steps: jax.Array  # [S] int32 env steps that were not reset steps
    reward_nonzero_steps: jax.Array  # [S] int32 of those, steps with a non-zero raw reward
    life_losses: jax.Array  # [S] int32 lives lost without the game ending
    life_loss_terminals: jax.Array  # [S] int32 of those, ones the learner saw as terminal


@struct.dataclass
class HealthRecord:
    """Health statistics of the round's last update (see `health_stats.update_health`)."""

    measured: jax.Array  # [] bool, this round measured them
    stats: dict  # name -> [S] float32 (0 where not measured)


@struct.dataclass
class FingerprintRecord:
    """Hashes that let two runs be compared update by update (see `fingerprint.py`)."""

    due: jax.Array  # [] bool, the update count crossed a multiple of `fingerprint_every`
    batch_hash: jax.Array  # [S] uint32 hash of the last sampled batch's indices
    params_hash: jax.Array  # [S] uint32 hash of the online params (valid where `due`)
    params_norm: jax.Array  # [S] float32 L2 norm of the online params (valid where `due`)


@struct.dataclass
class StepRecord:
    """Everything one iteration reports; scan stacks it along a leading [K] axis."""

    learn: LearnRecord
    experience: ExperienceRecord
    health: HealthRecord
    fingerprint: FingerprintRecord


class ChunkRows(NamedTuple):
    """The rows of one chunk, by kind, in the order they are written."""

    fingerprint: list[dict]
    train: list[dict]
    health: list[dict]

    def all(self) -> list[dict]:
        """Returns every row: fingerprints, then train rows, then health rows."""
        return self.fingerprint + self.train + self.health


def fingerprint_rows(records: StepRecord, seeds: list[int], num_envs: int, chunk_start: int) -> list[dict]:
    """Returns the `fingerprint` rows of a chunk's host records [K, ...] (one per agent per hit).

    `chunk_start` is the env-step count before the chunk; iteration k ends at
    `chunk_start + (k + 1) * num_envs`.
    """
    f, updates = records.fingerprint, records.learn.updates
    return [{
        "kind": "fingerprint", "env_steps": chunk_start + (int(k) + 1) * num_envs, "seed": seed,
        "updates": int(updates[k, s]), "params_hash": as_hex(f.params_hash[k, s]),
        "batch_hash": as_hex(f.batch_hash[k, s]), "params_norm": float(f.params_norm[k, s]),
    } for k in np.flatnonzero(f.due) for s, seed in enumerate(seeds)]


def train_rows(records: StepRecord, seeds: list[int], env_steps: int, steps_per_sec: float) -> list[dict]:
    """Returns one `train` row per agent summarising a chunk's host records [K, ...]."""
    learn, experience = records.learn, records.experience
    learned = learn.learned
    rows = []
    for s, seed in enumerate(seeds):
        row = {"kind": "train", "env_steps": env_steps, "seed": seed,
               EPSILON: float(experience.epsilon[-1, s]), "steps_per_sec": steps_per_sec}
        if learned.any():
            for key in ("loss", "q_mean", "td_abs_mean"):
                row[key] = float(getattr(learn, key)[learned, s].mean())
            row[LEARNING_RATE] = float(learn.learning_rate[learned, s][-1])
            row[NEURONS_RECYCLED] = int(learn.recycled[learned, s].sum())
        else:
            row.update({"loss": None, "q_mean": None, "td_abs_mean": None, LEARNING_RATE: None})
        done = experience.episode_done[:, s]
        row["episodes"] = int(done.sum())
        if done.any():
            row["train_return_mean"] = float(experience.episode_return[:, s][done].mean())
            row["train_length_mean"] = float(experience.episode_length[:, s][done].mean())
        rows.append(row)
    return rows


def _episode_health(experience: ExperienceRecord, s: int) -> dict:
    """Returns the env-side fields of agent `s`'s health row: rewards, lives and episode endings."""
    real_steps = int(experience.real_steps[:, s].sum())
    row = {
        fields.ENV_REWARD_NONZERO: float(experience.reward_nonzero_steps[:, s].sum() / max(real_steps, 1)),
        fields.LIFE_LOSSES: int(experience.life_losses[:, s].sum()),
        fields.LIFE_LOSS_TERMINALS: int(experience.life_loss_terminals[:, s].sum()),
    }
    done = experience.episode_done[:, s]
    truncated = experience.episode_truncated[:, s] & done
    row[fields.EPISODES] = int(done.sum())
    if done.any():
        lengths, returns = experience.episode_length[:, s], experience.episode_return[:, s]
        finished = done & ~truncated
        row.update({
            fields.EPISODE_LENGTH_MEAN: float(lengths[done].mean()),
            fields.EPISODE_LENGTH_MAX: int(lengths[done].max()),
            fields.TRUNCATED_FRACTION: float(truncated.sum() / done.sum()),
            fields.TRUNCATED_RETURN_MEAN: float(returns[truncated].mean()) if truncated.any() else None,
            fields.FINISHED_RETURN_MEAN: float(returns[finished].mean()) if finished.any() else None,
        })
    return row


def aggregate(name: str, values: np.ndarray) -> float:
    """Summarises one statistic over a chunk's measurements: max for maxima and flags, min for
    minima, mean otherwise."""
    if name.endswith("_max") or name in (fields.NONFINITE, fields.OPTIMIZER_STEPS):
        return float(np.max(values))
    if name.endswith("_min"):
        return float(np.min(values))
    return float(np.mean(values))


def health_rows(records: StepRecord, seeds: list[int], env_steps: int) -> list[dict]:
    """Returns one `health` row per agent summarising a chunk's host records [K, ...]."""
    measured = records.health.measured & records.learn.learned
    rows = []
    for s, seed in enumerate(seeds):
        row = {"kind": "health", "env_steps": env_steps, "seed": seed,
               fields.UPDATES: int(records.learn.updates[-1, s])}
        if measured.any():
            row.update({name: aggregate(name, values[measured, s])
                        for name, values in records.health.stats.items()})
        row.update(_episode_health(records.experience, s))
        rows.append(row)
    return rows


def chunk_rows(records: StepRecord, seeds: list[int], num_envs: int, chunk_start: int,
               steps_per_sec: float) -> ChunkRows:
    """Returns the rows of a chunk of `K` iterations from its records (host arrays, as `run_chunks` yields)."""
    records = jax.tree.map(np.asarray, records)
    env_steps = chunk_start + records.learn.learned.shape[0] * num_envs
    return ChunkRows(fingerprint_rows(records, seeds, num_envs, chunk_start),
                     train_rows(records, seeds, env_steps, steps_per_sec),
                     health_rows(records, seeds, env_steps))


def eval_rows(result, seeds: list[int], env_steps: int, window_means: list[float], window: int,
              best: list[float], wall_seconds: float, reward_unit: float = 1.0) -> list[dict]:
    """Returns one `eval` row per agent for one evaluation's `evaluate.EvalResult` ([S, episodes] arrays).

    `window_means` are the rolling means over the latest `window` evaluation episodes and `best`
    the best mean evaluation return so far, one per agent; `wall_seconds` is the run's wall-clock
    time at this evaluation (building pools and compiling included, earlier processes of a resumed
    run included); `reward_unit` is the size of one stored reward (|reward_scale|, or 1 when it
    is 0), the floor of the over-estimation's denominator, so a realized value near 0 does not
    blow the ratio up.
    """
    rows = []
    for s, seed in enumerate(seeds):
        returns = result.returns[s]
        row = {
            "kind": "eval", "env_steps": env_steps, "seed": seed,
            EVAL_RETURN_MEAN: float(returns.mean()), "eval_return_std": float(returns.std()),
            "eval_return_min": float(returns.min()), "eval_return_max": float(returns.max()),
            "eval_episodes": int(returns.shape[0]), "eval_length_mean": float(result.lengths[s].mean()),
            "eval_truncated": int(result.truncated[s].sum()),
            f"eval_return_mean{window}": float(window_means[s]), BEST_EVAL_RETURN: best[s],
            "wall_seconds": round(wall_seconds, 2),
        }
        if result.q_start is not None:
            q, realized = float(result.q_start[s].mean()), float(result.value_realized[s].mean())
            row.update({EVAL_Q_START: q, EVAL_VALUE_REALIZED: realized,
                        Q_OVERESTIMATION: (q - realized) / max(abs(realized), reward_unit, 1e-12)})
        rows.append(row)
    return rows
