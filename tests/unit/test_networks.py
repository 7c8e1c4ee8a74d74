"""Networks: PatchConv equals nn.Conv, the Q head is linear, dueling aggregates as it should."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax import presets
from dqn_jax.networks import NatureCNNTorso, PatchConv, make_network


@pytest.mark.parametrize("features, kernel, stride, size",
                         [(32, 8, 4, 36), (64, 4, 2, 20), (64, 3, 1, 9), (5, 3, 2, 10)])
def test_patch_conv_equals_nn_conv_with_the_same_params(features, kernel, stride, size):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 4))
    patch = PatchConv(features, kernel, stride)
    params = jax.jit(patch.init)(jax.random.PRNGKey(1), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too
    conv = nn.Conv(features, (kernel, kernel), (stride, stride), padding="VALID")
    expected = jax.jit(conv.apply)(params, x)
    got = jax.jit(patch.apply)(params, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_nature_cnn_gives_the_same_q_values_with_patches_and_with_xla_convolutions():
    obs = jax.random.randint(jax.random.PRNGKey(0), (2, 4, 84, 84), 0, 255).astype(jnp.uint8)
    patches, xla = NatureCNNTorso(conv="patches"), NatureCNNTorso(conv="xla")
    params = jax.jit(patches.init)(jax.random.PRNGKey(1), obs)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(xla.init, jax.random.PRNGKey(1), obs))
    np.testing.assert_allclose(jax.jit(patches.apply)(params, obs), jax.jit(xla.apply)(params, obs),
                               rtol=1e-4, atol=1e-4)


def test_q_head_is_linear_and_can_be_negative():
    config = presets.preset("CartPole")
    network = make_network(config, num_actions=2)
    obs = jax.random.normal(jax.random.PRNGKey(0), (64, 4)) * 3
    params = jax.jit(network.init)(jax.random.PRNGKey(1), obs)
    q = jax.jit(network.apply)(params, obs)
    assert q.shape == (64, 2) and q.dtype == jnp.float32 and (q < 0).any()
    head = params["params"]["q_head"]
    features = network.apply(params, obs, method=lambda m, o: m.torso(o))
    np.testing.assert_allclose(q, features @ head["kernel"] + head["bias"][None], rtol=1e-5, atol=1e-5)


def test_dueling_head_is_value_plus_centred_advantage():
    config = dataclasses.replace(presets.preset("CartPole"), dueling=True)
    network = make_network(config, num_actions=3)
    obs = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    params = jax.jit(network.init)(jax.random.PRNGKey(1), obs)
    q = jax.jit(network.apply)(params, obs)
    p = params["params"]
    features = network.apply(params, obs, method=lambda m, o: m.torso(o))
    value = features @ p["value_head"]["kernel"] + p["value_head"]["bias"][None]
    advantage = features @ p["advantage_head"]["kernel"] + p["advantage_head"]["bias"][None]
    np.testing.assert_allclose(q, value + advantage - advantage.mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-5)


def test_every_hidden_layer_is_sown_for_the_health_checks():
    network = make_network(dataclasses.replace(presets.preset("CartPole"), hidden_sizes=(8, 8, 8)), 2)
    obs = jnp.ones((2, 4))
    params = jax.jit(network.init)(jax.random.PRNGKey(0), obs)
    _, state = network.apply(params, obs, mutable=["intermediates"])
    assert set(state["intermediates"]["torso"]) == {"dense_0", "dense_1", "dense_2"}
