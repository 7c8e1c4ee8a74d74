"""Training health measured inside the jit: the statistics of one update, from what it already computes.

`update_health` returns a flat dict of float32 scalars named as `health_fields` names them
(`dead_fraction/torso/dense_0`, `srank`, ...); the loop keeps one update's in `health_every` and
`records.health_rows` turns them into rows.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from dqn_jax.agent.health_fields import (
    ACT_MEAN,
    ACT_STD,
    ACTION_GAP,
    BATCH_REWARD_NONZERO,
    DEAD_FRACTION,
    DORMANT0_FRACTION,
    DORMANT_FRACTION,
    DORMANT_TAU,
    EFFECTIVE_RANK,
    FEATURE_RANK_BOUND,
    GRAD_NORM,
    LOSS,
    NONFINITE,
    OPTIMIZER_STEPS,
    PARAM_NORM,
    POLICY_CHURN,
    Q_MAX,
    Q_MEAN,
    Q_MIN,
    Q_ZERO_FRACTION,
    SRANK,
    SRANK_DELTA,
    TD_ABS_MAX,
    TD_ABS_MEAN,
    UPDATE_RATIO,
    per_layer,
)


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


def update_health(*, q_values, td_errors, loss, rewards, grads, updates, new_params, opt_state,
                  intermediates, q_values_after) -> dict[str, jax.Array]:
    """Returns the health scalars of one update (float32 [] each).

    Args:
      q_values: online Q values of the batch [B, A].
      td_errors: TD errors [B].
      loss: the loss [].
      rewards: the sampled rewards [B].
      grads, updates: gradient and optimizer update trees (same structure as params).
      new_params: the params after the update.
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
