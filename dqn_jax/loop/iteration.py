"""One iteration of training as pure functions: act, write the env step to replay, learn when due.

`make_iteration(config, learner, replay)` binds the settings once (as `make_replay` does) and
returns the functions; they take and return agents [S, ...] and the env bookkeeping `EnvCarry`,
and know nothing of where the env step comes from. The fused loop (EnvPool's XLA step inside a
`lax.scan`) and the host loop (EnvPool stepped from Python) both run an iteration through
`Iteration.after_act`, which is where the order of the two halves — write then learn, or with
`overlap_learning` learn then write — is written, once.

The "learn now?" branch depends only on the shared iteration counter, so it stays a real
`lax.cond` (a vmapped predicate would turn it into a select that always pays for the update).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from dqn_jax.agent.acting import epsilon_greedy, epsilon_schedule
from dqn_jax.agent.fingerprint import tree_hash
from dqn_jax.agent.learner import AgentState, Learner, redo_is_due, reduce_learn_metrics, zeros_shaped_like
from dqn_jax.agent.prioritized import Prioritized
from dqn_jax.agent.replay import Replay, frame_of
from dqn_jax.config import CNN_TORSOS, Config
from dqn_jax.loop import envs
from dqn_jax.loop.records import ExperienceRecord, FingerprintRecord, HealthRecord, LearnRecord, StepRecord


@struct.dataclass
class EnvCarry:
    """What the loop remembers between env steps, each [S, E, ...]."""

    obs: jax.Array  # observation each env will act on
    first: jax.Array  # bool: `obs` starts a new frame stack (after a hard reset)
    dead: jax.Array  # bool: `obs` is terminal, so the next env step is EnvPool's reset step
    dead_hard: jax.Array  # bool: ... and the episode really ended (not only a life)
    episode_return: jax.Array  # float32 raw return of the game in progress
    episode_length: jax.Array  # int32 env steps of the game in progress
    lives: jax.Array  # int32 lives left (Atari; 0 where the game has none)


def initial_carry(obs: jax.Array) -> EnvCarry:
    """Returns the env bookkeeping for freshly reset envs with observations `obs` [S, E, ...]."""
    shape = obs.shape[:2]
    return EnvCarry(obs=obs, first=jnp.ones(shape, bool), dead=jnp.zeros(shape, bool),
                    dead_hard=jnp.zeros(shape, bool), episode_return=jnp.zeros(shape, jnp.float32),
                    episode_length=jnp.zeros(shape, jnp.int32), lives=jnp.zeros(shape, jnp.int32))


class LearnedRecords(NamedTuple):
    """What one vector step's learning reports: the `StepRecord` but its experience."""

    learn: LearnRecord
    health: HealthRecord
    fingerprint: FingerprintRecord

    def with_experience(self, experience: ExperienceRecord) -> StepRecord:
        """Returns the vector step's whole record."""
        return StepRecord(learn=self.learn, experience=experience, health=self.health, fingerprint=self.fingerprint)


def over_agents(fn, unbatch_one: bool):
    """Returns `fn` mapped over the leading agent axis of its arguments: `jax.vmap(fn)`, except
    that with `unbatch_one` a single agent runs unbatched (squeezed, then given its axis back).

    The maths is the same; the speed and the float rounding are not. On XLA's CPU backend a CNN
    update of one agent ran slower as a batch of 1 (its matmuls become batched contractions;
    docs/DESIGN.md, "One agent unbatched"); for CartPole's small MLP it made no difference, so
    the loop unbatches a CNN's single agent only and CartPole keeps the bits it had.
    """

    def mapped(*args):
        if unbatch_one and {leaf.shape[0] for leaf in jax.tree.leaves(args)} == {1}:
            result = fn(*jax.tree.map(lambda x: x[0], args))
            return jax.tree.map(lambda x: x[None], result)
        return jax.vmap(fn)(*args)

    return mapped


def ordered(handle, agents: AgentState):
    """Returns `(handle, agents)` through an optimization barrier: what uses either comes after
    everything that made both. The replay bypasses it: only the learner's state needs ordering."""
    handle, learner_part = jax.lax.optimization_barrier((handle, agents.replace(replay=None)))
    return handle, learner_part.replace(replay=agents.replay)


def unordered(handle, agents: AgentState):
    """Returns `(handle, agents)` as they are: the host loop has nothing to order."""
    return handle, agents


