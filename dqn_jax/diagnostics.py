"""Rules that name the silent failures that make DQN "not learn", with evidence and the fix.

Each rule is a small pure function over one agent's metric history (`History`: its `train`,
`eval` and `health` rows and the run's typed `Config`) that returns a `Finding` or None. `diagnose` runs
them all and drops findings explained by a more basic one (NaNs explain everything else; Q values
that diverge explain exploding gradients), so the first thing the user reads is the root cause.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from dqn_jax import health as H
from dqn_jax.config import Config
from dqn_jax.records import EPSILON, EVAL_RETURN_MEAN, LEARNING_RATE, Q_OVERESTIMATION

SEVERITIES = ("info", "warning", "error")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis: what is wrong, the numbers that show it, and what to do."""

    rule: str
    severity: str  # info | warning | error
    env_steps: int  # where the evidence is (env steps)
    evidence: str
    explanation: str
    fix: str

    def as_row(self, seed: int) -> dict:
        """Returns the finding as a `kind: "finding"` metrics row."""
        return {"kind": "finding", "env_steps": self.env_steps, "seed": seed, **dataclasses.asdict(self)}

    def render(self) -> str:
        """Returns the finding as plain text: headline, evidence, explanation, fix."""
        return (f"[{self.severity}] {self.rule} (env step {self.env_steps:,}): {self.evidence}\n"
                f"  why: {self.explanation}\n  fix: {self.fix}")


@dataclasses.dataclass
class History:
    """One agent's rows, in order, and the run's config."""

    config: Config
    train: list[dict]
    eval: list[dict]
    health: list[dict]

    @classmethod
    def from_rows(cls, config: Config, rows: Sequence[dict], seed: int | None = None) -> "History":
        """Splits metrics rows by kind, keeping only `seed`'s rows when given."""
        rows = [r for r in rows if seed is None or r.get("seed", seed) == seed]
        return cls(config=config, train=[r for r in rows if r["kind"] == "train"],
                   eval=[r for r in rows if r["kind"] == "eval"],
                   health=[r for r in rows if r["kind"] == "health"])


    def learning(self, rows: list[dict]) -> list[dict]:
        """Returns the rows written once learning had started — health rows of chunks with updates,
        other rows after `learning_starts` env steps: a rule that judges learning must not judge
        the random steps before it."""
        return [r for r in rows if ((r.get(H.UPDATES) or 0) > 0 if r["kind"] == "health"
                                    else r["env_steps"] > self.config.learning_starts)]


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _streak(rows: list[dict], predicate: Callable[[dict], bool], length: int) -> dict | None:
    """Returns the row that starts the first run of `length` consecutive rows satisfying `predicate`."""
    count = 0
    for i, row in enumerate(rows):
        count = count + 1 if predicate(row) else 0
        if count >= length:
            return rows[i - length + 1]
    return None


# --- the rules ---------------------------------------------------------------------------------
def non_finite(h: History) -> Finding | None:
    """NaN or Inf in the loss, Q values, gradients or params."""
    row = next((r for r in h.health if _num(r.get(H.NONFINITE)) > 0), None)
    if row is None:
        row = next((r for r in h.train if r.get(H.LOSS) is None and r.get(LEARNING_RATE) is not None), None)
    if row is None:
        return None
    return Finding(
        "non_finite", "error", row["env_steps"],
        f"NaN/Inf in the loss, Q values, gradients or params at update {row.get(H.UPDATES, '?')}",
        "once one NaN reaches the params every later update is NaN; the run cannot recover",
        "look for NaN/Inf in observations or rewards and for a learning rate too high; clip gradients "
        "(--max-grad-norm=10); resume from the last checkpoint saved before this step")


def dead_q_head(h: History) -> Finding | None:
    """Q outputs pinned at exactly zero: an activation after the Q head."""
    row = _streak(h.health, lambda r: _num(r.get(H.Q_ZERO_FRACTION)) >= 0.5, 2)
    if row is None:
        return None
    return Finding(
        "dead_q_head", "error", row["env_steps"],
        f"{_num(row[H.Q_ZERO_FRACTION]):.0%} of Q outputs are exactly 0 (Q min {_num(row.get(H.Q_MIN)):.3g}, "
        f"max {_num(row.get(H.Q_MAX)):.3g})",
        "Q values come out as exactly 0, which a linear head never does: something after the head "
        "(usually a ReLU) clamps them, and the gradient of every clamped output is zero, so they stay dead",
        "make the Q head linear: no activation after the last Dense layer")


