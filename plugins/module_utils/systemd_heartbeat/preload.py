# SPDX-License-Identifier: MIT
"""The preload bundle: the modules every tick imports, compiled into one file the launcher
executes in order, so a tick does not pay the import machinery once per module (finding,
opening and reading a dozen .pyc files costs about 0.6 ms of CPU, a twentieth of a tick at a
dozen units: BENCHMARKS.md). Written at deploy time, on the host, by the Python that runs it:

    python3 -I LIB_DIR/systemd_heartbeat/preload.py LIB_DIR    (the role's "compile heartbeat" handler)

Format: marshal of (cache_tag, [(module name, code object), ...]) in import order. The
launcher (roles/systemd_monitoring/templates/systemd-heartbeat.j2) uses the bundle only if
its cache_tag is the running interpreter's, skips a module already imported, and otherwise
falls back to the plain package import: a missing or stale bundle costs speed, never a tick.
"""
import marshal
import os
import sys

BUNDLE = "systemd_heartbeat.preload"
# what every tick imports, each after what it imports (modules a tick may not need, such as
# read_systemctl, spool and https, stay lazy imports from the package directory)
HOT_PATH = ("model", "syscalls", "text", "units", "values", "triggers", "history", "bus_wire", "read_bus", "read", "shape", "state",
            "otlp", "push", "cli")


def write(lib_dir: str) -> str:
    """Compile the hot path's sources under lib_dir into the bundle; its path."""
    package = os.path.join(lib_dir, "systemd_heartbeat")
    modules = [("systemd_heartbeat", os.path.join(package, "__init__.py"))]
    modules += [(f"systemd_heartbeat.{name}", os.path.join(package, f"{name}.py")) for name in HOT_PATH]
    codes = []
    for name, path in modules:
        with open(path, encoding="utf-8") as handle:
            # optimize=2 drops docstrings (a seventh of the bytes to unmarshal at every tick);
            # the heartbeat reads no __doc__ and asserts nothing
            codes.append((name, compile(handle.read(), path, "exec", dont_inherit=True, optimize=2)))
    bundle = os.path.join(lib_dir, BUNDLE)
    temporary = bundle + ".tmp"
    with open(temporary, "wb") as handle:
        handle.write(marshal.dumps((sys.implementation.cache_tag, codes)))
    os.replace(temporary, bundle)
    return bundle


if __name__ == "__main__":
    sys.stdout.write(write(sys.argv[1]) + "\n")
