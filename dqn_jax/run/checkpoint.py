"""Checkpoints under `RUN_DIR/checkpoints/`, written with orbax-checkpoint.

- `checkpoints/state/<env_steps>/`: the whole agent state (online and target params, optimizer
  state, replay, PRNG keys, counters; leading seed axis [S]) plus `meta`, a JSON record of the
  trainer's own bookkeeping (evaluation history, best scores). The last `keep_checkpoints` are kept.
- `checkpoints/best/seed<seed>/<env_steps>/`: one seed's best-evaluation params and `meta` with the
  score that earned them. Only the best is kept.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
mid-write never leaves a half checkpoint under a real step number.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from dqn_jax.loop import distributed
from dqn_jax.run.metrics import write_json_atomic

MANIFEST = "dqn_jax_manifest.json"  # size and CRC-32 of every file, written after orbax commits
CHECKPOINTS_DIR = "checkpoints"
CHUNK_BYTES = 64 << 20
STATE_DIR = "state"
BEST_DIR = "best"


class CheckpointError(Exception):
    """A checkpoint that is missing, incomplete or does not fit the run's config."""


def _manager(directory: Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    # `read_only` only stops us creating the directory: orbax's own read-only mode logs a warning.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def state_dir(run_dir: Path | str) -> Path:
    """Returns `RUN_DIR/checkpoints/state`."""
    return Path(run_dir) / CHECKPOINTS_DIR / STATE_DIR


class StateCheckpoints:
    """Saves and restores whole-run checkpoints; keeps the last `keep`."""

    def __init__(self, run_dir: Path | str, keep: int = 2):
        self.directory = state_dir(run_dir)
        self._manager = _manager(self.directory, keep)

    def save(self, env_steps: int, agents, meta: dict) -> Path:
        """Writes `agents` (any pytree of arrays) and `meta` (JSON) as step `env_steps`; returns its path."""
        # Bounded write chunks: with orbax's defaults, saving a 7 GB replay peaks at +3.5 GB of
        # host memory; with 64 MB chunks the peak stays within a few MB (measured).
        save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES), agents)
        self._manager.save(env_steps, args=ocp.args.Composite(
            state=ocp.args.StandardSave(agents, save_args=save_args), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
        step_dir = self.directory / str(env_steps)
        if distributed.is_main():  # each process wrote its shards; orbax's commit was process 0's
            write_manifest(step_dir)
        distributed.barrier(f"checkpoint {env_steps}")
        return step_dir

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.close()


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


def write_manifest(step_dir: Path) -> None:
    """Records the size and CRC-32 of every file of a committed checkpoint (in `MANIFEST`)."""
    files = {str(p.relative_to(step_dir)): [p.stat().st_size, _crc32(p)]
             for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}
    write_json_atomic(step_dir / MANIFEST, files)


def verify_manifest(step_dir: Path) -> None:
    """Checks a checkpoint's files against its manifest before orbax reads any of them.

    Raises:
      CheckpointError: a file is missing, has another size, or another checksum.
    """
    path = step_dir / MANIFEST
    if not path.is_file():
        return  # saved by an older version, or killed between orbax's commit and the manifest
    try:
        files = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        files = None
    problem = "its manifest is unreadable" if files is None else None
    for name, (size, crc) in (files or {}).items():
        file = step_dir / name
        if not file.is_file():
            problem = f"{name} is missing"
        elif file.stat().st_size != size:
            problem = f"{name} has {file.stat().st_size:,} bytes, {size:,} were written"
        elif _crc32(file) != crc:
            problem = f"{name} does not match its checksum"
        if problem:
            break
    if problem:
        raise _corrupted(step_dir, problem)


def latest_step(run_dir: Path | str) -> int | None:
    """Returns the env step of the newest complete state checkpoint, or None if there is none."""
    directory = state_dir(run_dir)
    if not directory.is_dir():
        return None
    manager = _manager(directory, keep=1, read_only=True)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def all_steps(run_dir: Path | str) -> list[int]:
    """Returns the env steps of every complete state checkpoint the run keeps, oldest first."""
    directory = state_dir(run_dir)
    if not directory.is_dir():
        return []
    manager = _manager(directory, keep=1, read_only=True)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def require_latest_step(run_dir: Path | str) -> int:
    """Returns the env step of the newest complete state checkpoint.

    Raises:
      CheckpointError: the run has none.
    """
    step = latest_step(run_dir)
    if step is None:
        raise CheckpointError(f"no checkpoint in {state_dir(run_dir)}: nothing to resume (start a new run instead)")
    return step


def restore_state(run_dir: Path | str, abstract_agents, step: int | None = None):
    """Returns `(agents, meta, step)` from a run's state checkpoint (the newest unless `step`).

    `abstract_agents` is a pytree of `jax.ShapeDtypeStruct` with the structure and shapes the
    current config builds; a checkpoint that does not match it is reported, not half-loaded.

    Raises:
      CheckpointError: no checkpoint, an incomplete or corrupted one, or one from another config.
    """
    directory = state_dir(run_dir)
    step = require_latest_step(run_dir) if step is None else step
    verify_manifest(directory / str(step))
    stored = _check_stored_shapes(directory / str(step), abstract_agents)
    target, rebuild = _as_stored(abstract_agents, stored)
    manager = _manager(directory, keep=1, read_only=True)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(_mismatch_message(directory / str(step), err)) from None
    except Exception as err:  # orbax/tensorstore raise many kinds for unreadable files
        raise _corrupted(directory / str(step), f"{type(err).__name__}: {_first_line(err)}") from None
    finally:
        manager.close()
    state = rebuild(restored.state)
    _check_shapes(state, abstract_agents, directory / str(step))
    return state, dict(restored.meta), step


def _as_stored(abstract, stored) -> tuple:
    """Returns `(target, rebuild)`: what to restore a checkpoint holding the fields `stored` into,
    and how to make the restored tree into `abstract`'s kind. A checkpoint written before an
    optional field existed (one that is None unless a setting asks for it, as `average_params`)
    lacks it; for a config that leaves it None, such a checkpoint fits."""
    if not dataclasses.is_dataclass(abstract) or not hasattr(stored, "keys"):
        return abstract, lambda restored: restored
    fields = [f.name for f in dataclasses.fields(abstract)]
    absent = [name for name in fields if name not in stored.keys() and getattr(abstract, name) is None]
    if not absent:
        return abstract, lambda restored: restored
    kept = {name: getattr(abstract, name) for name in fields if name not in absent}
    return kept, lambda restored: abstract.replace(**restored)


def _corrupted(step_dir: Path, detail: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {step_dir} is incomplete or corrupted ({detail}); "
                           "delete that directory to resume from the one before it")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else "no message"


def _mismatch_message(path: Path, err: Exception) -> str:
    return (f"checkpoint {path} does not fit this config ({_first_line(err)}); resume with the run's own "
            f"config.toml (do not change network, replay or seed settings) or start a new run")


def _check_stored_shapes(step_dir: Path, abstract):
    """Compares the arrays a checkpoint holds with the ones this config builds, before reading any;
    returns the checkpoint's tree metadata."""
    try:
        stored = ocp.StandardCheckpointer().metadata(step_dir / "state")
    except Exception as err:
        raise _corrupted(step_dir, f"its metadata cannot be read: {_first_line(err)}") from None
    tree = getattr(stored, "item_metadata", stored)
    have = sorted((tuple(m.shape), str(m.dtype)) for m in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape")))
    want = sorted((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(abstract))
    if have != want:
        extra = sorted(set(have) - set(want))[:1]
        missing = sorted(set(want) - set(have))[:1]
        detail = f"it holds {extra[0]} where this config needs {missing[0]}" if extra and missing else (
            f"it holds {len(have)} arrays, this config {len(want)}")
        raise CheckpointError(_mismatch_message(step_dir, ValueError(detail)))
    return tree


def _check_shapes(restored, abstract, path: Path) -> None:
    got = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), restored)
    want = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), abstract)
    if jax.tree.structure(got) != jax.tree.structure(want) or got != want:
        raise CheckpointError(_mismatch_message(path, ValueError("array shapes differ")))


