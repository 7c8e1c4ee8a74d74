"""`python -m dqn_jax.train --game=Pong`: train DQN and write a run directory. The command's code
is `dqn_jax.run.train`; this module is also the public API's `dqn_jax.train`, callable as its
`train(config, run_dir=...)`."""

import sys
import types

from dqn_jax.run import train as _command
from dqn_jax.run.train import main, train

__all__ = ["main", "train"]


class _CallableModule(types.ModuleType):
    """This module, callable as `train`: once `dqn_jax.train` has been imported, the package
    attribute of that name is this module (Python sets it), so `dqn_jax.train(config, ...)` and
    `from dqn_jax import train` reach `train` through it."""

    def __call__(self, *args, **kwargs):
        return _command.train(*args, **kwargs)  # looked up at the call: a patched `train` is the one called


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
