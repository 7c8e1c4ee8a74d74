"""`python -m dqn_jax.report`: scores across games and seeds, or two configurations compared.
The command's code is `dqn_jax.tools.report`."""

import sys

from dqn_jax.tools.report import main

if __name__ == "__main__":
    sys.exit(main())
