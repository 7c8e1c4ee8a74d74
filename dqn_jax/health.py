"""Training health: the names of a `health` row's fields, and the statistics measured inside the jit.

`update_health` returns a flat dict of scalars (names like `dead_fraction/torso/dense_0`) from what
one update already computes; `records.health_rows` aggregates them over a chunk with `aggregate`,
adds what the chunk's env steps show, and writes one `kind: "health"` row per agent per chunk.
The names below are the one registry of those fields: the rules (`diagnostics.py`) and the
doctor read rows through them, never through names typed again.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def flat_names(tree, prefix: str = "") -> dict[str, jax.Array]:
    """Returns {"a/b/c": leaf} for a nested dict whose leaves are arrays or 1-tuples of arrays."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(flat_names(value, name))
        else:
            out[name] = value[0] if isinstance(value, tuple) else value
    return out


def activation_stats(intermediates) -> dict[str, jax.Array]:
    """Per sown layer: fraction of dead units (zero for every sample), activation mean and std.

    `intermediates` is Flax's `intermediates` collection from one forward pass over a batch [B, ...].
    """
    stats = {}
    for name, x in flat_names(intermediates).items():
        units = x.reshape(x.shape[0], -1)  # conv feature maps: every position is a unit
        stats[per_layer(DEAD_FRACTION, name)] = jnp.mean(jnp.all(units == 0, axis=0))
        stats[per_layer(ACT_MEAN, name)] = jnp.mean(units)
        stats[per_layer(ACT_STD, name)] = jnp.std(units)
    return stats


def neuron_scores(activations: jax.Array) -> jax.Array:
    """Returns each neuron's dormancy score s_i = E|h_i| / mean_k E|h_k| (Sokar et al. 2023) [units].

    `activations` is one layer's output on a batch [B, ..., units]; the expectation runs over the
    batch and, for a conv layer, over every position, so a feature map is one neuron. A layer whose
    every output is 0 scores 0 everywhere.
    """
    mean_abs = jnp.mean(jnp.abs(activations).reshape(-1, activations.shape[-1]), axis=0)
    return mean_abs / jnp.maximum(jnp.mean(mean_abs), 1e-12)


def dormant_stats(intermediates) -> dict[str, jax.Array]:
    """Returns the τ-dormant fraction of each sown layer (`dormant_fraction/<layer>`, τ = `DORMANT_TAU`),
    the same over all of them (`dormant_fraction`), and the τ = 0 fraction over all of them."""
    stats, dormant, dormant0, total = {}, 0.0, 0.0, 0
    for name, x in flat_names(intermediates).items():
        scores = neuron_scores(x)
        stats[per_layer(DORMANT_FRACTION, name)] = jnp.mean(scores <= DORMANT_TAU)
        dormant += jnp.sum(scores <= DORMANT_TAU)
        dormant0 += jnp.sum(scores <= 0.0)
        total += scores.shape[0]
    if total:
        stats[DORMANT_FRACTION] = dormant / total
        stats[DORMANT0_FRACTION] = dormant0 / total
    return stats


@jax.custom_batching.custom_vmap
def eigvalsh_one_at_a_time(matrix: jax.Array) -> jax.Array:
    """Returns the eigenvalues [k] (ascending) of the symmetric `matrix` [k, k]; under `vmap`, one
    matrix per LAPACK call (a `lax.map`), never one batched call.

    Why: jaxlib's CPU LAPACK kernels (jax 0.10) split a batch over XLA's intra-op thread pool and
    block until it is done; with agents sharded over several CPU devices, every pool thread ran
    one device's program, all reached a batched `eigvalsh` at once and waited on each other for
    ever (a deadlock in the CartPole preset with 8 seeds on 4 forced CPU devices, 2026-11-27).
    """
    return jnp.linalg.eigvalsh(matrix)


@eigvalsh_one_at_a_time.def_vmap
def _eigvalsh_vmap(axis_size, in_batched, matrices):
    del axis_size
    if not in_batched[0]:
        return eigvalsh_one_at_a_time(matrices), False
    return jax.lax.map(eigvalsh_one_at_a_time, matrices), True


def feature_ranks(features: jax.Array) -> dict[str, jax.Array]:
    """Returns srank_δ (Kumar et al. 2021: the fewest singular values holding 1 - δ of their sum)
    and the effective rank (Roy and Vetterli 2007: exp of the entropy of the singular values
    normalised to sum 1) of a batch of features [B, d], with the bound min(B, d) both live under.
    All-zero features have rank 0.

    The singular values come from the eigenvalues of the smaller Gram matrix, not from an SVD:
    on CPU, putting XLA's SVD in the update changed the bits of training itself (a CartPole run
    parted from the same run without it at the first fingerprint); the Gram route leaves them identical.
    """
    chex.assert_rank(features, 2)
    features = features.astype(jnp.float32)
    gram = features @ features.T if features.shape[0] <= features.shape[1] else features.T @ features
    sigma = jnp.sqrt(jnp.maximum(eigvalsh_one_at_a_time(gram)[::-1], 0.0))  # descending
    total = jnp.sum(sigma)
    share = sigma / jnp.maximum(total, 1e-12)
    srank = jnp.where(total > 0, jnp.sum(jnp.cumsum(share) < 1.0 - SRANK_DELTA) + 1, 0)
    entropy = -jnp.sum(jnp.where(share > 0, share * jnp.log(jnp.where(share > 0, share, 1.0)), 0.0))
    return {SRANK: srank, EFFECTIVE_RANK: jnp.where(total > 0, jnp.exp(entropy), 0.0),
            FEATURE_RANK_BOUND: jnp.asarray(min(features.shape), jnp.float32)}