def best_dir(run_dir: Path | str, seed: int) -> Path:
    """Returns `RUN_DIR/checkpoints/best/seed<seed>`."""
    return Path(run_dir) / CHECKPOINTS_DIR / BEST_DIR / f"seed{seed}"


def save_best_params(run_dir: Path | str, seed: int, params, score: float, env_steps: int) -> Path:
    """Saves one seed's params as its best, with `score` and `env_steps`; returns the directory.

    The new checkpoint is complete on disk before the previous best is deleted.
    """
    manager = _manager(best_dir(run_dir, seed), keep=1)
    try:
        manager.save(env_steps, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            meta=ocp.args.JsonSave({"seed": seed, "eval_return_mean": score, "env_steps": env_steps})),
            force=True)
        manager.wait_until_finished()
    finally:
        manager.close()
    return best_dir(run_dir, seed) / str(env_steps)


def load_best_params(run_dir: Path | str, seed: int):
    """Returns `(params, meta)`: a seed's best-evaluation params and `{seed, eval_return_mean, env_steps}`.

    Raises:
      CheckpointError: the run has no best params for this seed, or they cannot be read.
    """
    directory = best_dir(run_dir, seed)
    if not directory.is_dir():
        raise CheckpointError(f"no best params for seed {seed} in {directory}")
    manager = _manager(directory, keep=1, read_only=True)
    try:
        step = manager.latest_step()
        if step is None:
            raise CheckpointError(f"no complete best-params checkpoint in {directory}")
        restored = manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"best params in {directory} cannot be read ({_first_line(err)})") from None
    finally:
        manager.close()
    return restored.params, dict(restored.meta)
