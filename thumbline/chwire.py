"""The wire of the store endpoint (:mod:`thumbline.chhttp`): ClickHouse's HTTP interface.

Request bodies (length or chunked, compressed or not, bounded), the split of an
INSERT's statement from its data, formats and their content types, and errors
in ClickHouse's shape (``Code: N. DB::Exception: ...`` and its HTTP status).
"""

from __future__ import annotations

import io
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from thumbline.sqltext import unquoted

#: Largest body (before and after decompression) and largest statement.
MAX_BODY_BYTES = 512 * 1024 * 1024
MAX_SQL_BYTES = 1_000_000
#: Requests served at once; more get 503 (clickhouse-connect waits and sends them again).
MAX_CONCURRENT = 8
#: URL parameters of the HTTP interface itself: read here, never passed on as settings.
TRANSPORT = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "wait_end_of_query", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "client_protocol_version", "enable_http_compression", "http_zlib_compression_level",
    "compress", "decompress", "user", "quota_key", "buffer_size", "add_http_cors_header",
})  # fmt: skip
FORMATS = frozenset({
    "Native", "RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes", "TabSeparated",
    "TSV", "TabSeparatedWithNames", "TSVWithNames", "TabSeparatedWithNamesAndTypes",
    "TSVWithNamesAndTypes", "TabSeparatedRaw", "TSVRaw", "CSV", "CSVWithNames",
    "CSVWithNamesAndTypes", "JSON", "JSONCompact", "JSONEachRow", "JSONCompactEachRow",
    "JSONStrings", "JSONCompactStrings", "JSONColumns", "JSONColumnsWithMetadata",
    "JSONCompactColumns", "JSONStringsEachRow", "JSONCompactEachRowWithNames",
    "JSONCompactEachRowWithNamesAndTypes", "JSONLines", "NDJSON", "Pretty", "PrettyCompact",
    "PrettyCompactMonoBlock", "PrettySpace", "PrettyNoEscapes", "Values", "Vertical", "XML",
    "Markdown", "Parquet", "Arrow", "ArrowStream", "ORC", "Null",
})  # fmt: skip
#: A query_id this endpoint echoes in X-ClickHouse-Query-Id: printable ASCII, no spaces
#: (a line break would write headers of the sender's choosing into the reply).
QUERY_ID = re.compile(r"[\x21-\x7e]{1,256}")
INSERT_START = re.compile(rb"\s*INSERT\s", re.IGNORECASE)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_LENGTH = re.compile(r"[0-9]{1,18}")
_DATA_START = re.compile(r"\b(?:FORMAT\s+([A-Za-z][A-Za-z0-9_]*)|VALUES)\b", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)\. (.*)", re.DOTALL)
_NAMES = {164: "READONLY", 202: "TOO_MANY_SIMULTANEOUS_QUERIES", 497: "ACCESS_DENIED",
          516: "AUTHENTICATION_FAILED", 62: "SYNTAX_ERROR", 73: "UNKNOWN_FORMAT",
          115: "UNKNOWN_SETTING", 81: "UNKNOWN_DATABASE", 1001: "STD_EXCEPTION",
          307: "TOO_MANY_BYTES", 36: "BAD_ARGUMENTS"}  # fmt: skip
_STATUS = {516: 401, 497: 403, 164: 403, 202: 503, 60: 404, 81: 404, 62: 400, 73: 400, 36: 400,
           115: 400, 307: 413}  # fmt: skip


class EndpointError(Exception):
    """A ClickHouse-shaped refusal: its code, the HTTP status, and the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    """One request of the HTTP interface, its body read and decompressed; header names in
    lower case."""

    method: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


def read_body(
    rfile: io.BufferedIOBase, headers: Mapping[str, str], limit: int | None = None
) -> bytes:
    """The request's body (Content-Length or chunked), decompressed, at most ``limit`` bytes
    (:data:`MAX_BODY_BYTES` by default).

    Raises:
        EndpointError: too large, or a compression this endpoint does not read.
    """
    limit = MAX_BODY_BYTES if limit is None else limit
    too_large = EndpointError(307, f"the request body is over {limit} bytes")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts, size = [], 0
        while True:
            line = rfile.readline(66)
            digits = line.split(b";", 1)[0].strip()
            # hex digits only: int() takes "-1" (and a read of -1 bytes has no end)
            if not _CHUNK_SIZE.fullmatch(digits):
                raise EndpointError(1001, "a malformed chunk in the request body")
            chunk = int(digits, 16)
            if chunk == 0:
                while rfile.readline(1026).strip():  # trailers
                    pass
                break
            size += chunk
            if size > limit:
                raise too_large
            parts.append(rfile.read(chunk))
            rfile.readline(3)
        data = b"".join(parts)
    else:
        length = content_length(headers)
        if length > limit:
            raise too_large
        data = rfile.read(length) if length > 0 else b""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return data
    out = _decompress(data, encoding, limit + 1)
    if len(out) > limit:
        raise too_large
    return out


def content_length(headers: Mapping[str, str]) -> int:
    """The request's Content-Length (0 without one).

    Raises:
        EndpointError: one that is not decimal digits: int() takes "-1", and a read of
            -1 bytes reads until the peer closes.
    """
    text = headers.get("content-length", "").strip()
    if not text:
        return 0
    if not _LENGTH.fullmatch(text):
        raise EndpointError(36, "Content-Length is not a number of bytes")
    return int(text)


def _decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` decompressed, stopping at ``limit`` bytes (a small bomb stays small).

    A body may hold several frames (gzip members): clickhouse-connect compresses
    an insert block by block, so each frame is read in turn.
    """
    opener = _decompressors().get(encoding)
    if opener is None:
        raise EndpointError(
            1001, f"Content-Encoding {encoding} is not read here: use gzip, deflate, lz4 or zstd"
        )
    out, rest = bytearray(), data
    try:
        while rest and len(out) < limit:
            decompressor = opener()
            out += decompressor.decompress(rest, limit - len(out))
            if not decompressor.eof:
                if len(out) < limit:
                    raise ValueError("the body ends inside a compressed frame")
                break
            rest = decompressor.unused_data
    except (zlib.error, RuntimeError, ValueError, OSError) as exc:
        raise EndpointError(1001, f"cannot decompress the {encoding} body: {exc}") from None
    return bytes(out)


