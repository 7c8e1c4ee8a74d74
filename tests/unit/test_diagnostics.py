"""Every health rule on synthetic rows: it fires on the failure it names and stays quiet on a healthy history."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pytest

from dqn_jax.agent import health_fields as H
from dqn_jax.health import diagnostics
from dqn_jax.health.diagnostics import History, diagnose
from dqn_jax.health.findings import TAIL
from dqn_jax.run import presets

CARTPOLE = presets.preset("CartPole")  # gamma 0.995: |Q| <= 200 for rewards of 1
PONG = presets.preset("Pong")


def healthy_health(step: int, **changes) -> dict:
    """A health row of a learning CartPole agent, with `changes` applied."""
    updates = max(0, step - CARTPOLE.learning_starts) // 2  # learning from env step 1,000
    row = {"kind": "health", "env_steps": step, "seed": 0, H.UPDATES: updates,
           H.Q_MEAN: 20.0, H.Q_MIN: 5.0, H.Q_MAX: 40.0, H.Q_ZERO_FRACTION: 0.0, H.LOSS: 0.1,
           H.GRAD_NORM: 1.0, H.OPTIMIZER_STEPS: updates, H.BATCH_REWARD_NONZERO: 1.0, H.NONFINITE: 0.0,
           H.per_layer(H.DEAD_FRACTION, "torso/dense_0"): 0.1, H.ENV_REWARD_NONZERO: 1.0,
           H.LIFE_LOSSES: 0, H.LIFE_LOSS_TERMINALS: 0, H.EPISODES: 4, H.TRUNCATED_FRACTION: 0.0,
           H.FINISHED_RETURN_MEAN: 50.0 + step / 100, H.TRUNCATED_RETURN_MEAN: None, H.EPISODE_LENGTH_MAX: 100,
           # The ranges a healthy CartPole run shows (docs/health.md): some dormancy and rank loss, little churn.
           H.DORMANT_FRACTION: 0.1 + step / 40_000, H.SRANK: 36.0 - step / 1000, H.FEATURE_RANK_BOUND: 64.0,
           H.POLICY_CHURN: 0.05, H.ACTION_GAP: 3.0}
    return {**row, **changes}


def train_row(step: int, learning: bool = True, epsilon: float = 0.5, loss: float | None = 0.1) -> dict:
    return {"kind": "train", "env_steps": step, "seed": 0, "epsilon": epsilon,
            "loss": loss if learning else None, "learning_rate": 1e-3 if learning else None}


def eval_row(step: int, value: float, overestimation: float = 0.1) -> dict:
    return {"kind": "eval", "env_steps": step, "seed": 0, "eval_return_mean": value,
            "eval_q_start": 100.0 * (1 + overestimation), "eval_value_realized": 100.0,
            "q_overestimation": overestimation}


def history(health=(), train=(), evals=(), config=CARTPOLE) -> History:
    return History.from_rows(config, [*train, *evals, *health])


HEALTHY = history(health=[healthy_health(1000 * i) for i in range(1, 8)],
                  train=[train_row(1000 * i) for i in range(1, 8)],
                  evals=[eval_row(1000 * i, 20.0 * i) for i in range(1, 8)])


@pytest.mark.parametrize("rule", diagnostics.RULES, ids=lambda rule: rule.__name__)
def test_no_rule_fires_on_a_healthy_history(rule):
    assert rule(HEALTHY) is None


def fired(rule, h: History):
    finding = rule(h)
    assert finding is not None, f"{rule.__name__} did not fire"
    return finding


def with_health(step_from: int, **changes) -> History:
    """The healthy history with `changes` in every health row from env step `step_from` on."""
    return dataclasses.replace(HEALTHY, health=[
        {**r, **changes} if r["env_steps"] >= step_from else r for r in HEALTHY.health])


def test_non_finite_from_health_or_from_a_null_loss():
    assert fired(diagnostics.non_finite, with_health(3000, **{H.NONFINITE: 1.0})).env_steps == 3000
    nan_loss = dataclasses.replace(HEALTHY, train=[*HEALTHY.train, train_row(8000, loss=None)])
    nan_loss.train[-1]["learning_rate"] = 1e-3
    assert fired(diagnostics.non_finite, nan_loss).env_steps == 8000


def test_dead_q_head_needs_two_chunks_of_zero_outputs():
    assert fired(diagnostics.dead_q_head, with_health(6000, **{H.Q_ZERO_FRACTION: 1.0})).env_steps == 6000
    assert diagnostics.dead_q_head(with_health(7000, **{H.Q_ZERO_FRACTION: 1.0})) is None  # one chunk only


def test_dead_layer_names_the_layer_and_needs_it_to_stay_dead():
    layer = H.per_layer(H.DEAD_FRACTION, "torso/dense_0")
    finding = fired(diagnostics.dead_layer, with_health(4000, **{layer: 0.97}))
    assert finding.env_steps == 4000 and "torso/dense_0" in finding.evidence
    flicker = dataclasses.replace(HEALTHY, health=[
        {**r, layer: 0.99} if r["env_steps"] == 4000 else r for r in HEALTHY.health])
    assert diagnostics.dead_layer(flicker) is None


def test_reward_signal_empty_is_an_error_when_the_env_pays_and_a_warning_when_it_does_not():
    zero_batches = with_health(2000, **{H.BATCH_REWARD_NONZERO: 0.0})
    assert fired(diagnostics.reward_signal_empty, zero_batches).severity == "error"
    no_reward_at_all = with_health(0, **{H.BATCH_REWARD_NONZERO: 0.0, H.ENV_REWARD_NONZERO: 0.0})
    assert fired(diagnostics.reward_signal_empty, no_reward_at_all).severity == "warning"


def test_optimizer_reset_when_its_step_count_lags_the_updates():
    assert fired(diagnostics.optimizer_reset, with_health(3000, **{H.OPTIMIZER_STEPS: 1})).env_steps == 3000


def test_q_divergence_against_the_bound_the_rewards_allow():
    # CartPole: r <= 1, gamma 0.995 -> 200; ten times that is 2,000.
    assert diagnostics.q_divergence(with_health(5000, **{H.Q_MAX: 1_900.0})) is None
    assert fired(diagnostics.q_divergence, with_health(5000, **{H.Q_MAX: 2_100.0})).env_steps == 5000
    unclipped = dataclasses.replace(with_health(5000, **{H.Q_MAX: 1e6}),
                                    config=dataclasses.replace(PONG, reward_clip=False))
    assert diagnostics.q_divergence(unclipped) is None  # unclipped Atari rewards: no bound known


def test_exploding_gradients_against_their_early_value():
    assert fired(diagnostics.exploding_gradients, with_health(6000, **{H.GRAD_NORM: 5e3})).env_steps == 6000
    assert diagnostics.exploding_gradients(with_health(6000, **{H.GRAD_NORM: 500.0})) is None


def test_vanishing_gradients_with_a_loss_still_to_fit():
    assert fired(diagnostics.vanishing_gradients, with_health(3000, **{H.GRAD_NORM: 0.0})).env_steps == 3000
    assert diagnostics.vanishing_gradients(with_health(3000, **{H.GRAD_NORM: 0.0, H.LOSS: 0.0})) is None


def test_episode_length_exploit_unless_capped_episodes_score_more():
    def capped(capped_return):
        return with_health(4000, **{H.TRUNCATED_FRACTION: 1.0, H.TRUNCATED_RETURN_MEAN: capped_return,
                                    H.FINISHED_RETURN_MEAN: None, H.EPISODE_LENGTH_MAX: 500})

    assert diagnostics.episode_length_exploit(capped(500.0)) is None  # CartPole solved: reaching 500 is success
    stalled = fired(diagnostics.episode_length_exploit, capped(40.0))
    assert "no more than the best episode that really ended (80)" in stalled.evidence


def test_life_loss_not_terminal():
    assert fired(diagnostics.life_loss_not_terminal, with_health(2000, **{H.LIFE_LOSSES: 3})).env_steps == 2000
    assert diagnostics.life_loss_not_terminal(with_health(2000, **{H.LIFE_LOSSES: 3, H.LIFE_LOSS_TERMINALS: 3})) is None


def test_epsilon_floor_before_learning():
    early_floor = dataclasses.replace(
        HEALTHY, train=[train_row(1000, learning=False, epsilon=0.04), train_row(2000, epsilon=0.04)])
    assert fired(diagnostics.epsilon_floor_before_learning, early_floor).env_steps == 2000


def test_no_learning_progress_after_five_flat_evaluations_once_learning_started():
    # CartPole learns from env step 1,000: the evaluation there is the untrained baseline.
    flat = dataclasses.replace(HEALTHY, eval=[eval_row(1000 * i, 10.0) for i in range(1, 7)])
    assert fired(diagnostics.no_learning_progress, flat).env_steps == 6000
    assert diagnostics.no_learning_progress(dataclasses.replace(flat, eval=flat.eval[:5])) is None
    # No evaluation before learning: nothing to compare with (a first evaluation at 500 is no failure).
    early_best = dataclasses.replace(HEALTHY, eval=[eval_row(10_000 * i, 500.0) for i in range(1, 8)])
    assert diagnostics.no_learning_progress(early_best) is None


def test_no_rule_judges_learning_before_it_started():
    """The Pong preset learns from 100k: flat evaluations, a random policy's capped episodes and
    everything else its first 100k env steps show are not findings."""
    before = history(health=[healthy_health(10_000 * i, **{H.TRUNCATED_FRACTION: 1.0, H.TRUNCATED_RETURN_MEAN: -21.0,
                                                          H.FINISHED_RETURN_MEAN: None, H.UPDATES: 0})
                             for i in range(1, 11)],
                     train=[train_row(10_000 * i, learning=False, epsilon=1.0) for i in range(1, 11)],
                     evals=[eval_row(10_000 * i, -21.0) for i in range(1, 11)], config=PONG)
    assert diagnose(before) == []


def test_plasticity_loss_when_a_layer_goes_dormant_or_the_feature_rank_collapses():
    rows = [healthy_health(1000 * i) for i in range(1, 11)]  # learning from 1,000: rows 2,000 on are judged
    layer = H.per_layer(H.DORMANT_FRACTION, "torso/dense_1")
    dormant = history(health=[{**r, layer: 0.1 if i < 5 else 0.7, H.DORMANT_FRACTION: 0.05 if i < 5 else 0.35}
                              for i, r in enumerate(rows)])
    finding = fired(diagnostics.plasticity_loss, dormant)
    assert finding.env_steps == 6000 and "70% of the neurons of torso/dense_1" in finding.evidence
    # 70% dormant, but already 40% when learning started: not a loss that training caused.
    assert diagnostics.plasticity_loss(history(health=[{**r, layer: 0.4 if i < 5 else 0.7}
                                                       for i, r in enumerate(rows)])) is None
    # Rising to 49%, as dense_1 of a healthy CartPole run does: no finding.
    assert diagnostics.plasticity_loss(history(health=[{**r, layer: 0.02 if i < 5 else 0.49}
                                                       for i, r in enumerate(rows)])) is None
    collapse = history(health=[{**r, H.SRANK: 40.0 if i < 5 else 8.0} for i, r in enumerate(rows)])
    assert fired(diagnostics.plasticity_loss, collapse).env_steps == 6000
    # Half the peak rank, as a healthy CartPole run ends: no finding.
    assert diagnostics.plasticity_loss(history(health=[{**r, H.SRANK: 40.0 if i < 5 else 20.0}
                                                       for i, r in enumerate(rows)])) is None


def test_q_overestimation_needs_three_evaluations_above_twice_the_realized_value_and_growing():
    growing = dataclasses.replace(HEALTHY, eval=[eval_row(1000 * i, 10.0, over) for i, over in
                                                 enumerate([0.1, 0.2, 1.2, 1.5, 2.5, 3.0], start=1)])
    finding = fired(diagnostics.q_overestimation, growing)
    assert finding.env_steps == 3000 and "1.20 → 2.50" in finding.evidence
    steady = dataclasses.replace(HEALTHY, eval=[eval_row(1000 * i, 10.0, 1.5) for i in range(1, 7)])
    assert diagnostics.q_overestimation(steady) is None  # high, but not growing
    # Measured on Pong just after learning started: Q still near its initial 0, the games lost.
    pong_early = dataclasses.replace(HEALTHY, eval=[
        {**eval_row(1000 * i, -21.0, over), "eval_q_start": q, "eval_value_realized": -1.87}
        for i, (q, over) in enumerate([(0.10, 1.05), (0.06, 1.03), (0.07, 1.04), (0.09, 1.05)], start=1)])
    assert diagnostics.q_overestimation(pong_early) is None


def test_policy_churn_when_a_third_of_the_batch_flips_at_every_update():
    # Learning starts at 1,000; its first three health rows (2,000-4,000) are not judged: Q values
    # that start out nearly equal flip their argmax at any update.
    assert fired(diagnostics.policy_churn, with_health(2000, **{H.POLICY_CHURN: 0.5})).env_steps == 5000
    assert diagnostics.policy_churn(with_health(2000, **{H.POLICY_CHURN: 0.2})) is None


def test_replay_collapse_when_prioritized_replay_draws_from_under_one_percent():
    collapsed = with_health(3000, **{H.PER_EFFECTIVE_FRACTION: 0.004, H.PER_WEIGHT_MAX: 900.0})
    finding = fired(diagnostics.replay_collapse, collapsed)
    assert finding.env_steps == 3000 and "0.40%" in finding.evidence and "900" in finding.evidence
    # The lowest a healthy prioritized CartPole run showed (docs/health.md) stays quiet.
    assert diagnostics.replay_collapse(with_health(3000, **{H.PER_EFFECTIVE_FRACTION: 0.078})) is None
    assert [f.rule for f in diagnose(with_health(3000, **{H.PER_EFFECTIVE_FRACTION: 0.004, H.NONFINITE: 1.0}))] == [
        "non_finite"]


def test_diagnose_reports_the_cause_not_its_consequences():
    both = with_health(3000, **{H.NONFINITE: 1.0, H.Q_MAX: 1e9, H.GRAD_NORM: 1e9})
    assert [f.rule for f in diagnose(both)] == ["non_finite"]
    assert diagnose(HEALTHY) == []


def test_the_doctor_does_not_call_a_run_that_never_updated_healthy(tmp_path):
    import json

    from dqn_jax.tools.doctor import report

    config = dataclasses.replace(presets.preset("CartPole"), learning_starts=5_000)
    (tmp_path / "config.toml").write_text(presets.to_toml(config))
    rows = [{"kind": "train", "env_steps": s, "seed": 0, "epsilon": 1.0, "steps_per_sec": 1e3, "loss": None,
             "q_mean": None, "td_abs_mean": None, "learning_rate": None, "episodes": 3} for s in (2_000, 4_000)]
    rows.append({"kind": "eval", "env_steps": 4_000, "seed": 0, "eval_return_mean": 21.0})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines: list[str] = []
    assert report(tmp_path, out=lines.append) == 0
    assert lines[0] == (f"learning has not started in {tmp_path}: no update was made (learning starts at env step "
                        "5,000; the run has 4,000), so there is nothing to judge yet")
    assert not any("healthy" in line for line in lines)


# --- the bounded History the trainer feeds chunk by chunk -------------------------------------------

CHUNKS = 40  # a long history: most of its rows have left a bounded History by the time a rule fires


def long_history(failing: dict | None = None, from_chunk: int = 30, evals: Callable | None = None,
                 train: Callable | None = None) -> list[dict]:
    """Rows of a 40-chunk CartPole run in the order the trainer writes them (train, health, then an
    evaluation every other chunk), healthy until `from_chunk`, from where `failing` is in every
    health row; `evals(i)` and `train(i)` replace chunk i's evaluation and train rows."""
    rows = []
    for i in range(1, CHUNKS + 1):
        step = 1000 * i
        rows.append(train(i) if train else train_row(step, learning=step > CARTPOLE.learning_starts))
        # healthy_health's dormancy and srank drift suits 7 chunks; over 40 they drift more slowly
        health = healthy_health(step, **{H.GRAD_NORM: 1.0 + (i % 3) / 10, H.SRANK: 36.0 - i / 10,
                                         H.DORMANT_FRACTION: 0.1 + i / 400,
                                         H.per_layer(H.DORMANT_FRACTION, "torso/dense_0"): 0.1 + i / 400})
        rows.append({**health, **(failing or {})} if i >= from_chunk else health)
        if i % 2 == 1:
            rows.append(evals(i) if evals else eval_row(step, 20.0 * i))
    return rows


