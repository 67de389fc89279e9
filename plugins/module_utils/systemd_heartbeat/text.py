# SPDX-License-Identifier: MIT
"""Texts from outside (unit names and results from systemd, HTTP status lines, bus errors,
paths, a state file's labels), made safe for where they go:

    one_line      a message on stderr stays one line: the journal takes every newline as the
                  start of a new entry, so a reason phrase with one could forge a log line
    valid_text    a label value is valid UTF-8: VictoriaMetrics may refuse a whole push over
                  one invalid string

Both write what they replace as a backslash escape, so nothing is lost and the two sources
(systemctl's text, the bus's strings: both decoded with surrogateescape) give the same text.
"""

# What each control character becomes in one_line: the usual escapes, else \xNN.
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(character: str) -> str:
    """One character as an escape: a byte that was not UTF-8 (surrogateescape keeps it as
    U+DC80..U+DCFF) as that byte, \\xNN; any other code point by its number."""
    code = ord(character)
    if character in _ESCAPES:
        return _ESCAPES[character]
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def one_line(text: str) -> str:
    """`text` with every character that is not printable (newlines, carriage returns, escape
    sequences, lone surrogates that stderr could not encode) escaped; printable text as is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def valid_text(text: str) -> str:
    """`text` as it can be encoded as UTF-8: lone surrogates (bytes that were not UTF-8, or
    a crafted state file's) escaped, everything else as is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(_escape(c) if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text
