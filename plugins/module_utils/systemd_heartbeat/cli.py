# SPDX-License-Identifier: MIT
"""The command line and one tick: read -> shape -> encode -> deliver, all within one Deadline.

Interpreter start-up is most of a tick's cost (bench/, BENCHMARKS.md). So: no argparse,
subprocess, socket or collections (each drags in re, enum, selectors, threading...); the
stages a tick may not need (systemctl, the spool, https) are imported where they are used.
"""
import posix
import sys
import time

from .model import Deadline, DeadlineExceeded, HeartbeatError
from .syscalls import environment, exists, islink, join, lexists
from .text import one_line
from .values import is_finite

DEFAULT_URL = "http://localhost:30428/opentelemetry/v1/metrics"
DEFAULT_TIMEOUT = 10.0
TIMEOUT_MAX = 3600.0
# What the deadline does not cover: starting the interpreter before it is set, writing the
# state file and exiting after it. RELIABILITY.md states it; tests/adversary measures it.
DEADLINE_SLACK = 1.5

USAGE = """usage: systemd-heartbeat [--url URL] [--unit NAME]... [--allowlist FILE] [--host NAME]
                         [--timeout SECONDS] [--state-dir DIR] [--spool-max-bytes N]
                         [--spool-max-age SECONDS] [--auth-file FILE] [--ca-file FILE]
                         [--source dbus|systemctl] [--journal yes|no] [--dry-run]

Push the state of allowlisted and failed systemd units to VictoriaMetrics (OTLP/HTTP).

  --url URL          OTLP/HTTP metrics endpoint (env VMSINGLE_OTLP_URL;
                     default http://localhost:30428/opentelemetry/v1/metrics)
  --unit NAME        a unit name or glob to report, e.g. '*-server.service' (repeatable)
  --allowlist FILE   one unit name or glob per line, '#' comments (env SYSTEMD_HEARTBEAT_ALLOWLIST)
  --host NAME        value of the host label (env SYSTEMD_HEARTBEAT_HOST; default: the host name)
  --timeout SECONDS  bound on the whole tick: reading systemd, the spool's replay and the push
                     (env SYSTEMD_HEARTBEAT_TIMEOUT; default 10)
  --state-dir DIR    where to remember the last push (to end series that disappear) and to
                     spool payloads while the endpoint is down (env STATE_DIRECTORY, which
                     systemd's StateDirectory= sets)
  --spool-max-bytes N  cap on the spool's size; oldest dropped first (env
                     SYSTEMD_HEARTBEAT_SPOOL_MAX_BYTES; default 52428800)
  --spool-max-age SECONDS  drop spooled payloads older than this (env
                     SYSTEMD_HEARTBEAT_SPOOL_MAX_AGE; default 86400)
  --auth-file FILE   credentials for the endpoint, first line 'Bearer <token>' or
                     'Basic <user>:<password>'; must be private (env SYSTEMD_HEARTBEAT_AUTH_FILE;
                     default: the systemd credential otlp-auth, if the service loads one)
  --ca-file FILE     CA certificates to verify an https endpoint with (env SYSTEMD_HEARTBEAT_CA_FILE;
                     default: the system's); verification is always on
  --source dbus|systemctl  read systemd over the system bus socket ($DBUS_SYSTEM_BUS_ADDRESS or
                     /run/dbus/system_bus_socket; default), or with systemctl show; dbus falls
                     back to systemctl, with a warning, when the bus cannot be used or misbehaves
                     (env SYSTEMD_HEARTBEAT_SOURCE)
  --journal yes|no   read the failures of units that moved since the last tick from systemd's
                     journal (exact: each one counted, its time, Result and exit as systemd
                     recorded them; needs the systemd-journal group), or infer them from the
                     state alone (env SYSTEMD_HEARTBEAT_JOURNAL; default yes; without the
                     right to read the journal the failures are inferred, and
                     systemd_heartbeat_history_source says so)
  --dry-run          print the samples that would be pushed, one per line, and push nothing
  -h, --help         show this help
"""


