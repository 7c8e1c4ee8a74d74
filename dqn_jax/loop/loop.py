"""The training loop: runs chunks of iterations (`iteration.py`) over the agents and their envs.

One iteration steps every environment once. Two ways to run iterations share the same code:
- `fused`: `jit(lax.scan(iteration))` with EnvPool's XLA step inside, so a whole chunk of env steps,
  replay writes, updates and target copies is one compiled call with the state donated;
- `host`: EnvPool stepped from Python between a jitted act and a jitted rest of the iteration.

Agents carry a leading seed axis [S] (S = `num_seeds`, 1 by default) and are vmapped; EnvPool's
XLA handle has no vmap rule, so the env step runs once for the whole S*E pool outside the vmap.
With several devices the agents are sharded over them (`placement.py`). This module owns the
pools and EnvPool's XLA handles, the state between chunks, and the choice between the two loops.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from dqn_jax.agent.learner import AgentState, Learner, make_learner
from dqn_jax.agent.networks import make_network
from dqn_jax.agent.replay import Replay, end_in_flight, make_replay
from dqn_jax.config import Config, ConfigError
from dqn_jax.loop import envs
from dqn_jax.loop.iteration import EnvCarry, initial_carry, make_iteration, ordered, over_agents, unordered
from dqn_jax.loop.placement import Placement, local_mesh_positions, seed_mesh, sharded_chunk
from dqn_jax.loop.records import StepRecord

__all__ = ["FusedLoopUnavailable", "Loop", "LoopState", "agent_keys", "build_loop", "make_replay_for",
           "over_agents"]


class FusedLoopUnavailable(UserWarning):
    """EnvPool's XLA interface failed to build or compile with the installed jax; the host loop runs instead."""


class LoopState(NamedTuple):
    """The full state of a run in progress: agents, env bookkeeping, shared counter."""

    agents: AgentState  # leading [S] axis
    carry: EnvCarry
    iteration: jax.Array  # [] int32 vector steps taken (same for every agent)
    handle: Any  # EnvPool XLA handle (fused loop) or None (host loop)


