"""Fingerprints: short hashes of the online params and of the sampled batch, computed in the jit.

Two runs that should be identical can be compared update by update from their `metrics.jsonl`
(`kind: "fingerprint"` rows) without storing any parameters; the first row where the hashes
differ is where the runs parted. The hash is an integer mix of the exact bits (order- and
position-sensitive, wrap-around uint32 arithmetic, so it is itself deterministic on any device).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B1  # odd multiplier (2**32 / golden ratio) to spread consecutive positions


def _mix(bits: jax.Array) -> jax.Array:
    bits = bits ^ (bits >> 16)
    bits = bits * jnp.uint32(0x85EBCA6B)
    return bits ^ (bits >> 13)


def _leaf_bits(leaf: jax.Array) -> jax.Array:
    leaf = jnp.asarray(leaf)
    if leaf.dtype == jnp.bool_:
        leaf = leaf.astype(jnp.uint8)
    if leaf.dtype.itemsize == 4:
        return jax.lax.bitcast_convert_type(leaf, jnp.uint32).reshape(-1)
    return leaf.astype(jnp.uint32).reshape(-1) if jnp.issubdtype(leaf.dtype, jnp.integer) else (
        jax.lax.bitcast_convert_type(leaf.astype(jnp.float32), jnp.uint32).reshape(-1))


def tree_hash(tree) -> jax.Array:
    """Returns a uint32 [] hash of every bit of every leaf of `tree` (and of their order)."""
    digest = jnp.uint32(len(jax.tree.leaves(tree)))
    for leaf in jax.tree.leaves(tree):
        bits = _leaf_bits(leaf)
        positions = jnp.arange(bits.shape[0], dtype=jnp.uint32) * jnp.uint32(_GOLDEN) + jnp.uint32(1)
        leaf_digest = jnp.sum(_mix(bits ^ positions) * (positions | jnp.uint32(1)), dtype=jnp.uint32)
        digest = _mix(digest * jnp.uint32(31) + leaf_digest)
    return digest


def as_hex(value) -> str:
    """Returns a uint32 hash as 8 hex digits (the form written to `metrics.jsonl`)."""
    return f"{int(value) & 0xFFFFFFFF:08x}"
