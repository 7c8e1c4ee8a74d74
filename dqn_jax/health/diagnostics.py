"""Rules that name the silent failures that make DQN "not learn", with evidence and the fix.

Each rule is a small pure function over one agent's metric history (`History`: its `train`,
`eval` and `health` rows and the run's typed `Config`) that returns a `Finding` or None. `diagnose` runs
them all and drops findings explained by a more basic one (NaNs explain everything else; Q values
that diverge explain exploding gradients), so the first thing the user reads is the root cause.
"""

from __future__ import annotations

from typing import Callable, Collection, Sequence

from dqn_jax.health.dynamics import (
    CHURN_ALARM,
    DORMANT_ALARM,
    DORMANT_RISE,
    OVERESTIMATION_ALARM,
    PER_COLLAPSE,
    SRANK_COLLAPSE,
    STREAK,
    plasticity_loss,
    policy_churn,
    q_overestimation,
    replay_collapse,
)
from dqn_jax.health.findings import SEVERITIES, Finding, History
from dqn_jax.health.rules import (
    dead_layer,
    dead_q_head,
    episode_length_exploit,
    epsilon_floor_before_learning,
    exploding_gradients,
    life_loss_not_terminal,
    no_learning_progress,
    non_finite,
    optimizer_reset,
    q_divergence,
    reward_signal_empty,
    vanishing_gradients,
)

__all__ = ["CHURN_ALARM", "DORMANT_ALARM", "DORMANT_RISE", "EXPLAINS", "OVERESTIMATION_ALARM", "PER_COLLAPSE", "RULES",
           "SEVERITIES",
           "SRANK_COLLAPSE", "STREAK", "Finding", "History", "across_seeds", "diagnose"]

RULES: tuple[Callable[[History], Finding | None], ...] = (
    non_finite, dead_q_head, dead_layer, reward_signal_empty, optimizer_reset, q_divergence,
    exploding_gradients, vanishing_gradients, episode_length_exploit, life_loss_not_terminal,
    epsilon_floor_before_learning, no_learning_progress, plasticity_loss, q_overestimation, policy_churn,
    replay_collapse,
)

# A finding on the left explains the ones on the right: report the cause, not its consequences.
EXPLAINS = {
    "non_finite": {"q_divergence", "exploding_gradients", "vanishing_gradients", "dead_layer", "dead_q_head",
                   "no_learning_progress", "plasticity_loss", "q_overestimation", "policy_churn",
                   "replay_collapse"},
    "q_divergence": {"exploding_gradients", "no_learning_progress", "q_overestimation", "policy_churn",
                     "plasticity_loss", "replay_collapse"},
    "dead_q_head": {"vanishing_gradients", "no_learning_progress", "plasticity_loss", "policy_churn"},
    "dead_layer": {"vanishing_gradients", "no_learning_progress", "plasticity_loss"},
    "reward_signal_empty": {"vanishing_gradients", "no_learning_progress", "q_overestimation"},
    "vanishing_gradients": {"no_learning_progress"},
    "optimizer_reset": {"no_learning_progress"},
    "q_overestimation": {"no_learning_progress"},
}


def across_seeds(finding: Finding, named: int, num_seeds: int, seeds: Sequence[int]) -> str:
    """Returns one finding of a multi-seed run as the line that stands for its rule: "3 of 8 seeds
    (seed 0, 4, 5): [warning] ..." — `named` seeds of `num_seeds` have it, `seeds` are listed."""
    return f"{named} of {num_seeds} seeds (seed {', '.join(map(str, seeds))}): {finding.render()}"


def diagnose(history: History, found_before: Collection[str] = ()) -> list[Finding]:
    """Returns the findings for one agent, root causes only, most severe first, then earliest first.

    `found_before`: rules this agent's earlier diagnoses found. They still explain what they
    explained when a bounded History no longer holds the rows that showed them.
    """
    findings = [f for f in (rule(history) for rule in RULES) if f is not None]
    names = {f.rule for f in findings} | set(found_before)
    explained = set().union(*(EXPLAINS.get(name, set()) for name in names))
    kept = [f for f in findings if f.rule not in explained]
    return sorted(kept, key=lambda f: (-SEVERITIES.index(f.severity), f.env_steps))
