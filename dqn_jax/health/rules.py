"""The health rules for a run that does not work: each a small pure function over one agent's
`History` that returns a `Finding` (what is wrong, the numbers that show it, the fix) or None.
The rules over its learning dynamics (plasticity, over-estimation, churn, prioritized replay) are
`dynamics.py`'s. `diagnostics.diagnose` runs them all; their thresholds come from healthy runs
measured in docs/health.md.
"""

from __future__ import annotations

import math

from dqn_jax.agent import health_fields as H
from dqn_jax.health.findings import Finding, History, fold_max, number, streak
from dqn_jax.loop.records import EPSILON, EVAL_RETURN_MEAN, LEARNING_RATE


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
