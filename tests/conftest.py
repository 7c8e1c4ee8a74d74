"""Shared fixtures and the speed split: tests under `integration/` are marked `slow`.

`python -m pytest -m "not slow"` runs the unit tests alone (pure, no Atari pool, seconds each);
`python -m pytest` runs everything, as CI does.
"""

from __future__ import annotations

from pathlib import Path

import jax
import pytest
from helpers import tiny_cartpole_config

jax.config.update("jax_numpy_rank_promotion", "raise")

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_cartpole():
    """A CartPole config that trains for 2,000 env steps in a couple of seconds."""
    return tiny_cartpole_config()
