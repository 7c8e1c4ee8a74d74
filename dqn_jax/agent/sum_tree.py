"""A sum tree over non-negative float32 values, as pure JAX functions on one array.

The tree is an array `nodes` of 2P float32, P the smallest power of two holding the capacity:
leaf i is `nodes[P + i]`, node k's children are `2k` and `2k + 1`, the root (the total) is
`nodes[1]`, and `nodes[0]` is unused. Leaves past the capacity stay 0, so any capacity works.

Every internal node is written as the float32 sum of its two children, never by adding a delta,
so the tree always equals its recomputation from the leaves, bit for bit. That is what makes a
zero leaf impossible to draw: a node's sum is positive only if one of its children is, and the
descent never enters a child whose sum is 0, whatever the rounding of the target.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def leaf_count(capacity: int) -> int:
    """Returns P, the number of leaves of a tree for `capacity` values (a power of two >= capacity)."""
    if capacity < 1:
        raise ValueError(f"capacity = {capacity}: must be >= 1")
    return 1 << (capacity - 1).bit_length()


def init(capacity: int) -> jax.Array:
    """Returns an all-zero tree for `capacity` values: float32 [2P]."""
    return jnp.zeros((2 * leaf_count(capacity),), jnp.float32)


def total(nodes: jax.Array) -> jax.Array:
    """Returns the sum of all values: float32 []."""
    return nodes[1]


def leaves(nodes: jax.Array) -> jax.Array:
    """Returns the values, padding included: float32 [P]."""
    return nodes[nodes.shape[0] // 2:]


def get(nodes: jax.Array, index: jax.Array) -> jax.Array:
    """Returns the values at `index` [K] (int): float32 [K]."""
    return nodes[nodes.shape[0] // 2 + index]


def _depth(nodes: jax.Array) -> int:
    return (nodes.shape[0] // 2).bit_length() - 1


def set_values(nodes: jax.Array, index: jax.Array, values: jax.Array) -> jax.Array:
    """Returns the tree with the values at `index` [K] set to `values` [K] (>= 0) and every node
    above them recomputed from its children.

    When an index appears more than once, its last occurrence wins (on every backend: the earlier
    ones are not written at all, so no scatter order decides).
    """
    chex.assert_rank([index, values], 1)
    chex.assert_equal_shape([index, values])
    P = nodes.shape[0] // 2
    position = jnp.arange(index.shape[0])
    overwritten_later = jnp.any((index[None, :] == index[:, None]) & (position[None, :] > position[:, None]), axis=1)
    node = P + index
    nodes = nodes.at[jnp.where(overwritten_later, 2 * P, node)].set(values.astype(jnp.float32), mode="drop")
    for _ in range(_depth(nodes)):
        # A parent reached twice is written twice with the same sum: the order cannot matter.
        node = node // 2
        nodes = nodes.at[node].set(nodes[2 * node] + nodes[2 * node + 1])
    return nodes


def find(nodes: jax.Array, targets: jax.Array) -> jax.Array:
    """Returns, for each target in [0, total) [B], the leaf whose prefix-sum interval holds it: int32 [B].

    Never returns a leaf whose value is 0 while the total is positive: a target that rounding has
    carried past the last positive leaf of a subtree lands on that leaf instead.
    """
    def descend(_, carry):
        node, remaining = carry
        left, right = nodes[2 * node], nodes[2 * node + 1]
        go_right = (remaining >= left) & (right > 0)
        return 2 * node + go_right.astype(jnp.int32), jnp.where(go_right, remaining - left, remaining)

    # A loop, not a Python-unrolled chain: unrolled, XLA fused every level's index arithmetic into
    # each gather of a drawn slot, and some jaxlib versions never finished compiling the learner
    # (docs/DESIGN.md, "Prioritized replay on the ring").
    node, _ = jax.lax.fori_loop(0, _depth(nodes), descend, (jnp.ones(targets.shape, jnp.int32),
                                                            targets.astype(jnp.float32)))
    return node - nodes.shape[0] // 2
