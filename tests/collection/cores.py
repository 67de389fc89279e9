"""The ansible-core versions the collection claims (pyproject.toml [tool.systemd-monitoring]),
each with a virtual environment to run it from: the project's own .venv for the first, one per
other version in the lab's cache outside the checkout (/var/cache/systemd-monitoring-lab/
ansible-core-X.Y, like its rootfs: a rerun reuses it, a fresh machine builds it), made from a
Python of its version (~/.pyenv/versions). A stamp names the pin and the Python, so a new pin
rebuilds it; a lock keeps two sessions from building the same one at once."""
from __future__ import annotations

import os
import glob
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import lab
from helpers import ROOT

# ansible-test bootstraps pip in each of its venvs with a script it downloads from a host these
# machines cannot reach; it looks in this cache first, under the pip version it pins.
GET_PIP_CACHE = Path.home() / ".ansible/test/cache"


@dataclass(frozen=True)
class Core:
    pin: str      # ansible-core==X.Y.Z
    python: str   # the controller Python's X.Y
    bin: Path     # the venv's bin directory

    @property
    def version(self) -> str:
        return ".".join(self.pin.split("==")[1].split(".")[:2])


def claimed() -> list[Core]:
    entries = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["systemd-monitoring"]["ansible-core"]
    own = Path(sys.executable).parent
    return [Core(e["pin"], e["python"], own if i == 0 else cached_venv(e["pin"]) / "bin")
            for i, e in enumerate(entries)]


def cached_venv(pin: str) -> Path:
    return lab.CACHE / f"ansible-core-{'.'.join(pin.split('==')[1].split('.')[:2])}"


def interpreter(version: str) -> str:
    """A Python of this X.Y: the newest under ~/.pyenv/versions, else one on the PATH (not a pyenv
    shim, which answers only for the version pyenv has selected)."""
    pyenv = sorted(glob.glob(str(Path.home() / f".pyenv/versions/{version}.*/bin/python3")))
    found = pyenv[-1] if pyenv else shutil.which(f"python{version}")
    if not found or "/shims/" in found:
        raise RuntimeError(f"pyproject.toml [tool.systemd-monitoring]: no Python {version} on the PATH or in ~/.pyenv/versions")
    return found


def ensure(core: Core) -> Core:
    """Create the core's venv unless the cache has it (its stamp names the pin and the Python),
    and give its ansible-test the pip stand-in."""
    venv = core.bin.parent
    if core.bin != Path(sys.executable).parent:
        with lab.cache_lock(venv.name):
            python = interpreter(core.python)
            stamp, wanted = venv / ".installed", f"{core.pin} {python}\n"
            if not stamp.exists() or stamp.read_text() != wanted:
                shutil.rmtree(venv, ignore_errors=True)
                subprocess.run([python, "-m", "venv", str(venv)], check=True)
                subprocess.run([str(core.bin / "pip"), "install", "-q", "--disable-pip-version-check", core.pin],
                               check=True)
                stamp.write_text(wanted)
    requirements = next(venv.glob("lib/python*/site-packages/ansible_test/_internal/python_requirements.py"))
    for pip in set(re.findall(r"pip='([\d.]+)'", requirements.read_text())):
        GET_PIP_CACHE.mkdir(parents=True, exist_ok=True)
        # copied, then renamed into place: an ansible-test of another version may be reading it
        target = GET_PIP_CACHE / f"get_pip_{pip.replace('.', '_')}.py"
        partial = target.with_name(f"{target.name}.{os.getpid()}.{core.version}")
        shutil.copy(ROOT / "scripts/ansible-test-get-pip.py", partial)
        os.replace(partial, target)
    return core
