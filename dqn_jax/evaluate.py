"""`python -m dqn_jax.evaluate`: score a run's params on fresh games. The command's code is `dqn_jax.run.evaluate`."""

import sys

from dqn_jax.run.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
