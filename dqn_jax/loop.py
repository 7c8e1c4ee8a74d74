"""The training loop: ε-greedy acting, EnvPool stepping, replay writes and updates.

One iteration steps every environment once. Two ways to run iterations share the same code:
- `fused`: `jit(lax.scan(iteration))` with EnvPool's XLA step inside, so a whole chunk of env steps,
  replay writes, updates and target copies is one compiled call with the state donated;
- `host`: EnvPool stepped from Python between a jitted act and a jitted observe-and-learn.

Agents carry a leading seed axis [S] (S = `num_seeds`, 1 by default) and are vmapped; EnvPool's
XLA handle has no vmap rule, so the env step runs once for the whole S*E pool outside the vmap.
The "learn now?" branch depends only on the shared iteration counter, so it stays a real
`lax.cond` (a vmapped predicate would turn it into a select that always pays for the update).

An iteration writes the env step to replay, then runs the updates due. With `overlap_learning`
the updates come first, between EnvPool's send and its receive, so that the envs (CPU threads)
step while the learner (a GPU) runs; they then sample the replay as it was before the step.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dqn_jax import envs
from dqn_jax.acting import epsilon_greedy, epsilon_schedule
from dqn_jax.config import Config, ConfigError
from dqn_jax.fingerprint import tree_hash
from dqn_jax.learner import AgentState, Learner, make_learner
from dqn_jax.networks import make_network
from dqn_jax.records import ExperienceRecord, FingerprintRecord, HealthRecord, LearnRecord, StepRecord
from dqn_jax.replay import Replay, end_in_flight, frame_of, make_replay

SEED_AXIS = "seeds"  # the mesh axis agents are sharded over


def seed_mesh(num_seeds: int) -> Mesh | None:
    """Returns a 1-D mesh over the most devices that divide `num_seeds` evenly (every device then
    holds the same number of agents), or None when that is one device. With several processes
    (`distributed.py`) it spans every process's devices, in process order.

    Raises:
      ConfigError: several processes, and `num_seeds` is not a multiple of their devices (a
        process without agents would have nothing to step).
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if jax.process_count() > 1 and num_seeds % len(devices):
        raise ConfigError(f"num_seeds ({num_seeds}) must be a multiple of the {len(devices)} devices of the "
                          f"{jax.process_count()} processes, so that every device trains the same number of agents")
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    return None if count == 1 else Mesh(np.array(devices[:count]), (SEED_AXIS,))


def local_mesh_positions(mesh: Mesh) -> list[int]:
    """Returns the positions on `mesh` of this process's devices (all of them with one process)."""
    return [i for i, device in enumerate(mesh.devices.flat) if device.process_index == jax.process_index()]


class FusedLoopUnavailable(UserWarning):
    """EnvPool's XLA interface failed to build or compile with the installed jax; the host loop runs instead."""


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


class LearnedRecords(NamedTuple):
    """What one vector step's learning reports: the `StepRecord` but its experience."""

    learn: LearnRecord
    health: HealthRecord
    fingerprint: FingerprintRecord

    def with_experience(self, experience: ExperienceRecord) -> StepRecord:
        """Returns the vector step's whole record."""
        return StepRecord(learn=self.learn, experience=experience, health=self.health, fingerprint=self.fingerprint)


class LoopState(NamedTuple):
    """The full state of a run in progress: agents, env bookkeeping, shared counter."""

    agents: AgentState  # leading [S] axis
    carry: EnvCarry
    iteration: jax.Array  # [] int32 vector steps taken (same for every agent)
    handle: Any  # EnvPool XLA handle (fused loop) or None (host loop)


