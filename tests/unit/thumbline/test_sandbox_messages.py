"""Errors of the SQL sandbox quote the user's SQL, not what the sandbox wrapped it in."""

from __future__ import annotations

from thumbline.sandbox import unwrapped


def test_the_format_clickhouse_connect_appends_is_taken_out():
    message = (
        "Code: 62. DB::Exception: Syntax error: failed at position 30 (end of query): "
        "SELECT count( FROM thumbline.feedback\n FORMAT JSONCompact. (SYNTAX_ERROR)"
    )
    assert unwrapped(message) == (
        "Code: 62. DB::Exception: Syntax error: failed at position 30 (end of query): "
        "SELECT count( FROM thumbline.feedback. (SYNTAX_ERROR)"
    )


def test_the_checkers_format_query_gives_back_the_sql_it_was_given():
    message = (
        "Unmatched parentheses: In scope SELECT formatQuery('SELECT count( FROM "
        "thumbline.feedback WHERE label = \\'bad\\''). (SYNTAX_ERROR)"
    )
    assert unwrapped(message) == (
        "Unmatched parentheses: In scope SELECT count( FROM thumbline.feedback WHERE "
        "label = 'bad'. (SYNTAX_ERROR)"
    )


def test_the_checkers_explain_and_the_users_own_words_are_left_alone():
    assert unwrapped("In scope EXPLAIN AST SELECT x") == "In scope SELECT x"
    kept = "Unknown identifier `format_json` in SELECT formatDateTime(ts, '%F') FROM t"
    assert unwrapped(kept) == kept


def test_sql_people_send_is_retriable_only_when_the_store_could_not_serve_it():
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    from thumbline.errors import StoreUnavailable
    from thumbline.sandbox import _unwrapped_error
    from thumbline.settings import load_settings

    settings = load_settings()
    mismatch = DatabaseError(
        "Code: 258. DB::Exception: Different number of columns in UNION_ALL elements: "
        "count() and count(), count(). (UNION_ALL_RESULT_STRUCTURES_MISMATCH)"
    )
    busy = DatabaseError("Code: 202. DB::Exception: Too many simultaneous queries. "
                         "(TOO_MANY_SIMULTANEOUS_QUERIES)")  # fmt: skip
    gone = OperationalError("Error HTTPConnectionPool: connection refused")
    statement = _unwrapped_error(mismatch, settings)
    assert not statement.retriable and statement.code == 258  # a 400: sending it again fails
    assert isinstance(_unwrapped_error(busy, settings), StoreUnavailable)
    assert isinstance(_unwrapped_error(gone, settings), StoreUnavailable)