def dead_layer(h: History) -> Finding | None:
    """A hidden layer whose units are all (or nearly all) dead: activation collapse."""
    for row in h.health:
        for key, value in row.items():
            layer = H.layer_of(key, H.DEAD_FRACTION)
            if layer is not None and _num(value) >= 0.95:
                later = [r for r in h.health if r["env_steps"] >= row["env_steps"]][:3]
                if len(later) >= 2 and all(_num(r.get(key)) >= 0.95 for r in later):
                    return Finding(
                        "dead_layer", "error", row["env_steps"],
                        f"{_num(value):.0%} of the units of {layer} output 0 for every sample in the batch",
                        f"the activations of {layer} collapsed: dead ReLUs get no gradient and never come back, "
                        "so everything after them sees a constant",
                        "lower the learning rate or clip gradients (--max-grad-norm=10); try "
                        "--activation=leaky_relu or --normalization=layer_norm")
    return None


def reward_signal_empty(h: History) -> Finding | None:
    """The learner's sampled rewards are all zero, so the loss has nothing to fit."""
    row = _streak(h.health, lambda r: _num(r.get(H.BATCH_REWARD_NONZERO)) == 0, 3)
    if row is None:
        return None
    env_nonzero = max((_num(r.get(H.ENV_REWARD_NONZERO)) for r in h.health), default=0.0)
    if env_nonzero > 0:
        return Finding(
            "reward_signal_empty", "error", row["env_steps"],
            f"every sampled reward is 0 while {env_nonzero:.2%} of env steps pay a non-zero reward; "
            f"loss {_num(row.get(H.LOSS)):.3g}",
            "the environment pays rewards but the learner only sees zeros, so the loss falls to 0 and "
            "nothing is learned: the reward is lost between the env and the replay (wiring, scaling, clipping)",
            "check the reward path: --reward-scale, reward clipping, and what is written to replay")
    return Finding(
        "reward_signal_empty", "warning", row["env_steps"],
        "no reward at all yet, in the env or in the sampled batches",
        "with no reward the TD targets are all bootstrapped zeros; nothing can be learned until one appears",
        "check the game pays rewards under this config; explore longer (--epsilon-decay-steps) or start "
        "learning later (--learning-starts)")


def optimizer_reset(h: History) -> Finding | None:
    """Adam's step count lags the update count: its state is being re-created."""
    row = next((r for r in h.health if _num(r.get(H.OPTIMIZER_STEPS)) >= 0 and _num(r.get(H.UPDATES)) >= 20
                and _num(r.get(H.OPTIMIZER_STEPS)) < 0.5 * _num(r.get(H.UPDATES))), None)
    if row is None:
        return None
    return Finding(
        "optimizer_reset", "error", row["env_steps"],
        f"the optimizer has counted {int(_num(row[H.OPTIMIZER_STEPS]))} steps but {int(_num(row[H.UPDATES]))} "
        "updates were made",
        "the optimizer state is re-initialised during training, throwing away Adam's moment estimates "
        "(every step then behaves like the first one, bias correction included)",
        "create the optimizer state once (optimizer.init at the start) and carry it through every update")