def _decompressors() -> dict[str, Callable[[], Any]]:
    import lz4.frame  # type: ignore[import-untyped]
    from backports import zstd  # clickhouse-connect's dependency

    return {
        "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
        "deflate": lambda: zlib.decompressobj(zlib.MAX_WBITS),
        "lz4": lz4.frame.LZ4FrameDecompressor,
        "zstd": zstd.ZstdDecompressor,
    }


class Verbatim:
    """A query parameter's text as the client sent it (escaped as ClickHouse's HTTP
    interface takes it): clickhouse-connect passes it to chDB untouched."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def message(text: str) -> str:
    """ClickHouse's own ``Code: N. DB::Exception: ...`` out of a driver's error text."""
    match = _CODE.search(text)
    return f"Code: {match.group(1)}. {match.group(2).strip()}" if match else text


def statement_of(data: bytes) -> str:
    if len(data) > MAX_SQL_BYTES:
        raise EndpointError(307, f"the query is over {MAX_SQL_BYTES} bytes")
    text = data.decode("utf-8", "replace")
    if not text.strip():
        raise EndpointError(62, "Empty query")
    return text


def split_insert(data: bytes) -> tuple[str, str, bytes | None]:
    """An INSERT's statement, its format and its data (None: no data, an INSERT ... SELECT)."""
    head = data[:MAX_SQL_BYTES].decode("latin-1")  # one character per byte: offsets hold
    match = _DATA_START.search(unquoted(head))
    if match is None:
        return statement_of(data), "", None
    if match.group(1) is None:  # VALUES: the data starts at the first tuple
        statement, fmt, end = head[: match.start()] + " FORMAT Values", "Values", match.end()
    else:  # the data starts after the spaces and the one line break that follow the format
        statement, fmt, end = head[: match.end()], match.group(1), match.end()
        while end < len(head) and head[end] in " \t":
            end += 1
        if head.startswith("\r\n", end):
            end += 2
        elif head.startswith("\n", end):
            end += 1
    return statement.encode("latin-1").decode("utf-8", "replace"), fmt, data[end:]


def output_format(name: str) -> str:
    if name not in FORMATS:
        raise EndpointError(73, f"Unknown or refused format {name}: use one of "
                            f"{', '.join(sorted(FORMATS))}")  # fmt: skip
    return name


def content_type(fmt: str) -> str:
    if fmt.startswith(("JSON", "NDJSON")):
        return "application/json; charset=UTF-8"
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    if fmt.startswith("CSV"):
        return "text/csv; charset=UTF-8"
    if fmt.startswith(("Pretty", "Vertical", "Markdown", "Values", "XML")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def error_reply(exc: EndpointError, query_id: str, mask: Callable[[str], str]) -> Reply:
    """ClickHouse's error reply: ``Code: N. DB::Exception: ...``, its status and header;
    ``mask`` takes secrets out of the text. A ``query_id`` not of :data:`QUERY_ID` is not
    echoed."""
    query_id = query_id if QUERY_ID.fullmatch(query_id) else ""
    name = _NAMES.get(exc.code, "")
    text = str(exc)
    if not text.startswith("Code:"):
        text = f"Code: {exc.code}. DB::Exception: {text}" + (f". ({name})" if name else "")
    headers = {
        "X-ClickHouse-Exception-Code": str(exc.code), "X-ClickHouse-Query-Id": query_id,
        "Content-Type": "text/plain; charset=UTF-8",
    }  # fmt: skip
    return Reply(_STATUS.get(exc.code, 500), (mask(text) + "\n").encode(), headers)


T = TypeVar("T")


class Recent(Generic[T]):
    """The last ``size`` answers by key (small keys only: statements over 64 KB are not
    kept); thread-safe. A failed computation is not kept."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        if len(str(key)) <= 65_536:
            with self._lock:
                self._items[key] = value
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
        return value


#: Most fields a multipart/form-data request may carry (the query and its parameters).
MAX_FORM_FIELDS = 1_000


def form_fields(content_type: str, body: bytes) -> dict[str, str] | None:
    """The fields of a ``multipart/form-data`` body (clickhouse-connect sends the query and
    its parameters so once they pass 4 KB of URL), as ClickHouse reads them: URL
    parameters; None for any other body.

    Raises:
        EndpointError: a form that cannot be read, a file in it (external tables are not
            served), or more than :data:`MAX_FORM_FIELDS` fields.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    from email.parser import BytesParser
    from email.policy import HTTP

    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise EndpointError(36, "a multipart/form-data body that is not a form (no boundary?)")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        if len(fields) >= MAX_FORM_FIELDS:
            raise EndpointError(36, f"a form of more than {MAX_FORM_FIELDS} fields")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is not None:
            raise EndpointError(
                36, "a form field without a name, or a file (external tables are not served)"
            )
        payload = part.get_payload(decode=True)
        fields[name] = (payload if isinstance(payload, bytes) else b"").decode(
            part.get_content_charset() or "utf-8", errors="strict"
        )
    return fields
