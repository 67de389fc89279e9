#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""systemd-heartbeat, run from a clone: `python3 files/systemd-heartbeat.py --help`.

The program is the package plugins/module_utils/systemd_heartbeat/ (one module per stage of
a tick: read, shape, encode, deliver; see its __init__.py). On a host the role installs that
package, precompiled, and a launcher that does what this file does.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "plugins", "module_utils"))
from systemd_heartbeat.cli import run  # noqa: E402

run()
