"""Health on the host: the rules that name a run's silent failures from its rows, with evidence and a fix.

Owns the bounded history of rows a rule reads and its findings (`findings`), the rules themselves
(`rules` for failures, `dynamics` for the learning dynamics) and the pass that runs them over a
run (`diagnostics`). The statistics they read are measured in the jit by
`dqn_jax.agent.health_stats` under the names of `agent.health_fields`.

May import: the base, `dqn_jax.agent` (the field names) and `dqn_jax.loop` (the row schema).
"""