def q_divergence(h: History) -> Finding | None:
    """Q values far beyond any return the rewards allow."""
    config = h.config
    if config.gamma >= 1.0:
        return None
    if config.is_atari and not config.reward_clip:
        return None  # unclipped Atari rewards: no bound known in advance
    if config.reward_scale == 0.0:
        return None  # no reward reaches the learner: `reward_signal_empty` says so
    bound = max(abs(config.reward_scale), 1e-6) / (1.0 - config.gamma)  # |r| <= 1 * scale
    row = next((r for r in h.health if max(abs(_num(r.get(H.Q_MAX))), abs(_num(r.get(H.Q_MIN)))) > 10 * bound),
               None)
    if row is None:
        return None
    return Finding(
        "q_divergence", "error", row["env_steps"],
        f"Q values reach {max(abs(_num(row[H.Q_MAX])), abs(_num(row[H.Q_MIN]))):.3g}, more than 10x the largest "
        f"return the rewards allow ({bound:.3g} = r_max / (1 - gamma))",
        "the TD targets chase the network's own growing estimates (bootstrapping feedback), so Q grows without bound",
        "lower the learning rate, copy the target network less often (--target-update-every), use the "
        "Huber loss and --double-dqn, clip gradients (--max-grad-norm=10)")


def exploding_gradients(h: History) -> Finding | None:
    """Gradient norms far above where they started."""
    norms = [(r, _num(r.get(H.GRAD_NORM))) for r in h.health if math.isfinite(_num(r.get(H.GRAD_NORM)))]
    if len(norms) < 4:
        return None
    early = sorted(n for _, n in norms[:3])[1]
    row = next((r for r, n in norms[3:] if n > max(1e3 * early, 1e3)), None)
    if row is None:
        return None
    return Finding(
        "exploding_gradients", "warning", row["env_steps"],
        f"gradient norm {_num(row[H.GRAD_NORM]):.3g}, over 1000x its early value {early:.3g}",
        "a few huge gradients take steps that throw the network far from where it was",
        "clip gradients (--max-grad-norm=10), lower the learning rate, use the Huber loss")


def vanishing_gradients(h: History) -> Finding | None:
    """Gradients that vanish while there is still a loss to fit."""
    row = _streak(h.health, lambda r: _num(r.get(H.GRAD_NORM)) < 1e-8 and _num(r.get(H.LOSS)) > 1e-6, 3)
    if row is None:
        return None
    return Finding(
        "vanishing_gradients", "warning", row["env_steps"],
        f"gradient norm {_num(row[H.GRAD_NORM]):.2g} while the loss is {_num(row[H.LOSS]):.3g}",
        "there is a TD error to fit but no gradient reaches the parameters (saturated or dead units)",
        "check the activations (dead_fraction in the health rows), the initialisation and the input scaling")


def episode_length_exploit(h: History) -> Finding | None:
    """Episodes that end at the time limit without scoring more: stalling to exploit the cap.

    Reaching the cap is success when capped episodes score more than any episode that really
    ended (CartPole at 500); it is a stall when they score no more, or when no episode ever ends.
    """
    rows = [r for r in h.learning(h.health) if r.get(H.EPISODES, 0) and r.get(H.TRUNCATED_FRACTION) is not None][-5:]
    if len(rows) < 2:
        return None
    truncated = sum(r[H.TRUNCATED_FRACTION] * r[H.EPISODES] for r in rows) / sum(r[H.EPISODES] for r in rows)
    capped = [r[H.TRUNCATED_RETURN_MEAN] for r in rows if r.get(H.TRUNCATED_RETURN_MEAN) is not None]
    finished = [r[H.FINISHED_RETURN_MEAN] for r in h.health if r.get(H.FINISHED_RETURN_MEAN) is not None]
    capped_mean = sum(capped) / len(capped) if capped else math.nan
    if truncated < 0.5 or not capped or (finished and capped_mean > max(finished)):
        return None
    row = rows[0]
    cap = max(int(r.get(H.EPISODE_LENGTH_MAX) or 0) for r in rows)
    return Finding(
        "episode_length_exploit", "warning", row["env_steps"],
        f"{truncated:.0%} of recent episodes end at the time limit ({cap:,} env steps), scoring "
        f"{capped_mean:.3g} on average" + (
            f", no more than the best episode that really ended ({max(finished):.3g})" if finished
            else "; no episode has ever ended otherwise"),
        "the agent drags episodes out to the time limit instead of scoring: stalling pays off under "
        "this reward and time limit, or the time limit is too short to finish a game",
        "check the time limit (--max-episode-steps; Atari's is 27,000) and that a truncation is not "
        "rewarded or treated as a terminal state")


