# SPDX-License-Identifier: MIT
"""The D-Bus wire format (the specification's "Message Protocol"), as much as the heartbeat
needs: marshalling its method calls (always little-endian), and checking, then decoding, what
the bus sends back in either byte order. Nothing here trusts a length, an offset or a
signature it read: every one is checked against the message, and a violation is Malformed."""
import struct

from .model import HeartbeatError

MAX_MESSAGE = 1 << 27  # the specification's limit on a whole message (128 MiB)
MAX_ARRAY = 1 << 26  # ... and on one array's bytes (64 MiB)
MAX_DEPTH = 32  # ... and on nested arrays, structs (each) and variants
METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
# header field code -> the one type the specification allows for it
FIELD_TYPES = {1: "o", 2: "s", 3: "s", 4: "s", 5: "u", 6: "s", 7: "s", 8: "g", 9: "u"}
FIELD_CODES = {code: ord(kind) for code, kind in FIELD_TYPES.items()}
BYTE_ORDERS = {0x6C: "<", 0x42: ">"}  # 'l' little-endian, 'B' big-endian
BASIC_TYPES = frozenset("ybnqiuxtdsogh")
# struct format and size of the fixed-size types; alignment of every type
_FIXED = {"y": ("B", 1), "b": ("I", 4), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4),
          "u": ("I", 4), "h": ("I", 4), "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8)}
_ALIGNMENT = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "h": 4, "s": 4,
              "o": 4, "a": 4, "x": 8, "t": 8, "d": 8, "(": 8, "{": 8}
# readers compiled once per byte order: building a format string at every read costs more
# than the read (this runs for every value of every reply)
_READERS = {order: {code: (struct.Struct(order + fmt).unpack_from, size) for code, (fmt, size) in _FIXED.items()}
            for order in BYTE_ORDERS.values()}
_UINT32 = {order: readers["u"][0] for order, readers in _READERS.items()}
_HEADER = {order: struct.Struct(order + "III").unpack_from for order in BYTE_ORDERS.values()}


class Malformed(HeartbeatError):
    """A message that breaks the wire format: the bus (or whoever wrote it) cannot be trusted."""


# --- marshalling: method calls --------------------------------------------------------

def _header_field(code: int, signature: str, value: str) -> bytes:
    """One header field, a (byte code, variant) struct: the variant's signature, then its value."""
    data = value.encode()
    if signature == "g":  # a signature: one length byte
        return bytes((code, 1, 103, 0, len(data))) + data + b"\0"
    # a string or object path: the variant signature fills 4 bytes, so the length is aligned
    return bytes((code, 1, ord(signature), 0)) + struct.pack("<I", len(data)) + data + b"\0"


_CONSTANT_FIELDS: dict[tuple, bytes] = {}


def method_call(serial: int, path: str, interface: str, member: str, signature: str = "",
                body: bytes = b"", destination: str = "org.freedesktop.systemd1") -> bytes:
    """A METHOD_CALL message: fixed header, header fields (each struct 8-aligned), body."""
    key = (interface, member, signature, destination)
    constant = _CONSTANT_FIELDS.get(key)
    if constant is None:  # the fields after the path are the same for every Get: encode once
        fields = [_header_field(2, "s", interface), _header_field(3, "s", member),
                  _header_field(6, "s", destination)]
        if signature:
            fields.append(_header_field(8, "g", signature))
        # padding goes between the fields, not after the last one: it is not part of the array
        constant = _CONSTANT_FIELDS[key] = b"".join(f + b"\0" * (-len(f) % 8) for f in fields[:-1]) + fields[-1]
    path_field = _header_field(1, "o", path)
    array = path_field + b"\0" * (-len(path_field) % 8) + constant
    # 'l' little-endian, type 1 METHOD_CALL, no flags, protocol version 1
    header = b"l\1\0\1" + struct.pack("<III", len(body), serial, len(array)) + array
    return header + b"\0" * (-len(header) % 8) + body


def marshal_strings(*texts: str) -> bytes:
    """A body of consecutive strings ("s", "ss"): uint32 length, UTF-8, NUL, each 4-aligned."""
    out = b""
    for text in texts:
        data = text.encode()
        out += b"\0" * (-len(out) % 4) + struct.pack("<I", len(data)) + data + b"\0"
    return out


def marshal_string_array(texts: list[str]) -> bytes:
    """An "as" body: the byte length of the elements, then the strings."""
    elements = marshal_strings(*texts)
    return struct.pack("<I", len(elements)) + elements


# systemd's bus_label_escape: bytes other than [A-Za-z0-9] become _XX (a leading digit too)
_PATH_ESCAPES = {code: chr(code) if chr(code).isalnum() else f"_{code:02x}" for code in range(128)}


