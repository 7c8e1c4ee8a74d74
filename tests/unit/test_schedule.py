"""Chunk boundaries, the trainer's bookkeeping through a checkpoint's meta, and rows from records."""

from __future__ import annotations

import json
import math

import numpy as np

from dqn_jax.agent import health_fields as H
from dqn_jax.loop.records import (
    ExperienceRecord,
    FingerprintRecord,
    HealthRecord,
    LearnRecord,
    StepRecord,
    chunk_rows,
    eval_rows,
)
from dqn_jax.loop.schedule import ChunkSchedule
from dqn_jax.run.bookkeeping import Bookkeeping
from dqn_jax.run.evaluate import EvalResult


def chunk_ends(schedule: ChunkSchedule, start: int = 0) -> list[int]:
    ends, iteration = [], start
    while iteration < schedule.total_iterations:
        iteration = schedule.next_end(iteration)
        ends.append(iteration)
    return ends


def test_chunks_end_at_evaluation_and_checkpoint_points_and_at_the_end():
    # 4 envs, chunks of 400 env steps, 2,000 in all, evaluation every 1,000, checkpoints every 1,200.
    schedule = ChunkSchedule(num_envs=4, chunk_iterations=100, total_iterations=500, periods=(1_000, 1_200))
    assert [e * 4 for e in chunk_ends(schedule)] == [400, 800, 1000, 1200, 1600, 2000]
    # Periods that are not multiples of num_envs end the chunk at the first iteration past them.
    odd = ChunkSchedule(num_envs=8, chunk_iterations=1_000, total_iterations=100, periods=(100,))
    assert chunk_ends(odd)[:3] == [13, 25, 38]
    assert chunk_ends(schedule, start=260) == [300, 400, 500]  # resumed: checkpoint at 1,200, then 100 long


def test_crossed_says_when_a_multiple_was_passed():
    schedule = ChunkSchedule(num_envs=4, chunk_iterations=100, total_iterations=500)
    assert schedule.crossed(1_000, done_at=0, env_steps=1_000)
    assert not schedule.crossed(1_000, done_at=1_000, env_steps=1_400)
    assert not schedule.crossed(0, done_at=0, env_steps=10**6)  # a period of 0 never falls due


def test_bookkeeping_round_trips_through_a_checkpoints_json_meta():
    book = Bookkeeping.fresh(num_seeds=2, num_envs=4)
    book.iteration = 250
    improved = book.record_evaluation(np.array([[1.0, 3.0], [5.0, 5.0]]), window=3)
    assert improved == [True, True] and book.evaluated_at == 1_000 and book.last_eval == [2.0, 5.0]
    assert book.record_evaluation(np.array([[4.0, 4.0], [1.0, 1.0]]), window=3) == [True, False]
    assert book.eval_history == [[3.0, 4.0, 4.0], [5.0, 1.0, 1.0]] and book.best == [4.0, 5.0]
    book.reported_findings.add((1, "dead_layer"))
    assert book.reach_target(4.0, wall_seconds=30.0) is False  # agent 1's latest return is 1.0
    assert book.target_reached == [{"env_steps": 1_000, "wall_seconds": 30.0}, None]
    meta = json.loads(json.dumps(book.to_meta(wall_seconds=42.0)))  # what orbax's JsonSave keeps
    restored = Bookkeeping.from_meta(meta, num_seeds=2, num_envs=4)
    assert restored == Bookkeeping(4, 250, book.eval_history, book.best, book.last_eval, 1_000, 1_000,
                                   {(1, "dead_layer")}, 42.0, book.target_reached)
    restored.iteration = 500
    restored.record_evaluation(np.array([[0.0, 0.0], [4.0, 6.0]]), window=3)
    assert restored.reach_target(4.0, wall_seconds=50.0) is True  # agent 0 keeps its first time
    assert restored.target_reached == [{"env_steps": 1_000, "wall_seconds": 30.0},
                                       {"env_steps": 2_000, "wall_seconds": 50.0}]
    fresh = Bookkeeping.from_meta(json.loads(json.dumps(Bookkeeping.fresh(2, 4).to_meta(0.0))), 2, 4)
    assert fresh.best == [-math.inf, -math.inf] and all(math.isnan(x) for x in fresh.last_eval)