class Loop:
    """Runs chunks of iterations for one run: its pools, agents' placement and compiled chunk."""

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
        self.placement = Placement(mesh)
        self.iteration = make_iteration(config, learner, replay)
        self.mode = config.loop
        self._xla = None  # one (handle, recv, send, step) per pool
        if self.mode == "fused":
            try:
                self._xla = [p.xla() for p in self.pools]
            except Exception as err:  # EnvPool built without its XLA extension, or for another jax
                self._fall_back_to_host("could not be built", err)
        if self.mode == "fused":
            self._probe_envpool_xla()
        self._chunk = jax.jit(self._chunk_fn, static_argnums=1, donate_argnums=0)
        self._act = jax.jit(self.iteration.act)
        self._observe = jax.jit(self._observe_fn, donate_argnums=0)

    def over_agents(self, fn):
        """The learner's per-agent `fn` mapped over the agents as the loop's updates map it (one
        Nature-CNN agent unbatched: `iteration.over_agents`); for the benchmarks."""
        return self.iteration.over_agents(fn)

    # --- state -------------------------------------------------------------------------------
    @property
    def pools(self) -> list:
        """The training pools: one, or one per device."""
        return self._pools

    @property
    def num_devices(self) -> int:
        """Devices the agents are sharded over (1: all on the default device)."""
        return self.placement.num_devices

    def _reset_obs(self) -> jax.Array:
        """Resets every pool; returns the observations [S, E, ...], sharded like the agents."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's Box precision notes for CartPole
            obs = np.concatenate([p.reset()[0] for p in self.pools])
        return self.placement.place_local(obs.reshape(-1, self.config.num_envs, *obs.shape[1:]))

    def init(self, keys: jax.Array) -> LoopState:
        """Returns the initial state: fresh agents (one per key in `keys` [S]) and reset envs."""
        obs = self._reset_obs()
        # Jitted so the replay's zeros are allocated once at [S, ...] (on each agent's device), not
        # built then broadcast (2x peak).
        init = jax.jit(jax.vmap(self.learner.init), out_shardings=self.placement.sharding)
        agents = init(self.placement.place(keys), obs)
        return LoopState(agents, self.initial_carry(obs), jnp.zeros((), jnp.int32), self._handle())

    def resume(self, agents: AgentState, iteration: int) -> LoopState:
        """Returns the state for restored `agents` [S]: envs reset, in-flight episodes cut in replay."""
        obs = self._reset_obs()
        agents = self.placement.place(agents)
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
        sharding = self.placement.sharding
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)

    def initial_carry(self, obs: jax.Array) -> EnvCarry:
        """Returns the env bookkeeping for freshly reset envs with observations `obs` [S, E, ...]."""
        return self.placement.place(initial_carry(obs))

    def _handle(self):
        """Returns EnvPool's XLA handle; with a mesh, every pool's, stacked [D, ...] and sharded."""
        if self.mode == "host":
            return None
        if self.mesh is None:
            return self._xla[0][0]
        return self.placement.place_local(np.stack([np.asarray(x[0]) for x in self._xla]))

    # --- fused: a whole chunk in one compiled call -------------------------------------------
    def _chunk_fn(self, state: LoopState, num_iterations: int):
        if self.mesh is None:
            _, recv, send, _ = self._xla[0]
            return self._scan(state, num_iterations, send, recv)
        return sharded_chunk(self.placement, self._scan, [x[2] for x in self._xla], [x[1] for x in self._xla],
                             state, num_iterations)

    def _scan(self, state: LoopState, num_iterations: int, send, recv):
        """`num_iterations` iterations of the agents in `state`, stepping their envs with EnvPool's
        `send` (handle, actions) -> handle and `recv` handle -> (handle, step), its `step` in halves."""
        iteration = self.iteration

        def iteration_fn(state: LoopState, _):
            agents, actions, epsilon = iteration.act(state.agents, state.carry.obs)
            handle = send(state.handle, actions.reshape(-1))
            agents, carry, count, handle, record = iteration.after_act(
                agents, state.carry, state.iteration, actions, epsilon, handle, recv, ordered)
            return LoopState(agents, carry, count, handle), record

        return jax.lax.scan(iteration_fn, state, None, length=num_iterations)

    # --- host: EnvPool stepped from Python ---------------------------------------------------
    def _observe_fn(self, agents, carry, iteration, actions, epsilon, step_out):
        agents, carry, iteration, _, record = self.iteration.after_act(
            agents, carry, iteration, actions, epsilon, None, lambda handle: (handle, step_out), unordered)
        return agents, carry, iteration, record

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

        Any error here is the program's own (a network's, a learner's): EnvPool's XLA step was
        compiled on its own when the loop was built (`_probe_envpool_xla`).
        """
        if self.mode == "host":
            return self._host_chunk(state, num_iterations)
        return self._chunk(state, num_iterations)

    def _probe_envpool_xla(self) -> None:
        """Compiles one send and receive of each pool's XLA step alone (nothing runs: the envs do
        not move), so that an EnvPool built for another jax — its custom call changed with nearly
        every jax release — is found here, and the run goes on with the host loop, which gives
        the same numbers; an error in the chunk's own program is then never taken for EnvPool's."""
        for pool, (handle, recv, send, _) in zip(self.pools, self._xla, strict=True):
            actions = jax.ShapeDtypeStruct((pool.config["num_envs"],), jnp.int32)
            try:
                jax.jit(lambda h, a, send=send, recv=recv: recv(send(h, a))).lower(handle, actions).compile()
            except Exception as err:
                self._fall_back_to_host("failed to compile", err)
                return

    def lower_fused_chunk(self, state: LoopState, num_iterations: int):
        """Returns the fused chunk of `num_iterations` vector steps traced and lowered for `state`
        (a `jax.stages.Lowered`: `.as_text()` its StableHLO, `.compile()` the executable)."""
        return self._chunk.lower(state, num_iterations)

    def fused_chunk_memory(self, state: LoopState, num_iterations: int):
        """Returns XLA's memory analysis of the fused chunk compiled for `state` (its
        `temp_size_in_bytes` is what the chunk allocates beside its arguments)."""
        return self.lower_fused_chunk(state, num_iterations).compile().memory_analysis()

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
