"""Health statistics computed inside the jitted update, cheaply, from what the update already has.

`update_health` returns a flat dict of scalars (names like `dead_fraction/torso/dense_0`); the loop
aggregates them over a chunk with `aggregate` and the trainer writes one `kind: "health"` row per
agent per chunk. The rules in `diagnostics.py` read those rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


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
        stats[f"dead_fraction/{name}"] = jnp.mean(jnp.all(units == 0, axis=0))
        stats[f"act_mean/{name}"] = jnp.mean(units)
        stats[f"act_std/{name}"] = jnp.std(units)
    return stats


def layer_norms(tree, prefix: str) -> dict[str, jax.Array]:
    """Returns `<prefix>/<layer>`: the L2 norm of each layer's arrays, for a Flax params tree."""
    params = tree["params"] if "params" in tree else tree
    norms = {}
    for name, leaf in _flat_names(params).items():
        layer = name.rsplit("/", 1)[0]
        norms[layer] = norms.get(layer, 0.0) + jnp.sum(jnp.square(leaf))
    return {f"{prefix}/{layer}": jnp.sqrt(total) for layer, total in norms.items()}


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
        "q_mean": jnp.mean(q_values), "q_min": jnp.min(q_values), "q_max": jnp.max(q_values),
        "q_zero_fraction": jnp.mean(q_values == 0),
        "td_abs_mean": jnp.mean(jnp.abs(td_errors)), "td_abs_max": jnp.max(jnp.abs(td_errors)),
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": param_norm,
        "update_ratio": optax.tree.norm(updates) / (param_norm + 1e-12),
        "optimizer_steps": optimizer_step_count(opt_state),
        "batch_reward_nonzero": jnp.mean(rewards != 0),
        "nonfinite": 1.0 - jnp.all(jnp.stack(finite)).astype(jnp.float32),
        **layer_norms(grads, "grad_norm"),
        **activation_stats(intermediates),
    }
    return {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}


def aggregate(name: str, values: np.ndarray) -> float:
    """Summarises one statistic over a chunk's measurements: max for maxima and flags, min for
    minima, mean otherwise."""
    if name.endswith("_max") or name in ("nonfinite", "optimizer_steps"):
        return float(np.max(values))
    if name.endswith("_min"):
        return float(np.min(values))
    return float(np.mean(values))
