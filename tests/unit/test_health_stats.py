"""The statistics measured inside the jitted update: dormant neurons, feature ranks, action gap, churn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax.agent import health_fields as F
from dqn_jax.agent import health_stats as H
from dqn_jax.agent.networks import MLPTorso, NatureCNNTorso


def test_neuron_scores_follow_sokar_and_a_conv_feature_map_is_one_neuron():
    # Dense [B=2, 4]: mean |h| per unit = 1, 3, 0, 0.02 → mean 1.005; the last two are τ-dormant (τ = 0.025).
    dense = jnp.array([[1.0, -3.0, 0.0, 0.02], [-1.0, 3.0, 0.0, -0.02]])
    np.testing.assert_allclose(H.neuron_scores(dense), np.array([1, 3, 0, 0.02]) / 1.005, rtol=1e-6)
    # Conv [B=1, 2, 2, C=2]: channel 0 is non-zero at one position only, still one live neuron.
    conv = jnp.zeros((1, 2, 2, 2)).at[0, 1, 1, 0].set(4.0).at[:, :, :, 1].set(1.0)
    np.testing.assert_allclose(H.neuron_scores(conv), [1.0, 1.0])
    stats = H.dormant_stats({"torso": {"dense_0": (dense,), "conv_0": (conv,)}})
    assert float(stats["dormant_fraction/torso/dense_0"]) == 0.5
    assert float(stats["dormant_fraction/torso/conv_0"]) == 0.0
    assert float(stats[F.DORMANT_FRACTION]) == pytest.approx(2 / 6)
    assert float(stats[F.DORMANT0_FRACTION]) == pytest.approx(1 / 6)  # only the exactly-zero unit


def test_a_layer_that_outputs_only_zeros_is_all_dormant():
    stats = H.dormant_stats({"torso": {"dense_0": (jnp.zeros((8, 5)),)}})
    assert float(stats[F.DORMANT_FRACTION]) == 1.0 and float(stats[F.DORMANT0_FRACTION]) == 1.0


def test_feature_ranks_of_known_spectra():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    # Singular values 10, 10, 10, 0.01, ...: srank_0.01 is 3; a flat spectrum has effective rank = its count.
    low_rank = basis[:, :4] @ np.diag([10.0, 10.0, 10.0, 0.01]) @ np.linalg.qr(rng.normal(size=(8, 8)))[0][:4]
    ranks = H.feature_ranks(jnp.asarray(low_rank, jnp.float32))
    assert int(ranks[F.SRANK]) == 3 and float(ranks[F.FEATURE_RANK_BOUND]) == 8
    flat = H.feature_ranks(jnp.asarray(basis[:, :8] * 2.0, jnp.float32))
    assert int(flat[F.SRANK]) == 8 and float(flat[F.EFFECTIVE_RANK]) == pytest.approx(8.0, rel=1e-4)
    zero = H.feature_ranks(jnp.zeros((4, 6)))
    assert int(zero[F.SRANK]) == 0 and float(zero[F.EFFECTIVE_RANK]) == 0.0


def test_action_gap_and_policy_churn():
    before = jnp.array([[1.0, 3.0, 2.5], [0.0, -1.0, -4.0], [5.0, 5.5, 0.0], [2.0, 0.0, 0.0]])
    after = jnp.array([[1.0, 3.0, 3.5], [0.0, -1.0, -4.0], [6.0, 5.5, 0.0], [2.0, 0.0, 0.0]])
    stats = H.policy_stats(before, after)
    assert float(stats[F.ACTION_GAP]) == pytest.approx((0.5 + 1.0 + 0.5 + 2.0) / 4)
    assert float(stats[F.POLICY_CHURN]) == 0.5  # rows 0 and 2 changed their greedy action


@pytest.mark.parametrize("torso", [MLPTorso(hidden_sizes=(8, 6)), NatureCNNTorso(conv="patches")],
                         ids=["mlp", "nature_cnn"])
def test_penultimate_features_are_the_torso_output(torso):
    obs = jnp.ones((3, 4, 84, 84), jnp.uint8) if isinstance(torso, NatureCNNTorso) else jnp.ones((3, 4))
    params = torso.init(jax.random.PRNGKey(0), obs)
    out, sown = torso.apply(params, obs, mutable=["intermediates"])
    np.testing.assert_array_equal(H.penultimate_features(sown["intermediates"]), out)


def test_eigenvalues_one_matrix_at_a_time_under_vmap():
    """Under (nested) vmap the eigenvalues are those of a batched call, computed one matrix per
    LAPACK call (a batched CPU call deadlocked with agents on several CPU devices)."""
    from dqn_jax.agent.health_stats import eigvalsh_one_at_a_time

    matrices = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 5))
    matrices = matrices @ jnp.swapaxes(matrices, -1, -2)
    mapped = jax.jit(jax.vmap(jax.vmap(eigvalsh_one_at_a_time)))
    np.testing.assert_allclose(mapped(matrices), jnp.linalg.eigvalsh(matrices), rtol=1e-5, atol=1e-5)
    if jax.default_backend() == "cpu":
        calls = [line for line in mapped.lower(matrices).as_text().splitlines() if "lapack_ssyevd" in line]
        assert calls and all(": (tensor<5x5xf32>) ->" in line for line in calls)
