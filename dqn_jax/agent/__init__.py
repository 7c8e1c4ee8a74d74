"""The agent: DQN as pure JAX functions over one pytree, and nothing of the run around it.

Owns the Q-networks (`networks`), the learner's update and the agent state (`learner`), the
frame-deduplicated replay (`replay`), its sum tree and prioritized sampling (`sum_tree`,
`prioritized`), ε-greedy acting (`acting`), ReDo (`redo`), the hashes of pytrees
(`fingerprint`), and the health statistics measured inside an update (`health_stats`, with the
names of every health field in `health_fields`).

May import: the base (`dqn_jax.config`, `games`, `errors`, `determinism`), JAX, Flax, Optax, chex
and NumPy. Never EnvPool, the loop or the run: fork this package to change a loss, a network or a
buffer.
"""
