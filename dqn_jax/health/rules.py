"""The health rules: each a small pure function over one agent's `History` that returns a
`Finding` (what is wrong, the numbers that show it, the fix) or None. `diagnostics.diagnose` runs
them all; their thresholds come from healthy runs measured in docs/health.md.
"""

from __future__ import annotations

import itertools
import math

from dqn_jax.agent import health_fields as H
from dqn_jax.health.findings import Finding, History, fold_max, number, streak
from dqn_jax.loop.records import EPSILON, EVAL_RETURN_MEAN, LEARNING_RATE, Q_OVERESTIMATION


def non_finite(h: History) -> Finding | None:
    """NaN or Inf in the loss, Q values, gradients or params."""
    row = next((r for r in h.health if number(r.get(H.NONFINITE)) > 0), None)
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
    row = streak(h.health, lambda r: number(r.get(H.Q_ZERO_FRACTION)) >= 0.5, 2)
    if row is None:
        return None
    return Finding(
        "dead_q_head", "error", row["env_steps"],
        f"{number(row[H.Q_ZERO_FRACTION]):.0%} of Q outputs are exactly 0 (Q min {number(row.get(H.Q_MIN)):.3g}, "
        f"max {number(row.get(H.Q_MAX)):.3g})",
        "Q values come out as exactly 0, which a linear head never does: something after the head "
        "(usually a ReLU) clamps them, and the gradient of every clamped output is zero, so they stay dead",
        "make the Q head linear: no activation after the last Dense layer")


def dead_layer(h: History) -> Finding | None:
    """A hidden layer whose units are all (or nearly all) dead: activation collapse."""
    for row in h.health:
        for key, value in row.items():
            layer = H.layer_of(key, H.DEAD_FRACTION)
            if layer is not None and number(value) >= 0.95:
                later = [r for r in h.health if r["env_steps"] >= row["env_steps"]][:3]
                if len(later) >= 2 and all(number(r.get(key)) >= 0.95 for r in later):
                    return Finding(
                        "dead_layer", "error", row["env_steps"],
                        f"{number(value):.0%} of the units of {layer} output 0 for every sample in the batch",
                        f"the activations of {layer} collapsed: dead ReLUs get no gradient and never come back, "
                        "so everything after them sees a constant",
                        "lower the learning rate or clip gradients (--max-grad-norm=10); try "
                        "--activation=leaky_relu or --normalization=layer_norm")
    return None