def over_agents(fn, unbatch_one: bool):
    """Returns `fn` mapped over the leading agent axis of its arguments: `jax.vmap(fn)`, except
    that with `unbatch_one` a single agent runs unbatched (squeezed, then given its axis back).

    The maths is the same; the speed and the float rounding are not. On XLA's CPU backend the
    Nature-CNN update of one agent ran 7-10% slower as a batch of 1 (its matmuls become batched
    contractions; benchmarks/update_cost.py). For CartPole's small MLP the difference was within
    the machine's noise, so the loop unbatches the Nature CNN's single agent only and CartPole
    keeps the bits it had.
    """

    def mapped(*args):
        if unbatch_one and {leaf.shape[0] for leaf in jax.tree.leaves(args)} == {1}:
            result = fn(*jax.tree.map(lambda x: x[0], args))
            return jax.tree.map(lambda x: x[None], result)
        return jax.vmap(fn)(*args)

    return mapped


def _ordered(handle, agents: AgentState):
    """Returns `(handle, agents)` through an optimization barrier: what uses either comes after
    everything that made both. The replay bypasses it: only the learner's state needs ordering."""
    handle, learner_part = jax.lax.optimization_barrier((handle, agents.replace(replay=None)))
    return handle, learner_part.replace(replay=agents.replay)


def _write_after_updates(agents: AgentState) -> AgentState:
    """Returns `agents` unchanged in value, with the replay's write position computed from the
    update count (+ min(updates, 0) = + 0), so that the write depends on the updates' result.
    Without it, XLA copied the whole replay at every step when the updates read it before the
    write (an ordering through an optimization barrier did not prevent it)."""
    replay = agents.replay
    return agents.replace(replay=replay.replace(total_steps=replay.total_steps + jnp.minimum(agents.updates, 0)))


def _zeros_shaped_like(shapes):
    """Returns zeros with the shapes and dtypes of a tree of `jax.ShapeDtypeStruct`."""
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)


def _split_agents(array, num_seeds: int):
    return array.reshape(num_seeds, -1, *array.shape[1:])


def _episode_bookkeeping(carry: EnvCarry, epsilon, next_obs, terminated, truncated, hard, raw_reward, lives):
    """Returns `(ExperienceRecord, next EnvCarry)` for one env step; every argument is [S, E, ...].

    `carry.dead` marks EnvPool's reset steps (the step after any done): they are not real steps,
    and their reward is 0. `hard` marks a game over or time limit, not a lost life.
    """
    real_step = ~carry.dead
    episode_return = carry.episode_return + raw_reward
    episode_length = carry.episode_length + real_step.astype(jnp.int32)
    ended = hard & real_step
    life_lost = real_step & ~hard & (lives < carry.lives)
    count = lambda x: jnp.sum(x, axis=1, dtype=jnp.int32)  # noqa: E731  [S, E] -> [S]
    experience = ExperienceRecord(
        epsilon=epsilon, episode_done=ended, episode_return=episode_return, episode_length=episode_length,
        episode_truncated=ended & truncated, real_steps=count(real_step),
        reward_nonzero_steps=count(real_step & (raw_reward != 0)),
        life_losses=count(life_lost), life_loss_terminals=count(life_lost & terminated))
    next_carry = EnvCarry(
        obs=next_obs,
        first=carry.dead & carry.dead_hard,  # the step just taken was a hard reset
        dead=terminated | truncated,
        dead_hard=hard,
        episode_return=jnp.where(ended, 0.0, episode_return),
        episode_length=jnp.where(ended, 0, episode_length),
        lives=lives,
    )
    return experience, next_carry


