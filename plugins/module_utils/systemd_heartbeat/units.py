# SPDX-License-Identifier: MIT
"""The allowlist: unit names and globs, validated before anything reads them, and the choice
of which units a tick reports (allowlisted names, glob matches, then every failed unit)."""
from .model import HeartbeatError

# Unit types systemd knows; a name without one of these suffixes gets ".service", as systemctl does.
UNIT_SUFFIXES = (
    ".service", ".socket", ".device", ".mount", ".automount", ".swap",
    ".target", ".path", ".timer", ".slice", ".scope",
)
# Characters systemd allows in unit names (unit_name_is_valid), plus the glob characters.
UNIT_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@"
)
GLOB_CHARS = frozenset("*?[]!")
UNIT_NAME_MAX = 255


def is_glob(pattern: str) -> bool:
    return not GLOB_CHARS.isdisjoint(pattern)


def unit_type(name: str) -> str:
    return name.rsplit(".", 1)[-1] if "." in name else ""


def unit_pattern_problem(entry: str) -> "str | None":
    """Why `entry` is not a valid unit name or glob, or None when it is."""
    if not entry:
        return "empty name"
    if len(entry) > UNIT_NAME_MAX:
        return f"longer than {UNIT_NAME_MAX} characters"
    bad = sorted(set(entry) - UNIT_NAME_CHARS - GLOB_CHARS)
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"character {shown} is not allowed in a unit name (systemd-escape it)"
    if entry.startswith((".", "@")):
        return "a unit name cannot start with '.' or '@'"
    if not is_glob(entry) and "." in entry and not entry.endswith(UNIT_SUFFIXES):
        suffix = entry[entry.rindex("."):]
        return f"unknown unit type {suffix!r} (expected one of {', '.join(UNIT_SUFFIXES)})"
    name = normalise_unit_pattern(entry)
    if not is_glob(name) and name[:name.rindex(".")].endswith("@"):
        # systemd refuses a template in ListUnitsByNames, which would fail the whole call
        stem, suffix = name[:name.rindex(".") - 1], name[name.rindex("."):]
        return (f"a template cannot be reported, only its instances: name one "
                f"({stem}@INSTANCE{suffix}) or all of them with a glob ({stem}@*{suffix})")
    return None


def is_unit_name(text: str) -> bool:
    """Whether systemd could have printed this as a unit's name (not a glob)."""
    return unit_pattern_problem(text) is None and not is_glob(text) and text.endswith(UNIT_SUFFIXES)


def normalise_unit_pattern(entry: str) -> str:
    """Give a bare name the .service suffix, the way systemctl reads `k3s` as k3s.service."""
    if is_glob(entry) or entry.endswith(UNIT_SUFFIXES):
        return entry
    return entry + ".service"


def unit_matcher(entry: str) -> str:
    """The MetricsQL label matcher for an allowlist entry (a name or glob), normalised as the
    heartbeat reports it: `unit="k3s.service"` for the bare name k3s, a regex for a glob. The
    dashboard, the alert rules and the daily summary select units with it, so a row, a rule
    and a report line always mean the unit the heartbeat pushed: a glob is read by the
    heartbeat's own glob_tokens, so the regex matches what glob_matches matches.

    Written for a double-quoted MetricsQL string: a literal backslash (from \\x2d escapes) is
    doubled; regex metacharacters go in brackets or get a backslash, itself doubled.
    """
    unit = normalise_unit_pattern(entry)
    if not is_glob(unit):
        return 'unit="' + unit.replace("\\", "\\\\") + '"'
    return 'unit=~"' + "".join(map(token_regex, glob_tokens(unit))) + '"'


# in the string: a regex backslash, doubled for the double-quoted MetricsQL string
STRING_BACKSLASH = "\\\\"


def token_regex(token) -> str:
    """One glob token as RE2 (VictoriaMetrics), written for a double-quoted string."""
    if token is STAR:
        return ".*"
    if token is ANY:
        return "."
    if isinstance(token, str):
        if token == "\\":
            return STRING_BACKSLASH * 2
        if token in "[]":
            return STRING_BACKSLASH + token
        return f"[{token}]" if token in ".+()^$|{}" else token
    negated, ranges = token
    ranges = [(low, high) for low, high in ranges if low <= high]  # a reversed range matches nothing
    if not ranges:  # [!] of nothing is any character; [] of nothing, none
        return "." if negated else "[^" + STRING_BACKSLASH + "s" + STRING_BACKSLASH + "S]"
    members = "".join(class_member(low) if low == high else f"{class_member(low)}-{class_member(high)}"
                      for low, high in ranges)
    return "[" + "^" * negated + members + "]"


