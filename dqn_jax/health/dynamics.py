"""The health rules over how the network learns, not whether a run works: neurons going dormant
and the features' rank collapsing, Q values over-estimating what followed, the greedy policy
churning, prioritized replay drawing from a handful of transitions. Each a small pure function
over one agent's `History` returning a `Finding` or None, as in `rules.py`; their thresholds sit
beyond what healthy runs show (docs/health.md, "Healthy ranges").
"""

from __future__ import annotations

import itertools
import math

from dqn_jax.agent import health_fields as H
from dqn_jax.health.findings import Finding, History, number, streak
from dqn_jax.loop.records import Q_OVERESTIMATION

# Thresholds of the plasticity, over-estimation and churn rules. Each sits well beyond what healthy
# runs show (measured: docs/health.md, "Healthy ranges"): a healthy CartPole run ends with 28% of
# its neurons τ-dormant, srank at half its peak, Q 9% above the realized value and 1-7% churn.
DORMANT_ALARM = 0.6  # fraction of a layer's neurons τ-dormant ...
DORMANT_RISE = 3.0  # ... and at least this many times its lowest fraction earlier in learning
SRANK_COLLAPSE = 0.25  # srank below this fraction of its highest value so far
OVERESTIMATION_ALARM = 1.0  # Q(s_0) at least twice the value that followed (ratio - 1)
CHURN_ALARM = 0.3  # a third of the batch changes its greedy action in one update
STREAK = 3  # consecutive rows (health rows, or evaluations) that must show it


def plasticity_loss(h: History) -> Finding | None:
    """Neurons of a layer going dormant, or the features' rank collapsing: a network losing the
    ability to learn."""
    rows = [r for r in h.learning(h.health) if r.get(H.DORMANT_FRACTION) is not None]
    if len(rows) < STREAK:
        return None
    layers = sorted({H.layer_of(k, H.DORMANT_FRACTION) for r in rows for k in r} - {None})
    # each layer's lowest fraction in rows[:i], the rows no longer held included
    lowest = {layer: h.earlier.dormant_lowest.get(layer, math.inf) for layer in layers}
    for i in range(len(rows) - STREAK + 1):
        for layer in layers:
            key = H.per_layer(H.DORMANT_FRACTION, layer)
            window = [number(r.get(key)) for r in rows[i:i + STREAK]]
            if min(window) >= DORMANT_ALARM and lowest[layer] * DORMANT_RISE <= window[0]:
                row = rows[i]
                return Finding(
                    "plasticity_loss", "warning", row["env_steps"],
                    f"{window[0]:.0%} of the neurons of {layer} are dormant (τ = {H.DORMANT_TAU}; "
                    f"{lowest[layer]:.0%} earlier in learning), {number(row[H.DORMANT_FRACTION]):.0%} of the network's",
                    "dormant neurons (Sokar et al. 2023) barely respond to any input and get almost no gradient; "
                    "as they spread the network can fit less and less, and stops improving",
                    "--redo-every=1000 (recycles dormant neurons), --normalization=layer_norm, a lower learning "
                    "rate, fewer updates per env step (--train-every), or --activation=leaky_relu")
            value = number(rows[i].get(key))
            lowest[layer] = min(lowest[layer], value) if math.isfinite(value) else lowest[layer]
    srank = [number(r.get(H.SRANK)) for r in rows]
    peaks = list(itertools.accumulate(srank, max, initial=h.earlier.srank_peak))[1:]  # each row's highest srank so far
    collapsed = [peak >= 4 and value <= SRANK_COLLAPSE * peak for value, peak in zip(srank, peaks, strict=True)]
    start = next((i for i in range(len(rows) - STREAK + 1) if all(collapsed[i:i + STREAK])), None)
    if start is None:
        return None
    row, peak = rows[start], peaks[start + STREAK - 1]  # the peak as it stood when the streak was complete
    return Finding(
        "plasticity_loss", "warning", row["env_steps"],
        f"srank of the penultimate features {number(row[H.SRANK]):.0f} (of at most "
        f"{number(row.get(H.FEATURE_RANK_BOUND)):.0f}), down from {peak:.0f}",
        "the features collapse onto a few directions (implicit under-parameterisation, Kumar et al. 2021): "
        "the Q head can only tell apart states those directions separate",
        "--redo-every=1000, --normalization=layer_norm, a lower learning rate, fewer updates per env step "
        "(--train-every), or a larger batch")


