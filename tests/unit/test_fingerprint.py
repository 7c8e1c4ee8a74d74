"""Fingerprints: a hash that sees every bit and position, the same jitted or not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dqn_jax.agent.fingerprint import as_hex, tree_hash


def test_tree_hash_sees_every_bit_and_position():
    tree = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4), "b": jnp.ones(4, jnp.float32)}
    base = int(tree_hash(tree))
    assert int(jax.jit(tree_hash)(tree)) == base
    flipped = np.asarray(tree["w"]).copy().view(np.uint32)
    flipped[2, 3] ^= 1  # the lowest mantissa bit of one weight
    assert int(tree_hash({**tree, "w": jnp.asarray(flipped.view(np.float32))})) != base
    swapped = np.asarray(tree["w"]).copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    assert int(tree_hash({**tree, "w": jnp.asarray(swapped)})) != base
    assert as_hex(base) == f"{base:08x}" and len(as_hex(base)) == 8
