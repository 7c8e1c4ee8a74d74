"""The package's layers: no module imports from a layer above its own, and the agent imports no run machinery."""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

import dqn_jax

PACKAGE = Path(dqn_jax.__file__).parent
# Lowest first; a module may import its own layer and those below. The top-level modules but the
# base are the commands (`python -m dqn_jax.train`, ...): each imports its layer's module.
LAYERS = ("base", "agent", "loop", "health", "run", "tools", "commands")
BASE = {"__init__", "config", "games", "errors", "determinism"}
# What the agent may import besides the base: it is pure JAX, for a researcher to fork.
AGENT_MAY_IMPORT = {"jax", "flax", "optax", "chex", "numpy", "dqn_jax"}


def _layer(module: str) -> str:
    """Returns the layer of a dotted module name under `dqn_jax`."""
    parts = module.split(".")[1:]
    if not parts:
        return "base"
    if parts[0] in LAYERS:
        return parts[0]
    return "base" if parts[0] in BASE else "commands"


@functools.cache
def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Returns every module `path` imports, at its top or inside functions, as absolute names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module
            found.add(source)
            # `from dqn_jax.loop import envs` imports the module `dqn_jax.loop.envs`
            found.update(f"{source}.{alias.name}" for alias in node.names
                         if f"{source}.{alias.name}" in _modules())
    return found


def test_every_layer_is_a_subpackage_or_the_base_and_no_module_is_left_out():
    assert {_layer(m) for m in _modules()} == set(LAYERS)
    commands = sorted(m for m in _modules() if _layer(m) == "commands")
    assert commands == [f"dqn_jax.{c}" for c in ("doctor", "evaluate", "report", "repro", "sweep", "train")]


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_imports_from_a_layer_above_its_own(module):
    rank = LAYERS.index(_layer(module))
    above = sorted(name for name in _imports(module, _modules()[module])
                   if name.startswith("dqn_jax.") and LAYERS.index(_layer(name)) > rank)
    assert not above, f"{module} ({_layer(module)}) imports from above: {above}"


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _layer(m) == "agent"))
def test_the_agent_imports_only_the_base_jax_and_the_standard_library(module):
    outside = sorted(name for name in _imports(module, _modules()[module])
                     if name.split(".")[0] not in AGENT_MAY_IMPORT | sys.stdlib_module_names)
    assert not outside, f"{module} imports {outside}"
    assert all(_layer(name) in ("base", "agent") for name in _imports(module, _modules()[module])
               if name.startswith("dqn_jax"))
