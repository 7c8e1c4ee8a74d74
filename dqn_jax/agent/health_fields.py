"""The names of a `health` row's fields: the one registry of them.

`health_stats.update_health` measures the in-jit ones inside an update, `records.health_rows`
adds those counted over a chunk's env steps and writes the rows; the rules (`health.rules`), the
doctor and `repro` read rows through these names, never through names typed again. Pure Python:
the host side imports it without JAX.
"""

from __future__ import annotations

# --- field names of a `health` row ---------------------------------------------------------------
# Measured inside one update in `health_every` (see `update_health`).
Q_MEAN, Q_MIN, Q_MAX, Q_ZERO_FRACTION = "q_mean", "q_min", "q_max", "q_zero_fraction"
TD_ABS_MEAN, TD_ABS_MAX = "td_abs_mean", "td_abs_max"
LOSS = "loss"
GRAD_NORM = "grad_norm"  # global; per layer as "grad_norm/<layer>"
PARAM_NORM = "param_norm"
UPDATE_RATIO = "update_ratio"  # |optimizer update| / |params|
OPTIMIZER_STEPS = "optimizer_steps"  # the optimizer's own step count (-1 when it keeps none)
BATCH_REWARD_NONZERO = "batch_reward_nonzero"  # fraction of the sampled rewards that are not 0
NONFINITE = "nonfinite"  # 1 when a NaN/Inf was seen in the loss, Q values, gradients or params
DEAD_FRACTION, ACT_MEAN, ACT_STD = "dead_fraction", "act_mean", "act_std"  # per layer: "<name>/<layer>"
# Plasticity and policy statistics, measured in the same update.
DORMANT_FRACTION = "dormant_fraction"  # τ-dormant neurons (τ = DORMANT_TAU) of every hidden layer; and per layer
DORMANT0_FRACTION = "dormant0_fraction"  # the same at τ = 0: neurons that output exactly 0 on the whole batch
SRANK = "srank"  # srank_δ of the penultimate features on the batch (δ = SRANK_DELTA)
EFFECTIVE_RANK = "effective_rank"  # exp(entropy of the normalised singular values) of the same features
FEATURE_RANK_BOUND = "feature_rank_bound"  # min(batch size, feature width): the most either rank can be
ACTION_GAP = "action_gap"  # mean over the batch of the best minus the second-best Q value
POLICY_CHURN = "policy_churn"  # fraction of the batch whose greedy action this one update changed
# Prioritized replay only (see `prioritized.Prioritized.stats`).
PER_EFFECTIVE_FRACTION = "per_effective_fraction"  # effective sample size of the priorities / sampleable slots
PER_WEIGHT_MAX = "per_weight_max"  # the batch's largest importance weight before normalization
# Counted over the chunk's env steps (see `records.health_rows`).
UPDATES = "updates"
ENV_REWARD_NONZERO = "env_reward_nonzero"  # fraction of real env steps with a non-zero raw reward
LIFE_LOSSES, LIFE_LOSS_TERMINALS = "life_losses", "life_loss_terminals"
EPISODES = "episodes"
EPISODE_LENGTH_MEAN, EPISODE_LENGTH_MAX = "episode_length_mean", "episode_length_max"
TRUNCATED_FRACTION = "truncated_fraction"  # of the episodes that ended, those cut by the time limit
TRUNCATED_RETURN_MEAN, FINISHED_RETURN_MEAN = "truncated_return_mean", "finished_return_mean"


# Sokar et al. 2023 ("The Dormant Neuron Phenomenon in Deep RL"): their code (Dopamine, labs/redo)
# logs the dormant fraction at τ = 0, 0.025 and 0.1; we record τ = 0 and τ = 0.025.
DORMANT_TAU = 0.025
SRANK_DELTA = 0.01  # Kumar et al. 2021 ("Implicit Under-Parameterization"), δ = 0.01


def per_layer(name: str, layer: str) -> str:
    """Returns the field name of a per-layer statistic (`dead_fraction/torso/dense_0`)."""
    return f"{name}/{layer}"


def layer_of(field: str, name: str) -> str | None:
    """Returns the layer of a per-layer field of statistic `name`, else None."""
    prefix = f"{name}/"
    return field[len(prefix):] if field.startswith(prefix) else None
