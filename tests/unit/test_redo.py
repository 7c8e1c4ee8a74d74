"""ReDo: which weights a dormant neuron's recycling touches, and that nothing else moves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dqn_jax.agent import health_stats as H
from dqn_jax.agent import redo
from dqn_jax.agent.networks import CNN_LAYERS, AtariCNNTorso, MLPTorso, QNetwork


def _setup(torso, obs):
    network = QNetwork(torso=torso, num_actions=3)
    params = network.init(jax.random.PRNGKey(0), obs)
    fresh = network.init(jax.random.PRNGKey(1), obs)
    optimizer = optax.adam(1e-3)
    opt_state = jax.tree.map(jnp.ones_like, optimizer.init(params))  # moments that must be reset, or kept
    return network, params, fresh, optimizer, opt_state


def _recycle(network, params, fresh, optimizer, opt_state, obs, same_output: bool = False):
    """Recycles; with `same_output`, checks the network's output did not move (true when every
    recycled neuron output exactly 0 and no LayerNorm mixes a fresh unit into the others)."""
    q, sown = network.apply(params, obs, mutable=["intermediates"])
    new_params, new_state, count = redo.recycle(params, opt_state, optimizer, fresh, sown["intermediates"], 0.025)
    if same_output:
        np.testing.assert_allclose(network.apply(new_params, obs), q, rtol=1e-6, atol=1e-6)
    return new_params, new_state, int(count)


def _moments(state):
    return state[0].mu["params"], state[0].nu["params"]


def test_a_dead_dense_unit_gets_fresh_incoming_weights_and_zero_outgoing_weights_and_moments():
    obs = jax.random.normal(jax.random.PRNGKey(2), (64, 4))
    network, params, fresh, optimizer, opt_state = _setup(MLPTorso(hidden_sizes=(8, 6)), obs)
    params["params"]["torso"]["Dense_1"]["bias"] = params["params"]["torso"]["Dense_1"]["bias"].at[1].set(-100.0)
    new, state, count = _recycle(network, params, fresh, optimizer, opt_state, obs, same_output=True)
    assert count == 1
    old_layer, new_layer = params["params"]["torso"]["Dense_1"], new["params"]["torso"]["Dense_1"]
    np.testing.assert_array_equal(new_layer["kernel"][:, 1], fresh["params"]["torso"]["Dense_1"]["kernel"][:, 1])
    assert float(new_layer["bias"][1]) == 0.0
    keep = np.array([0, 2, 3, 4, 5])
    np.testing.assert_array_equal(new_layer["kernel"][:, keep], old_layer["kernel"][:, keep])
    np.testing.assert_array_equal(new_layer["bias"][keep], old_layer["bias"][keep])
    head = new["params"]["q_head"]["kernel"]
    assert not np.any(head[1]) and np.array_equal(head[keep], params["params"]["q_head"]["kernel"][keep])
    first = "Dense_0"
    np.testing.assert_array_equal(new["params"]["torso"][first]["kernel"], params["params"]["torso"][first]["kernel"])
    for moment in _moments(state):
        torso = moment["torso"]
        assert not np.any(torso["Dense_1"]["kernel"][:, 1]) and not np.any(moment["q_head"]["kernel"][1])
        assert np.all(torso["Dense_1"]["kernel"][:, keep] == 1) and np.all(torso[first]["kernel"] == 1)
    assert int(state[0].count) == 1  # the step count is not a parameter: kept


@pytest.mark.parametrize("layers", ["nature_cnn", "nips_cnn"])
def test_a_dead_conv_feature_map_zeroes_its_rows_of_the_flattened_dense_layer(layers):
    obs = jax.random.randint(jax.random.PRNGKey(2), (4, 4, 84, 84), 0, 256).astype(jnp.uint8)
    network, params, fresh, optimizer, opt_state = _setup(AtariCNNTorso(layers=layers, conv="patches"), obs)
    convs = CNN_LAYERS[layers][0]
    last, channels = f"Conv_{len(convs) - 1}", convs[-1][0]  # Conv_2 of 64 (Nature), Conv_1 of 32 (NIPS)
    conv = params["params"]["torso"][last]
    conv["bias"] = conv["bias"].at[5].set(-1e3)
    new, state, count = _recycle(network, params, fresh, optimizer, opt_state, obs)
    assert count >= 1
    dense_old, dense_new = params["params"]["torso"]["Dense_0"]["kernel"], new["params"]["torso"]["Dense_0"]["kernel"]
    dense_fresh = fresh["params"]["torso"]["Dense_0"]["kernel"]
    _, sown = network.apply(params, obs, mutable=["intermediates"])
    sown = sown["intermediates"]["torso"]
    dormant_units = np.asarray(H.neuron_scores(sown["dense_0"][0]) <= 0.025)
    # The dense layer's own dormant units get fresh incoming weights (every row of their columns);
    # in the other columns, the dead channel's rows — every `channels`-th from row 5 of the
    # flattened [H, W, channels] features — are zeroed.
    np.testing.assert_array_equal(dense_new[:, dormant_units], dense_fresh[:, dormant_units])
    assert not np.any(dense_new[5::channels][:, ~dormant_units])
    np.testing.assert_array_equal(new["params"]["torso"][last]["kernel"][..., 5],
                                  fresh["params"]["torso"][last]["kernel"][..., 5])
    dormant_channels = np.asarray(H.neuron_scores(sown[last.lower()][0]) <= 0.025)
    assert dormant_channels[5] and count == dormant_channels.sum() + dormant_units.sum() + sum(
        int((H.neuron_scores(sown[f"conv_{i}"][0]) <= 0.025).sum()) for i in range(len(convs) - 1))
    kept = ~np.isin(np.arange(dense_old.shape[0]) % channels, np.flatnonzero(dormant_channels))
    np.testing.assert_array_equal(dense_new[kept][:, ~dormant_units], dense_old[kept][:, ~dormant_units])


def test_layer_norm_of_a_recycled_unit_is_reset():
    obs = jax.random.normal(jax.random.PRNGKey(2), (64, 4))
    network, params, fresh, optimizer, opt_state = _setup(MLPTorso(hidden_sizes=(8,), normalization="layer_norm"), obs)
    norm = params["params"]["torso"]["LayerNorm_0"]
    norm["scale"], norm["bias"] = norm["scale"].at[3].set(0.0), norm["bias"].at[3].set(-1.0)  # relu(-1) = 0
    # The fresh incoming weights change the statistics LayerNorm takes over all units: the output moves.
    new, _, count = _recycle(network, params, fresh, optimizer, opt_state, obs)
    assert count == 1
    assert float(new["params"]["torso"]["LayerNorm_0"]["scale"][3]) == 1.0
    assert float(new["params"]["torso"]["LayerNorm_0"]["bias"][3]) == 0.0


def test_redo_refuses_a_network_it_cannot_read():
    with pytest.raises(ValueError, match="ReDo needs the project's Q-network"):
        redo.hidden_layers({"params": {"bias": jnp.zeros(2)}})
