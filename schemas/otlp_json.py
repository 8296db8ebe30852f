"""OTLP/JSON to plain spans, directly: the fields thumbline reads, no protobuf in between.

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

from thumbline.schemas.otlp_mapping import PlainEvent, PlainResource, PlainSpan

#: Nesting of attribute values (arrays and key-value lists), at most.
MAX_VALUE_DEPTH = 16
_KINDS = {name: number for number, name in enumerate(
    ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
     "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"))}  # fmt: skip
_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class NotOtlpJson(ValueError):
    """The document is not an OTLP/JSON ExportTraceServiceRequest (says where)."""


def resources_from_json(data: Any) -> list[PlainResource]:
    """The resources of a parsed OTLP/JSON ``ExportTraceServiceRequest``, with their spans.

    Raises:
        NotOtlpJson: a field of the wrong type, naming it.
    """
    if not isinstance(data, dict):
        raise NotOtlpJson("expected an object with resourceSpans")
    out = []
    for i, resource in enumerate(_list(data, "resourceSpans", "resource_spans", where="")):
        where = f"resourceSpans[{i}]"
        res = _dict(resource, where)
        spans: list[tuple[str, PlainSpan]] = []
        for j, scope in enumerate(_list(res, "scopeSpans", "scope_spans", where=where)):
            at = f"{where}.scopeSpans[{j}]"
            sc = _dict(scope, at)
            name = _str(_dict(sc.get("scope") or {}, f"{at}.scope").get("name"))
            listed = _list(sc, "spans", where=at)
            spans.extend((name, _span(s, f"{at}.spans[{k}]")) for k, s in enumerate(listed))
        attrs = _dict(res.get("resource") or {}, f"{where}.resource").get("attributes")
        out.append(PlainResource(_attributes(attrs, f"{where}.resource"), spans))
    return out


def _span(data: Any, where: str) -> PlainSpan:
    span = _dict(data, where)
    status = _dict(span.get("status") or {}, f"{where}.status")
    events = []
    for n, item in enumerate(_list(span, "events", where=where)):
        event = _dict(item, f"{where}.events[{n}]")
        events.append(PlainEvent(
            _str(event.get("name")),
            _uint(event.get("timeUnixNano", event.get("time_unix_nano")),
                  f"{where}.events[{n}].timeUnixNano"),
            _attributes(event.get("attributes"), f"{where}.events[{n}]"),
        ))  # fmt: skip
    return PlainSpan(
        _id(span.get("traceId", span.get("trace_id")), 16),
        _id(span.get("spanId", span.get("span_id")), 8),
        _id(span.get("parentSpanId", span.get("parent_span_id")), 8),
        _str(span.get("name")),
        _enum(span.get("kind"), _KINDS, f"{where}.kind"),
        _uint(span.get("startTimeUnixNano", span.get("start_time_unix_nano")), where),
        _uint(span.get("endTimeUnixNano", span.get("end_time_unix_nano")), where),
        _enum(status.get("code"), _CODES, f"{where}.status.code"),
        _str(status.get("message")),
        _attributes(span.get("attributes"), where),
        events,
    )


def _attributes(items: Any, where: str) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise NotOtlpJson(f"{where}.attributes: expected a list")
    out = {}
    for n, item in enumerate(items):
        kv = _dict(item, f"{where}.attributes[{n}]")
        out[_str(kv.get("key"))] = _value(kv.get("value"), f"{where}.attributes[{n}]", 0)
    return out


def _value(data: Any, where: str, depth: int) -> Any:
    """An AnyValue as plain Python, as the protobuf path's ``value_of`` gives it."""
    if data is None:
        return None
    if depth > MAX_VALUE_DEPTH:
        raise NotOtlpJson(f"{where}: values nest deeper than {MAX_VALUE_DEPTH} levels")
    value = _dict(data, where)
    for name, build in _VALUES:
        got = value.get(name)
        if got is not None:
            return build(got, where, depth)
    return None


def _string(v: Any, where: str, depth: int) -> Any:
    return _str(v)


def _bool(v: Any, where: str, depth: int) -> Any:
    if not isinstance(v, bool):
        raise NotOtlpJson(f"{where}.boolValue: expected true or false")
    return v


def _int(v: Any, where: str, depth: int) -> Any:
    try:
        number = int(v)
    except (TypeError, ValueError):
        raise NotOtlpJson(f"{where}.intValue: expected an integer") from None
    if not -(2**63) <= number < 2**63:
        raise NotOtlpJson(f"{where}.intValue: out of the 64-bit range")
    return number


def _double(v: Any, where: str, depth: int) -> Any:
    try:
        number = float(v)  # "NaN", "Infinity" as protobuf's JSON writes them
    except (TypeError, ValueError):
        raise NotOtlpJson(f"{where}.doubleValue: expected a number") from None
    return number if math.isfinite(number) else None


def _array(v: Any, where: str, depth: int) -> Any:
    items = _list(_dict(v, f"{where}.arrayValue"), "values", where=f"{where}.arrayValue")
    return [_value(x, f"{where}.arrayValue", depth + 1) for x in items]


def _kvlist(v: Any, where: str, depth: int) -> Any:
    items = _list(_dict(v, f"{where}.kvlistValue"), "values", where=f"{where}.kvlistValue")
    pairs = [_dict(x, f"{where}.kvlistValue") for x in items]
    return {_str(p.get("key")): _value(p.get("value"), where, depth + 1) for p in pairs}


def _bytes(v: Any, where: str, depth: int) -> Any:
    try:
        return base64.b64encode(base64.b64decode(_str(v), validate=True)).decode()
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


def _id(value: Any, size: int) -> str:
    """Lower-case hex of an id in hex (OTLP/JSON) or base64 (protobuf's JSON mapping); else ""."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return ""
    return raw.hex() if len(raw) == size else ""


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


def _enum(value: Any, names: dict[str, int], where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        if value in names:
            return names[value]
        raise NotOtlpJson(f"{where}: unknown value {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    raise NotOtlpJson(f"{where}: expected a number or a name")
