"""The hand-written protobuf, decoded by the official opentelemetry-proto package."""
from __future__ import annotations

import math

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

TIME_NS = 1795807843983998606

SAMPLES = [
    ("systemd_unit_active", "gauge", (("unit", "a.service"), ("sub_state", "running"), ("host", "h1")), 1.0),
    ("systemd_unit_active", "gauge", (("unit", "b\\x2dc.service"), ("sub_state", "failed"), ("host", "h1")), 0.0),
    ("systemd_unit_restart_count_total", "counter", (("unit", "a.service"), ("host", "h1")), 7.0),
    ("systemd_timer_last_trigger_timestamp_seconds", "gauge", (("unit", "t.timer"), ("host", "h1")), 1795807544.25),
    ("systemd_unit_active", "gauge", (("unit", "a.service"), ("sub_state", "auto-restart"), ("host", "h1")), None),
    ("systemd_unit_info", "gauge", (("unit", "ünï.service"), ("host", "h1")), 1.0),
]


def decode(heartbeat, samples=SAMPLES):
    request = ExportMetricsServiceRequest()
    request.ParseFromString(heartbeat.encode_request(samples, {"host": "h1"}, TIME_NS))
    return request


def test_one_resource_with_the_host_and_no_scope(heartbeat):
    request = decode(heartbeat)
    assert len(request.resource_metrics) == 1
    resource_metrics = request.resource_metrics[0]
    assert [(a.key, a.value.string_value) for a in resource_metrics.resource.attributes] == [("host", "h1")]
    assert len(resource_metrics.scope_metrics) == 1
    assert not resource_metrics.scope_metrics[0].HasField("scope")


def test_names_kinds_and_no_units(heartbeat):
    metrics = decode(heartbeat).resource_metrics[0].scope_metrics[0].metrics
    assert [(m.name, m.WhichOneof("data"), m.unit, m.description) for m in metrics] == [
        ("systemd_unit_active", "gauge", "", ""),
        ("systemd_unit_restart_count_total", "sum", "", ""),
        ("systemd_timer_last_trigger_timestamp_seconds", "gauge", "", ""),
        ("systemd_unit_info", "gauge", "", ""),
    ]


def test_counter_is_a_cumulative_monotonic_sum(heartbeat):
    counter = decode(heartbeat).resource_metrics[0].scope_metrics[0].metrics[1].sum
    assert counter.is_monotonic
    assert counter.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    point = counter.data_points[0]
    assert point.as_double == 7.0 and point.time_unix_nano == TIME_NS and point.flags == 0


def test_data_points_values_attributes_timestamps(heartbeat):
    active = decode(heartbeat).resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points
    got = [({a.key: a.value.string_value for a in p.attributes}, p.WhichOneof("value"),
            p.as_double, p.time_unix_nano, p.flags) for p in active]
    assert got == [
        ({"unit": "a.service", "sub_state": "running", "host": "h1"}, "as_double", 1.0, TIME_NS, 0),
        ({"unit": "b\\x2dc.service", "sub_state": "failed", "host": "h1"}, "as_double", 0.0, TIME_NS, 0),
        # the staleness marker: no value, FLAG_NO_RECORDED_VALUE
        ({"unit": "a.service", "sub_state": "auto-restart", "host": "h1"}, None, 0.0, TIME_NS, 1),
    ]


def test_timestamp_values_keep_their_fraction(heartbeat):
    metric = decode(heartbeat).resource_metrics[0].scope_metrics[0].metrics[2]
    assert metric.gauge.data_points[0].as_double == 1795807544.25


def test_non_ascii_label_values_round_trip(heartbeat):
    metric = decode(heartbeat).resource_metrics[0].scope_metrics[0].metrics[3]
    assert metric.gauge.data_points[0].attributes[0].value.string_value == "ünï.service"


def test_varint_boundaries(heartbeat):
    for number in (0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**63 - 1):
        encoded = heartbeat._varint(number)
        decoded, shift = 0, 0
        for byte in encoded:
            decoded |= (byte & 0x7F) << shift
            shift += 7
        assert decoded == number and encoded[-1] < 0x80


def test_large_payload_decodes(heartbeat):
    samples = [("systemd_unit_active", "gauge", (("unit", f"u{i}.service"), ("sub_state", "running"),
                                                 ("host", "h1")), float(i % 2)) for i in range(2000)]
    points = decode(heartbeat, samples).resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points
    assert len(points) == 2000 and points[1999].as_double == 1.0
    assert not math.isnan(points[0].as_double)