def reward_signal_empty(h: History) -> Finding | None:
    """The learner's sampled rewards are all zero, so the loss has nothing to fit."""
    row = streak(h.health, lambda r: number(r.get(H.BATCH_REWARD_NONZERO)) == 0, 3)
    if row is None:
        return None
    env_nonzero = h.earlier.env_reward_nonzero_max
    for r in h.health:
        env_nonzero = fold_max(env_nonzero, number(r.get(H.ENV_REWARD_NONZERO)))
    env_nonzero = 0.0 if env_nonzero is None else env_nonzero
    if env_nonzero > 0:
        return Finding(
            "reward_signal_empty", "error", row["env_steps"],
            f"every sampled reward is 0 while {env_nonzero:.2%} of env steps pay a non-zero reward; "
            f"loss {number(row.get(H.LOSS)):.3g}",
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
    row = next((r for r in h.health if number(r.get(H.OPTIMIZER_STEPS)) >= 0 and number(r.get(H.UPDATES)) >= 20
                and number(r.get(H.OPTIMIZER_STEPS)) < 0.5 * number(r.get(H.UPDATES))), None)
    if row is None:
        return None
    return Finding(
        "optimizer_reset", "error", row["env_steps"],
        f"the optimizer has counted {int(number(row[H.OPTIMIZER_STEPS]))} steps but {int(number(row[H.UPDATES]))} "
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
    row = next((r for r in h.health if max(abs(number(r.get(H.Q_MAX))), abs(number(r.get(H.Q_MIN)))) > 10 * bound),
               None)
    if row is None:
        return None
    return Finding(
        "q_divergence", "error", row["env_steps"],
        f"Q values reach {max(abs(number(row[H.Q_MAX])), abs(number(row[H.Q_MIN]))):.3g}, more than 10x the largest "
        f"return the rewards allow ({bound:.3g} = r_max / (1 - gamma))",
        "the TD targets chase the network's own growing estimates (bootstrapping feedback), so Q grows without bound",
        "lower the learning rate, copy the target network less often (--target-update-every), use the "
        "Huber loss and --double-dqn, clip gradients (--max-grad-norm=10)")


def exploding_gradients(h: History) -> Finding | None:
    """Gradient norms far above where they started."""
    norms = [(r, number(r.get(H.GRAD_NORM))) for r in h.health if math.isfinite(number(r.get(H.GRAD_NORM)))]
    seen = h.earlier.grad_norms  # finite norms before `norms` (in rows no longer held)
    if seen + len(norms) < 4:
        return None
    early = sorted([*h.earlier.early_grad_norms, *(n for _, n in norms)][:3])[1]
    row = next((r for r, n in norms[max(0, 3 - seen):] if n > max(1e3 * early, 1e3)), None)
    if row is None:
        return None
    return Finding(
        "exploding_gradients", "warning", row["env_steps"],
        f"gradient norm {number(row[H.GRAD_NORM]):.3g}, over 1000x its early value {early:.3g}",
        "a few huge gradients take steps that throw the network far from where it was",
        "clip gradients (--max-grad-norm=10), lower the learning rate, use the Huber loss")


def vanishing_gradients(h: History) -> Finding | None:
    """Gradients that vanish while there is still a loss to fit."""
    row = streak(h.health, lambda r: number(r.get(H.GRAD_NORM)) < 1e-8 and number(r.get(H.LOSS)) > 1e-6, 3)
    if row is None:
        return None
    return Finding(
        "vanishing_gradients", "warning", row["env_steps"],
        f"gradient norm {number(row[H.GRAD_NORM]):.2g} while the loss is {number(row[H.LOSS]):.3g}",
        "there is a TD error to fit but no gradient reaches the parameters (saturated or dead units)",
        "check the activations (dead_fraction in the health rows), the initialisation and the input scaling")


def episode_length_exploit(h: History) -> Finding | None:
    """Episodes that end at the time limit without scoring more: stalling to exploit the cap.

    Reaching the cap is success when capped episodes score more than any episode that really
    ended (CartPole at 500); it is a stall when they score no more, or when no episode ever ends.
    """
    recent = [r for r in h.learning(h.health) if r.get(H.EPISODES, 0) and r.get(H.TRUNCATED_FRACTION) is not None]
    rows = [*h.earlier.episode_rows, *recent][-5:]
    if len(rows) < 2:
        return None
    truncated = sum(r[H.TRUNCATED_FRACTION] * r[H.EPISODES] for r in rows) / sum(r[H.EPISODES] for r in rows)
    capped = [r[H.TRUNCATED_RETURN_MEAN] for r in rows if r.get(H.TRUNCATED_RETURN_MEAN) is not None]
    finished = h.earlier.finished_return_max  # the best episode that really ended, None if none has
    for r in h.health:
        if r.get(H.FINISHED_RETURN_MEAN) is not None:
            finished = fold_max(finished, r[H.FINISHED_RETURN_MEAN])
    capped_mean = sum(capped) / len(capped) if capped else math.nan
    if truncated < 0.5 or not capped or (finished is not None and capped_mean > finished):
        return None
    row = rows[0]
    cap = max(int(r.get(H.EPISODE_LENGTH_MAX) or 0) for r in rows)
    return Finding(
        "episode_length_exploit", "warning", row["env_steps"],
        f"{truncated:.0%} of recent episodes end at the time limit ({cap:,} env steps), scoring "
        f"{capped_mean:.3g} on average" + (
            f", no more than the best episode that really ended ({finished:.3g})" if finished is not None
            else "; no episode has ever ended otherwise"),
        "the agent drags episodes out to the time limit instead of scoring: stalling pays off under "
        "this reward and time limit, or the time limit is too short to finish a game",
        "check the time limit (--max-episode-steps; Atari's is 27,000) and that a truncation is not "
        "rewarded or treated as a terminal state")


def life_loss_not_terminal(h: History) -> Finding | None:
    """Lives are lost but the learner never sees a terminal: Breakout stuck near 100."""
    losses = h.earlier.life_losses + sum(int(r.get(H.LIFE_LOSSES) or 0) for r in h.health)
    terminals = h.earlier.life_loss_terminals + sum(int(r.get(H.LIFE_LOSS_TERMINALS) or 0) for r in h.health)
    if losses < 3 or terminals > 0:
        return None
    row = h.earlier.first_life_loss or next(r for r in h.health if r.get(H.LIFE_LOSSES))
    return Finding(
        "life_loss_not_terminal", "warning", row["env_steps"],
        f"{losses} lives lost, none of them terminal for the learner",
        "without a terminal at a life loss, losing a life costs the agent almost nothing in its TD targets; "
        "Nature-protocol agents on Breakout then plateau far below their usual scores",
        "set --episodic-life=true (Nature protocol); keep it false only on purpose (Machado et al. protocol)")


def epsilon_floor_before_learning(h: History) -> Finding | None:
    """Exploration already at its floor when learning starts."""
    first = h.earlier.first_learning_train or next((r for r in h.train if r.get(LEARNING_RATE) is not None), None)
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
    before = [r for r in h.eval if not h.is_learning(r)]
    count = h.earlier.evals_since_learning + len(after)
    baseline_row = before[-1] if before else h.earlier.last_eval_before_learning
    if count < 5 or baseline_row is None:
        return None
    first = number(baseline_row.get(EVAL_RETURN_MEAN))
    best = h.earlier.best_eval_since_learning
    for r in after:
        best = fold_max(best, number(r.get(EVAL_RETURN_MEAN)))
    if best > first + max(1.0, 0.1 * abs(first)):
        return None
    row = after[-1] if after else h.earlier.last_eval_since_learning
    return Finding(
        "no_learning_progress", "warning", row["env_steps"],
        f"best evaluation return {best:.3g} in {count} evaluations since learning started "
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