def write_after_updates(agents: AgentState) -> AgentState:
    """Returns `agents` unchanged in value, with the replay's write position computed from the
    update count (+ min(updates, 0) = + 0), so that the write depends on the updates' result.
    Without it, XLA copied the whole replay at every step when the updates read it before the
    write (an ordering through an optimization barrier did not prevent it)."""
    replay = agents.replay
    return agents.replace(replay=replay.replace(total_steps=replay.total_steps + jnp.minimum(agents.updates, 0)))


def _split_agents(array, num_seeds: int):
    return array.reshape(num_seeds, -1, *array.shape[1:])


def episode_bookkeeping(carry: EnvCarry, epsilon, next_obs, terminated, truncated, hard, raw_reward, lives):
    """Returns `(ExperienceRecord, next EnvCarry)` for one env step; every argument is [S, E, ...].

    `carry.dead` marks EnvPool's reset steps (the step after any done): they are not real steps,
    and their reward is 0. `hard` marks a game over or time limit, not a lost life.

    A new game can also start inside a soft reset: EnvPool's `Reset()` runs its random no-ops after
    a lost life too, and a game over during them restarts the game with no flag set. Its lives
    going up is the sign (they only go down within a game, but for a bonus life earned in the
    no-ops): the game that ended is counted as one that ended at the life loss, and the new
    observation starts a new stack, as EnvPool's own stack does.
    """
    real_step = ~carry.dead
    episode_return = carry.episode_return + raw_reward
    episode_length = carry.episode_length + real_step.astype(jnp.int32)
    new_game_in_soft_reset = carry.dead & ~carry.dead_hard & (lives > carry.lives)
    ended = (hard & real_step) | new_game_in_soft_reset
    life_lost = real_step & ~hard & (lives < carry.lives)
    count = lambda x: jnp.sum(x, axis=1, dtype=jnp.int32)  # noqa: E731  [S, E] -> [S]
    experience = ExperienceRecord(
        epsilon=epsilon, episode_done=ended, episode_return=episode_return, episode_length=episode_length,
        episode_truncated=ended & truncated, real_steps=count(real_step),
        reward_nonzero_steps=count(real_step & (raw_reward != 0)),
        life_losses=count(life_lost), life_loss_terminals=count(life_lost & terminated))
    next_carry = EnvCarry(
        obs=next_obs,
        first=carry.dead & carry.dead_hard | new_game_in_soft_reset,  # the step just taken started a game
        dead=terminated | truncated,
        dead_hard=hard,
        episode_return=jnp.where(ended, 0.0, episode_return),
        episode_length=jnp.where(ended, 0, episode_length),
        lives=lives,
    )
    return experience, next_carry


class Iteration(NamedTuple):
    """The functions of one iteration, settings bound (see `make_iteration`)."""

    act: Callable
    """`act(agents, obs [S, E, ...]) -> (agents, actions [S, E] int32, epsilon [S])`: ε-greedy actions."""
    write_step: Callable
    """`write_step(agents, carry, actions, epsilon, step_out) -> (agents, EnvCarry, ExperienceRecord)`:
    EnvPool's 5-tuple `step_out` (all S*E envs) written to every agent's replay."""
    learn_if_due: Callable
    """`learn_if_due(agents, iteration []) -> (agents, iteration + 1, LearnedRecords)`: a round of
    updates when one is due, the fingerprint when one is due."""
    over_agents: Callable
    """`over_agents(fn)`: the learner's per-agent `fn` mapped over the agents as the updates map it."""
    after_act: Callable
    """`after_act(agents, carry, iteration, actions, epsilon, handle, receive, order) -> (agents,
    EnvCarry, iteration + 1, handle, StepRecord)`: the rest of the iteration once the actions are
    sent; `receive(handle) -> (handle, step_out)` gives the env step, `order(handle, agents)`
    (`ordered` or `unordered`) ties the updates to the env step around them."""


