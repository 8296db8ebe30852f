"""OTLP/JSON to protobuf messages, directly: the fields thumbline reads, built with constructors.

protobuf's ``json_format.ParseDict`` walks every field in Python and spent four
times as long as the whole mapping of a span (bench/otlp.py). This reads the
OTLP/JSON encoding as the specification writes it: lowerCamelCase names (the
proto names are read too), ids in hex (base64 also taken), 64-bit integers as
strings or numbers, enums as numbers or names. Links, trace state and dropped
counts are not read. Ids that do not decode are left empty: the span is then
refused alone, naming them.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

#: Nesting of attribute values (arrays and key-value lists), at most.
MAX_VALUE_DEPTH = 16
_KINDS = {name: number for number, name in enumerate(
    ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
     "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"))}  # fmt: skip
_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class NotOtlpJson(ValueError):
    """The document is not an OTLP/JSON ExportTraceServiceRequest (says where)."""


def request_from_json(data: Any) -> ExportTraceServiceRequest:
    """An ``ExportTraceServiceRequest`` from a parsed OTLP/JSON document.

    Raises:
        NotOtlpJson: a field of the wrong type, naming it.
    """
    if not isinstance(data, dict):
        raise NotOtlpJson("expected an object with resourceSpans")
    out = []
    for i, resource in enumerate(_list(data, "resourceSpans", "resource_spans", where="")):
        where = f"resourceSpans[{i}]"
        res = _dict(resource, where)
        scopes = []
        for j, scope in enumerate(_list(res, "scopeSpans", "scope_spans", where=where)):
            at = f"{where}.scopeSpans[{j}]"
            sc = _dict(scope, at)
            meta = _dict(sc.get("scope") or {}, f"{at}.scope")
            spans = [
                _span(s, f"{at}.spans[{k}]") for k, s in enumerate(_list(sc, "spans", where=at))
            ]
            scopes.append(ScopeSpans(
                scope=InstrumentationScope(name=_str(meta.get("name")),
                                           version=_str(meta.get("version"))),
                spans=spans,
            ))  # fmt: skip
        attrs = _dict(res.get("resource") or {}, f"{where}.resource").get("attributes")
        out.append(ResourceSpans(
            resource=Resource(attributes=_attributes(attrs, f"{where}.resource")),
            scope_spans=scopes,
        ))  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=out)


def _span(data: Any, where: str) -> Span:
    span = _dict(data, where)
    status = _dict(span.get("status") or {}, f"{where}.status")
    events = [
        Span.Event(
            time_unix_nano=_uint(e.get("timeUnixNano", e.get("time_unix_nano")),
                                 f"{where}.events[{n}].timeUnixNano"),
            name=_str(e.get("name")),
            attributes=_attributes(e.get("attributes"), f"{where}.events[{n}]"),
        )
        for n, e in enumerate(_dict(x, f"{where}.events") for x in _list(span, "events",
                                                                          where=where))
    ]  # fmt: skip
    return Span(
        trace_id=_id(span.get("traceId", span.get("trace_id")), 16),
        span_id=_id(span.get("spanId", span.get("span_id")), 8),
        parent_span_id=_id(span.get("parentSpanId", span.get("parent_span_id")), 8),
        name=_str(span.get("name")),
        kind=_enum(span.get("kind"), _KINDS, f"{where}.kind"),
        start_time_unix_nano=_uint(span.get("startTimeUnixNano",
                                            span.get("start_time_unix_nano")), where),
        end_time_unix_nano=_uint(span.get("endTimeUnixNano", span.get("end_time_unix_nano")),
                                 where),
        attributes=_attributes(span.get("attributes"), where),
        events=events,
        status=Status(code=_enum(status.get("code"), _CODES, f"{where}.status.code"),
                      message=_str(status.get("message"))),
    )  # fmt: skip


def _attributes(items: Any, where: str) -> list[KeyValue]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise NotOtlpJson(f"{where}.attributes: expected a list")
    out = []
    for n, item in enumerate(items):
        kv = _dict(item, f"{where}.attributes[{n}]")
        out.append(
            KeyValue(
                key=_str(kv.get("key")),
                value=_value(kv.get("value"), f"{where}.attributes[{n}]", 0),
            )
        )
    return out  # fmt: skip


def _value(data: Any, where: str, depth: int) -> AnyValue:
    if data is None:
        return AnyValue()
    if depth > MAX_VALUE_DEPTH:
        raise NotOtlpJson(f"{where}: values nest deeper than {MAX_VALUE_DEPTH} levels")
    value = _dict(data, where)
    for name, build in _VALUES:
        got = value.get(name)
        if got is not None:
            return build(got, where, depth)
    return AnyValue()


def _string(v: Any, where: str, depth: int) -> AnyValue:
    return AnyValue(string_value=_str(v))


def _bool(v: Any, where: str, depth: int) -> AnyValue:
    if not isinstance(v, bool):
        raise NotOtlpJson(f"{where}.boolValue: expected true or false")
    return AnyValue(bool_value=v)


def _int(v: Any, where: str, depth: int) -> AnyValue:
    try:
        number = int(v)
    except (TypeError, ValueError):
        raise NotOtlpJson(f"{where}.intValue: expected an integer") from None
    if not -(2**63) <= number < 2**63:
        raise NotOtlpJson(f"{where}.intValue: out of the 64-bit range")
    return AnyValue(int_value=number)


def _double(v: Any, where: str, depth: int) -> AnyValue:
    try:
        number = float(v)  # "NaN", "Infinity" as protobuf's JSON writes them
    except (TypeError, ValueError):
        raise NotOtlpJson(f"{where}.doubleValue: expected a number") from None
    return AnyValue(double_value=number if math.isfinite(number) else 0.0)


def _array(v: Any, where: str, depth: int) -> AnyValue:
    items = _list(_dict(v, f"{where}.arrayValue"), "values", where=f"{where}.arrayValue")
    return AnyValue(array_value=ArrayValue(
        values=[_value(x, f"{where}.arrayValue", depth + 1) for x in items]
    ))  # fmt: skip


def _kvlist(v: Any, where: str, depth: int) -> AnyValue:
    items = _list(_dict(v, f"{where}.kvlistValue"), "values", where=f"{where}.kvlistValue")
    pairs = [_dict(x, f"{where}.kvlistValue") for x in items]
    return AnyValue(kvlist_value=KeyValueList(values=[
        KeyValue(key=_str(p.get("key")), value=_value(p.get("value"), where, depth + 1))
        for p in pairs
    ]))  # fmt: skip


def _bytes(v: Any, where: str, depth: int) -> AnyValue:
    try:
        return AnyValue(bytes_value=base64.b64decode(_str(v), validate=True))
    except (binascii.Error, ValueError):
        raise NotOtlpJson(f"{where}.bytesValue: not base64") from None


_VALUES = (
    ("stringValue", _string), ("string_value", _string), ("boolValue", _bool),
    ("bool_value", _bool), ("intValue", _int), ("int_value", _int), ("doubleValue", _double),
    ("double_value", _double), ("arrayValue", _array), ("array_value", _array),
    ("kvlistValue", _kvlist), ("kvlist_value", _kvlist), ("bytesValue", _bytes),
    ("bytes_value", _bytes),
)  # fmt: skip


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise NotOtlpJson(f"{where or 'the document'}: expected an object")
    return value


def _list(data: dict[str, Any], *names: str, where: str) -> list[Any]:
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, list):
            raise NotOtlpJson(f"{where + '.' if where else ''}{name}: expected a list")
        return value
    return []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _id(value: Any, size: int) -> bytes:
    """Hex as OTLP/JSON writes ids; base64 as protobuf's JSON mapping does; else empty."""
    if not isinstance(value, str) or not value:
        return b""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return b""
    return raw if len(raw) == size else b""


def _uint(value: Any, where: str) -> int:
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise NotOtlpJson(f"{where}: a time in nanoseconds must be an integer") from None
    if not 0 <= number < 2**64:
        raise NotOtlpJson(f"{where}: a time in nanoseconds out of range")
    return number


def _enum(value: Any, names: dict[str, int], where: str) -> Any:  # an enum ValueType
    if value is None:
        return 0
    if isinstance(value, str):
        if value in names:
            return names[value]
        raise NotOtlpJson(f"{where}: unknown value {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    raise NotOtlpJson(f"{where}: expected a number or a name")
