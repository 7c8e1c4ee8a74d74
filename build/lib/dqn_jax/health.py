"""Training health: the names of a `health` row's fields, and the statistics measured inside the jit.

`update_health` returns a flat dict of scalars (names like `dead_fraction/torso/dense_0`) from what
one update already computes; `records.health_rows` aggregates them over a chunk with `aggregate`,
adds what the chunk's env steps show, and writes one `kind: "health"` row per agent per chunk.
The names below are the one registry of those fields: the rules (`diagnostics.py`) and the
doctor read rows through them, never through names typed again.
"""

from __future__ import annotations

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
# Counted over the chunk's env steps (see `records.health_rows`).
UPDATES = "updates"
ENV_REWARD_NONZERO = "env_reward_nonzero"  # fraction of real env steps with a non-zero raw reward
LIFE_LOSSES, LIFE_LOSS_TERMINALS = "life_losses", "life_loss_terminals"
EPISODES = "episodes"
EPISODE_LENGTH_MEAN, EPISODE_LENGTH_MAX = "episode_length_mean", "episode_length_max"
TRUNCATED_FRACTION = "truncated_fraction"  # of the episodes that ended, those cut by the time limit
TRUNCATED_RETURN_MEAN, FINISHED_RETURN_MEAN = "truncated_return_mean", "finished_return_mean"


def per_layer(name: str, layer: str) -> str:
    """Returns the field name of a per-layer statistic (`dead_fraction/torso/dense_0`)."""
    return f"{name}/{layer}"


def layer_of(field: str, name: str) -> str | None:
    """Returns the layer of a per-layer field of statistic `name`, else None."""
    prefix = f"{name}/"
    return field[len(prefix):] if field.startswith(prefix) else None


def _flat_names(tree, prefix: str = "") -> dict[str, jax.Array]:
    """Returns {"a/b/c": leaf} for a nested dict whose leaves are arrays or 1-tuples of arrays."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(_flat_names(value, name))
        else:
            out[name] = value[0] if isinstance(value, tuple) else value
    return out


def activation_stats(intermediates) -> dict[str, jax.Array]:
    """Per sown layer: fraction of dead units (zero for every sample), activation mean and std.

    `intermediates` is Flax's `intermediates` collection from one forward pass over a batch [B, ...].
    """
    stats = {}
    for name, x in _flat_names(intermediates).items():
        units = x.reshape(x.shape[0], -1)  # conv feature maps: every position is a unit
        stats[per_layer(DEAD_FRACTION, name)] = jnp.mean(jnp.all(units == 0, axis=0))
        stats[per_layer(ACT_MEAN, name)] = jnp.mean(units)
        stats[per_layer(ACT_STD, name)] = jnp.std(units)
    return stats


def layer_norms(tree, prefix: str) -> dict[str, jax.Array]:
    """Returns `<prefix>/<layer>`: the L2 norm of each layer's arrays, for a Flax params tree."""
    params = tree["params"] if "params" in tree else tree
    norms = {}
    for name, leaf in _flat_names(params).items():
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
                  intermediates) -> dict[str, jax.Array]:
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
    }
    return {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}


def aggregate(name: str, values: np.ndarray) -> float:
    """Summarises one statistic over a chunk's measurements: max for maxima and flags, min for
    minima, mean otherwise."""
    if name.endswith("_max") or name in (NONFINITE, OPTIMIZER_STEPS):
        return float(np.max(values))
    if name.endswith("_min"):
        return float(np.min(values))
    return float(np.mean(values))