def make_iteration(config: Config, learner: Learner, replay: Replay) -> Iteration:
    """Returns the iteration's functions for a run's config, learner and one agent's replay."""
    # One CNN agent's updates run unbatched (see `over_agents`). Acting and replay writes
    # stay vmapped: they pass the replay through, and squeezing it out and back made XLA copy it
    # at every step (acting 16x slower, measured).
    learner_over_agents = functools.partial(over_agents, unbatch_one=config.torso in CNN_TORSOS)
    write_step = _make_write_step(config, replay, learner.prioritized)
    learn_if_due = _make_learn_if_due(config, learner, learner_over_agents)

    def after_act(agents, carry, iteration, actions, epsilon, handle, receive, order):
        if config.overlap_learning:  # learn while the envs step, then write what they returned
            handle, agents = order(handle, agents)
            agents, iteration, learned = learn_if_due(agents, iteration)
            handle, agents = order(handle, agents)
            handle, step_out = receive(handle)
            agents, carry, experience = write_step(write_after_updates(agents), carry, actions, epsilon, step_out)
        else:
            handle, step_out = receive(handle)
            agents, carry, experience = write_step(agents, carry, actions, epsilon, step_out)
            agents, iteration, learned = learn_if_due(agents, iteration)
        return agents, carry, iteration, handle, learned.with_experience(experience)

    return Iteration(act=_make_act(config, learner), write_step=write_step, learn_if_due=learn_if_due,
                     over_agents=learner_over_agents, after_act=after_act)


def _make_act(config: Config, learner: Learner):
    """Returns `Iteration.act` (ε-greedy on the online network, ε from the agent's env steps)."""
    epsilon_of = epsilon_schedule(config)

    def act(agents: AgentState, obs: jax.Array):
        def act_one(agent: AgentState, agent_obs):
            rng_key, explore_key = jax.random.split(agent.rng_key)
            epsilon = epsilon_of(agent.env_steps)
            q_values = learner.network.apply(agent.params, agent_obs)
            return agent.replace(rng_key=rng_key), epsilon_greedy(explore_key, q_values, epsilon), epsilon

        return jax.vmap(act_one)(agents, obs)

    return act


def _make_write_step(config: Config, replay: Replay, prioritized: Prioritized | None):
    """Returns `Iteration.write_step` (with prioritized replay, the write also moves the priorities)."""

    def write_step(agents, carry: EnvCarry, actions, epsilon, step_out):
        S = carry.obs.shape[0]  # the agents of this device (all of them without a mesh)
        next_obs, reward, terminated, truncated, info = step_out
        hard = envs.hard_done(terminated, truncated, info)
        raw_reward = envs.raw_reward(reward, info)
        split = lambda x: _split_agents(jnp.asarray(x), S)  # noqa: E731
        lives = info["lives"] if "lives" in info else jnp.zeros_like(jnp.asarray(terminated), jnp.int32)
        next_obs, reward, terminated, truncated, hard, raw_reward, lives = map(
            split, (next_obs, reward, terminated, truncated, hard, raw_reward, lives))
        lives = lives.astype(jnp.int32)

        def add_one(agent: AgentState, obs, action, reward, terminal, is_transition, first):
            step = (frame_of(obs, config.frame_stack), action, reward, terminal, is_transition, first)
            if prioritized:
                state, priorities = prioritized.add(agent.replay, agent.priorities, *step)
            else:
                state, priorities = replay.add(agent.replay, *step), agent.priorities
            return agent.replace(replay=state, env_steps=agent.env_steps + config.num_envs, priorities=priorities)

        stored_reward = reward * config.reward_scale if config.reward_scale != 1.0 else reward
        agents = jax.vmap(add_one)(agents, carry.obs, actions, stored_reward, terminated, ~carry.dead, carry.first)
        experience, new_carry = episode_bookkeeping(carry, epsilon, next_obs, terminated, truncated, hard,
                                                    raw_reward, lives)
        return agents, new_carry, experience

    return write_step


def _make_learn_round(config: Config, learner: Learner, learner_over_agents):
    """Returns `(learn_round, skip)`, the two branches of a vector step's learning, each
    `(learner_part, replay_state, health_due bool []) -> (learner_part, metrics)` on the agents'
    state without its replay; `learn_round` measures the health statistics in the round's last
    update where `health_due` holds (zeros where not)."""

    def learn_round(learner_part: AgentState, replay_state, health_due: jax.Array):
        rounds = config.updates_per_vector_step

        def update(part, health):
            # ReDo's schedule is the agents' shared one: decided once, unbatched, outside the map.
            redo_due = redo_is_due(part.updates[0], config.redo_every) if config.redo_every else None
            new, metrics = learner_over_agents(functools.partial(learner.update, with_health=health,
                                                                 redo_due=redo_due))(
                part.replace(replay=replay_state))
            return new.replace(replay=None), metrics

        # The health statistics are a branch inside the last update (`learner.update` with a traced
        # `with_health`), not a second copy of the round: the program holds the update once per
        # place it runs (the CartPole preset's chunk: 6,788 StableHLO lines, not 10,221; docs/DESIGN.md).
        if rounds == 1:
            return update(learner_part, health_due)
        learner_part, metrics = jax.lax.scan(lambda part, _: update(part, False), learner_part, None,
                                             length=rounds - 1)
        learner_part, last = update(learner_part, health_due)
        combined = reduce_learn_metrics({k: jnp.concatenate([m, last[k][None]]) for k, m in metrics.items()})
        combined["health"] = last["health"]
        return learner_part, combined

    def skip(learner_part, replay_state, health_due):
        return learner_part, zeros_shaped_like(jax.eval_shape(learn_round, learner_part, replay_state, health_due)[1])

    return learn_round, skip


