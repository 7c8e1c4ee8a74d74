"""Builds, here, the wheels the GPU machine lacks, small enough to travel with one command.

    python benchmarks/gpu_bundle.py [--out .whl] [--check]

The GPU machine (no internet; Python 3.12, jax 0.11.2 with CUDA, flax, optax, chex, orbax, numpy,
rich, matplotlib, imageio installed) lacks EnvPool, its assets, tyro and tensorboardX. EnvPool's
wheel holds every environment family (53 MB zipped) and its assets wheel every game's data; the
bundle keeps what Atari and CartPole need: the `atari` and `classic_control` extensions, the Python
layer, and the Atari ROMs (under 7 MB in all). On the device, from the repository root:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD

and name `.whl` in the command's `carry`. `--check` installs the bundle offline into a scratch
folder with the running interpreter and steps a Pong and a CartPole pool through EnvPool's XLA
interface inside `jax.jit`. Checked so before the first GPU command: a Python 3.12 virtualenv with
the device's jax 0.11.2 (CPU) and flax, optax, chex, orbax-checkpoint, `--check`, then the unit
tests with the bundle on `PYTHONPATH`.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The versions this project is tested with (the CPU machine's), for the device's Python.
PINS = {
    "envpool": "1.2.5",
    "envpool-assets": "0.3.0",
    "dm-env": "1.6",
    "gymnasium": "1.4.0",
    "farama-notifications": "0.0.6",
    "optree": "0.20.0",
    "tyro": "1.0.17",
    "docstring-parser": "0.18.0",
    "typeguard": "4.6.0",
    "tensorboardX": "2.6.5",
    "tomli-w": "1.2.0",
}
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
# What the slimmed wheels keep, as path prefixes inside the wheel.
ENVPOOL_KEEP = ("envpool/__init__.py", "envpool/entry.py", "envpool/registration.py", "envpool/py.typed",
                "envpool/python/", "envpool/atari/", "envpool/classic_control/")
ENVPOOL_FAMILIES = ("atari", "classic_control")
ASSETS_KEEP = ("envpool_assets/__init__.py", "envpool_assets/atari/")
LIMIT_BYTES = 60 * 2**20  # one command carries 64 MiB: leave room for the working tree


def download(name: str, version: str, cache: Path) -> Path:
    """Returns the path of `name==version`'s wheel for the device's Python, downloaded into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", DEVICE_PYTHON, "--implementation", "cp", "-d", str(cache)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, f"{name}=={version}"], check=True)
    stem = name.replace("-", "_").lower()
    found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")]
    if len(found) != 1:
        raise SystemExit(f"error: expected one wheel of {name}=={version} in {cache}, found {found}")
    return found[0]


def _record_line(path: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [path, f"sha256={digest}", str(len(data))]


def slim_wheel(source: Path, target: Path, keep: tuple[str, ...], replace: dict[str, bytes]) -> int:
    """Writes `target`: `source` with only the files under `keep` (and its dist-info), the files in
    `replace` given new contents, and a RECORD that lists exactly what it holds. Returns its size."""
    with zipfile.ZipFile(source) as wheel:
        names = wheel.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        record_name = f"{dist_info}/RECORD"
        kept = [n for n in names if n != record_name and (n.startswith(keep) or n.startswith(dist_info + "/"))]
        contents = {n: replace.get(n, wheel.read(n)) for n in kept}
    rows = [_record_line(n, data) for n, data in contents.items()] + [[record_name, "", ""]]
    record = io.StringIO()
    csv.writer(record, lineterminator="\n").writerows(rows)
    contents[record_name] = record.getvalue().encode()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as wheel:
        for name, data in contents.items():
            wheel.writestr(name, data)
    return target.stat().st_size


def envpool_entry() -> bytes:
    """EnvPool's `entry.py` registering only the families the bundle keeps."""
    lines = ['"""Entry point of the slimmed EnvPool bundled by dqn_jax: Atari and CartPole only."""', ""]
    lines += [f"import envpool.{family}.registration  # noqa: F401" for family in ENVPOOL_FAMILIES]
    return ("\n".join(lines) + "\n").encode()


def build(out: Path, cache: Path) -> list[Path]:
    """Writes the bundle's wheels into `out` (emptied first); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    wheels = []
    for name, version in PINS.items():
        source = download(name, version, cache)
        target = out / source.name
        if name == "envpool":
            slim_wheel(source, target, ENVPOOL_KEEP, {"envpool/entry.py": envpool_entry()})
        elif name == "envpool-assets":
            slim_wheel(source, target, ASSETS_KEEP, {})
        else:
            target.write_bytes(source.read_bytes())
        wheels.append(target)
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:8.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:8.2f} MiB  in all, into {out}")
    if total > LIMIT_BYTES:
        raise SystemExit(f"error: the bundle is {total / 2**20:.1f} MiB, over the {LIMIT_BYTES / 2**20:.0f} MiB "
                         "left for it in one command; keep fewer environment families")
    return wheels


CHECK = """
import jax, jax.numpy as jnp, numpy as np, envpool
for task in ("Pong-v5", "CartPole-v1"):
    pool = envpool.make(task, env_type="gymnasium", num_envs=4, batch_size=4, seed=0)
    handle, recv, send, step = pool.xla()
    @jax.jit
    def run(handle):
        def body(handle, _):
            handle, (obs, reward, terminated, truncated, info) = step(handle, jnp.zeros(4, jnp.int32))
            return handle, reward.sum()
        return jax.lax.scan(body, handle, None, length=20)
    pool.async_reset()
    handle, rewards = run(handle)
    print(task, "stepped 20 times in jit on", jax.default_backend(), "rewards", np.asarray(rewards).sum())
"""


def check(wheels: list[Path]) -> None:
    """Installs `wheels` offline into a scratch folder and steps Pong and CartPole in `jax.jit`."""
    with tempfile.TemporaryDirectory() as site:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                        "--no-compile", "--target", site, *map(str, wheels)], check=True)
        env = {**os.environ, "PYTHONPATH": site}
        subprocess.run([sys.executable, "-c", CHECK], check=True, env=env, cwd=site)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / ".whl")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dqn_jax_wheel_cache")
    parser.add_argument("--check", action="store_true", help="install offline and step Pong and CartPole in jit")
    args = parser.parse_args()
    wheels = build(args.out, args.cache)
    if args.check:
        check(wheels)


if __name__ == "__main__":
    main()