class Loop:
    """Builds the pool, the agents and the compiled iteration functions for one run."""

    def __init__(self, config: Config, pool, learner: Learner, replay: Replay, mesh: Mesh | None = None):
        """`pool` is the training pool from `envs.make_train_pool(config)` — or, with `mesh` (agents
        sharded over its devices), a list of one pool per device holding that device's agents'
        envs. The loop owns them."""
        self.config = config
        self.learner = learner
        self.replay = replay
        self._pools = list(pool) if isinstance(pool, (list, tuple)) else [pool]
        self.pool = self._pools[0]  # the one pool, or the first device's
        self.mesh = mesh
        self.epsilon = epsilon_schedule(config)
        # Rounds of updates between two health measurements (a round is `updates_per_vector_step` updates).
        self.health_rounds = max(1, config.health_every // config.updates_per_vector_step)
        self.mode = config.loop
        self._xla = None  # one (handle, recv, send, step) per pool
        self._fused_compiled = False  # the fused chunk compiled once: later failures are not EnvPool's
        if self.mode == "fused":
            try:
                self._xla = [p.xla() for p in self.pools]
            except Exception as err:  # EnvPool built without its XLA extension, or for another jax
                self._fall_back_to_host("could not be built", err)
        self._chunk = jax.jit(self._chunk_fn, static_argnums=1, donate_argnums=0)
        self._act = jax.jit(self._act_fn)
        self._observe = jax.jit(self._observe_fn, donate_argnums=0)

    def over_agents(self, fn):
        """The learner's `fn` mapped over the agents (see `over_agents`: one Nature-CNN agent runs
        unbatched). Acting and replay writes stay vmapped: they pass the replay through, and
        squeezing it out and back made XLA copy it at every step (acting 16x slower, measured)."""
        return over_agents(fn, unbatch_one=self.config.torso == "nature_cnn")

    # --- state -------------------------------------------------------------------------------
    @property
    def pools(self) -> list:
        """The training pools: `[self.pool]` (which tests may wrap), or one per device."""
        return self._pools if len(self._pools) > 1 else [self.pool]

    @property
    def num_devices(self) -> int:
        """Devices the agents are sharded over (1: all on the default device)."""
        return 1 if self.mesh is None else self.mesh.size

    def _reset_obs(self) -> jax.Array:
        """Resets every pool; returns the observations [S, E, ...], sharded like the agents."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's Box precision notes for CartPole
            obs = np.concatenate([p.reset()[0] for p in self.pools])
        return self._place_local(obs.reshape(-1, self.config.num_envs, *obs.shape[1:]))

    @property
    def _seed_sharding(self) -> NamedSharding | None:
        return None if self.mesh is None else NamedSharding(self.mesh, P(SEED_AXIS))

    def _place(self, tree):
        """Returns `tree` (leading [S] axis, the same value in every process) sharded over the
        mesh's devices, or as it is without one."""
        sharding = self._seed_sharding
        if sharding is None:
            return tree

        def place(x):
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            # Across processes only host values can be placed: each process keeps its shards.
            return jax.device_put(np.asarray(x) if jax.process_count() > 1 else x, sharding)

        return jax.tree.map(place, tree)

    def _place_local(self, local: np.ndarray) -> jax.Array:
        """Returns the agents' array [S, ...] from this process's block of it (its devices' agents,
        all S without several processes)."""
        if self.mesh is None:
            return jnp.asarray(local)
        return jax.make_array_from_process_local_data(self._seed_sharding, local)

    def init(self, keys: jax.Array) -> LoopState:
        """Returns the initial state: fresh agents (one per key in `keys` [S]) and reset envs."""
        obs = self._reset_obs()
        # Jitted so the replay's zeros are allocated once at [S, ...] (on each agent's device), not
        # built then broadcast (2x peak).
        agents = jax.jit(jax.vmap(self.learner.init), out_shardings=self._seed_sharding)(self._place(keys), obs)
        return LoopState(agents, self.initial_carry(obs), jnp.zeros((), jnp.int32), self._handle())

    def resume(self, agents: AgentState, iteration: int) -> LoopState:
        """Returns the state for restored `agents` [S]: envs reset, in-flight episodes cut in replay."""
        obs = self._reset_obs()
        agents = self._place(agents)
        agents = agents.replace(replay=jax.jit(jax.vmap(end_in_flight), donate_argnums=0)(agents.replay))
        return LoopState(agents, self.initial_carry(obs), jnp.asarray(iteration, jnp.int32), self._handle())

    def abstract_agents(self, keys: jax.Array) -> AgentState:
        """Returns the shapes and dtypes of the agents `init` would build (nothing allocated), with
        their sharding over the mesh when there is one (a restore then places each shard)."""
        facts = envs.facts(self.pool)
        obs = jax.ShapeDtypeStruct((self.config.num_seeds, self.config.num_envs, *facts.obs_shape), facts.obs_dtype)
        shapes = jax.eval_shape(jax.vmap(self.learner.init), keys, obs)
        if self.mesh is None:
            return shapes
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self._seed_sharding), shapes)

    def initial_carry(self, obs: jax.Array) -> EnvCarry:
        """Returns the env bookkeeping for freshly reset envs with observations `obs` [S, E, ...]."""
        shape = obs.shape[:2]
        return self._place(EnvCarry(obs=obs, first=jnp.ones(shape, bool), dead=jnp.zeros(shape, bool),
                                    dead_hard=jnp.zeros(shape, bool), episode_return=jnp.zeros(shape, jnp.float32),
                                    episode_length=jnp.zeros(shape, jnp.int32), lives=jnp.zeros(shape, jnp.int32)))

    def _handle(self):
        """Returns EnvPool's XLA handle; with a mesh, every pool's, stacked [D, ...] and sharded."""
        if self.mode == "host":
            return None
        if self.mesh is None:
            return self._xla[0][0]
        return self._place_local(np.stack([np.asarray(x[0]) for x in self._xla]))

    # --- one iteration, in two halves around the env step ----------------------------------
    def _act_fn(self, agents: AgentState, obs: jax.Array):
        def act_one(agent: AgentState, agent_obs):
            rng_key, explore_key = jax.random.split(agent.rng_key)
            epsilon = self.epsilon(agent.env_steps)
            q_values = self.learner.network.apply(agent.params, agent_obs)
            return agent.replace(rng_key=rng_key), epsilon_greedy(explore_key, q_values, epsilon), epsilon

        return jax.vmap(act_one)(agents, obs)

    def _after_step(self, agents, carry: EnvCarry, iteration, actions, epsilon, step_out):
        """Writes the step to replay and learns when due (in `overlap_learning`'s order: learns,
        then writes); returns `(agents, next EnvCarry, iteration + 1, StepRecord)`."""
        if self.config.overlap_learning:
            agents, iteration, learned = self._learn_if_due(agents, iteration)
            agents, carry, experience = self._write_step(_write_after_updates(agents), carry, actions, epsilon,
                                                         step_out)
        else:
            agents, carry, experience = self._write_step(agents, carry, actions, epsilon, step_out)
            agents, iteration, learned = self._learn_if_due(agents, iteration)
        return agents, carry, iteration, learned.with_experience(experience)

    def _write_step(self, agents, carry: EnvCarry, actions, epsilon, step_out):
        """Writes one env step's transitions to the agents' replays; returns `(agents, next
        EnvCarry, ExperienceRecord)`."""
        config, S = self.config, carry.obs.shape[0]  # the agents of this device (all of them without a mesh)
        next_obs, reward, terminated, truncated, info = step_out
        hard = envs.hard_done(terminated, truncated, info)
        raw_reward = envs.raw_reward(reward, info)
        split = lambda x: _split_agents(jnp.asarray(x), S)  # noqa: E731
        lives = info["lives"] if "lives" in info else jnp.zeros_like(jnp.asarray(terminated), jnp.int32)
        next_obs, reward, terminated, truncated, hard, raw_reward, lives = map(
            split, (next_obs, reward, terminated, truncated, hard, raw_reward, lives))
        lives = lives.astype(jnp.int32)

        def add_one(agent: AgentState, obs, action, reward, terminal, is_transition, first):
            replay = self.replay.add(agent.replay, frame_of(obs, config.frame_stack), action, reward,
                                     terminal, is_transition, first)
            return agent.replace(replay=replay, env_steps=agent.env_steps + config.num_envs)

        stored_reward = reward * config.reward_scale if config.reward_scale != 1.0 else reward
        agents = jax.vmap(add_one)(agents, carry.obs, actions, stored_reward, terminated, ~carry.dead, carry.first)
        experience, new_carry = _episode_bookkeeping(carry, epsilon, next_obs, terminated, truncated, hard,
                                                     raw_reward, lives)
        return agents, new_carry, experience

    def _learn_if_due(self, agents, iteration):
        """Counts one vector step and runs a round of updates when one is due; returns `(agents,
        iteration + 1, LearnedRecords)`."""
        config, S = self.config, agents.updates.shape[0]
        iteration = iteration + 1
        due = (iteration % config.vector_steps_per_update == 0) & (
            iteration * config.num_envs >= config.learning_starts)
        updates_before = agents.updates[0]  # the same for every agent: one shared schedule
        # Health statistics add reductions to every update they run in: measure them every `health_every`.
        health_due = due & ((iteration // config.vector_steps_per_update) % self.health_rounds == 0)
        # The replay is read-only in updates: it enters the branches but does not come out of them.
        learner_part, learn_metrics = jax.lax.cond(
            due,
            lambda part, replay: jax.lax.cond(health_due, self._learn_with_health, self._learn_without_health,
                                              part, replay),
            self._skip_learn, agents.replace(replay=None), agents.replay)
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

    def _learn(self, learner_part: AgentState, replay, with_health: bool = True):
        """One round of `updates_per_vector_step` updates of the agents `learner_part` (their state
        without the replay) on `replay`; returns the new `learner_part` and the round's metrics,
        health statistics from the last update."""
        rounds = self.config.updates_per_vector_step

        def update(learner_part, health: bool):
            new, metrics = self.over_agents(functools.partial(self.learner.update, with_health=health))(
                learner_part.replace(replay=replay))
            return new.replace(replay=None), metrics

        if rounds == 1:
            return update(learner_part, with_health)
        learner_part, metrics = jax.lax.scan(lambda part, _: update(part, False), learner_part, None,
                                             length=rounds - 1)
        learner_part, last = update(learner_part, with_health)
        combined = {k: jnp.concatenate([m, last[k][None]]) for k, m in metrics.items()}
        combined = {k: m[-1] if k == "batch_hash" else m.sum(axis=0) if k == "recycled" else m.mean(axis=0)
                    for k, m in combined.items()}
        if with_health:
            combined["health"] = last["health"]
        return learner_part, combined

    def _learn_with_health(self, learner_part: AgentState, replay):
        return self._learn(learner_part, replay, with_health=True)

    def _learn_without_health(self, learner_part: AgentState, replay):
        learner_part, metrics = self._learn(learner_part, replay, with_health=False)
        health = _zeros_shaped_like(jax.eval_shape(self._learn_with_health, learner_part, replay)[1]["health"])
        return learner_part, {**metrics, "health": health}

    def _skip_learn(self, learner_part: AgentState, replay):
        return learner_part, _zeros_shaped_like(jax.eval_shape(self._learn_with_health, learner_part, replay)[1])

    # --- fused: a whole chunk in one compiled call -------------------------------------------
    def _chunk_fn(self, state: LoopState, num_iterations: int):
        if self.mesh is None:
            _, recv, send, _ = self._xla[0]
            return self._scan(state, num_iterations, send, recv)
        return self._sharded_chunk(state, num_iterations)

    def _scan(self, state: LoopState, num_iterations: int, send, recv):
        """`num_iterations` iterations of the agents in `state`, stepping their envs with EnvPool's
        `send` (handle, actions) -> handle and `recv` handle -> (handle, step), its `step` in halves."""
        overlap = self.config.overlap_learning

        def iteration_fn(state: LoopState, _):
            agents, actions, epsilon = self._act_fn(state.agents, state.carry.obs)
            handle = send(state.handle, actions.reshape(-1))
            if overlap:
                # The barriers order the updates after the send and before the receive (they
                # share no data with either), so the envs step while the learner runs.
                handle, agents = _ordered(handle, agents)
                agents, iteration, learned = self._learn_if_due(agents, state.iteration)
                handle, agents = _ordered(handle, agents)
                handle, step_out = recv(handle)
                agents, carry, experience = self._write_step(_write_after_updates(agents), state.carry, actions,
                                                             epsilon, step_out)
                record = learned.with_experience(experience)
            else:
                handle, step_out = recv(handle)
                agents, carry, iteration, record = self._after_step(
                    agents, state.carry, state.iteration, actions, epsilon, step_out)
            return LoopState(agents, carry, iteration, handle), record

        return jax.lax.scan(iteration_fn, state, None, length=num_iterations)

    def _sharded_chunk(self, state: LoopState, num_iterations: int):
        """The chunk with agents sharded over the mesh: each device runs the scan on its agents and
        steps its own pool. EnvPool's XLA functions are bound to one pool when traced (the handle
        operand does not select it), so each device picks its pool's by its index on the mesh;
        only the records leave the devices."""
        recvs = [x[1] for x in self._xla]  # this process's pools, for its devices in mesh order
        sends = [x[2] for x in self._xla]
        first_local = self._first_local_device()
        flat_records: dict = {}

        def pool_index():
            return jax.lax.axis_index(SEED_AXIS) - first_local

        def send(handle, actions):
            return jax.lax.switch(pool_index(), sends, handle, actions)

        def recv(handle):
            return jax.lax.switch(pool_index(), recvs, handle)

        def local(state: LoopState):
            new, records = self._scan(state._replace(handle=state.handle[0]), num_iterations, send, recv)
            # Records that are the same on every device ([K]: was an update due, ...) get a seed axis
            # so that one out spec fits all; the first agent's copy is taken below.
            flat_records["shared"] = jax.tree.map(lambda x: x.ndim == 1, records)
            records = jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], new.carry.obs.shape[0]))
                                   if x.ndim == 1 else x, records)
            return new._replace(handle=new.handle[None]), records

        seeds = P(SEED_AXIS)
        specs = LoopState(seeds, seeds, P(), seeds)
        new, records = jax.shard_map(local, mesh=self.mesh, in_specs=(specs,), out_specs=(specs, P(None, SEED_AXIS)),
                                     check_vma=False)(state)
        records = jax.tree.map(lambda x, shared: x[:, 0] if shared else x, records, flat_records["shared"])
        return new, records

    def _first_local_device(self) -> int:
        """Returns the mesh position of this process's first device (its devices are contiguous)."""
        local = local_mesh_positions(self.mesh)
        assert local == list(range(local[0], local[0] + len(local))), "a process's devices must be contiguous"
        return local[0]

    # --- host: EnvPool stepped from Python ---------------------------------------------------
    def _observe_fn(self, agents, carry, iteration, actions, epsilon, step_out):
        return self._after_step(agents, carry, iteration, actions, epsilon, step_out)

    def _host_step(self, actions: np.ndarray):
        """Steps every pool with its agents' block of `actions` [S * E]; returns EnvPool's 5-tuple
        for all of them (the info keys the loop reads)."""
        outs = [p.step(a) for p, a in zip(self.pools, np.split(actions, len(self.pools)), strict=True)]
        obs, reward, terminated, truncated = (np.concatenate([o[i] for o in outs]) for i in range(4))
        info = {k: np.concatenate([o[4][k] for o in outs]) for k in ("terminated", "reward", "lives")
                if k in outs[0][4]}
        return obs, reward, terminated, truncated, info

    def _host_chunk(self, state: LoopState, num_iterations: int):
        agents, carry, iteration = state.agents, state.carry, state.iteration
        records = []
        for _ in range(num_iterations):
            agents, actions, epsilon = self._act(agents, carry.obs)
            obs, reward, terminated, truncated, info = self._host_step(np.asarray(actions).reshape(-1))
            agents, carry, iteration, record = self._observe(
                agents, carry, iteration, actions, epsilon, (obs, reward, terminated, truncated, info))
            records.append(record)
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *records)
        return LoopState(agents, carry, iteration, None), stacked

    def run_chunk(self, state: LoopState, num_iterations: int) -> tuple[LoopState, StepRecord]:
        """Returns the state after `num_iterations` vector steps and their stacked records [K, ...].

        The first fused chunk is where EnvPool's XLA step gets traced and compiled with this jax;
        if that fails (its custom call changed with nearly every jax release), the run goes on with
        the host loop, which gives the same numbers.
        """
        if self.mode == "host":
            return self._host_chunk(state, num_iterations)
        if self._fused_compiled:
            return self._chunk(state, num_iterations)
        try:
            result = self._chunk(state, num_iterations)
        except Exception as err:
            if "RESOURCE_EXHAUSTED" in str(err) or any(
                    leaf.is_deleted() for leaf in jax.tree.leaves(state) if isinstance(leaf, jax.Array)):
                raise  # out of memory, or it failed while running with the state donated: nothing to fall back to
            self._fall_back_to_host("failed to compile", err)
            return self._host_chunk(state._replace(handle=None), num_iterations)
        self._fused_compiled = True
        return result

    def fused_chunk_memory(self, state: LoopState, num_iterations: int):
        """Returns XLA's memory analysis of the fused chunk compiled for `state` (its
        `temp_size_in_bytes` is what the chunk allocates beside its arguments)."""
        return self._chunk.lower(state, num_iterations).compile().memory_analysis()

    def _fall_back_to_host(self, what: str, err: Exception) -> None:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        problem = f"EnvPool's XLA step {what} with jax {jax.__version__} ({type(err).__name__}: {reason})"
        if jax.process_count() > 1:
            raise ConfigError(f"{problem}, and several processes need the fused loop")
        warnings.warn(f"{problem}; training with --loop=host instead (same results, slower)", FusedLoopUnavailable,
                      stacklevel=3)
        self.mode = "host"


