"""`python -m dqn_jax.repro`: is training reproducible to the bit. The command's code is `dqn_jax.tools.repro`."""

import sys

from dqn_jax.tools.repro import main

if __name__ == "__main__":
    sys.exit(main())
