"""The agent's state, the TD loss (DQN and Double DQN targets) and the jit-able update.

`AgentState` holds everything that changes during training. The optax state is created once, in
`Learner.init`, and carried for the whole run: re-creating Adam would silently throw away its
moment estimates.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from dqn_jax.agent import redo
from dqn_jax.agent.fingerprint import tree_hash
from dqn_jax.agent.health_fields import PER_EFFECTIVE_FRACTION, PER_WEIGHT_MAX
from dqn_jax.agent.health_stats import update_health
from dqn_jax.agent.prioritized import Prioritized, PriorityState, importance_exponent, make_prioritized
from dqn_jax.agent.replay import Replay, ReplayState
from dqn_jax.config import Config

REDO_KEY_STREAM = 0x7ED0  # folds ReDo's initialisation key off each update's sampling key


@struct.dataclass
class AgentState:
    """One agent. Arrays gain a leading [S] axis when several seeds train together."""

    params: chex.ArrayTree  # online network
    target_params: chex.ArrayTree  # target network: a periodic copy (or Polyak average) of `params`
    opt_state: optax.OptState  # Adam moments and step count, carried for the whole run
    replay: ReplayState
    rng_key: jax.Array  # advanced at every act and every update
    env_steps: jax.Array  # [] int32, transitions collected (all envs together)
    updates: jax.Array  # [] int32, gradient steps taken
    # Prioritized replay's sum tree (None without it): apart from `replay`, as the updates write it.
    priorities: PriorityState | None = None
    # The running average of `params` that evaluations play (None without `eval_average_updates`).
    average_params: chex.ArrayTree | None = None


def played_params(agent: AgentState) -> chex.ArrayTree:
    """Returns the params evaluations play: the running average when the agent keeps one, else the
    online params (same structure and shapes, a leading [S] axis when `agent` has one)."""
    return agent.params if agent.average_params is None else agent.average_params


def td_error(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_target: jax.Array,
    q_t_selector: jax.Array,
    bootstrap_epsilon: float = 0.0,
) -> jax.Array:
    """Returns the TD error of one transition: r_t + discount_t * v_t - q_tm1[a_tm1].

    v_t = q_t_target[a*], a* = argmax q_t_selector. Pass the target network's values as
    `q_t_selector` for the DQN target (Mnih et al. 2015), the online network's for Double DQN
    (van Hasselt et al. 2016). With `bootstrap_epsilon` ε > 0 (a static float), v_t is the value
    of the ε-greedy policy instead of the greedy one, (1 - ε) q_t_target[a*] + ε mean(q_t_target):
    Expected SARSA's target (van Seijen et al. 2009), whose greedy policy is the best one to follow
    when a fraction ε of its actions will be random, as in an evaluation at ε.

    Args:
      q_tm1: Q values at the earlier observation [A].
      a_tm1: the action taken [] (int).
      r_t: the reward that followed [].
      discount_t: the bootstrap's discount (gamma ** steps), or 0 when the return ended at a terminal [].
      q_t_target: the target network's Q values at the next observation [A].
      q_t_selector: the Q values whose argmax picks the bootstrap action [A].
      bootstrap_epsilon: the ε of the policy the bootstrap values (0: greedy, Q-learning).
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_selector], [1, 0, 0, 0, 1, 1])
    next_value = q_t_target[jnp.argmax(q_t_selector)]
    if bootstrap_epsilon:  # a Python branch: at 0 the program is the DQN target's, bit for bit
        next_value = (1.0 - bootstrap_epsilon) * next_value + bootstrap_epsilon * jnp.mean(q_t_target)
    target = jax.lax.stop_gradient(r_t + discount_t * next_value)
    return target - q_tm1[a_tm1]


def td_loss(error: jax.Array, kind: str) -> jax.Array:
    """Returns the loss of one TD error []: Huber with delta 1, or half the squared error."""
    if kind == "huber":
        return optax.huber_loss(error, delta=1.0)
    return 0.5 * jnp.square(error)