def life_loss_not_terminal(h: History) -> Finding | None:
    """Lives are lost but the learner never sees a terminal: Breakout stuck near 100."""
    losses = sum(int(r.get(H.LIFE_LOSSES) or 0) for r in h.health)
    terminals = sum(int(r.get(H.LIFE_LOSS_TERMINALS) or 0) for r in h.health)
    if losses < 3 or terminals > 0:
        return None
    row = next(r for r in h.health if r.get(H.LIFE_LOSSES))
    return Finding(
        "life_loss_not_terminal", "warning", row["env_steps"],
        f"{losses} lives lost, none of them terminal for the learner",
        "without a terminal at a life loss, losing a life costs the agent almost nothing in its TD targets; "
        "Nature-protocol agents on Breakout then plateau far below their usual scores",
        "set --episodic-life=true (Nature protocol); keep it false only on purpose (Machado et al. protocol)")


def epsilon_floor_before_learning(h: History) -> Finding | None:
    """Exploration already at its floor when learning starts."""
    first = next((r for r in h.train if r.get(LEARNING_RATE) is not None), None)
    floor, start = h.config.epsilon_end, h.config.epsilon_start
    if first is None or start <= floor or first[EPSILON] > floor + 1e-6:
        return None
    return Finding(
        "epsilon_floor_before_learning", "warning", first["env_steps"],
        f"epsilon is already {first[EPSILON]:.3g} (its floor) when the first update happens",
        "exploration ended before the agent learned anything, so its experience is mostly what a random "
        "network does greedily",
        "make --epsilon-decay-steps much longer than --learning-starts")


