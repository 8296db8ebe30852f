"""The store endpoint's wire and rules without a store: bodies, inserts, settings."""

from __future__ import annotations

import gzip
import io

import lz4.frame  # type: ignore[import-untyped]
import pytest

from thumbline.chrules import setting_allowed, settings_of
from thumbline.chwire import EndpointError, read_body, split_insert
from thumbline.errors import SqlRefused


def test_a_chunked_body_is_read_whole():
    wire = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert read_body(io.BytesIO(wire), {"transfer-encoding": "chunked"}) == b"hello world"


def test_every_lz4_frame_of_a_body_is_read():
    body = lz4.frame.compress(b"a" * 1000) + lz4.frame.compress(b"b" * 1000)
    out = read_body(io.BytesIO(body), {"content-length": str(len(body)), "content-encoding": "lz4"})
    assert out == b"a" * 1000 + b"b" * 1000


def test_a_small_bomb_stops_at_the_bound():
    body = gzip.compress(b"x" * 10_000_000)
    with pytest.raises(EndpointError) as caught:
        read_body(io.BytesIO(body), {"content-length": str(len(body)), "content-encoding": "gzip"},
                  limit=1_000_000)  # fmt: skip
    assert caught.value.code == 307


def test_a_declared_length_past_the_bound_is_refused_unread():
    with pytest.raises(EndpointError):
        read_body(io.BytesIO(b""), {"content-length": str(10**12)}, limit=1000)


def test_an_unknown_encoding_says_which_are_read():
    with pytest.raises(EndpointError, match="gzip, deflate, lz4 or zstd"):
        read_body(io.BytesIO(b"x"), {"content-length": "1", "content-encoding": "br"})


def test_an_inserts_data_starts_after_one_line_break_even_when_it_looks_like_space():
    statement, fmt, data = split_insert(b"INSERT INTO t (a, b) FORMAT Native\n\n\x02rest")
    assert (statement, fmt, data) == ("INSERT INTO t (a, b) FORMAT Native", "Native", b"\n\x02rest")


def test_values_become_the_values_format():
    statement, fmt, data = split_insert(b"INSERT INTO t VALUES (1, 'FORMAT x'), (2, 'y')")
    assert fmt == "Values" and data == b" (1, 'FORMAT x'), (2, 'y')"
    assert statement == "INSERT INTO t  FORMAT Values"


def test_an_insert_select_has_no_data():
    assert split_insert(b"INSERT INTO t SELECT 1")[2] is None


@pytest.mark.parametrize(
    "name", ["output_format_schema", "format_schema", "format_template_resultset", "allow_ddl",
             "user_files_path", "readonly_x", "s3_truncate_on_insert"],
)  # fmt: skip
def test_settings_that_reach_files_or_rights_are_not_allowed(name):
    assert not setting_allowed(name)


def test_insert_and_format_settings_are_allowed():
    assert all(
        map(
            setting_allowed,
            [
                "insert_deduplication_token",
                "date_time_input_format",
                "input_format_skip_unknown_fields",
                "max_execution_time",
            ],
        )
    )


def test_settings_clauses_take_plain_literals_only():
    assert settings_of("SELECT 1\nSETTINGS max_threads = 2, final = 1", "db") == {
        "max_threads": "2",
        "final": "1",
    }
    with pytest.raises(SqlRefused, match="plain literal"):
        settings_of("SELECT 1\nSETTINGS max_threads = toUInt8(2)", "db")
    with pytest.raises(SqlRefused, match="disk"):
        settings_of("CREATE TABLE t (a UInt8) ENGINE = Memory\nSETTINGS disk = disk(path = '/')",
                    "db")  # fmt: skip