# How a vector step's several updates report one value of each update metric (`Learner.update`'s
# metrics; `health` is the round's last update's): a metric missing here fails when the loop is traced.
LEARN_METRIC_REDUCTIONS: dict[str, str] = {
    "loss": "mean", "q_mean": "mean", "td_abs_mean": "mean", "learning_rate": "mean",
    "batch_hash": "last",  # the fingerprint of the round's last batch
    "recycled": "sum",  # neurons ReDo recycled over the round
}


def redo_is_due(updates_before: jax.Array, every: int) -> jax.Array:
    """Returns whether ReDo recycles in the update that follows `updates_before` updates (bool [])."""
    return (updates_before + 1) % every == 0


def reduce_learn_metrics(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Returns one value per metric from `metrics` stacked over a round's updates [U, ...], each
    reduced as `LEARN_METRIC_REDUCTIONS` declares."""
    reducers = {"mean": lambda m: m.mean(axis=0), "sum": lambda m: m.sum(axis=0), "last": lambda m: m[-1]}
    return {k: reducers[LEARN_METRIC_REDUCTIONS[k]](m) for k, m in metrics.items()}


def zeros_shaped_like(shapes):
    """Returns zeros with the shapes and dtypes of a tree of `jax.ShapeDtypeStruct`."""
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)


def _check_declared(metrics: dict) -> None:
    """Raises KeyError, when `update` is traced, for a metric without a declared reduction."""
    missing = sorted(set(metrics) - set(LEARN_METRIC_REDUCTIONS) - {"health"})
    if missing:
        raise KeyError(f"learn metrics without a reduction in LEARN_METRIC_REDUCTIONS: {', '.join(missing)}; "
                       "declare each beside its definition")


class Learner(NamedTuple):
    """The network, the optimizer and the pure functions that train one agent."""

    network: nn.Module
    optimizer: optax.GradientTransformation
    learning_rate: optax.Schedule  # of the update count
    init: Callable[[jax.Array, jax.Array], AgentState]
    update: Callable[[AgentState], tuple[AgentState, dict]]
    prioritized: Prioritized | None  # the replay's priorities, None for uniform replay


def env_step_of_update(config: Config, update_count: jax.Array) -> jax.Array:
    """Returns the env step at which update `update_count` (0-based, [] int) happens:
    `learning_starts + u * train_every`, and with `train_every_late` set, `train_every_late` env
    steps apart from `train_every_late_start` on (the updates before it counted at `train_every`)."""
    early = config.learning_starts + update_count * config.train_every
    if not config.train_every_late:  # a Python branch: without it the program is as before, bit for bit
        return early
    first_late = -(-max(0, config.train_every_late_start - config.learning_starts) // config.train_every)
    switch = config.learning_starts + first_late * config.train_every
    return jnp.where(update_count < first_late, early, switch + (update_count - first_late) * config.train_every_late)


def make_optimizer(config: Config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns Adam (with optional global-norm clipping) and its learning-rate schedule.

    The schedule is defined over env steps (constant until `learning_rate_decay_start`, then
    linear over `learning_rate_decay_steps`) and evaluated at the env step of each update
    (`env_step_of_update`).
    """
    by_env_step = optax.join_schedules(
        [optax.constant_schedule(config.learning_rate),
         optax.linear_schedule(config.learning_rate, config.learning_rate_end,
                               max(1, config.learning_rate_decay_steps))],
        boundaries=[config.learning_rate_decay_start],
    )

    def schedule(update_count):
        return by_env_step(env_step_of_update(config, update_count))

    adam = optax.adam(schedule, eps=config.adam_eps)
    if config.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam), schedule
    return adam, schedule


def make_loss(network: nn.Module, *, double: bool, kind: str, bootstrap_epsilon: float = 0.0) -> Callable:
    """Returns `loss(params, target_params, batch, weights) -> (loss [], (td_errors [B], q_tm1
    [B, A], intermediates))`: the mean TD loss of a batch, weighted by `weights` [B] when not None
    (prioritized replay's importance weights); Double DQN's bootstrap action when `double`; the
    bootstrap valued under an ε-greedy policy when `bootstrap_epsilon` > 0 (`td_error`)."""

    def loss(params, target_params, batch, weights):
        q_tm1, activations = network.apply(params, batch.obs_tm1, mutable=["intermediates"])
        q_t_target = network.apply(target_params, batch.obs_t)
        q_t_selector = jax.lax.stop_gradient(network.apply(params, batch.obs_t)) if double else q_t_target
        errors = jax.vmap(lambda *t: td_error(*t, bootstrap_epsilon=bootstrap_epsilon))(
            q_tm1, batch.action_tm1, batch.reward_t, batch.discount_t, q_t_target, q_t_selector)
        losses = jax.vmap(lambda e: td_loss(e, kind))(errors)
        mean = jnp.mean(losses if weights is None else weights * losses)
        return mean, (errors, q_tm1, activations.get("intermediates", {}))

    return loss