def _records() -> StepRecord:
    """Three iterations of one agent with two envs: learning from the second, a game ending at the third."""
    K, S, E = 3, 1, 2
    f32 = lambda *v: np.array(v, np.float32).reshape(K, S)  # noqa: E731
    done = np.zeros((K, S, E), bool)
    done[2, 0, 1] = True
    return StepRecord(
        learn=LearnRecord(learned=np.array([False, True, True]), updates=np.array([[0], [2], [4]]),
                          loss=f32(0, 1, 3), q_mean=f32(0, 2, 2), td_abs_mean=f32(0, 1, 1),
                          learning_rate=f32(0, 1e-3, 5e-4), recycled=np.array([[0], [3], [2]], np.int32)),
        experience=ExperienceRecord(
            epsilon=f32(1.0, 0.9, 0.8), episode_done=done, episode_return=np.full((K, S, E), 7.0),
            episode_length=np.full((K, S, E), 12), episode_truncated=np.zeros((K, S, E), bool),
            real_steps=np.full((K, S), 2), reward_nonzero_steps=np.array([[0], [1], [1]]),
            life_losses=np.zeros((K, S), int), life_loss_terminals=np.zeros((K, S), int)),
        health=HealthRecord(measured=np.array([False, False, True]), stats={H.GRAD_NORM: f32(0, 0, 2.5)}),
        fingerprint=FingerprintRecord(due=np.array([False, True, False]), batch_hash=np.full((K, S), 10, np.uint32),
                                      params_hash=np.full((K, S), 255, np.uint32), params_norm=f32(0, 4, 0)))


def test_chunk_rows_from_records():
    rows = chunk_rows(_records(), seeds=[7], num_envs=2, chunk_start=100, steps_per_sec=50.0)
    assert rows.fingerprint == [{"kind": "fingerprint", "env_steps": 104, "seed": 7, "updates": 2,
                                 "params_hash": "000000ff", "batch_hash": "0000000a", "params_norm": 4.0}]
    (train,) = rows.train
    assert train["env_steps"] == 106 and train["loss"] == 2.0 and train["learning_rate"] == np.float32(5e-4)
    assert train["epsilon"] == np.float32(0.8) and train["episodes"] == 1 and train["train_return_mean"] == 7.0
    assert train["neurons_recycled"] == 5  # summed over the chunk's updates
    (health,) = rows.health
    assert health[H.GRAD_NORM] == 2.5 and health[H.UPDATES] == 4 and health[H.ENV_REWARD_NONZERO] == 2 / 6
    assert health[H.EPISODES] == 1 and health[H.TRUNCATED_FRACTION] == 0.0 and health[H.FINISHED_RETURN_MEAN] == 7.0
    assert [r["kind"] for r in rows.all()] == ["fingerprint", "train", "health"]


def test_eval_rows_with_the_over_estimation_of_q():
    result = EvalResult(np.array([[1.0, 3.0]]), np.array([[10, 30]]), np.array([[False, True]]), None,
                        q_start=np.array([[2.0, 4.0]]), value_realized=np.array([[0.5, 1.5]]))
    (row,) = eval_rows(result, [5], 2_000, [2.5], 50, [4.0], 12.5)
    assert row == {"kind": "eval", "env_steps": 2_000, "seed": 5, "eval_return_mean": 2.0, "eval_return_std": 1.0,
                   "eval_return_min": 1.0, "eval_return_max": 3.0, "eval_episodes": 2, "eval_length_mean": 20.0,
                   "eval_truncated": 1, "eval_return_mean50": 2.5, "best_eval_return": 4.0, "wall_seconds": 12.5,
                   "eval_q_start": 3.0, "eval_value_realized": 1.0, "q_overestimation": 2.0}
    # A realized value near 0 (Pong's early points are mostly lost): the denominator is one reward at least.
    near_zero = result._replace(value_realized=np.array([[0.01, -0.01]]))
    assert eval_rows(near_zero, [5], 2_000, [2.5], 50, [4.0], 12.5, reward_unit=1.0)[0]["q_overestimation"] == 3.0
