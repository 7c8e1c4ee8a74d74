"""A training run: settings from the command line to a run directory, and the trainer that drives it.

Owns the presets and overlays (`presets`), the command line (`cli`), the `train` command and its
checks before a run (`train`, `preflight`), the trainer's phases (`trainer`, with `bookkeeping`
and `progress`), checkpoints (`checkpoint`), the metrics files (`metrics`) and the scoring of a
run's params on fresh games (`evaluate`).

May import: the base, `dqn_jax.agent`, `dqn_jax.loop` and `dqn_jax.health`.
"""
