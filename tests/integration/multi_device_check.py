"""Run by `test_agents_sharded_over_devices_*` in a subprocess: XLA's forced CPU devices must be set
before jax starts. Trains 8 tiny CartPole agents sharded over 4 devices, and on one device, and
prints what the test checks as one JSON line. The agents use prioritized replay: its sum tree
is sharded with the rest of the agents, and the uniform replay's arrays are there as without it.
(That sharded runs repeat bit for bit, whatever the processes holding the devices, is
`test_distributed.py`'s.)"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xla_flags import DEVICE_COUNT, with_xla_flags  # noqa: E402

# Kept beside the inherited flags: the suite's optimization level (conftest) holds here too.
os.environ["XLA_FLAGS"] = with_xla_flags(os.environ, add=[f"{DEVICE_COUNT}=4"], drop=[DEVICE_COUNT])["XLA_FLAGS"]

import dataclasses  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from helpers import run_loop, tiny_cartpole_config  # noqa: E402

from dqn_jax.loop import loop  # noqa: E402

config = dataclasses.replace(tiny_cartpole_config(), num_seeds=8, prioritized_replay=True)
sharded_loop, state = run_loop(config, chunks=2)
sharded = jax.device_get(state.agents)
loop.seed_mesh = lambda num_seeds: None  # the same agents on one device
single = jax.device_get(run_loop(config, chunks=2)[1].agents)
leaves = list(zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params), strict=True))
print(json.dumps({
    "devices": sharded_loop.num_devices, "mode": sharded_loop.mode,
    "agents_per_device": [len(s.data) for s in state.agents.env_steps.addressable_shards],
    "same_actions": bool(np.array_equal(sharded.replay.actions, single.replay.actions)),
    "same_frames": bool(np.array_equal(sharded.replay.frames, single.replay.frames)),
    "learning_rate": config.learning_rate,
    "max_abs_diff_vs_one_device": max(float(np.max(np.abs(a - c))) for a, c in leaves),
    "agents_differ": not np.array_equal(*sharded.params["params"]["q_head"]["kernel"][:2]),
}))