FAILING_HISTORIES = {
    "healthy": long_history(),
    "non_finite": long_history({H.NONFINITE: 1.0}),
    "dead_q_head": long_history({H.Q_ZERO_FRACTION: 0.9}),
    "dead_layer": long_history({H.per_layer(H.DEAD_FRACTION, "torso/dense_0"): 0.99}),
    "reward_signal_empty": long_history({H.BATCH_REWARD_NONZERO: 0.0}),  # the env paid in earlier rows
    "optimizer_reset": long_history({H.OPTIMIZER_STEPS: 1}),
    "q_divergence": long_history({H.Q_MAX: 1e6}),
    "exploding_gradients": long_history({H.GRAD_NORM: 1e7}),  # against the first three rows' norms
    "vanishing_gradients": long_history({H.GRAD_NORM: 1e-10}),
    "episode_length_exploit": long_history({H.TRUNCATED_FRACTION: 1.0, H.TRUNCATED_RETURN_MEAN: 10.0}),
    "life_loss_not_terminal": [  # three lives lost, the first at chunk 2, long before the third
        {**r, H.LIFE_LOSSES: 1} if r["kind"] == "health" and r["env_steps"] in (2000, 15000, 33000) else r
        for r in long_history()],
    "epsilon_floor_before_learning": long_history(train=lambda i: train_row(1000 * i, learning=i > 1,
                                                                                      epsilon=CARTPOLE.epsilon_end)),
    "no_learning_progress": long_history(evals=lambda i: eval_row(1000 * i, 20.0)),
    "plasticity_loss/dormant": long_history({H.DORMANT_FRACTION: 0.7,
                                             H.per_layer(H.DORMANT_FRACTION, "torso/dense_0"): 0.7}),
    "plasticity_loss/srank": long_history({H.SRANK: 5.0}),  # against the peak of the first rows
    "q_overestimation": long_history(evals=lambda i: eval_row(1000 * i, 20.0 * i, 0.1 if i < 29 else 0.5 * i - 13)),
    "policy_churn": long_history({H.POLICY_CHURN: 0.5}),
    "replay_collapse": long_history({H.PER_EFFECTIVE_FRACTION: 0.004}),
}