class Settings:
    """The command line, after environment defaults."""

    def __init__(self, environ):
        self.url = environ.get("VMSINGLE_OTLP_URL") or DEFAULT_URL
        self.unit: list[str] = []
        self.allowlist = environ.get("SYSTEMD_HEARTBEAT_ALLOWLIST") or None
        self.host = environ.get("SYSTEMD_HEARTBEAT_HOST") or None
        self.timeout = environ.get("SYSTEMD_HEARTBEAT_TIMEOUT") or str(DEFAULT_TIMEOUT)
        self.state_dir = environ.get("STATE_DIRECTORY") or None
        self.spool_max_bytes = environ.get("SYSTEMD_HEARTBEAT_SPOOL_MAX_BYTES") or "52428800"
        self.spool_max_age = environ.get("SYSTEMD_HEARTBEAT_SPOOL_MAX_AGE") or "86400"
        # a systemd credential (LoadCredential=otlp-auth:...) is picked up without a flag
        credential = join(environ.get("CREDENTIALS_DIRECTORY") or "/nonexistent", "otlp-auth")
        self.auth_file = environ.get("SYSTEMD_HEARTBEAT_AUTH_FILE") or (
            credential if exists(credential) else None)
        self.ca_file = environ.get("SYSTEMD_HEARTBEAT_CA_FILE") or None
        self.source = environ.get("SYSTEMD_HEARTBEAT_SOURCE") or "dbus"
        self.journal = environ.get("SYSTEMD_HEARTBEAT_JOURNAL") or "yes"
        self.dry_run = False


VALUE_FLAGS = {"--url": "url", "--unit": "unit", "--allowlist": "allowlist", "--host": "host",
               "--timeout": "timeout", "--state-dir": "state_dir", "--spool-max-bytes": "spool_max_bytes",
               "--spool-max-age": "spool_max_age", "--auth-file": "auth_file", "--ca-file": "ca_file",
               "--source": "source", "--journal": "journal"}


class HelpRequested(Exception):
    """-h or --help: main() prints USAGE and exits 0."""


def parse_args(argv: list[str], environ=None) -> Settings:
    """Flags as `--flag value` or `--flag=value`; HeartbeatError names a bad one.

    Hand-written: argparse imports re, gettext and shutil, a fifth of a tick's CPU.
    """
    settings = Settings(environment() if environ is None else environ)
    position = 0
    while position < len(argv):
        flag, has_value, value = argv[position].partition("=")
        position += 1
        if flag in ("-h", "--help") and not has_value:
            raise HelpRequested
        if flag == "--dry-run" and not has_value:
            settings.dry_run = True
            continue
        if flag not in VALUE_FLAGS:
            raise HeartbeatError(f"unknown argument {argv[position - 1][:80]!r} (see --help)")
        if not has_value:
            if position >= len(argv):
                raise HeartbeatError(f"{flag} needs a value")
            value = argv[position]
            position += 1
        if flag == "--unit":
            settings.unit.append(value)
        else:
            setattr(settings, VALUE_FLAGS[flag], value)
    settings.timeout = number_flag("--timeout", settings.timeout, 0, TIMEOUT_MAX, low_included=False)
    settings.spool_max_bytes = number_flag("--spool-max-bytes", settings.spool_max_bytes, 0, float(1 << 50))
    settings.spool_max_age = number_flag("--spool-max-age", settings.spool_max_age, 0, 10 * 365 * 86400.0)
    if settings.source not in ("dbus", "systemctl"):
        raise HeartbeatError(f"--source must be dbus or systemctl, got {settings.source[:40]!r}")
    if settings.journal not in ("yes", "no"):
        raise HeartbeatError(f"--journal must be yes or no, got {settings.journal[:40]!r}")
    if not settings.host:
        import _socket

        settings.host = _socket.gethostname()
    return settings


def number_flag(flag: str, text: str, low: float, high: float, low_included: bool = True) -> float:
    """A finite number within [low, high] (or (low, high]); HeartbeatError naming the flag."""
    try:
        value = float(text)
    except ValueError:
        raise HeartbeatError(f"{flag} must be a number, got {text[:40]!r}") from None
    if not (low <= value if low_included else low < value) or not value <= high:  # also false for nan
        bound = "[" if low_included else "("
        raise HeartbeatError(f"{flag} must be a number in {bound}{low:g}, {high:g}], got {text[:40]!r}")
    return value