def unit_path(name: str) -> str:
    """A unit's object path. Unit names are ASCII (systemd allows [A-Za-z0-9:_.@\\-])."""
    escaped = name.translate(_PATH_ESCAPES)
    if escaped[:1].isdigit():
        escaped = f"_{ord(escaped[0]):02x}" + escaped[1:]
    return "/org/freedesktop/systemd1/unit/" + (escaped or "_")


# --- framing: where a message ends, and whose it is -------------------------------------

def body_offset(fields_length: int) -> int:
    """Where a message's body starts: after the 16 fixed bytes and the fields, 8-aligned."""
    return 16 + fields_length + (-fields_length % 8)


def fixed_header(buffer: bytes, start: int) -> tuple[str, int, int, int]:
    """(byte order, type, body start, message end) of the message at `start`, from its first
    16 bytes (which must be there), checked before any length in it is used."""
    order = BYTE_ORDERS.get(buffer[start])
    if order is None:
        raise Malformed(f"unknown byte order {buffer[start]:#x}")
    kind, version = buffer[start + 1], buffer[start + 3]
    if version != 1 or not METHOD_CALL <= kind <= SIGNAL:
        raise Malformed(f"message type {kind} or protocol version {version} unknown")
    body_length, _serial, fields_length = _HEADER[order](buffer, start + 4)
    body_start = body_offset(fields_length)
    if body_start + body_length > MAX_MESSAGE:
        raise Malformed(f"message of {body_start + body_length} bytes is over the {MAX_MESSAGE}-byte limit")
    return order, kind, body_start, body_start + body_length


def header_fields(message: bytes, order: str) -> dict:
    """{code: value} of a message's header fields, each of the type its code requires.
    The one-character variants every known field uses are read inline: this runs for every
    message, and the generic decoder costs several times more."""
    uint32 = _UINT32[order]
    end = 16 + uint32(message, 12)[0]
    if end > len(message):
        raise Malformed("header fields past the end of the message")
    position, fields = 16, {}
    while position < end:
        code = message[position]
        # the variant's signature: one character for every field the specification knows
        kind = message[position + 2] if message[position + 1] == 1 and message[position + 3] == 0 else 0
        expected = FIELD_CODES.get(code)
        if expected is not None and kind != expected:
            raise Malformed(f"header field {code} is not of type {FIELD_TYPES[code]!r}")
        if kind == 0x75:  # u, 4-aligned at +4
            value, position = uint32(message, position + 4)[0], position + 8
        elif kind in (0x73, 0x6F):  # s, o: length at +4, then the text and its NUL
            stop = position + 8 + uint32(message, position + 4)[0]
            if stop >= end or message[stop] != 0:
                raise Malformed("a header string is not NUL-terminated within the header")
            value, position = message[position + 8:stop].decode("utf-8", "surrogateescape"), stop + 1
        elif kind == 0x67:  # g: one length byte at +4
            stop = position + 5 + message[position + 4]
            if stop >= end or message[stop] != 0:
                raise Malformed("a header signature is not NUL-terminated within the header")
            value, position = message[position + 5:stop].decode("ascii"), stop + 1
        else:  # a field from a later version of the specification: skip it, checked
            (_code, value), position = decode_value(message, position, "(yv)", order, end)
        if position > end:
            raise Malformed("a header field runs past the header")
        fields[code] = value
        position += -position % 8
    return fields


# --- unmarshalling: checked signatures and values -------------------------------------

_COMPLETE_TYPES: dict[str, tuple[str, ...]] = {}


def complete_types(signature: str) -> tuple[str, ...]:
    """A signature split into its complete types, after checking it is valid (no unknown code,
    no empty struct, dict entries only in arrays, nesting within the limit). Cached: the
    replies the heartbeat reads repeat a handful of signatures."""
    types = _COMPLETE_TYPES.get(signature)
    if types is None:
        if len(signature) > 255 or not signature.isascii():
            raise Malformed(f"invalid signature {signature[:40]!r}")
        types, position = [], 0
        while position < len(signature):
            end = _type_end(signature, position, 0, 0)
            types.append(signature[position:end])
            position = end
        types = _COMPLETE_TYPES[signature] = tuple(types)
    return types


