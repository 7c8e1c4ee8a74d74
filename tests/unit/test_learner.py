"""The TD loss against hand-computed values, and the learner's update, jitted and not."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dqn_jax.agent.learner import average_after, played_params, td_error, td_loss
from dqn_jax.agent.replay import fill_with_random_steps
from dqn_jax.loop.loop import agent_keys, build_loop

Q_TM1 = jnp.array([1.0, 2.0])
Q_T_TARGET = jnp.array([3.0, 1.0])
Q_T_ONLINE = jnp.array([0.0, 5.0])  # the online net prefers action 1, the target net action 0


class TDErrorTest(chex.TestCase):
    @chex.all_variants(with_pmap=False)
    def test_dqn_target_non_terminal(self):
        # 0.5 + 0.9 * max(3, 1) - q_tm1[1] = 3.2 - 2.0
        error = self.variant(td_error)(Q_TM1, 1, 0.5, 0.9, Q_T_TARGET, Q_T_TARGET)
        np.testing.assert_allclose(error, 1.2, rtol=1e-6)

    @chex.all_variants(with_pmap=False)
    def test_double_dqn_target_non_terminal(self):
        # The online net picks action 1; the target net scores it 1.0: 0.5 + 0.9 * 1 - 2 = -0.6
        error = self.variant(td_error)(Q_TM1, 1, 0.5, 0.9, Q_T_TARGET, Q_T_ONLINE)
        np.testing.assert_allclose(error, -0.6, rtol=1e-6)

    @chex.all_variants(with_pmap=False)
    def test_terminal_does_not_bootstrap(self):
        for selector in (Q_T_TARGET, Q_T_ONLINE):
            error = self.variant(td_error)(Q_TM1, 0, 0.5, 0.0, Q_T_TARGET, selector)
            np.testing.assert_allclose(error, -0.5, rtol=1e-6)  # 0.5 - q_tm1[0]

    @chex.all_variants(with_pmap=False)
    def test_epsilon_greedy_bootstrap_values_the_policy_an_evaluation_at_epsilon_follows(self):
        # DQN: v = 0.9 * 3 + 0.1 * mean(3, 1) = 2.9; 0.5 + 0.9 * 2.9 - 2 = 1.11.
        # Double: the online net's action 1, v = 0.9 * 1 + 0.1 * 2 = 1.1; 0.5 + 0.9 * 1.1 - 2 = -0.51.
        for selector, expected in ((Q_T_TARGET, 1.11), (Q_T_ONLINE, -0.51)):
            error = self.variant(functools.partial(td_error, bootstrap_epsilon=0.1))(
                Q_TM1, 1, 0.5, 0.9, Q_T_TARGET, selector)
            np.testing.assert_allclose(error, expected, rtol=1e-6)
        # epsilon 1 values the uniformly random policy: 0.5 + 0.9 * 2 - 2
        error = self.variant(functools.partial(td_error, bootstrap_epsilon=1.0))(
            Q_TM1, 1, 0.5, 0.9, Q_T_TARGET, Q_T_ONLINE)
        np.testing.assert_allclose(error, 0.3, rtol=1e-6)

    @chex.all_variants(with_pmap=False)
    def test_losses(self):
        huber = self.variant(lambda e: td_loss(e, "huber"))
        mse = self.variant(lambda e: td_loss(e, "mse"))
        np.testing.assert_allclose(huber(1.2), 0.7, rtol=1e-6)  # linear beyond delta 1: 1.2 - 0.5
        np.testing.assert_allclose(huber(-0.6), 0.18, rtol=1e-6)  # quadratic inside: 0.5 * 0.36
        np.testing.assert_allclose(mse(1.2), 0.72, rtol=1e-6)

    def test_gradient_flows_only_through_q_tm1(self):
        grads = jax.grad(lambda q_tm1, q_t: td_error(q_tm1, 1, 0.5, 0.9, q_t, q_t), argnums=(0, 1))(
            Q_TM1, Q_T_TARGET)
        np.testing.assert_allclose(grads[0], [0.0, -1.0])
        np.testing.assert_allclose(grads[1], [0.0, 0.0])


@functools.lru_cache(maxsize=8)
def _filled_agent(config):
    """Returns `(loop, agent)`: one agent (no seed axis) whose replay holds `learning_starts` random env steps.

    Cached per config: the agent is an immutable pytree, so tests can share it.
    """
    loop = build_loop(config)
    agent = jax.tree.map(lambda x: x[0], loop.init(agent_keys(config)).agents)
    replay = jax.jit(fill_with_random_steps, static_argnums=(0, 2, 4))(
        loop.replay, agent.replay, config.learning_starts // config.num_envs, jax.random.PRNGKey(1), 2)
    return loop, agent.replace(replay=replay, env_steps=jnp.asarray(config.learning_starts, jnp.int32))


def test_target_copied_every_target_update_every_updates(tiny_cartpole):
    loop, agent = _filled_agent(tiny_cartpole)
    update = jax.jit(loop.learner.update)
    every = tiny_cartpole.target_update_every
    copies = 0
    for _ in range(2 * every + 1):
        agent, _ = update(agent)
        n = int(agent.updates)
        same = jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                                         agent.params, agent.target_params))
        assert same == (n % every == 0), f"after update {n}"
        copies += same
    assert copies == 2


def test_adam_state_is_carried_across_updates(tiny_cartpole):
    loop, agent = _filled_agent(tiny_cartpole)
    update = jax.jit(loop.learner.update)
    before = int(agent.updates)
    for _ in range(5):
        agent, metrics = update(agent)
    counts = [leaf for leaf in jax.tree.leaves(agent.opt_state) if leaf.dtype == jnp.int32]
    assert int(agent.updates) == before + 5
    assert counts and all(int(c) == before + 5 for c in counts)  # moments and schedule step counts
    mu = optax.tree_utils.tree_get(agent.opt_state, "mu")
    assert any(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree.leaves(mu))
    assert np.isfinite(float(metrics["loss"]))


def test_updates_reduce_the_loss_on_a_fixed_replay(tiny_cartpole):
    # With the target frozen, DQN is a regression onto fixed targets: the loss must fall.
    import dataclasses

    loop, agent = _filled_agent(dataclasses.replace(tiny_cartpole, target_update_every=10**6))
    update = jax.jit(loop.learner.update)
    losses = []
    for _ in range(300):
        agent, metrics = update(agent)
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:20])


@pytest.mark.parametrize("double, epsilon", [(False, 0.0), (True, 0.0), (True, 0.05)])
def test_learner_loss_matches_hand_computed_batch(tiny_cartpole, double, epsilon):
    """The batched loss inside the learner equals the per-example formula on its own batch."""
    import dataclasses

    config = dataclasses.replace(tiny_cartpole, double_dqn=double, bootstrap_epsilon=epsilon)
    loop, agent = _filled_agent(config)
    network, replay = loop.learner.network, loop.replay
    _, sample_key = jax.random.split(agent.rng_key)
    batch, _ = replay.sample(agent.replay, sample_key)
    q_tm1 = np.asarray(network.apply(agent.params, batch.obs_tm1))
    q_target = np.asarray(network.apply(agent.target_params, batch.obs_t))
    q_online = np.asarray(network.apply(agent.params, batch.obs_t))
    expected = []
    for i in range(config.batch_size):
        choose = q_online[i] if double else q_target[i]
        value = (1 - epsilon) * q_target[i][np.argmax(choose)] + epsilon * q_target[i].mean()
        target = batch.reward_t[i] + batch.discount_t[i] * value
        e = target - q_tm1[i][batch.action_tm1[i]]
        expected.append(0.5 * e * e if abs(e) <= 1 else abs(e) - 0.5)
    _, metrics = jax.jit(loop.learner.update)(agent)
    np.testing.assert_allclose(metrics["loss"], np.mean(expected), rtol=1e-5)


def test_learning_rate_schedule_is_in_env_steps(tiny_cartpole):
    import dataclasses

    from dqn_jax.agent.learner import make_optimizer

    config = dataclasses.replace(tiny_cartpole, learning_rate=1e-3, learning_rate_end=1e-5, learning_starts=400,
                                 train_every=4, learning_rate_decay_start=1_400, learning_rate_decay_steps=1_000)
    _, schedule = make_optimizer(config)
    # update u happens at env step 400 + 4u: constant until env step 1,400 (u = 250), then linear.
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(250)) == pytest.approx(1e-3)
    assert float(schedule(375)) == pytest.approx(0.5 * (1e-3 + 1e-5))  # env step 1,900
    assert float(schedule(500)) == pytest.approx(1e-5)
    assert float(schedule(10_000)) == pytest.approx(1e-5)


def test_late_cadence_moves_the_learning_rate_schedule_with_the_updates(tiny_cartpole):
    import dataclasses

    from dqn_jax.agent.learner import env_step_of_update, make_optimizer

    config = dataclasses.replace(tiny_cartpole, learning_starts=400, train_every=4, train_every_late=16,
                                 train_every_late_start=1_400)
    # 250 updates 4 env steps apart reach env step 1,400; from there they are 16 apart.
    assert [int(env_step_of_update(config, u)) for u in (0, 249, 250, 251, 300)] == [400, 1_396, 1_400, 1_416, 2_200]
    plain = dataclasses.replace(config, train_every_late=0)
    assert [int(env_step_of_update(plain, u)) for u in (250, 300)] == [1_400, 1_600]
    decaying = dataclasses.replace(config, learning_rate=1e-3, learning_rate_end=1e-5,
                                   learning_rate_decay_start=1_400, learning_rate_decay_steps=1_600)
    _, schedule = make_optimizer(decaying)
    assert float(schedule(250)) == pytest.approx(1e-3)
    assert float(schedule(300)) == pytest.approx(0.5 * (1e-3 + 1e-5))  # env step 2,200, half way
    assert float(schedule(350)) == pytest.approx(1e-5)  # env step 3,000


def test_one_agent_unbatched_matches_the_vmapped_update(tiny_cartpole):
    """`over_agents` runs a single agent unbatched (the Nature CNN's path): the same update as
    `jax.vmap` up to float rounding, and several agents still go through `jax.vmap` bit for bit."""
    from dqn_jax.loop.iteration import over_agents

    loop = build_loop(tiny_cartpole)
    agents = loop.init(agent_keys(tiny_cartpole)).agents
    fill = jax.vmap(lambda state, key: fill_with_random_steps(loop.replay, state, 64, key, num_actions=2))
    agents = agents.replace(replay=fill(agents.replay, jax.random.split(jax.random.PRNGKey(1), 1)))
    update = functools.partial(loop.learner.update, with_health=False)
    unbatched, metrics = jax.jit(over_agents(update, unbatch_one=True))(agents)
    batched, batched_metrics = jax.jit(jax.vmap(update))(agents)
    chex.assert_trees_all_equal_shapes_and_dtypes(unbatched, batched)
    chex.assert_trees_all_close(unbatched.params, batched.params, atol=1e-6)
    assert metrics["batch_hash"] == batched_metrics["batch_hash"]  # the same batch was drawn
    two = jax.tree.map(lambda x: jnp.concatenate([x, x]), agents)
    chex.assert_trees_all_equal(jax.jit(over_agents(update, unbatch_one=True))(two),
                                jax.jit(jax.vmap(update))(two))


def test_polyak_target_update_mixes_online_into_target(tiny_cartpole):
    import dataclasses

    config = dataclasses.replace(tiny_cartpole, target_update_tau=0.25, target_update_every=3)
    loop, agent = _filled_agent(config)
    update = jax.jit(loop.learner.update)
    agent = agent.replace(updates=jnp.asarray(1, jnp.int32))  # the next update is number 2, the one after 3
    before = agent.target_params
    agent, _ = update(agent)
    chex.assert_trees_all_equal(agent.target_params, before)  # update 2: no target update
    agent, _ = update(agent)  # update 3: target <- 0.25 online + 0.75 target
    expected = jax.tree.map(lambda p, t: 0.25 * p + 0.75 * t, agent.params, before)
    chex.assert_trees_all_close(agent.target_params, expected, rtol=1e-6, atol=1e-7)
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.allclose(a, b)), agent.target_params, agent.params))


def test_running_average_is_the_mean_up_to_its_horizon_then_exponential():
    params = [{"w": jnp.array([float(k), -2.0 * k])} for k in (4, 8, 2, 6)]
    average = params[0]
    for n, p in enumerate(params, start=1):
        average = average_after(p, average, jnp.asarray(n, jnp.int32), horizon=3)
        if n == 3:  # the plain mean of the first three: (4 + 8 + 2) / 3
            np.testing.assert_allclose(average["w"], [14 / 3, -28 / 3], rtol=1e-6)
    # update 4 weights its params 1 / horizon: 14/3 + (6 - 14/3) / 3
    np.testing.assert_allclose(average["w"], [14 / 3 + (6 - 14 / 3) / 3, -2 * (14 / 3 + (6 - 14 / 3) / 3)], rtol=1e-6)


def test_the_learner_keeps_the_running_average_only_when_asked_and_evaluations_play_it(tiny_cartpole):
    import dataclasses

    _, plain = _filled_agent(tiny_cartpole)
    assert plain.average_params is None and played_params(plain) is plain.params
    config = dataclasses.replace(tiny_cartpole, eval_average_updates=2)
    loop, agent = _filled_agent(config)
    chex.assert_trees_all_equal(agent.average_params, agent.params)
    update = jax.jit(loop.learner.update)
    seen = []
    for _ in range(3):
        agent, _ = update(agent)
        seen.append(agent.params)
    # updates 1 and 2 average their params; update 3 weights its own 1/2: (p1 + p2) / 4 + p3 / 2
    expected = jax.tree.map(lambda a, b, c: (a + b) / 4 + c / 2, *seen)
    chex.assert_trees_all_close(agent.average_params, expected, rtol=1e-5, atol=1e-6)
    assert played_params(agent) is agent.average_params
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.allclose(a, b)), agent.average_params, agent.params))


def test_max_grad_norm_clips_the_gradient_before_adam(tiny_cartpole):
    import dataclasses

    from dqn_jax.agent.learner import make_optimizer

    grads = {"w": jnp.full((4, 4), 25.0)}  # global norm 100
    clipped_optimizer, _ = make_optimizer(dataclasses.replace(tiny_cartpole, max_grad_norm=1e-3, adam_eps=1e-4))
    plain_optimizer, _ = make_optimizer(dataclasses.replace(tiny_cartpole, max_grad_norm=0.0, adam_eps=1e-4))
    step, _ = clipped_optimizer.update(grads, clipped_optimizer.init(grads))
    # Adam ignores a gradient's scale except through its epsilon, so a step on the clipped gradient
    # (norm 1e-3, each entry 2.5e-4, comparable to epsilon 1e-4) is visibly shorter than on the raw one.
    expected, _ = plain_optimizer.update(jax.tree.map(lambda g: g * 1e-5, grads), plain_optimizer.init(grads))
    unclipped, _ = plain_optimizer.update(grads, plain_optimizer.init(grads))
    np.testing.assert_allclose(step["w"], expected["w"], rtol=1e-5)
    assert float(jnp.abs(step["w"]).max()) < 0.8 * float(jnp.abs(unclipped["w"]).max())


def _primitives(jaxpr) -> set[str]:
    """Every primitive name in a closed jaxpr, sub-jaxprs included."""
    names = set()
    for eqn in jaxpr.jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    names |= _primitives(sub)
    return names


def test_redo_stays_a_branch_when_the_agents_are_mapped(tiny_cartpole):
    # With the agents' shared schedule passed unbatched, the recycle (a fresh network init and
    # the rewrites) is a cond taken only when due; decided per agent under vmap, it became a
    # select that computed the recycle at every update.
    import dataclasses

    config = dataclasses.replace(tiny_cartpole, num_seeds=2, redo_every=10)
    loop = build_loop(config)
    agents = loop.init(agent_keys(config)).agents
    shared = jax.make_jaxpr(lambda a: jax.vmap(functools.partial(
        loop.learner.update, with_health=False, redo_due=a.updates[0] % 10 == 9))(a))(agents)
    per_agent = jax.make_jaxpr(jax.vmap(functools.partial(loop.learner.update, with_health=False)))(agents)
    assert "cond" in _primitives(shared) and "cond" not in _primitives(per_agent)


@pytest.mark.parametrize("prioritized", [False, True])
def test_health_decided_in_the_program_measures_what_the_static_flag_does(tiny_cartpole, prioritized):
    """`with_health` as a traced bool: where it holds, the health statistics of `with_health=True`;
    where not, zeros under the same names; the update itself the same in every case, and the
    statistics a branch of their own (a cond two agents mapped with an unbatched flag keep)."""
    import dataclasses

    config = dataclasses.replace(tiny_cartpole, prioritized_replay=prioritized)
    loop, agent = _filled_agent(config)
    update = loop.learner.update
    static_on, static_off = jax.jit(update)(agent), jax.jit(functools.partial(update, with_health=False))(agent)
    traced = jax.jit(lambda a, measure: update(a, with_health=measure))
    measured, skipped = traced(agent, jnp.asarray(True)), traced(agent, jnp.asarray(False))
    for state, _ in (static_off, measured, skipped):
        chex.assert_trees_all_equal(state, static_on[0])
    assert "health" not in static_off[1]
    chex.assert_trees_all_equal(measured[1], static_on[1])
    assert skipped[1]["health"].keys() == static_on[1]["health"].keys()
    assert all(float(v) == 0 for v in skipped[1]["health"].values())
    assert any(float(v) != 0 for v in measured[1]["health"].values())
    two = jax.tree.map(lambda x: jnp.stack([x, x]), agent)

    def conds(*flag):  # the conds in two mapped agents' program: `with_health` traced, or False
        program = jax.make_jaxpr(lambda a, *f: jax.vmap(functools.partial(update, with_health=f[0] if f else False))(a))
        return str(program(two, *flag)).count(" cond[")

    assert conds(jnp.asarray(True)) == conds() + 1  # not turned into a select that measures every update


def test_learn_metrics_reduce_as_declared_and_an_undeclared_one_fails():
    from dqn_jax.agent.learner import LEARN_METRIC_REDUCTIONS, _check_declared, reduce_learn_metrics

    stacked = {"loss": jnp.array([1.0, 3.0]), "batch_hash": jnp.array([7, 9], jnp.uint32),
               "recycled": jnp.array([2, 5], jnp.int32)}
    assert jax.tree.map(int, reduce_learn_metrics(stacked)) == {"loss": 2, "batch_hash": 9, "recycled": 7}
    assert set(LEARN_METRIC_REDUCTIONS) >= {"loss", "q_mean", "td_abs_mean", "learning_rate"}
    _check_declared({"loss": 0.0, "health": {}})
    with pytest.raises(KeyError, match="without a reduction in LEARN_METRIC_REDUCTIONS: new_metric"):
        _check_declared({"loss": 0.0, "new_metric": 1.0})