def learning_period(config: Config, iteration: jax.Array) -> jax.Array | int:
    """Returns how many vector steps apart the rounds of updates are at loop iteration `iteration`
    (1-based, [] int): `vector_steps_per_update`, and with `train_every_late` set, its late cadence
    from the iteration whose env steps reach `train_every_late_start`."""
    if not config.train_every_late:  # a Python int: without it the program is as before, bit for bit
        return config.vector_steps_per_update
    late = iteration * config.num_envs >= config.train_every_late_start
    return jnp.where(late, config.vector_steps_per_update_late, config.vector_steps_per_update)


def updates_after(config: Config, env_steps: int) -> int:
    """Returns how many updates each agent has made once the loop has run `env_steps` env steps
    (`env_steps // num_envs` iterations): the iterations `learn_if_due` finds due under
    `learning_period`, times `updates_per_vector_step`. Computed on the host, for records and
    plots that compare runs by updates (an evaluation's update count)."""
    last = env_steps // config.num_envs
    first = max(1, -(-config.learning_starts // config.num_envs))  # the first iteration that may learn (1-based)
    # The first iteration of the late cadence; without one, past the last iteration.
    first_late = -(-config.train_every_late_start // config.num_envs) if config.train_every_late else last + 1

    def multiples(period: int, low: int, high: int) -> int:  # of `period` in [low, high]
        return high // period - (low - 1) // period if high >= low else 0

    rounds = (multiples(config.vector_steps_per_update, first, min(last, first_late - 1))
              + multiples(config.vector_steps_per_update_late, max(first, first_late), last))
    return rounds * config.updates_per_vector_step


def _make_learn_if_due(config: Config, learner: Learner, learner_over_agents):
    """Returns `Iteration.learn_if_due`."""
    learn_round, skip = _make_learn_round(config, learner, learner_over_agents)
    # Rounds of updates between two health measurements (a round is `updates_per_vector_step` updates).
    health_rounds = max(1, config.health_every // config.updates_per_vector_step)

    def learn_if_due(agents, iteration):
        S = agents.updates.shape[0]
        iteration = iteration + 1
        period = learning_period(config, iteration)
        due = (iteration % period == 0) & (iteration * config.num_envs >= config.learning_starts)
        updates_before = agents.updates[0]  # the same for every agent: one shared schedule
        # Health statistics add reductions to every update they run in: measure them every `health_every`.
        health_due = due & ((iteration // period) % health_rounds == 0)
        # The replay is read-only in updates: it enters the branches but does not come out of them
        # (prioritized replay's priorities, which the updates write, are in the learner's part).
        learner_part, learn_metrics = jax.lax.cond(due, learn_round, skip, agents.replace(replay=None),
                                                   agents.replay, health_due)
        agents = learner_part.replace(replay=agents.replay)
        every = config.fingerprint_every
        fingerprint = due & (agents.updates[0] // every > updates_before // every)
        params_hash, params_norm = jax.lax.cond(
            fingerprint,
            lambda params: (jax.vmap(tree_hash)(params), jax.vmap(optax.tree.norm)(params)),
            lambda params: (jnp.zeros((S,), jnp.uint32), jnp.zeros((S,), jnp.float32)),
            agents.params)
        record = LearnedRecords(
            learn=LearnRecord(learned=due, updates=agents.updates, loss=learn_metrics["loss"],
                              q_mean=learn_metrics["q_mean"], td_abs_mean=learn_metrics["td_abs_mean"],
                              learning_rate=learn_metrics["learning_rate"], recycled=learn_metrics["recycled"]),
            health=HealthRecord(measured=health_due, stats=learn_metrics["health"]),
            fingerprint=FingerprintRecord(due=fingerprint, batch_hash=learn_metrics["batch_hash"],
                                          params_hash=params_hash, params_norm=params_norm))
        return agents, iteration, record

    return learn_if_due
