"""Where the agents live: a 1-D mesh of devices (of every process) on the seed axis, placing
arrays on it, and running a chunk under `shard_map` with each device stepping its own pool.

With one device nothing here changes anything: `Placement(None)` places nothing and the chunk
runs as it is. With several, agent `s` lives on device `s // (S / D)`; EnvPool's XLA step has
no vmap or sharding rule and is bound to one pool when traced, so each device picks its own
pool's functions with a `lax.switch` on its position on the mesh.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dqn_jax.errors import ConfigError

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


class Placement:
    """Places trees with a leading seed axis [S] on a mesh's devices (or leaves them where they are)."""

    def __init__(self, mesh: Mesh | None):
        self.mesh = mesh

    @property
    def num_devices(self) -> int:
        """Devices the agents are sharded over (1: all on the default device)."""
        return 1 if self.mesh is None else self.mesh.size

    @property
    def sharding(self) -> NamedSharding | None:
        """The agents' sharding on the seed axis, or None without a mesh."""
        return None if self.mesh is None else NamedSharding(self.mesh, P(SEED_AXIS))

    def place(self, tree):
        """Returns `tree` (leading [S] axis, the same value in every process) sharded over the
        mesh's devices, or as it is without one."""
        sharding = self.sharding
        if sharding is None:
            return tree

        def place_one(x):
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            # Across processes only host values can be placed: each process keeps its shards.
            return jax.device_put(np.asarray(x) if jax.process_count() > 1 else x, sharding)

        return jax.tree.map(place_one, tree)

    def place_local(self, local: np.ndarray) -> jax.Array:
        """Returns the agents' array [S, ...] from this process's block of it (its devices' agents,
        all S without several processes)."""
        if self.mesh is None:
            return jnp.asarray(local)
        return jax.make_array_from_process_local_data(self.sharding, local)

    def first_local_device(self) -> int:
        """Returns the mesh position of this process's first device (its devices are contiguous)."""
        local = local_mesh_positions(self.mesh)
        assert local == list(range(local[0], local[0] + len(local))), "a process's devices must be contiguous"
        return local[0]


def sharded_chunk(placement: Placement, scan: Callable, sends: Sequence[Callable], recvs: Sequence[Callable],
                  state, num_iterations: int):
    """Runs `scan(state, num_iterations, send, recv) -> (state, records [K, ...])` on every device
    of the mesh over its own agents, each device stepping its own pool (`sends[i]`, `recvs[i]`:
    this process's pools, in mesh order); returns the new state (sharded like `state`, a
    `LoopState`) and the records [K, S, ...]. Only the records leave the devices."""
    first_local = placement.first_local_device()
    flat_records: dict = {}

    def pool_index():
        return jax.lax.axis_index(SEED_AXIS) - first_local

    def send(handle, actions):
        return jax.lax.switch(pool_index(), list(sends), handle, actions)

    def recv(handle):
        return jax.lax.switch(pool_index(), list(recvs), handle)

    def local(state):
        new, records = scan(state._replace(handle=state.handle[0]), num_iterations, send, recv)
        # Records that are the same on every device ([K]: was an update due, ...) get a seed axis
        # so that one out spec fits all; the first agent's copy is taken below.
        flat_records["shared"] = jax.tree.map(lambda x: x.ndim == 1, records)
        records = jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], new.carry.obs.shape[0]))
                               if x.ndim == 1 else x, records)
        return new._replace(handle=new.handle[None]), records

    seeds = P(SEED_AXIS)
    specs = type(state)(seeds, seeds, P(), seeds)
    new, records = jax.shard_map(local, mesh=placement.mesh, in_specs=(specs,), out_specs=(specs, P(None, SEED_AXIS)),
                                 check_vma=False)(state)
    records = jax.tree.map(lambda x, shared: x[:, 0] if shared else x, records, flat_records["shared"])
    return new, records
