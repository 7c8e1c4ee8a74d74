"""The loop: the agents' env steps and learning rounds as one compiled program per chunk.

Owns the EnvPool pools (`envs`), one iteration's act → step → write → learn (`iteration`), the
fused `lax.scan` loop and its host-loop twin (`loop`), the chunks a run is cut into (`schedule`),
the placement of agents on devices (`placement`) and processes (`distributed`), and the records an
iteration returns with the rows they become (`records`: the run directory's schema).

May import: the base and `dqn_jax.agent`.
"""