def target_after(params: chex.ArrayTree, target_params: chex.ArrayTree, num_updates: jax.Array, *,
                 every: int, tau: float) -> chex.ArrayTree:
    """Returns the target network after update `num_updates` []: every `every` updates a copy of
    `params` (tau 1) or the Polyak average `tau * params + (1 - tau) * target`; else unchanged."""
    due = num_updates % every == 0
    return jax.tree.map(lambda p, t: jnp.where(due, p if tau == 1.0 else tau * p + (1.0 - tau) * t, t),
                        params, target_params)


def average_after(params: chex.ArrayTree, average: chex.ArrayTree, num_updates: jax.Array, *,
                  horizon: int) -> chex.ArrayTree:
    """Returns the running average after update `num_updates` [] (1 for the first):
    `average + w * (params - average)` with w = max(1 / horizon, 1 / num_updates), i.e. the mean of
    every update's params for the first `horizon` updates, then their exponential moving average."""
    weight = jnp.maximum(1.0 / horizon, 1.0 / num_updates.astype(jnp.float32))
    return jax.tree.map(lambda p, a: a + weight * (p - a), params, average)


def draw_batch(replay: Replay, prioritized: Prioritized | None, state: AgentState, key: jax.Array,
               beta: jax.Array | None) -> tuple:
    """Returns `(batch, index [B], weights [B], probabilities [B])` drawn from the agent's replay:
    by priority with importance weights of exponent `beta` when `prioritized`, else uniformly
    (weights and probabilities None)."""
    if prioritized is None:
        batch, index = replay.sample(state.replay, key)
        return batch, index, None, None
    return prioritized.sample(state.replay, state.priorities, key, beta)


def recycle_when_due(due: jax.Array, params: chex.ArrayTree, opt_state: optax.OptState,
                     optimizer: optax.GradientTransformation, network: nn.Module, sample_key: jax.Array,
                     obs: jax.Array, intermediates: dict, tau: float) -> tuple:
    """Returns `(params, opt_state, recycled int32 [])`: where `due` (bool []) holds, ReDo's
    recycle of the neurons `intermediates` show τ-dormant, else the inputs unchanged and 0."""
    # Its own key stream (folded off the sampling key), so the run's other draws stay as without ReDo.
    fresh_key = jax.random.fold_in(sample_key, REDO_KEY_STREAM)
    return jax.lax.cond(
        due,
        lambda: redo.recycle(params, opt_state, optimizer, network.init(fresh_key, obs), intermediates, tau),
        lambda: (params, opt_state, jnp.zeros((), jnp.int32)))


