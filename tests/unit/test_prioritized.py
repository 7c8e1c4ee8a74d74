"""Prioritized replay: the sum tree against naive recomputations, the ring's sampleable slots,
importance weights and the weighted loss against hand-computed values."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax.agent import sum_tree
from dqn_jax.agent.prioritized import importance_exponent, make_prioritized
from dqn_jax.agent.replay import make_replay
from dqn_jax.loop.iteration import initial_carry
from dqn_jax.loop.loop import agent_keys, build_loop

CAPACITY = 1_000  # not a power of two: 24 padding leaves


def naive_tree(values: np.ndarray) -> np.ndarray:
    """The tree recomputed from its leaves, level by level, with float32 sums."""
    P = sum_tree.leaf_count(len(values))
    nodes = np.zeros(2 * P, np.float32)
    nodes[P:P + len(values)] = values
    for k in range(P - 1, 0, -1):
        nodes[k] = np.float32(nodes[2 * k] + nodes[2 * k + 1])
    return nodes


def test_leaf_count_is_the_next_power_of_two():
    assert [sum_tree.leaf_count(n) for n in (1, 2, 3, 1000, 1024, 1025)] == [1, 2, 4, 1024, 1024, 2048]
    with pytest.raises(ValueError):
        sum_tree.leaf_count(0)


def test_sums_equal_a_recomputation_after_100k_random_updates_and_the_last_write_wins():
    rng = np.random.default_rng(0)
    batches, width = 1_000, 100  # 100,000 writes, indices drawn with repeats inside a batch
    index = rng.integers(0, CAPACITY, (batches, width)).astype(np.int32)
    values = (rng.random((batches, width)) * 10.0 ** rng.integers(-6, 4, (batches, width))).astype(np.float32)
    values[rng.random((batches, width)) < 0.2] = 0.0

    def write(nodes, batch):
        return sum_tree.set_values(nodes, *batch), None

    nodes = np.asarray(jax.jit(lambda n: jax.lax.scan(write, n, (index, values))[0])(sum_tree.init(CAPACITY)))
    expected = np.zeros(CAPACITY, np.float32)
    for i, v in zip(index.reshape(-1), values.reshape(-1), strict=True):
        expected[i] = v  # in order: the last write of an index wins
    np.testing.assert_array_equal(nodes, naive_tree(expected))


@functools.lru_cache(maxsize=1)
def _random_tree():
    rng = np.random.default_rng(1)
    values = rng.random(CAPACITY).astype(np.float32) ** 3
    values[rng.random(CAPACITY) < 0.3] = 0.0
    nodes = sum_tree.set_values(sum_tree.init(CAPACITY), jnp.arange(CAPACITY), jnp.asarray(values))
    return values, nodes


def test_find_agrees_with_a_naive_proportional_sampler_over_200k_draws():
    values, nodes = _random_tree()
    targets = jax.random.uniform(jax.random.PRNGKey(0), (200_000,)) * sum_tree.total(nodes)
    drawn = np.asarray(jax.jit(sum_tree.find)(nodes, targets))
    naive = np.searchsorted(np.cumsum(values, dtype=np.float64), np.asarray(targets, np.float64), side="right")
    assert np.mean(drawn == naive) > 0.999  # they differ only where float32 and float64 prefix sums round apart
    counts = np.bincount(drawn, minlength=CAPACITY)
    expected = values / values.sum() * len(drawn)
    positive = expected > 0
    chi2 = np.sum((counts[positive] - expected[positive]) ** 2 / expected[positive])
    dof = positive.sum() - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)  # a tree off by one leaf is off by thousands
    assert counts[~positive].sum() == 0


def test_zero_leaves_are_never_drawn_over_a_million_draws_with_extreme_ratios():
    rng = np.random.default_rng(2)
    values = np.zeros(CAPACITY, np.float32)
    positive = rng.choice(CAPACITY, 40, replace=False)
    values[positive] = (10.0 ** rng.uniform(-30, 30, 40)).astype(np.float32)  # ratios up to 1e60
    nodes = sum_tree.set_values(sum_tree.init(CAPACITY), jnp.arange(CAPACITY), jnp.asarray(values))
    total = sum_tree.total(nodes)
    # Uniform targets, and the worst ones: every float32 prefix sum, the total and just past it.
    prefix = np.cumsum(values, dtype=np.float32)
    edges = np.concatenate([prefix, np.nextafter(prefix, np.float32(0)), [total, np.nextafter(total, np.inf)]])
    targets = jnp.concatenate([jax.random.uniform(jax.random.PRNGKey(3), (1_000_000,)) * total,
                               jnp.asarray(edges, jnp.float32)])
    drawn = np.asarray(jax.jit(sum_tree.find)(nodes, targets))
    assert set(np.unique(drawn)) <= set(positive.tolist())


def test_the_descent_is_one_loop_whatever_the_depth():
    # Unrolled, the descent's index arithmetic got fused level upon level into the learner's
    # gathers, and on an AVX-512 Xeon the learner's update did not finish compiling in 10 minutes
    # with jaxlib 0.12.0.1, in 400 s with 0.11.2. The descent must stay a loop of one level.
    programs = [jax.jit(sum_tree.find).lower(sum_tree.init(capacity), jnp.zeros((32,))).as_text()
                for capacity in (4, 1 << 20)]  # depth 2 and depth 20
    assert [hlo.count("stablehlo.while") for hlo in programs] == [1, 1]
    shallow, deep = (hlo.count("stablehlo.compare") for hlo in programs)
    assert shallow == deep  # one level's comparisons, whatever the depth (unrolled: 8 against 80)


# --- on the replay's ring --------------------------------------------------------------------------

T, E, STACK, N_STEP, B = 12, 3, 2, 2, 8


def _ring(prioritized_exponent: float = 1.0):
    replay = make_replay(T, E, (2,), jnp.float32, STACK, B, gamma=0.9, n_step=N_STEP)
    return replay, make_prioritized(replay, exponent=prioritized_exponent, epsilon=0.01)


def _written(replay, prioritized, steps: int, seed: int = 0):
    """Writes `steps` env steps with random dones and reset steps; returns (replay state, priorities)."""
    rng = np.random.default_rng(seed)
    state, priorities = replay.init(), prioritized.init()
    for _ in range(steps):
        frame = jnp.asarray(rng.normal(size=(E, 2)), jnp.float32)
        is_transition = jnp.asarray(rng.random(E) > 0.2)
        state, priorities = prioritized.add(state, priorities, frame, jnp.zeros(E, jnp.int32), jnp.ones(E),
                                            jnp.asarray(rng.random(E) < 0.1), is_transition,
                                            jnp.asarray(rng.random(E) < 0.1))
    return state, priorities


def _uniform_sampleable(state) -> set[tuple[int, int]]:
    """(step, env) the uniform sampler may return, from its own rule (replay.py's docstring)."""
    total = int(state.total_steps)
    oldest = total - min(total, T)
    steps = range(oldest + STACK - 1, total - N_STEP)
    return {(s, e) for s in steps for e in range(E) if bool(state.is_transition[s % T, e])}


@pytest.mark.parametrize("steps", [1, 3, 5, 11, 12, 13, 30, 31])
def test_positive_leaves_are_exactly_the_uniform_samplers_sampleable_slots(steps):
    replay, prioritized = _ring()
    state, priorities = _written(replay, prioritized, steps)
    leaves = np.asarray(sum_tree.leaves(priorities.nodes))
    newest = steps - 1
    positive = {(newest - (newest - leaf // E) % T, leaf % E) for leaf in np.flatnonzero(leaves)}
    assert positive == _uniform_sampleable(state)
    assert np.array_equal(leaves[:T * E].reshape(T, E) > 0, np.asarray(replay.sampleable(state)))
    assert leaves[T * E:].sum() == 0  # padding
    if positive:
        draws = prioritized.sample(state, priorities, jax.random.PRNGKey(steps), jnp.float32(0.5))
        assert {(int(s), int(e)) for s, e in zip(draws.index.step, draws.index.env, strict=True)} <= positive


def test_importance_weights_and_priority_updates_match_hand_computation():
    replay, prioritized = _ring(prioritized_exponent=0.6)
    state, priorities = _written(replay, prioritized, 30)
    draw = prioritized.sample(state, priorities, jax.random.PRNGKey(0), jnp.float32(0.4))
    leaf = (np.asarray(draw.index.step) % T) * E + np.asarray(draw.index.env)
    values = np.asarray(sum_tree.leaves(priorities.nodes))
    probabilities = values[leaf] / values.sum()
    np.testing.assert_allclose(draw.probabilities, probabilities, rtol=1e-6)
    n = np.count_nonzero(values)
    weights = (n * probabilities) ** -0.4
    np.testing.assert_allclose(draw.weights, weights / weights.max(), rtol=1e-5)

    td = np.linspace(-3.0, 2.0, B).astype(np.float32)
    updated = prioritized.update(priorities, draw.index, jnp.asarray(td))
    expected = values.copy()
    for i in range(B):
        expected[leaf[i]] = (abs(td[i]) + 0.01) ** 0.6  # a slot drawn twice keeps its last error
    np.testing.assert_allclose(sum_tree.leaves(updated.nodes), expected, rtol=1e-6)
    assert float(updated.max_priority) == pytest.approx(max(1.0, (3.0 + 0.01) ** 0.6), rel=1e-6)


def test_new_slots_enter_at_the_largest_priority_written():
    replay, prioritized = _ring()
    state, priorities = _written(replay, prioritized, 20)
    priorities = priorities.replace(max_priority=jnp.float32(7.0))
    state, after = prioritized.add(state, priorities, jnp.zeros((E, 2)), jnp.zeros(E, jnp.int32), jnp.ones(E),
                                   jnp.zeros(E, bool), jnp.ones(E, bool), jnp.zeros(E, bool))
    entered = (20 - N_STEP) % T
    row = np.asarray(sum_tree.leaves(after.nodes))[entered * E:(entered + 1) * E]
    np.testing.assert_array_equal(row, np.where(np.asarray(state.is_transition[entered]), 7.0, 0.0))


def test_importance_exponent_anneals_from_learning_start_to_the_end():
    beta = importance_exponent(0.4, 1.0, begin_step=1_000, end_step=11_000)
    assert [float(beta(jnp.int32(s))) for s in (0, 1_000, 6_000, 11_000, 20_000)] == pytest.approx(
        [0.4, 0.4, 0.7, 1.0, 1.0])


# --- in the learner --------------------------------------------------------------------------------

def test_the_learners_loss_is_the_importance_weighted_mean_and_priorities_follow_the_td_errors(tiny_cartpole):
    config = dataclasses.replace(tiny_cartpole, prioritized_replay=True, double_dqn=True)
    loop = build_loop(config)
    agents = loop.init(agent_keys(config)).agents
    chunk = jax.jit(lambda agents: _write_random_steps(loop, agents, 200))
    agent = jax.tree.map(lambda x: x[0], chunk(agents))
    update = jax.jit(loop.learner.update)
    for _ in range(3):  # the drawn slots leave the first maximum: the priorities differ
        agent, _ = update(agent)
    network, prioritized = loop.learner.network, loop.learner.prioritized
    _, sample_key = jax.random.split(agent.rng_key)
    beta = importance_exponent(config.importance_exponent_start, config.importance_exponent_end,
                               config.learning_starts, config.total_steps)(agent.env_steps)
    draw = prioritized.sample(agent.replay, agent.priorities, sample_key, beta)
    batch = draw.transition
    q_tm1 = np.asarray(network.apply(agent.params, batch.obs_tm1))
    q_target = np.asarray(network.apply(agent.target_params, batch.obs_t))
    q_online = np.asarray(network.apply(agent.params, batch.obs_t))
    errors, losses = [], []
    for i in range(config.batch_size):
        target = batch.reward_t[i] + batch.discount_t[i] * q_target[i][np.argmax(q_online[i])]
        e = float(target - q_tm1[i][batch.action_tm1[i]])
        errors.append(e)
        losses.append(0.5 * e * e if abs(e) <= 1 else abs(e) - 0.5)
    new_agent, metrics = update(agent)
    np.testing.assert_allclose(metrics["loss"], np.mean(np.asarray(draw.weights) * np.asarray(losses)), rtol=1e-5)
    assert not np.allclose(np.asarray(draw.weights), 1.0)  # the weighting is not vacuous
    expected = prioritized.update(agent.priorities, draw.index, jnp.asarray(errors, jnp.float32))
    np.testing.assert_allclose(new_agent.priorities.nodes, expected.nodes, rtol=1e-5)
    assert set(metrics["health"]) >= {"per_effective_fraction", "per_weight_max"}
    assert 0.0 < float(metrics["health"]["per_effective_fraction"]) <= 1.0


def _write_random_steps(loop, agents, steps: int):
    """Writes `steps` random CartPole-shaped env steps to every agent through the iteration's write."""
    S, E = agents.env_steps.shape[0], loop.config.num_envs

    def one(agents, key):
        obs_key, reward_key, done_key = jax.random.split(key, 3)
        obs = jax.random.normal(obs_key, (S, E, 4))
        carry = initial_carry(obs).replace(first=jnp.zeros((S, E), bool))
        done = jax.random.uniform(done_key, (S * E,)) < 0.05
        step_out = (jax.random.normal(obs_key, (S * E, 4)), jax.random.uniform(reward_key, (S * E,)), done,
                    jnp.zeros((S * E,), bool), {"elapsed_step": jnp.zeros((S * E,), jnp.int32)})
        actions = jnp.zeros((S, E), jnp.int32)
        agents, _, _ = loop.iteration.write_step(agents, carry, actions, jnp.zeros((S,)), step_out)
        return agents, None

    return jax.lax.scan(one, agents, jax.random.split(jax.random.PRNGKey(5), steps))[0]


def test_draws_are_stratified_one_per_equal_slice_of_the_priority_mass():
    # Draw i falls in the i-th of B equal slices of the total: its leaf's mass interval meets
    # [i, i + 1) * total / B. Independent draws would all do so with probability B! / B^B (0.24%).
    replay, prioritized = _ring(prioritized_exponent=0.6)
    state, priorities = _written(replay, prioritized, 30)
    values = np.asarray(sum_tree.leaves(priorities.nodes), np.float64)
    before = np.concatenate([[0.0], np.cumsum(values)[:-1]])
    total = values.sum()
    for seed in range(5):
        draw = prioritized.sample(state, priorities, jax.random.PRNGKey(seed), jnp.float32(0.4))
        leaf = (np.asarray(draw.index.step) % T) * E + np.asarray(draw.index.env)
        low, high = before[leaf], before[leaf] + values[leaf]
        stratum = np.arange(B) * total / B
        assert np.all(high >= stratum - 1e-4 * total) and np.all(low <= stratum + total / B + 1e-4 * total), seed
        assert np.all(np.diff(leaf) >= 0)  # ordered as the slices are


def test_a_non_finite_td_error_writes_the_largest_priority_not_nan():
    replay, prioritized = _ring(prioritized_exponent=0.6)
    state, priorities = _written(replay, prioritized, 30)
    priorities = priorities.replace(max_priority=jnp.float32(3.0))
    draw = prioritized.sample(state, priorities, jax.random.PRNGKey(0), jnp.float32(0.4))
    td = jnp.asarray([np.nan, np.inf, -np.inf, 1.0, 0.0, 2.0, -1.0, 0.5], jnp.float32)
    updated = prioritized.update(priorities, draw.index, td)
    leaves = np.asarray(sum_tree.leaves(updated.nodes))
    assert np.all(np.isfinite(leaves)) and np.isfinite(float(sum_tree.total(updated.nodes)))
    leaf = (np.asarray(draw.index.step) % T) * E + np.asarray(draw.index.env)
    last = {slot: i for i, slot in enumerate(leaf)}  # a slot drawn twice keeps its last write
    for slot, i in last.items():
        expected = 3.0 if i < 3 else (abs(float(td[i])) + 0.01) ** 0.6
        assert leaves[slot] == pytest.approx(expected, rel=1e-6), i
    assert float(updated.max_priority) == pytest.approx(3.0)


def test_a_loop_of_add_sample_and_update_alone_keeps_positive_leaves_the_sampleable_slots():
    # The buffer's whole interface, as a user's loop would call it: nothing else keeps the invariant.
    replay, prioritized = _ring(prioritized_exponent=0.6)
    rng = np.random.default_rng(3)
    state, priorities = replay.init(), prioritized.init()
    add, sample, update = jax.jit(prioritized.add), jax.jit(prioritized.sample), jax.jit(prioritized.update)
    for step in range(3 * T):
        state, priorities = add(state, priorities, jnp.asarray(rng.normal(size=(E, 2)), jnp.float32),
                                jnp.zeros(E, jnp.int32), jnp.ones(E), jnp.asarray(rng.random(E) < 0.1),
                                jnp.asarray(rng.random(E) > 0.2), jnp.asarray(rng.random(E) < 0.1))
        leaves = np.asarray(sum_tree.leaves(priorities.nodes))
        assert np.array_equal(leaves[:T * E].reshape(T, E) > 0, np.asarray(replay.sampleable(state))), step
        if leaves.any():
            draw = sample(state, priorities, jax.random.PRNGKey(step), jnp.float32(0.4))
            priorities = update(priorities, draw.index, jnp.asarray(rng.normal(size=B), jnp.float32))