def make_replay_for(config: Config, facts: envs.EnvFacts) -> Replay:
    """Returns the replay functions for one agent of a run with this config and these env facts."""
    return make_replay(config.replay_steps, config.num_envs, facts.frame_shape, facts.obs_dtype,
                       config.frame_stack, config.batch_size, gamma=config.gamma, n_step=config.n_step)


def build_loop(config: Config, network=None, optimizer=None, resumed_at: int = 0) -> Loop:
    """Returns the loop for a validated config: training pool, network, replay, learner.

    `network` (a Flax module) and `optimizer` (an optax transformation) replace the config's;
    `resumed_at` (env steps) seeds the pool for a resumed run.
    """
    if config.loop == "host" and jax.process_count() > 1:
        raise ConfigError("loop = 'host' runs in one process: several processes need the fused loop (--loop=fused)")
    mesh = seed_mesh(config.num_seeds) if config.loop == "fused" else None
    if mesh is None:
        pool = envs.make_train_pool(config, resumed_at)
    else:  # one pool per device of this process, for that device's agents
        per_device = config.num_seeds // mesh.size
        pool = [envs.make_train_pool(config, resumed_at, agents=range(d * per_device, (d + 1) * per_device))
                for d in local_mesh_positions(mesh)]
    facts = envs.facts(pool[0] if isinstance(pool, list) else pool)
    network = network or make_network(config, facts.num_actions)
    replay = make_replay_for(config, facts)
    return Loop(config, pool, make_learner(config, network, replay, optimizer), replay, mesh)


def agent_keys(config: Config) -> jax.Array:
    """Returns one PRNG key per agent [S, 2], from the agents' seeds."""
    return jnp.stack([jax.random.PRNGKey(envs.agent_seed(config, s)) for s in range(config.num_seeds)])