def first_findings(rows: list[dict], limit: int | None) -> dict[str, tuple[int, str, int]]:
    """Diagnoses after every row, as the trainer does after every chunk; returns each rule's first
    report: (env step, evidence, rows seen). `limit` None: the full history of the rows so far and
    no memory of earlier reports (the rules as they were); else a bounded History of `limit` rows."""
    bounded = History.bounded(CARTPOLE, limit) if limit else None
    first: dict = {}
    for seen, row in enumerate(rows, start=1):
        if bounded is None:
            findings = diagnose(History.from_rows(CARTPOLE, rows[:seen]))
        else:
            bounded.add([row])
            findings = diagnose(bounded, set(first))
        for f in findings:
            first.setdefault(f.rule, (f.env_steps, f.evidence, seen))
    return first


@pytest.mark.parametrize("name", FAILING_HISTORIES)
def test_a_bounded_history_reports_what_the_whole_history_reports_when_it_reports_it(name):
    rows = FAILING_HISTORIES[name]
    whole = first_findings(rows, limit=None)
    expected = name.split("/")[0]
    assert (expected in whole) == (name != "healthy"), whole  # each history shows its failure
    for limit in (4, TAIL):  # 4: fewer rows than most windows, so the folds of `Earlier` do the work
        assert first_findings(rows, limit) == whole


def test_the_recorded_pong_run_raises_no_finding_either_way():
    import gzip
    import json
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "results" / "pong_cpu_atari_v1_s0_metrics.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(path, "rt") if '"fingerprint"' not in line]
    history = History.bounded(dataclasses.replace(presets.preset("Pong"), learning_starts=20_000), limit=4)
    history.add(rows)
    assert diagnose(history) == [] == diagnose(History.from_rows(history.config, rows))
    evals = [row for row in rows if row["kind"] == "eval" and row["env_steps"] >= 20_000]  # the first at 50k
    assert len(evals) >= 13  # the recorded run reached 650k env steps or more
    assert len(history.health) == 4 and history.earlier.evals_since_learning == len(evals) - 4
