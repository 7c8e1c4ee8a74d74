"""dqn_jax: DQN for Atari and CartPole as pure JAX functions over one agent-state pytree.

The public API, for a loop of your own or a run from Python (README, "Your own loop"):

- settings: `Config`, `preset(game)` (a game's preset, as `--game` gives it), `ConfigError`;
- runs: `train(config, run_dir=...)` (what `python -m dqn_jax.train` does: the `dqn_jax.train`
  module, callable as its `train` function), `load_policy(run_dir)`;
- parts: `make_network(config, num_actions)`, `make_replay(...)`, `make_prioritized(replay, ...)`,
  `make_learner(config, network, replay)`, `epsilon_greedy(key, q_values, epsilon)`, `AgentState`;
- comparison: `compare(a_runs, b_runs, ...)` (`python -m dqn_jax.report --compare`).

Each name is imported from its module when first used, so `import dqn_jax` loads no JAX and
changes nothing in the process: XLA's deterministic GPU ops are asked for where a command starts
(`dqn_jax.determinism`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {  # name: the module that defines it
    "Config": "dqn_jax.config", "ConfigError": "dqn_jax.errors", "preset": "dqn_jax.run.presets",
    "load_policy": "dqn_jax.run.evaluate",
    "make_network": "dqn_jax.agent.networks", "make_replay": "dqn_jax.agent.replay",
    "make_prioritized": "dqn_jax.agent.prioritized", "make_learner": "dqn_jax.agent.learner",
    "AgentState": "dqn_jax.agent.learner", "epsilon_greedy": "dqn_jax.agent.acting",
    "compare": "dqn_jax.tools.compare",
}
__all__ = sorted([*_PUBLIC, "train"])


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name == "train":  # the module, callable (importing it sets the attribute from then on)
        return importlib.import_module("dqn_jax.train")
    raise AttributeError(f"module 'dqn_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
