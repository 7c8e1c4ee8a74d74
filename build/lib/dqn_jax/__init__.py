"""dqn_jax: DQN for Atari and CartPole as pure JAX functions over one agent-state pytree."""

import os

__version__ = "0.1.0"

# Reproducible by default: on GPU, XLA's deterministic-ops flag makes scatter-adds and reductions
# run in a fixed order (at a cost in speed; docs/results.md). It must be set before JAX starts a backend, which
# is why it lives here. Set DQN_JAX_NONDETERMINISTIC=1 to trade bit-reproducibility for speed.
_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
if os.environ.get("DQN_JAX_NONDETERMINISTIC") != "1" and "xla_gpu_deterministic_ops" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DETERMINISTIC_FLAG).strip()
