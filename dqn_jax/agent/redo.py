"""ReDo (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep Reinforcement Learning"):
recycle the τ-dormant neurons of the online network, inside the jitted update.

A neuron (a unit of a dense layer, a feature map of a conv layer) is τ-dormant when its score
E|h_i| / mean_k E|h_k| on the batch is at most τ (`health.neuron_scores`). Recycling it gives it
fresh incoming weights (the network's initializer, drawn from the agent's key) and a zero bias,
resets its LayerNorm scale and offset, zeroes its outgoing weights — so the network's output is
unchanged at the moment of recycling — and zeroes Adam's moments of every weight it touched. The
target network is left alone: it catches up at its next copy.

The layers are read off the params tree of this project's networks (`networks.py`): the hidden
layers `Conv_i` then `Dense_i` under `torso`, in order, each followed by its `LayerNorm_j` when
there is one, and sowing `conv_i` / `dense_i`; the heads (`q_head`, or `value_head` and
`advantage_head`) read the last one.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import optax

from dqn_jax.agent.health_stats import flat_names, neuron_scores

HEADS = ("q_head", "value_head", "advantage_head")


@dataclasses.dataclass(frozen=True)
class HiddenLayer:
    """Where one hidden layer's neurons live in the params tree (paths are tuples of keys)."""

    sown: str  # its activations in the `intermediates` collection, e.g. "torso/conv_2"
    incoming: tuple[str, ...]  # the layer computing it, e.g. ("params", "torso", "Conv_2")
    norm: tuple[str, ...] | None  # its LayerNorm, if any
    outgoing: tuple[tuple[str, ...], ...]  # the layers reading it: the next hidden layer, or the heads


def hidden_layers(params) -> tuple[HiddenLayer, ...]:
    """Returns the hidden layers of a `networks.QNetwork` params tree, input side first.

    Raises:
      ValueError: the tree is not shaped like this project's networks (a custom network).
    """
    root = params.get("params", {})
    torso = root.get("torso")
    if not isinstance(torso, dict) or not any(k in root for k in HEADS):
        raise ValueError("ReDo needs the project's Q-network (a `torso` and a Q head); this network has "
                         f"params {sorted(root)}")
    order = {"Conv": 0, "Dense": 1}
    names = sorted((k for k in torso if re.fullmatch(r"(Conv|Dense)_\d+", k)),
                   key=lambda k: (order[k.split("_")[0]], int(k.split("_")[1])))
    norms = sorted((k for k in torso if re.fullmatch(r"LayerNorm_\d+", k)), key=lambda k: int(k.split("_")[1]))
    if norms and len(norms) != len(names):
        raise ValueError(f"ReDo expects one LayerNorm per hidden layer; the torso has {sorted(torso)}")
    heads = tuple(("params", head) for head in HEADS if head in root)
    layers = []
    for i, name in enumerate(names):
        outgoing = (("params", "torso", names[i + 1]),) if i + 1 < len(names) else heads
        layers.append(HiddenLayer(sown=f"torso/{name.lower()}", incoming=("params", "torso", name),
                                  norm=("params", "torso", norms[i]) if norms else None, outgoing=outgoing))
    return tuple(layers)


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _with(tree, path, value):
    """Returns a copy of nested dicts `tree` with the subtree at `path` replaced by `value`."""
    if not path:
        return value
    return {**tree, path[0]: _with(tree[path[0]], path[1:], value)}


def dormant_masks(params, intermediates, tau: float):
    """Returns `(incoming, outgoing, count)`: two bool trees shaped like `params` marking the weights
    to re-initialise and those to zero, and the number of dormant neurons [] int32."""
    acts = flat_names(intermediates)
    incoming = jax.tree.map(lambda x: jnp.zeros(x.shape, bool), params)
    outgoing = incoming
    count = jnp.zeros((), jnp.int32)
    for layer in hidden_layers(params):
        dormant = neuron_scores(acts[layer.sown]) <= tau  # [units]
        count += jnp.sum(dormant, dtype=jnp.int32)
        own = layer.incoming if layer.norm is None else layer.norm
        for path in {layer.incoming, own}:
            incoming = _with(incoming, path, jax.tree.map(lambda x, d=dormant: jnp.broadcast_to(d, x.shape),
                                                         _get(params, path)))
        for path in layer.outgoing:
            kernel = _get(params, path)["kernel"]
            units, out = dormant.shape[0], kernel.shape[-1]
            rows = jnp.broadcast_to(dormant[None, :, None], (kernel.size // (units * out), units, out))
            outgoing = _with(outgoing, path + ("kernel",), rows.reshape(kernel.shape))
    return incoming, outgoing, count


def recycle(params, opt_state, optimizer: optax.GradientTransformation, fresh_params, intermediates,
            tau: float):
    """Returns `(params, opt_state, count)` with every τ-dormant neuron recycled.

    `fresh_params` is a freshly initialised params tree of the same network (the new incoming
    weights come from it; biases are set to 0 and LayerNorms to scale 1, offset 0); `intermediates`
    the `intermediates` collection of the forward pass that measured the neurons.
    """
    incoming, outgoing, count = dormant_masks(params, intermediates, tau)
    norm_paths = {layer.norm for layer in hidden_layers(params) if layer.norm}

    def restart(path, fresh):
        keys = tuple(getattr(k, "key", k) for k in path)
        if keys[-1] == "bias":
            return jnp.zeros_like(fresh)
        if keys[:-1] in norm_paths and keys[-1] == "scale":
            return jnp.ones_like(fresh)
        return fresh

    restarted = jax.tree_util.tree_map_with_path(restart, fresh_params)
    new_params = jax.tree.map(lambda p, f, i, o: jnp.where(i, f, jnp.where(o, jnp.zeros_like(p), p)),
                              params, restarted, incoming, outgoing)
    new_opt_state = optax.tree_utils.tree_map_params(
        optimizer, lambda m, i, o: jnp.where(i | o, jnp.zeros_like(m), m), opt_state, incoming, outgoing,
        transform_non_params=lambda x: x)
    return new_params, new_opt_state, count