def q_overestimation(h: History) -> Finding | None:
    """Q values at the start of evaluation games far above the discounted reward that followed, and growing."""
    rows = [r for r in h.learning(h.eval) if r.get(Q_OVERESTIMATION) is not None]
    unit = abs(h.config.reward_scale) or 1.0  # one stored reward, as `records.eval_rows` uses
    for i in range(len(rows) - STREAK + 1):
        window = rows[i:i + STREAK]
        values = [number(r[Q_OVERESTIMATION]) for r in window]
        q_first, q_last = number(window[0].get("eval_q_start")), number(window[-1].get("eval_q_start"))
        gap = max(abs(q_first - number(window[0].get("eval_value_realized"))), unit)
        # Q itself must climb away: early in learning Q sits near its initial 0 while the realized
        # value is negative (Pong: Q 0.06 against -1.87, "over-estimation" 1.03), which is a value not
        # learned yet, not the max operator's bias.
        if min(values) >= OVERESTIMATION_ALARM and values[-1] > values[0] and q_last - q_first >= 0.5 * gap:
            row = window[0]
            return Finding(
                "q_overestimation", "warning", row["env_steps"],
                f"Q at the first state of the evaluation games is {number(row.get('eval_q_start')):.3g}, the "
                f"discounted reward that followed {number(row.get('eval_value_realized')):.3g} "
                f"(over-estimation {values[0]:.2f} → {values[-1]:.2f} over {STREAK} evaluations)",
                "the max in the TD target picks up noise as value (van Hasselt et al. 2016); the estimates "
                "feed on themselves and the policy chases actions whose value is an artefact",
                "--double-dqn; or a lower learning rate, a longer --target-update-every, --n-step=3")
    return None


def policy_churn(h: History) -> Finding | None:
    """The greedy policy thrashing: a large part of the batch changes its best action at every update."""
    rows = [r for r in h.learning(h.health) if r.get(H.POLICY_CHURN) is not None]
    skip = max(0, 3 - h.earlier.churn_rows)  # the first three since learning started are not judged
    row = streak(rows[skip:], lambda r: number(r[H.POLICY_CHURN]) >= CHURN_ALARM, STREAK)
    if row is None:
        return None
    return Finding(
        "policy_churn", "warning", row["env_steps"],
        f"one update changes the greedy action of {number(row[H.POLICY_CHURN]):.0%} of the sampled states "
        f"(action gap {number(row.get(H.ACTION_GAP)):.3g})",
        "some churn is normal (Schaul et al. 2022: a large fraction of states within a handful of updates), "
        "but this much at every update means the policy the agent acts with is close to noise",
        "a lower learning rate; --double-dqn; copy the target less often (--target-update-every)")


# A healthy prioritized CartPole run's draws spread as if over 7.8-66% of its transitions
# (docs/health.md, "Healthy ranges"); below 1% they sit on a handful of them.
PER_COLLAPSE = 0.01


def replay_collapse(h: History) -> Finding | None:
    """Prioritized replay drawing from a handful of transitions: the priorities collapsed."""
    rows = [r for r in h.learning(h.health) if r.get(H.PER_EFFECTIVE_FRACTION) is not None]
    row = streak(rows, lambda r: number(r[H.PER_EFFECTIVE_FRACTION]) < PER_COLLAPSE, STREAK)
    if row is None:
        return None
    return Finding(
        "replay_collapse", "warning", row["env_steps"],
        f"prioritized replay draws as if from {number(row[H.PER_EFFECTIVE_FRACTION]):.2%} of the transitions it "
        f"can sample (effective sample size of the priorities); largest importance weight "
        f"{number(row.get(H.PER_WEIGHT_MAX)):.3g}",
        "a few transitions take nearly every draw — often the newest ones, which enter at the largest "
        "priority ever written, set once by an outlier TD error and never lowered — so the rest of the "
        "replay is barely replayed and the importance weights scale its gradients down",
        "look for the outlier (td_abs_max in the health rows where it began) and its cause: unclipped "
        "rewards, a Q-value spike, a learning rate too high (--max-grad-norm=10); or lower "
        "--priority-exponent (0.5 as Dopamine, 0 samples uniformly), or train without --prioritized-replay")
