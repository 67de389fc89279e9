"""The role's launcher and the preload bundle the role writes beside the package: a tick loads
the modules every tick needs from the bundle (no import of each), and a missing, corrupt or
stale bundle only costs speed (the package is imported as usual). The launcher is rendered from
the role's own template, the bundle written by the package's own preload.py."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from helpers import ROOT

TEMPLATE = ROOT / "roles/systemd_monitoring/templates/systemd-heartbeat.j2"


@pytest.fixture()
def installed(tmp_path) -> tuple[Path, Path]:
    """(lib dir, launcher) as the role installs them: the package's *.py, compiled, the bundle."""
    lib = tmp_path / "lib"
    package = lib / "systemd_heartbeat"
    package.mkdir(parents=True)
    for source in (ROOT / "plugins/module_utils/systemd_heartbeat").glob("*.py"):
        shutil.copy(source, package)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-f", str(lib)], check=True)
    subprocess.run([sys.executable, "-I", str(package / "preload.py"), str(lib)], check=True, capture_output=True)
    launcher = tmp_path / "systemd-heartbeat"
    launcher.write_text(jinja2.Template(TEMPLATE.read_text(), keep_trailing_newline=True).render(
        _systemd_monitoring_lib_dir=str(lib), _systemd_monitoring_python_dir=str(Path(sys.executable).parent)))
    return lib, launcher


def imported(launcher: Path) -> tuple[int, set[str]]:
    """Exit status of `launcher --help`, and the heartbeat modules it imported the usual way."""
    done = subprocess.run([sys.executable, "-IS", "-X", "importtime", str(launcher), "--help"],
                          capture_output=True, text=True, timeout=30)
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done.returncode, {name for name in names if name.startswith("systemd_heartbeat")}


def test_a_tick_takes_its_modules_from_the_bundle(installed):
    lib, launcher = installed
    code, modules = imported(launcher)
    assert code == 0 and modules == set()  # nothing imported one by one


@pytest.mark.parametrize("bundle", [b"garbage", b"", None], ids=["corrupt", "empty", "missing"])
def test_a_broken_bundle_falls_back_to_the_package(installed, bundle):
    lib, launcher = installed
    path = lib / "systemd_heartbeat.preload"
    if bundle is None:
        path.unlink()
    else:
        path.write_bytes(bundle)
    code, modules = imported(launcher)
    assert code == 0 and "systemd_heartbeat.cli" in modules


def test_a_bundle_from_another_python_is_not_used(installed):
    import marshal

    lib, launcher = installed
    path = lib / "systemd_heartbeat.preload"
    tag, codes = marshal.loads(path.read_bytes())
    path.write_bytes(marshal.dumps(("cpython-39", codes)))
    code, modules = imported(launcher)
    assert code == 0 and "systemd_heartbeat.cli" in modules


def test_the_bundle_holds_every_module_a_tick_imports(installed, tmp_path):
    """What a dry-run tick imports beyond the bundle: only the lazy stages (none on this path)."""
    lib, launcher = installed
    done = subprocess.run([sys.executable, "-IS", "-X", "importtime", str(launcher), "--dry-run", "--unit", "a.service",
                           "--source", "systemctl", "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=30, env={"PATH": str(tmp_path)})
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    # no systemctl on PATH: the tick fails in read_systemctl, the one stage it had to import
    assert {n for n in names if n.startswith("systemd_heartbeat")} == {"systemd_heartbeat.read_systemctl"}


def test_a_tick_over_the_bus_never_imports_os_or_re(installed, tmp_path):
    """The hot path calls the built-in posix module (syscalls.py): under -IS nothing has
    imported os, and a tick that did would pay 0.8 ms for it (BENCHMARKS.md); globs are
    matched by units.glob_matches, not fnmatch (re and os: 5 ms). Read over a fake system bus
    (tests/fakes/fakebus.py, jeepney), with a state directory, twice."""
    import tempfile

    from fakebus import FakeBus

    lib, launcher = installed
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a unix socket path has 108 bytes
        bus = FakeBus(f"{short}/bus")
        try:
            for _ in range(2):
                done = subprocess.run(
                    [sys.executable, "-IS", "-X", "importtime", str(launcher), "--dry-run", "--unit", "alpha.service", "--unit", "*.timer",
                     "--state-dir", str(tmp_path / "state")],
                    capture_output=True, text=True, timeout=30,
                    env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={short}/bus", "PATH": str(tmp_path)})
                names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                         if line.startswith("import time:")}
                assert done.returncode == 0, done.stderr[-2000:]
                assert "systemd_unit_active{" in done.stdout
                assert not names & {"os", "posixpath", "re", "fnmatch"}, sorted(names)
        finally:
            bus.stop()
        assert not bus.errors
