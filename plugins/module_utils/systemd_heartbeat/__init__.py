# SPDX-License-Identifier: MIT
"""systemd-heartbeat: push the state of load-bearing systemd units to VictoriaMetrics.

One tick, along its data path (each stage a module; the types between them in model.py):

    cli             flags and the tick: one Deadline for everything below
    units           the allowlist: unit names and globs, validated and normalised
    read            Snapshot of the allowlisted and failed units, over D-Bus or through systemctl
      read_bus        a hand-written D-Bus client: connection, calls, the two rounds
      bus_wire        the D-Bus wire format: marshalling calls, validating and decoding replies
      read_systemctl  systemctl and systemd-analyze as child processes, and their text
      values          systemd's value formats (timestamps, time spans, timer settings)
    shape           Snapshot -> Samples (and staleness markers for series that ended)
    otlp            Samples -> an OTLP/HTTP protobuf request, hand-encoded
    deliver
      push            POST to VictoriaMetrics (http, https), status -> keep or drop
      spool           payloads that could not be pushed, replayed at the next tick
      state           what the last push held, in the state directory
    history         each unit's record across ticks: last failure and why, exits that stick
    syscalls        the operating system without `os` (a tick never imports it: 0.8 ms)
    preload         the hot path's modules compiled into one bundle the launcher executes

The same package is the host program (files/systemd-heartbeat.py, or the role's precompiled
copy run by the timer) and the Ansible module's shared code (plugins/modules import it as
ansible.module_utils.systemd_heartbeat), so it uses the standard library only and imports
its own modules relatively. This file imports nothing: a tick loads only the stages it uses.
"""