def class_member(char: str) -> str:
    if char == "\\":
        return STRING_BACKSLASH * 2
    return STRING_BACKSLASH + char if char in "]^-[" else char


def parse_allowlist(text: str, source: str) -> list[str]:
    """One unit name or glob per line; '#' starts a comment. Raises on the first bad line."""
    patterns = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        problem = unit_pattern_problem(entry)
        if problem:
            raise HeartbeatError(f"{source}:{number}: bad allowlist entry {entry!r}: {problem}")
        patterns.append(normalise_unit_pattern(entry))
    return patterns


def check_unit_patterns(entries: list[str], source: str) -> list[str]:
    """Validate and normalise names given one by one (--unit, the Ansible module)."""
    patterns = []
    for entry in entries:
        problem = unit_pattern_problem(entry)
        if problem:
            raise HeartbeatError(f"{source}: bad unit {entry!r}: {problem}")
        patterns.append(normalise_unit_pattern(entry))
    return patterns


def unique(items) -> list:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


# A glob, tokenized: STAR, ANY (one character), a str (that character) or a (negated, ranges)
# class. Hand-written because fnmatch imports re and os: 5 ms of CPU at every tick whose
# allowlist has a glob, half a tick at a dozen units. Same language as fnmatch.fnmatchcase
# (and systemd's fnmatch(3) for unit patterns): * ? [seq] [!seq] [a-z]; a [ without its ]
# is a plain character (tests/unit/test_allowlist.py checks it against fnmatch).
STAR, ANY = object(), object()


def glob_tokens(pattern: str) -> list:
    tokens, position, end = [], 0, len(pattern)
    while position < end:
        char = pattern[position]
        position += 1
        if char == "*":
            if not tokens or tokens[-1] is not STAR:
                tokens.append(STAR)
        elif char == "?":
            tokens.append(ANY)
        elif char == "[":
            close = position + (pattern[position:position + 1] == "!")
            close += pattern[close:close + 1] == "]"  # a ] first in the class is a member
            close = pattern.find("]", close)
            if close == -1:
                tokens.append("[")
                continue
            body, position = pattern[position:close], close + 1
            negated = body.startswith("!")
            tokens.append((negated, class_ranges(body[negated:])))
        else:
            tokens.append(char)
    return tokens


def class_ranges(body: str) -> tuple:
    """[...]'s members as (low, high) ranges: a-z is a range, a - first or last is itself, and
    a range whose ends are reversed matches nothing (as in fnmatch)."""
    ranges, position = [], 0
    while position < len(body):
        if position + 2 < len(body) and body[position + 1] == "-":
            ranges.append((body[position], body[position + 2]))
            position += 3
        else:
            ranges.append((body[position], body[position]))
            position += 1
    return tuple(ranges)


def one_matches(token, char: str) -> bool:
    if token is ANY:
        return True
    if isinstance(token, str):
        return token == char
    negated, ranges = token
    return any(low <= char <= high for low, high in ranges) != negated


def glob_matches(name: str, tokens: list) -> bool:
    """Whether name matches the glob: every token but * takes one character, so on a mismatch
    it is enough to let the last * take one more character (linear, no backtracking blow-up)."""
    at, token, star, star_at = 0, 0, -1, 0
    while at < len(name):
        if token < len(tokens) and tokens[token] is STAR:
            star, star_at, token = token, at, token + 1
        elif token < len(tokens) and one_matches(tokens[token], name[at]):
            at, token = at + 1, token + 1
        elif star >= 0:
            star_at += 1
            at, token = star_at, star + 1
        else:
            return False
    return all(t is STAR for t in tokens[token:])


def select_units(patterns: list[str], loaded: list[tuple[str, str, str, str]]):
    """Which units to report: allowlisted names, glob matches, then every failed unit.

    `loaded` holds (name, load, active, sub) rows of a listing. Returns (names, allowlisted)
    where names keeps that order without repeats and allowlisted is the set the allowlist asked for.
    """
    exact = [p for p in patterns if not is_glob(p)]
    globs = [p for p in patterns if is_glob(p)]
    matched = []
    if globs:
        compiled = [glob_tokens(g) for g in globs]
        matched = sorted(row[0] for row in loaded if any(glob_matches(row[0], g) for g in compiled))
    # sorted: systemctl lists units in its own order, D-Bus in another
    failed = sorted(row[0] for row in loaded if row[2] == "failed")
    allowlisted = set(exact) | set(matched)
    return unique(exact + matched + failed), allowlisted