def make_learner(config: Config, network: nn.Module, replay: Replay,
                 optimizer: optax.GradientTransformation | None = None) -> Learner:
    """Returns the learner for one agent; pass `optimizer` to replace the config's Adam."""
    default_optimizer, schedule = make_optimizer(config)
    optimizer = optimizer or default_optimizer
    loss_fn = make_loss(network, double=config.double_dqn, kind=config.loss,
                        bootstrap_epsilon=config.bootstrap_epsilon)
    redo_every, redo_tau = config.redo_every, config.redo_tau
    average_horizon = config.eval_average_updates
    prioritized = (make_prioritized(replay, exponent=config.priority_exponent, epsilon=config.priority_epsilon)
                   if config.prioritized_replay else None)
    beta_of = importance_exponent(config.importance_exponent_start, config.importance_exponent_end,
                                  config.learning_starts, config.total_steps)

    def init(key: jax.Array, example_obs: jax.Array) -> AgentState:
        """Returns a fresh agent; `example_obs` is one batch of observations [E, ...]."""
        init_key, agent_key = jax.random.split(key)
        params = network.init(init_key, example_obs)
        return AgentState(
            params=params,
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=optimizer.init(params),
            replay=replay.init(),
            rng_key=agent_key,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
            priorities=prioritized.init() if prioritized else None,
            average_params=jax.tree.map(jnp.copy, params) if average_horizon else None,
        )

    def update(state: AgentState, with_health: bool | jax.Array = True, redo_due: jax.Array | None = None
               ) -> tuple[AgentState, dict]:
        """Returns the agent after one gradient step on a sampled batch, and its metrics.

        `redo_due` (bool []): whether ReDo recycles in this update; by default it is decided from
        the agent's own update count. Agents mapped with `vmap` share one schedule: the caller
        passes it decided once, unbatched, so that the recycle stays a real branch (a batched
        predicate turns `lax.cond` into a select that builds fresh params at every update).

        With prioritized replay the batch is drawn by priority, the loss is the importance-weighted
        mean, and the batch's TD errors are written back as its slots' priorities.

        Metrics: `loss`, `q_mean`, `td_abs_mean`, `learning_rate` (float32 []), `batch_hash`
        (uint32 [], the sampled indices' hash), `recycled` (int32 [], neurons ReDo recycled in this
        update) and, when `with_health` is True, `health` (a dict of float32 [], see
        `health_stats.update_health`; with prioritized replay also `per_effective_fraction` and
        `per_weight_max`, see `prioritized.Prioritized.stats`). `with_health` may also be a traced
        bool []: `health` is then always there, measured where it holds and zeros where not, and
        a program that measures some updates and not others holds one copy of the update.
        """
        rng_key, sample_key = jax.random.split(state.rng_key)
        beta = beta_of(state.env_steps) if prioritized else None
        batch, index, weights, probabilities = draw_batch(replay, prioritized, state, sample_key, beta)
        (loss, (errors, q_tm1, intermediates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, batch, weights)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        num_updates = state.updates + 1
        recycled = jnp.zeros((), jnp.int32)
        if redo_every:
            params, opt_state, recycled = recycle_when_due(
                redo_is_due(state.updates, redo_every) if redo_due is None else redo_due, params, opt_state,
                optimizer, network, sample_key, batch.obs_tm1, intermediates, redo_tau)
        target_params = target_after(params, state.target_params, num_updates,
                                     every=config.target_update_every, tau=config.target_update_tau)
        metrics = {  # each with its reduction over a round of updates in LEARN_METRIC_REDUCTIONS
            "loss": loss,
            "q_mean": jnp.mean(q_tm1),
            "td_abs_mean": jnp.mean(jnp.abs(errors)),
            "learning_rate": schedule(state.updates),
            "batch_hash": tree_hash(index),
            "recycled": recycled,
        }

        def measure_health() -> dict:
            health = update_health(
                q_values=q_tm1, td_errors=errors, loss=loss, rewards=batch.reward_t, grads=grads,
                updates=updates, new_params=params, opt_state=opt_state,
                intermediates=intermediates, q_values_after=network.apply(params, batch.obs_tm1))
            if prioritized:
                fraction, weight_max = prioritized.stats(state.priorities, probabilities, beta)
                health.update({PER_EFFECTIVE_FRACTION: fraction, PER_WEIGHT_MAX: weight_max})
            return health

        if isinstance(with_health, bool):
            if with_health:
                metrics["health"] = measure_health()
        else:  # decided in the program: one copy of the update, the statistics in a branch of their own
            metrics["health"] = jax.lax.cond(with_health, measure_health,
                                             lambda: zeros_shaped_like(jax.eval_shape(measure_health)))
        _check_declared(metrics)
        priorities = prioritized.update(state.priorities, index, errors) if prioritized else state.priorities
        average_params = (average_after(params, state.average_params, num_updates, horizon=average_horizon)
                          if average_horizon else None)
        new_state = state.replace(params=params, target_params=target_params, opt_state=opt_state,
                                  rng_key=rng_key, updates=num_updates, priorities=priorities,
                                  average_params=average_params)
        return new_state, metrics

    return Learner(network, optimizer, schedule, init, update, prioritized)