def policy_stats(q_values: jax.Array, q_values_after: jax.Array) -> dict[str, jax.Array]:
    """Returns the action gap of `q_values` [B, A] and the policy churn (Schaul et al. 2022): the
    fraction of the batch whose greedy action differs between `q_values` and `q_values_after`, the
    same states' Q values after the update."""
    chex.assert_equal_shape([q_values, q_values_after])
    top_two = jax.lax.top_k(q_values, 2)[0]
    churn = jnp.mean(jnp.argmax(q_values, axis=-1) != jnp.argmax(q_values_after, axis=-1))
    return {ACTION_GAP: jnp.mean(top_two[:, 0] - top_two[:, 1]), POLICY_CHURN: churn}


def penultimate_features(intermediates) -> jax.Array:
    """Returns the torso's output on the batch [B, d]: the last layer it sowed (the layers sow in order)."""
    last = list(flat_names(intermediates).values())[-1]
    return last.reshape(last.shape[0], -1)


def layer_norms(tree, prefix: str) -> dict[str, jax.Array]:
    """Returns `<prefix>/<layer>`: the L2 norm of each layer's arrays, for a Flax params tree."""
    params = tree["params"] if "params" in tree else tree
    norms = {}
    for name, leaf in flat_names(params).items():
        layer = name.rsplit("/", 1)[0]
        norms[layer] = norms.get(layer, 0.0) + jnp.sum(jnp.square(leaf))
    return {per_layer(prefix, layer): jnp.sqrt(total) for layer, total in norms.items()}


def optimizer_step_count(opt_state) -> jax.Array:
    """Returns the largest `count` in an optax state (Adam's step count), or -1 if it has none."""
    counts = []

    def visit(node):
        if hasattr(node, "_fields") and "count" in node._fields:
            counts.append(jnp.asarray(node.count, jnp.int32))
        if isinstance(node, (tuple, list)):
            for child in node:
                visit(child)

    visit(opt_state)
    return jnp.max(jnp.stack(counts)) if counts else jnp.asarray(-1, jnp.int32)


def update_health(*, q_values, td_errors, loss, rewards, grads, updates, params, new_params, opt_state,
                  intermediates, q_values_after) -> dict[str, jax.Array]:
    """Returns the health scalars of one update (float32 [] each).

    Args:
      q_values: online Q values of the batch [B, A].
      td_errors: TD errors [B].
      loss: the loss [].
      rewards: the sampled rewards [B].
      grads, updates: gradient and optimizer update trees (same structure as params).
      params, new_params: params before and after the update.
      opt_state: the optimizer state after the update.
      intermediates: the `intermediates` collection of the forward pass on the batch.
      q_values_after: the updated network's Q values of the same observations [B, A].
    """
    param_norm = optax.tree.norm(new_params)
    finite = [jnp.all(jnp.isfinite(x)) for x in (loss, q_values, *jax.tree.leaves(grads), *jax.tree.leaves(new_params))]
    stats = {
        Q_MEAN: jnp.mean(q_values), Q_MIN: jnp.min(q_values), Q_MAX: jnp.max(q_values),
        Q_ZERO_FRACTION: jnp.mean(q_values == 0),
        TD_ABS_MEAN: jnp.mean(jnp.abs(td_errors)), TD_ABS_MAX: jnp.max(jnp.abs(td_errors)),
        LOSS: loss,
        GRAD_NORM: optax.tree.norm(grads),
        PARAM_NORM: param_norm,
        UPDATE_RATIO: optax.tree.norm(updates) / (param_norm + 1e-12),
        OPTIMIZER_STEPS: optimizer_step_count(opt_state),
        BATCH_REWARD_NONZERO: jnp.mean(rewards != 0),
        NONFINITE: 1.0 - jnp.all(jnp.stack(finite)).astype(jnp.float32),
        **layer_norms(grads, GRAD_NORM),
        **activation_stats(intermediates),
        **dormant_stats(intermediates),
        **policy_stats(q_values, q_values_after),
    }
    if intermediates:
        stats.update(feature_ranks(penultimate_features(intermediates)))
    return {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}


def aggregate(name: str, values: np.ndarray) -> float:
    """Summarises one statistic over a chunk's measurements: max for maxima and flags, min for
    minima, mean otherwise."""
    if name.endswith("_max") or name in (NONFINITE, OPTIMIZER_STEPS):
        return float(np.max(values))
    if name.endswith("_min"):
        return float(np.min(values))
    return float(np.mean(values))
