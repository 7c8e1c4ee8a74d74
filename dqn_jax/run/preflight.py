"""Before anything is allocated: what a run will hold in memory, against what the machine has.

The replay dominates (one frame per env step: 7,067 B per Atari transition, measured in
docs/results.md), then the parameters (online, target and Adam's two moments, per agent). A run
that cannot fit is refused with one line naming both numbers and the fix, instead of dying in an
allocation traceback minutes later; `describe` is the line a run prints at its start.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp

from dqn_jax.config import Config
from dqn_jax.errors import ConfigError

ATARI_FRAME = (84, 84)  # EnvPool's Atari frames: 84x84 grey, uint8
CARTPOLE_OBS = 4  # CartPole's observation: 4 float32 values
MAX_ATARI_ACTIONS = 18  # the full action space: an upper bound for the parameter count
# Beside the replay and parameters: the JAX runtime, compiled programs, EnvPool's emulators and
# the batches in flight. Measured for one Pong agent with a 1M replay: 8.61 GB resident for 7.07 GB
# of replay (benchmarks/results/pong_memory_cpu.json); 2 GiB covers that difference with room.
FIXED_MARGIN_BYTES = 2 * 2**30


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """What a run holds, in bytes, for all its agents together."""

    replay: int
    params: int  # online, target, Adam's first and second moments
    num_params: int  # one agent's network (before pools exist: with the largest action set)
    on_device: bool  # True when replay and params live in an accelerator's memory

    @property
    def total(self) -> int:
        return self.replay + self.params


def transition_bytes(config: Config) -> int:
    """Returns the replay's bytes per transition: one frame (or observation) plus action, reward and flags."""
    frame = math.prod(ATARI_FRAME) if config.is_atari else CARTPOLE_OBS * 4
    return frame + 4 + 4 + 3  # int32 action, float32 reward, terminal / is-transition / first flags


def count_params(config: Config) -> int:
    """Returns one agent's parameter count, from shapes alone (nothing is allocated or compiled)."""
    from dqn_jax.agent.networks import make_network

    if config.is_atari:
        num_actions, obs = MAX_ATARI_ACTIONS, jax.ShapeDtypeStruct((1, config.frame_stack, *ATARI_FRAME), jnp.uint8)
    else:
        num_actions, obs = 2, jax.ShapeDtypeStruct((1, CARTPOLE_OBS), jnp.float32)
    network = make_network(config, num_actions)
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), obs)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def priority_bytes(config: Config) -> int:
    """Returns one agent's prioritized-replay sum tree in bytes (0 without prioritized replay):
    2P float32 nodes, P the power of two at or above the ring's slots."""
    from dqn_jax.agent import sum_tree

    return 2 * sum_tree.leaf_count(config.replay_steps * config.num_envs) * 4 if config.prioritized_replay else 0


def plan(config: Config) -> MemoryPlan:
    """Returns the memory `config` needs for its replay (priorities included) and parameters, all agents together."""
    num_params = count_params(config)
    replay = config.replay_capacity * transition_bytes(config) + priority_bytes(config)
    return MemoryPlan(replay=config.num_seeds * replay,
                      params=config.num_seeds * num_params * 4 * 4, num_params=num_params,
                      on_device=jax.default_backend() != "cpu")


def host_available_bytes() -> int | None:
    """Returns the host memory available to a new allocation (Linux `MemAvailable`), else None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def device_available_bytes() -> int | None:
    """Returns the first accelerator's memory limit minus what is in use, else None (CPU, or not reported)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _gb(count: int) -> str:
    """Returns a byte count as GB (MB under one GB)."""
    return f"{count / 1e9:,.2f} GB" if count >= 1e9 else f"{count / 1e6:,.1f} MB"


def check(config: Config, host_bytes: int | None = None, device_bytes: int | None = None) -> MemoryPlan:
    """Returns the run's memory plan, or raises `ConfigError` when it cannot fit.

    `host_bytes` and `device_bytes` default to what the machine reports now.
    """
    memory = plan(config)
    agents = f" × {config.num_seeds} agents" if config.num_seeds > 1 else ""
    priorities = f" + {_gb(priority_bytes(config))} of priorities" if config.prioritized_replay else ""
    needs = (f"needs about {_gb(memory.total)} for its replay ({config.replay_capacity:,} transitions × "
             f"{transition_bytes(config):,} B{priorities}{agents}) and parameters")
    fix = "lower --replay-capacity" + (" or --num-seeds" if config.num_seeds > 1 else "")
    device = device_bytes if device_bytes is not None else (device_available_bytes() if memory.on_device else None)
    if memory.on_device and device is not None and memory.total > device:
        raise ConfigError(f"this run {needs}, but the {jax.devices()[0].device_kind} has {_gb(device)} free; {fix}")
    host = host_bytes if host_bytes is not None else host_available_bytes()
    host_need = FIXED_MARGIN_BYTES + (0 if memory.on_device else memory.total)
    if host is not None and host_need > host:
        raise ConfigError(f"this run {needs} plus about {_gb(FIXED_MARGIN_BYTES)} for the runtime and environments, "
                          f"but only {_gb(host)} of memory is available; {fix}")
    return memory


def describe(config: Config, memory: MemoryPlan, devices: int = 1) -> str:
    """Returns the one line a run prints at its start: agents, envs, network size, replay size,
    backend, and the devices the agents are sharded over when there are several."""
    seeds = f"{config.num_seeds} agents × " if config.num_seeds > 1 else ""
    return (f"{config.game}: {seeds}{config.num_envs} envs, {config.torso} Q-network of "
            f"{memory.num_params:,} parameters, replay {config.replay_capacity:,} transitions "
            f"({_gb(memory.replay)}), {config.loop} loop on {jax.default_backend()}"
            + (f", agents sharded over {devices} devices" if devices > 1 else ""))

