"""dqn_jax: DQN for Atari and CartPole as pure JAX functions over one agent-state pytree.

Importing it changes nothing in the process: XLA's deterministic GPU ops are asked for where a
command starts (`dqn_jax.determinism`).
"""

__version__ = "0.1.0"
