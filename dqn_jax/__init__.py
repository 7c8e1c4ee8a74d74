"""dqn_jax: DQN for Atari and CartPole as pure JAX functions over one agent-state pytree."""

__version__ = "0.1.0"
