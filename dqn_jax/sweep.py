"""`python -m dqn_jax.sweep`: train games × seeds, one run directory per game.
The command's code is `dqn_jax.tools.sweep`."""

import sys

from dqn_jax.tools.sweep import main

if __name__ == "__main__":
    sys.exit(main())
