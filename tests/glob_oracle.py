"""The oracles for the heartbeat's glob reading (units.glob_tokens): Python's fnmatch.fnmatchcase,
and glibc's fnmatch(3) where the two disagree on purpose.

One disagreement is deliberate. CPython's fnmatch drops a reversed range (`z-a`) from a [...]
and, if a `!` followed it, that `!` becomes the class's first character and is then read as a
negation: `[z-a!]` matches any character and `[z-a!x]` anything but `x` (fnmatch.py, "Negated
empty range"). glibc's fnmatch(3), which shells and systemctl's patterns use, reads that `!` as
itself, and so does the heartbeat: a reversed range matches nothing and changes nothing else.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch

FNM_NOESCAPE = 0x02  # glibc: a backslash is itself, as in Python's fnmatch and the heartbeat


def cpython_negates_a_literal_bang(pattern: str) -> bool:
    """Whether fnmatch.translate reads one of the pattern's [...] as negated although it does not
    start with `!` (the quirk above). Brackets are found the way fnmatch.translate finds them."""
    at, end = 0, len(pattern)
    while at < end:
        char, at = pattern[at], at + 1
        if char != "[":
            continue
        close = at + (pattern[at:at + 1] == "!")
        close += pattern[close:close + 1] == "]"
        close = pattern.find("]", close)
        if close == -1:
            continue  # an unclosed [ is itself
        body, at = pattern[at:close], close + 1
        translated = fnmatch.translate("[" + body + "]")
        if not body.startswith("!") and translated.startswith(("(?s:[^", "(?s:.)")):
            return True
    return False


def fnmatch_oracle(name: str, pattern: str) -> bool:
    """fnmatch.fnmatchcase, the oracle for every glob but those CPython reads against glibc
    (callers leave those to glibc_fnmatch: hypothesis `assume`s them away)."""
    assert not cpython_negates_a_literal_bang(pattern), pattern
    return fnmatch.fnmatchcase(name, pattern)


def glibc_fnmatch(name: str, pattern: str) -> bool:
    """glibc's fnmatch(3) with FNM_NOESCAPE, through ctypes, for ASCII patterns and names."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return libc.fnmatch(pattern.encode("ascii"), name.encode("ascii"), FNM_NOESCAPE) == 0