def no_learning_progress(h: History) -> Finding | None:
    """Evaluation returns that never improve once learning has started.

    The baseline is the last evaluation before learning started: the untrained policy. Runs with
    no evaluation before learning are not judged — their first evaluation may already be the
    best the game allows (CartPole seed 1 scores 500 at its first, at env step 10,000).
    Five evaluations after learning started are needed before judging.
    """
    after = h.learning(h.eval)
    before = [r for r in h.eval if r["env_steps"] <= h.config.learning_starts]
    if len(after) < 5 or not before:
        return None
    baseline_row = before[-1]
    first = _num(baseline_row.get(EVAL_RETURN_MEAN))
    best = max(_num(r.get(EVAL_RETURN_MEAN)) for r in after)
    if best > first + max(1.0, 0.1 * abs(first)):
        return None
    row = after[-1]
    return Finding(
        "no_learning_progress", "warning", row["env_steps"],
        f"best evaluation return {best:.3g} in {len(after)} evaluations since learning started "
        f"(env step {h.config.learning_starts:,}), vs {first:.3g} at env step {baseline_row['env_steps']:,}",
        "the policy is no better than before it learned anything",
        "read the other findings first; otherwise check the learning rate, the reward path and the "
        "exploration schedule")


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
    lowest = {layer: math.inf for layer in layers}  # each layer's lowest fraction in rows[:i]
    for i in range(len(rows) - STREAK + 1):
        for layer in layers:
            key = H.per_layer(H.DORMANT_FRACTION, layer)
            streak = [_num(r.get(key)) for r in rows[i:i + STREAK]]
            if min(streak) >= DORMANT_ALARM and lowest[layer] * DORMANT_RISE <= streak[0]:
                row = rows[i]
                return Finding(
                    "plasticity_loss", "warning", row["env_steps"],
                    f"{streak[0]:.0%} of the neurons of {layer} are dormant (τ = {H.DORMANT_TAU}; "
                    f"{lowest[layer]:.0%} earlier in learning), {_num(row[H.DORMANT_FRACTION]):.0%} of the network's",
                    "dormant neurons (Sokar et al. 2023) barely respond to any input and get almost no gradient; "
                    "as they spread the network can fit less and less, and stops improving",
                    "--redo-every=1000 (recycles dormant neurons), --normalization=layer_norm, a lower learning "
                    "rate, fewer updates per env step (--train-every), or --activation=leaky_relu")
            value = _num(rows[i].get(key))
            lowest[layer] = min(lowest[layer], value) if math.isfinite(value) else lowest[layer]
    peak = 0.0

    def collapsed(r: dict) -> bool:
        nonlocal peak
        peak = max(peak, _num(r.get(H.SRANK)))
        return peak >= 4 and _num(r.get(H.SRANK)) <= SRANK_COLLAPSE * peak

    row = _streak(rows, collapsed, STREAK)
    if row is None:
        return None
    return Finding(
        "plasticity_loss", "warning", row["env_steps"],
        f"srank of the penultimate features {_num(row[H.SRANK]):.0f} (of at most "
        f"{_num(row.get(H.FEATURE_RANK_BOUND)):.0f}), down from {peak:.0f}",
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
        values = [_num(r[Q_OVERESTIMATION]) for r in window]
        q_first, q_last = _num(window[0].get("eval_q_start")), _num(window[-1].get("eval_q_start"))
        gap = max(abs(q_first - _num(window[0].get("eval_value_realized"))), unit)
        # Q itself must climb away: early in learning Q sits near its initial 0 while the realized
        # value is negative (Pong: Q 0.06 against -1.87, "over-estimation" 1.03), which is a value not
        # learned yet, not the max operator's bias.
        if min(values) >= OVERESTIMATION_ALARM and values[-1] > values[0] and q_last - q_first >= 0.5 * gap:
            row = window[0]
            return Finding(
                "q_overestimation", "warning", row["env_steps"],
                f"Q at the first state of the evaluation games is {_num(row.get('eval_q_start')):.3g}, the "
                f"discounted reward that followed {_num(row.get('eval_value_realized')):.3g} "
                f"(over-estimation {values[0]:.2f} → {values[-1]:.2f} over {STREAK} evaluations)",
                "the max in the TD target picks up noise as value (van Hasselt et al. 2016); the estimates "
                "feed on themselves and the policy chases actions whose value is an artefact",
                "--double-dqn; or a lower learning rate, a longer --target-update-every, --n-step=3")
    return None


def policy_churn(h: History) -> Finding | None:
    """The greedy policy thrashing: a large part of the batch changes its best action at every update."""
    rows = [r for r in h.learning(h.health) if r.get(H.POLICY_CHURN) is not None]
    row = _streak(rows[3:], lambda r: _num(r[H.POLICY_CHURN]) >= CHURN_ALARM, STREAK)
    if row is None:
        return None
    return Finding(
        "policy_churn", "warning", row["env_steps"],
        f"one update changes the greedy action of {_num(row[H.POLICY_CHURN]):.0%} of the sampled states "
        f"(action gap {_num(row.get(H.ACTION_GAP)):.3g})",
        "some churn is normal (Schaul et al. 2022: a large fraction of states within a handful of updates), "
        "but this much at every update means the policy the agent acts with is close to noise",
        "a lower learning rate; --double-dqn; copy the target less often (--target-update-every)")


RULES: tuple[Callable[[History], Finding | None], ...] = (
    non_finite, dead_q_head, dead_layer, reward_signal_empty, optimizer_reset, q_divergence,
    exploding_gradients, vanishing_gradients, episode_length_exploit, life_loss_not_terminal,
    epsilon_floor_before_learning, no_learning_progress, plasticity_loss, q_overestimation, policy_churn,
)

# A finding on the left explains the ones on the right: report the cause, not its consequences.
EXPLAINS = {
    "non_finite": {"q_divergence", "exploding_gradients", "vanishing_gradients", "dead_layer", "dead_q_head",
                   "no_learning_progress", "plasticity_loss", "q_overestimation", "policy_churn"},
    "q_divergence": {"exploding_gradients", "no_learning_progress", "q_overestimation", "policy_churn",
                     "plasticity_loss"},
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


def diagnose(history: History) -> list[Finding]:
    """Returns the findings for one agent, root causes only, most severe first, then earliest first."""
    findings = [f for f in (rule(history) for rule in RULES) if f is not None]
    names = {f.rule for f in findings}
    explained = set().union(*(EXPLAINS.get(name, set()) for name in names))
    kept = [f for f in findings if f.rule not in explained]
    return sorted(kept, key=lambda f: (-SEVERITIES.index(f.severity), f.env_steps))
