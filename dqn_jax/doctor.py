"""`python -m dqn_jax.doctor`: is this run healthy, and if not, why. The command's code is `dqn_jax.tools.doctor`."""

import sys

from dqn_jax.tools.doctor import main

if __name__ == "__main__":
    sys.exit(main())
