# SPDX-License-Identifier: MIT
"""The encode stage: Samples -> an OTLP/HTTP ExportMetricsServiceRequest, protobuf written by
hand (opentelemetry/proto/metrics/v1/metrics.proto), then gzipped. Every function writes one
message and says which; tests decode the result with the official opentelemetry-proto."""
import struct
import zlib

from .text import valid_text


def _varint(number: int) -> bytes:
    """Base-128 varint, least significant group first."""
    if number < 0x80:  # most are: tags, short lengths
        return bytes((number,))
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    """Field key: (field_number << 3) | wire_type. Wire types: 0 varint, 1 64-bit, 2 bytes."""
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
    """A length-delimited field: embedded messages and strings."""
    return _tag(field, 2) + _varint(len(payload)) + payload


def _string_field(field: int, text: str) -> bytes:
    """A protobuf string is valid UTF-8: a byte systemd passed on that was not (kept by
    surrogateescape) or a lone surrogate from a state file is written as an escape (text.py)."""
    try:
        return _bytes_field(field, text.encode("utf-8"))
    except UnicodeEncodeError:
        return _bytes_field(field, valid_text(text).encode("utf-8"))


def _key_value(key: str, value: str) -> bytes:
    # KeyValue { string key = 1; AnyValue value = 2; }  AnyValue { string string_value = 1; }
    return _string_field(1, key) + _bytes_field(2, _string_field(1, value))


# NumberDataPoint { fixed64 time_unix_nano = 3; double as_double = 4;
#                   repeated KeyValue attributes = 7; uint32 flags = 8; }
_TIME_TAG, _DOUBLE_TAG = _tag(3, 1), _tag(4, 1)
# No value and flags = 1 (FLAG_NO_RECORDED_VALUE): VictoriaMetrics stores a staleness
# marker, which ends the series at this timestamp.
_NO_VALUE = _tag(8, 0) + _varint(1)


def _number_data_point(labels: tuple, value: "float | None", time_ns: bytes, attributes: dict) -> bytes:
    """`attributes` caches each (key, value) label's encoding: the host and unit labels repeat
    across a tick's samples, and encoding them once halves the encoder's time."""
    body = b"".join([attributes.get(pair) or attributes.setdefault(pair, _bytes_field(7, _key_value(*pair)))
                     for pair in labels])
    if value is None:
        return body + _TIME_TAG + time_ns + _NO_VALUE
    return body + _TIME_TAG + time_ns + _DOUBLE_TAG + struct.pack("<d", value)


# HistogramDataPoint { fixed64 time_unix_nano = 3; fixed64 count = 4; optional double sum = 5;
#   repeated fixed64 bucket_counts = 6; repeated double explicit_bounds = 7;
#   repeated KeyValue attributes = 9; uint32 flags = 10; }
# Repeated scalars are packed: one length-delimited field holding the values back to back.
_HISTOGRAM_COUNT_TAG, _HISTOGRAM_SUM_TAG = _tag(4, 1), _tag(5, 1)
_HISTOGRAM_NO_VALUE = _tag(10, 0) + _varint(1)


def _histogram_data_point(labels: tuple, value: "tuple | None", time_ns: bytes, attributes: dict) -> bytes:
    """`value`: (count, sum, per-bucket counts (not cumulative: one more than bounds), bounds);
    None for a staleness marker. VictoriaMetrics stores it as name_bucket{le}, _sum, _count."""
    # a histogram's attributes are field 9 (a number's are 7): cached under their own keys
    encoded = []
    for pair in labels:
        key = ("h",) + pair
        encoded.append(attributes.get(key) or attributes.setdefault(key, _bytes_field(9, _key_value(*pair))))
    body = b"".join(encoded) + _TIME_TAG + time_ns
    if value is None:
        return body + _HISTOGRAM_NO_VALUE
    count, total, counts, bounds = value
    return (body + _HISTOGRAM_COUNT_TAG + struct.pack("<Q", count) + _HISTOGRAM_SUM_TAG + struct.pack("<d", total)
            + _bytes_field(6, struct.pack(f"<{len(counts)}Q", *counts))
            + _bytes_field(7, struct.pack(f"<{len(bounds)}d", *bounds)))


def _histogram(points: list[bytes]) -> bytes:
    # Histogram { repeated HistogramDataPoint data_points = 1; AggregationTemporality = 2; }
    return b"".join(_bytes_field(1, point) for point in points) + _tag(2, 0) + _varint(2)


def _gauge(points: list[bytes]) -> bytes:
    # Gauge { repeated NumberDataPoint data_points = 1; }
    return b"".join(_bytes_field(1, point) for point in points)


def _monotonic_sum(points: list[bytes]) -> bytes:
    # Sum { repeated NumberDataPoint data_points = 1;
    #       AggregationTemporality aggregation_temporality = 2; bool is_monotonic = 3; }
    # Temporality 2 is CUMULATIVE; VictoriaMetrics silently drops a Sum without it.
    return (b"".join(_bytes_field(1, point) for point in points)
            + _tag(2, 0) + _varint(2) + _tag(3, 0) + _varint(1))


def _metric(name: str, kind: str, points: list[bytes]) -> bytes:
    # Metric { string name = 1; Gauge gauge = 5; Sum sum = 7; Histogram histogram = 9; }
    # No unit (3) and no description (2): with -opentelemetry.usePrometheusNaming
    # VictoriaMetrics would append unit words to the name; without a unit the stored
    # name is the one written here either way.
    # Histogram histogram = 9;
    data = (_bytes_field(7, _monotonic_sum(points)) if kind == "counter" else
            _bytes_field(9, _histogram(points)) if kind == "histogram" else _bytes_field(5, _gauge(points)))
    return _string_field(1, name) + data


def encode_request(samples: list[tuple], resource: dict[str, str], time_ns: int) -> bytes:
    """ExportMetricsServiceRequest with one resource and one scope holding every metric.

    ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
    ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; }
    Resource { repeated KeyValue attributes = 1; }
    ScopeMetrics { InstrumentationScope scope = 1; repeated Metric metrics = 2; }
    The scope is left out on purpose: from 1.132 VictoriaMetrics turns a present scope into
    scope.name/scope.version labels, which would change series identity on upgrade.
    """
    stamp = struct.pack("<Q", time_ns)
    grouped: dict[tuple[str, str], list[bytes]] = {}
    attributes: dict[tuple[str, str], bytes] = {}
    for name, kind, labels, value in samples:
        point = _histogram_data_point if kind == "histogram" else _number_data_point
        grouped.setdefault((name, kind), []).append(point(labels, value, stamp, attributes))
    metrics = b"".join(_bytes_field(2, _metric(name, kind, points))
                       for (name, kind), points in grouped.items())
    attributes = b"".join(_bytes_field(1, _key_value(k, v)) for k, v in resource.items())
    resource_metrics = _bytes_field(1, attributes) + _bytes_field(2, metrics)
    return _bytes_field(1, resource_metrics)


def gzip(body: bytes) -> bytes:
    """gzip framing (wbits 31) at level 1: a tenth of the bytes for a fraction of a millisecond."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()