def _type_end(signature: str, position: int, arrays: int, structs: int) -> int:
    """Index just past the one complete type that starts at `position`."""
    if arrays > MAX_DEPTH or structs > MAX_DEPTH:
        raise Malformed(f"signature {signature[:40]!r} nests too deep")
    code = signature[position] if position < len(signature) else ""
    if code in BASIC_TYPES or code == "v":
        return position + 1
    if code == "a":
        if signature[position + 1:position + 2] == "{":  # a dict entry: basic key, one value
            if signature[position + 2:position + 3] not in BASIC_TYPES:
                raise Malformed(f"invalid dict key in signature {signature[:40]!r}")
            end = _type_end(signature, position + 3, arrays + 1, structs + 1)
            if signature[end:end + 1] != "}":
                raise Malformed(f"a dict entry holds two types, in signature {signature[:40]!r}")
            return end + 1
        return _type_end(signature, position + 1, arrays + 1, structs)
    if code == "(":
        position += 1
        if signature[position:position + 1] == ")":
            raise Malformed("empty struct in signature")
        while signature[position:position + 1] != ")":
            position = _type_end(signature, position, arrays, structs + 1)
        return position + 1
    raise Malformed(f"invalid type {code!r} in signature {signature[:40]!r}")


def decode_value(data: bytes, position: int, signature: str, order: str, end: int, depth: int = 0,
                 deadline=None):
    """(value, next position) of one complete, already checked type. Offsets count from the
    message start, which alignment is relative to; nothing is read at or past `end`. Structs
    become tuples, arrays lists, variants their value. `deadline` is checked while arrays are
    decoded, so a huge one cannot outlast the tick."""
    code = signature[0]
    position += -position % _ALIGNMENT[code]
    if code in "so":
        length = _UINT32[order](data, position)[0]
        stop = position + 4 + length
        if stop >= end or data[stop] != 0:
            raise Malformed("a string is not NUL-terminated within the message")
        return data[position + 4:stop].decode("utf-8", "surrogateescape"), stop + 1
    if code in _FIXED:
        read, size = _READERS[order][code]
        if position + size > end:
            raise Malformed("a value runs past the end of the message")
        value = read(data, position)[0]
        return (bool(value) if code == "b" else value), position + size
    if code == "g":
        stop = position + 1 + (data[position] if position < end else end)
        if stop >= end or data[stop] != 0:
            raise Malformed("a signature is not NUL-terminated within the message")
        return data[position + 1:stop].decode("ascii"), stop + 1
    if code == "v":
        inner, position = decode_value(data, position, "g", order, end)
        if len(complete_types(inner)) != 1 or depth >= MAX_DEPTH:
            raise Malformed(f"a variant must hold one complete type, not {inner[:40]!r}")
        return decode_value(data, position, inner, order, end, depth + 1, deadline)
    if code == "a":
        element = signature[1:]
        length = _UINT32[order](data, position)[0]
        position += 4
        position += -position % _ALIGNMENT[element[0]]  # padding before the first element
        stop = position + length
        if length > MAX_ARRAY or stop > end:
            raise Malformed(f"an array of {length} bytes does not fit the message")
        items: list = []
        while position < stop:
            item, position = decode_value(data, position, element, order, stop, depth + 1, deadline)
            items.append(item)
            if deadline is not None and not len(items) & 1023:
                deadline.remaining("decoding systemd's answer")
        return items, stop
    if code in "({":
        values, position = decode_values(data, position, signature[1:-1], order, end, depth + 1, deadline)
        return values, position
    raise Malformed(f"invalid type {code!r}")  # unreachable for checked signatures


def decode_values(data: bytes, position: int, signature: str, order: str, end: int, depth: int = 0,
                  deadline=None) -> tuple[tuple, int]:
    """A sequence of complete types (a body, a struct's members) -> (tuple of values, position)."""
    values = []
    for member in complete_types(signature):
        value, position = decode_value(data, position, member, order, end, depth, deadline)
        values.append(value)
    return tuple(values), position


# inner signature of a one-value variant -> the type code its reader is under (s: a string)
_SIMPLE_VARIANTS = {b"t": "t", b"x": "x", b"u": "u", b"i": "i", b"s": "s"}


def decode_body(message: bytes, order: str, body_start: int, signature: str, deadline=None) -> tuple:
    """The values of a whole message body; its signature must account for every byte."""
    end = len(message)
    code = _SIMPLE_VARIANTS.get(message[body_start + 1:body_start + 2])
    if signature == "v" and code and message[body_start:body_start + 1] == b"\1" and message[body_start + 2] == 0:
        # a Get's answer, usually one number or string: skip the generic decoder
        if code == "s":
            position = body_start + 4  # 4-aligned: the body starts 8-aligned
            value, position = decode_value(message, position, "s", order, end)
            values = (value,)
        else:
            read, size = _READERS[order][code]
            position = body_start + 3
            position += -position % size
            if position + size != end:
                raise Malformed("a property's value does not fill its message")
            return read(message, position)
    else:
        values, position = decode_values(message, body_start, signature, order, end, 0, deadline)
    if position != end:
        raise Malformed(f"{end - position} bytes after the values of a {signature!r} body")
    return values