def read_patterns(args) -> list[str]:
    from .units import check_unit_patterns, parse_allowlist, unique

    patterns = check_unit_patterns(args.unit, "--unit")
    if args.allowlist:
        try:
            with open(args.allowlist, encoding="utf-8") as handle:
                text = handle.read(1 << 20)
        except OSError as error:
            raise HeartbeatError(f"cannot read allowlist {args.allowlist}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise HeartbeatError(f"{args.allowlist}: not UTF-8 text ({error.reason})") from None
        patterns += parse_allowlist(text, args.allowlist)
    return unique(patterns)


def tick(patterns: list[str], host: str, state_dir: "str | None", deadline, source: str = "dbus", run=None,
         writes: bool = True, journal: bool = True):
    """Read and shape one tick: (samples without staleness markers, snapshot, memory), where
    memory is what the last push left, with this tick's history records ("units") and wall
    time ("wall") for the next (history.py). A run that `writes` its state directory holds
    the directory's lock from here until it exits, and sets aside a state file it cannot use;
    one that does not (--dry-run) only reads."""
    from .history import observe_history
    from .read import bus_socket, collect
    from .shape import calendar_expressions, shape
    from .state import begin_load, end_load, load_memory, lock_state

    warnings = []
    if state_dir and writes:
        lock_state(state_dir, deadline.remaining("waiting for the state directory") / 2)
        warnings.append(begin_load(state_dir))
    # first: the bus asks less of what it already knows
    memory = load_memory(state_dir, deadline.timeout, warnings, set_aside_bad=writes)
    if state_dir and writes:
        end_load(state_dir)
    bus, more = bus_socket(source)
    snapshot = collect(patterns, deadline, bus, run, memory["units"])
    snapshot.warnings[:0] = [w for w in warnings if w] + more
    calendar = memory.get("calendar", {})
    wanted = calendar_expressions(snapshot.units, calendar)
    if wanted:
        from .read_systemctl import calendar_periods, run_command

        try:
            calendar.update(calendar_periods(wanted, deadline, run or run_command))
        except HeartbeatError as error:  # only the period of a timer that never fired is missing
            snapshot.warnings.append(f"cannot read calendar periods: {error}")
    memory["calendar"] = calendar
    records = observe_history(snapshot, memory, deadline, run, journal)
    if snapshot.history_source != memory.get("history_source", snapshot.history_source):
        snapshot.warnings.append(HISTORY_SOURCES[snapshot.history_source])  # said once, when it changes
    samples = shape(snapshot, host, memory, records)
    memory["next"] = {"units": records, "wall": snapshot.wall, "history_source": snapshot.history_source}
    return samples, snapshot, memory


# What a change of where the failures come from means, said once when it happens.
HISTORY_SOURCES = {
    "journal": "failures are read from systemd's journal again",
    "inferred": "failures are inferred from the units' state: the journal cannot be read (the service needs "
                "SupplementaryGroups=systemd-journal) or missed entries, or --journal no",
}


def format_value(value: "float | None") -> str:
    if value is None:
        return "stale"
    if is_finite(value) and value == int(value):
        return str(int(value))
    return repr(value)


def format_sample(sample: tuple) -> str:
    """Prometheus text style: name{label="value",...} value; a histogram as the series
    VictoriaMetrics makes of it (name_bucket{le} cumulative, name_sum, name_count), a line each."""
    name, kind, labels, value = sample
    if kind == "histogram":
        if value is None:
            return "\n".join(format_sample((name + suffix, "counter", labels, None)) for suffix in ("_count", "_sum"))
        count, total, counts, bounds = value
        cumulative = [sum(counts[:i + 1]) for i in range(len(counts))]
        lines = [format_sample((f"{name}_bucket", "counter", labels + (("le", bound),), float(n)))
                 for bound, n in zip([f"{b:g}" for b in bounds] + ["+Inf"], cumulative)]
        return "\n".join(lines + [format_sample((f"{name}_sum", "gauge", labels, total)),
                                  format_sample((f"{name}_count", "counter", labels, float(count)))])
    text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
    line = one_line(f"{name}{{{text}}} {format_value(value)}")
    if value is None:
        line += "  # staleness marker: this series ended"
    return line


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def say(message: str) -> None:
    """One line on stderr, whatever the message holds: texts from outside (a reason phrase, a
    bus error, a unit name) can carry newlines, which the journal would take as new entries."""
    sys.stderr.write(f"systemd-heartbeat: {one_line(message)}\n")


def main(argv: "list[str] | None" = None) -> int:
    started = time.monotonic()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except HelpRequested:
        sys.stdout.write(USAGE)
        return 0
    except HeartbeatError as error:
        say(str(error))
        return 1
    try:
        return one_tick(args, started)
    finally:  # a killed tick's lock goes with its process
        if args.state_dir:
            from .state import unlock_state

            unlock_state(args.state_dir)


def one_tick(args, started: float) -> int:
    try:
        deadline = Deadline(args.timeout, started)
        patterns = read_patterns(args)
        endpoint = None if args.dry_run else endpoint_of(args)
        samples, snapshot, memory = tick(patterns, args.host, args.state_dir, deadline, args.source,
                                         writes=not args.dry_run, journal=args.journal == "yes")
    except HeartbeatError as error:
        say(str(error))
        return 1
    for warning in snapshot.warnings:
        say(f"warning: {warning}")
    from .shape import spool_samples, staleness_markers

    dropped = memory["spool_dropped"]
    waiting = []
    if args.state_dir:
        if spool_in_use(args.state_dir):
            from .spool import spool_files

            waiting = spool_files(args.state_dir)
        samples += spool_samples(args.host, len(waiting), dropped)
    samples += staleness_markers(memory, samples)  # last: on every series of this push
    if args.dry_run:
        sys.stdout.write("".join(format_sample(s) + "\n" for s in samples))
        return 0
    return deliver(args, endpoint, samples, snapshot, memory, waiting, deadline)


def spool_in_use(state_dir: str) -> bool:
    """Whether the spool holds anything (or is not a plain directory): most ticks find it empty
    and need not load the spool's code (BENCHMARKS.md)."""
    try:
        return bool(posix.listdir(join(state_dir, "spool"))) or islink(join(state_dir, "spool"))
    except FileNotFoundError:
        return False
    except OSError:
        return True  # let spool_files say what is wrong with it


def endpoint_of(args):
    from .push import Endpoint, read_authorization

    try:
        endpoint = Endpoint(args.url)
    except HeartbeatError as error:
        raise HeartbeatError(f"--url {error}") from None
    endpoint.authorization = read_authorization(args.auth_file) if args.auth_file else None
    endpoint.ca_file = args.ca_file
    return endpoint


def deliver(args, endpoint, samples: list[tuple], snapshot, memory: dict, waiting: list, deadline) -> int:
    """Replay the spool, push this tick, spool it if that failed, remember what landed."""
    from .otlp import encode_request, gzip
    from .push import PushFailed, PushRejected, post_payload
    from .state import pushed_memory, remember

    dropped = memory["spool_dropped"]
    time_ns = int(snapshot.wall * 1e9)
    payload = gzip(encode_request(samples, {"host": args.host}, time_ns))
    failure = rejected = None
    if waiting:  # older payloads first, so VictoriaMetrics gets every tick in order
        from .spool import spool_expire, spool_replay

        waiting = spool_expire(waiting, args.spool_max_age, snapshot.wall, dropped)
        failure = spool_replay(endpoint, waiting, deadline, dropped)[1]
    if failure is None:
        try:
            post_payload(endpoint, payload, deadline)
        except PushRejected as error:
            rejected = str(error)
            dropped["rejected"] = dropped.get("rejected", 0) + 1
        except (PushFailed, DeadlineExceeded) as error:
            failure = str(error)
    if failure is not None and args.state_dir:
        failure = spool_this(args, payload, time_ns, failure, waiting, snapshot.wall, dropped)
    elif failure is not None:
        return fail(failure)
    # A spooled payload will reach VictoriaMetrics before the next tick's: remember it too.
    # A rejected one never will: keep the last push's series (they still need their staleness
    # markers), count the drop; what the tick saw of each unit is kept all the same, since
    # systemd may have forgotten it by the next tick.
    if rejected:
        keep = dict(memory, spool_dropped=dropped, **memory["next"])
        del keep["next"]
    else:
        keep = pushed_memory(samples, memory["calendar"], dropped, memory["next"])
    try:
        warning = remember(args.state_dir, keep, args.timeout)
        if warning:
            say(f"warning: {warning}")
    except OSError as error:
        say(f"warning: cannot record the push in {args.state_dir}: {error.strerror}")
    if rejected:
        return fail(f"{rejected} (payload dropped, reason: rejected)")
    return 1 if failure is not None else 0


def spool_this(args, payload: bytes, time_ns: int, failure: str, waiting: list, now: float, dropped: dict) -> str:
    """Keep this tick's payload for the next one, within the spool's caps."""
    from .spool import spool_trim, spool_write

    try:
        spooled = spool_write(args.state_dir, payload, time_ns)
    except OSError as error:
        say(f"{failure}; and cannot spool it: {error.strerror}")
        return failure
    files = [s for s in waiting if lexists(s.path)] + [spooled]
    spool_trim(files, args.spool_max_bytes, args.spool_max_age, now, dropped)
    say(f"{failure} (spooled; {sum(1 for s in files if lexists(s.path))} waiting)")
    return failure


def fail(message: str) -> int:
    say(message)
    return 1


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: freeing every object and module costs a tick
    several milliseconds, a third of it at a dozen units (BENCHMARKS.md). Everything the tick
    wrote is closed by then; only the standard streams need flushing."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 1
    posix._exit(code)


def run() -> None:
    """The program's entry point: main(), then exit_now(). A bug (an exception nothing
    expected) still ends in one line, not a traceback in the journal."""
    import gc

    # A tick lives for a fraction of a second and leaves no cycles worth collecting: the cyclic
    # collector would only walk, again and again, the objects a tick makes (3.5 ms of the
    # 80 ms at 1,000 units: BENCHMARKS.md). The process's exit frees everything.
    gc.disable()
    try:
        code = main()
    except Exception as error:  # noqa: BLE001 - the last line of defence, and it says so
        say(f"internal error, please report: {type(error).__name__}: {str(error)[:200]}")
        code = 2
    exit_now(code)
