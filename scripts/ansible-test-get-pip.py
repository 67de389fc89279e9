# SPDX-License-Identifier: MIT
"""Stands in for get-pip.py, which `ansible-test` downloads from ci-files.testing.ansible.com
(not reachable from these machines) to put pip into each of its virtual environments.
tests/collection/cores.py copies this to ~/.ansible/test/cache/get_pip_<version>.py, where
ansible-test looks first. It installs pip from Python's own bundled wheel (ensurepip), then
runs pip with ansible-test's arguments, minus the get-pip-only flags, against the registries
this machine's pip settings name (which the sanity venvs do not inherit: the CA bundle)."""
import ensurepip
import subprocess
import sys

ensurepip.bootstrap()
arguments = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if arguments:
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--cert",
                              "/etc/ssl/certs/ca-certificates.crt", *arguments]))
