"""Networks: PatchConv equals nn.Conv, the Atari torsos have their published layers, the Q head is
linear, dueling aggregates as it should."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax.agent.networks import AtariCNNTorso, PatchConv, make_network
from dqn_jax.run import presets


@pytest.mark.parametrize("features, kernel, stride, size, space_to_depth",
                         [(32, 8, 4, 36, False), (64, 4, 2, 20, False), (64, 3, 1, 9, False), (5, 3, 2, 10, False),
                          (16, 8, 4, 84, True), (4, 4, 2, 11, True), (3, 6, 3, 20, True)])
def test_patch_conv_equals_nn_conv_with_the_same_params(features, kernel, stride, size, space_to_depth):
    # space_to_depth: the same convolution over stride x stride blocks (sizes that crop included)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 4))
    patch = PatchConv(features, kernel, stride, space_to_depth=space_to_depth)
    params = jax.jit(patch.init)(jax.random.PRNGKey(1), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too
    conv = nn.Conv(features, (kernel, kernel), (stride, stride), padding="VALID")
    expected = jax.jit(conv.apply)(params, x)
    got = jax.jit(patch.apply)(params, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


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


def test_the_nips_torso_has_mnih_2013_layers_and_sows_each_for_the_health_checks():
    # Mnih et al. 2013: 16 8x8 filters stride 4, 32 4x4 stride 2, 256 rectifier units, linear head.
    config = dataclasses.replace(presets.preset("Pong"), torso="nips_cnn")
    network = make_network(config, num_actions=6)
    obs = jax.random.randint(jax.random.PRNGKey(0), (3, 4, 84, 84), 0, 255).astype(jnp.uint8)
    params = jax.jit(network.init)(jax.random.PRNGKey(1), obs)
    shapes = jax.tree.map(jnp.shape, params["params"])
    assert shapes == {
        "torso": {"Conv_0": {"kernel": (8, 8, 4, 16), "bias": (16,)},
                  "Conv_1": {"kernel": (4, 4, 16, 32), "bias": (32,)},
                  "Dense_0": {"kernel": (9 * 9 * 32, 256), "bias": (256,)}},
        "q_head": {"kernel": (256, 6), "bias": (6,)},
    }
    q, state = jax.jit(lambda p, o: network.apply(p, o, mutable=["intermediates"]))(params, obs)
    sown = jax.tree.map(jnp.shape, state["intermediates"]["torso"])
    assert q.shape == (3, 6) and sown == {"conv_0": ((3, 20, 20, 16),), "conv_1": ((3, 9, 9, 32),),
                                          "dense_0": ((3, 256),)}


@pytest.mark.parametrize("layers", ["nature_cnn", "nips_cnn"])
@pytest.mark.parametrize("conv", ["patches", "space_to_depth"])
def test_each_atari_torso_gives_the_same_features_with_patches_and_with_xla_convolutions(layers, conv):
    obs = jax.random.randint(jax.random.PRNGKey(0), (2, 4, 84, 84), 0, 255).astype(jnp.uint8)
    patches, xla = AtariCNNTorso(layers=layers, conv=conv), AtariCNNTorso(layers=layers, conv="xla")
    params = jax.jit(patches.init)(jax.random.PRNGKey(1), obs)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(xla.init, jax.random.PRNGKey(1), obs))
    np.testing.assert_allclose(jax.jit(patches.apply)(params, obs), jax.jit(xla.apply)(params, obs),
                               rtol=1e-4, atol=1e-4)


def test_the_nature_torso_keeps_its_parameter_names_and_count():
    # Checkpoints and fingerprints written before the torso took `layers` must still load.
    network = make_network(presets.preset("Pong"), num_actions=6)
    params = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))
    assert sorted(params["params"]["torso"]) == ["Conv_0", "Conv_1", "Conv_2", "Dense_0"]
    assert sum(np.prod(p.shape) for p in jax.tree.leaves(params)) == 1_687_206  # the Pong run's log line
