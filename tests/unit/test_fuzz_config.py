"""A seeded fuzz of the command line: edge values for 1 to 3 fields at a time are either accepted
(and then fit the memory check) or refused with one `ConfigError` line; never another exception."""

from __future__ import annotations

import pytest
from fuzz import combinations

from dqn_jax.config import ConfigError
from dqn_jax.run import preflight
from dqn_jax.run.cli import parse_command


@pytest.mark.parametrize("seed", range(4))
def test_edge_values_are_accepted_or_refused_in_one_line(seed):
    refused = 0
    for args in combinations(75, seed):
        try:
            config, _ = parse_command(args)
            preflight.check(config, host_bytes=24 * 10**9)
        except ConfigError as err:
            message = str(err)
            assert message and "\n" not in message and "Traceback" not in message, (args, message)
            refused += 1
    assert 0 < refused < 75  # the fuzz reaches both outcomes
