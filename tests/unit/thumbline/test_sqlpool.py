"""Pools of store clients: a client that saw a query fail is never lent again.

chDB hands the rows of a query that failed part way to the client's next
query, so a pool replaces such a client; a refusal of the checker (no query
ran) keeps it.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from thumbline.errors import SqlRefused, StoreError
from thumbline.settings import Settings, load_settings
from thumbline.sqlpool import ClientPool


class FakeClient:
    numbers = itertools.count()

    def __init__(self) -> None:
        self.number = next(self.numbers)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def opener(settings: Settings) -> Any:
    return FakeClient()


@pytest.fixture
def pool() -> ClientPool:
    return ClientPool(load_settings(), size=1, opener=opener)


def lend(pool: ClientPool) -> FakeClient:
    with pool.client() as client:
        return client  # type: ignore[return-value]


@pytest.mark.parametrize(
    "failure",
    [
        StoreError("Code: 159. Timeout exceeded", code=159),
        SqlRefused("stopped at a limit", reason="limit", code=159),
        UnicodeDecodeError("utf-8", b"\xf8", 0, 1, "invalid start byte"),
    ],
)
def test_a_client_whose_query_failed_is_closed_and_replaced(pool, failure):
    first = lend(pool)
    with pytest.raises(type(failure)), pool.client():
        raise failure
    second = lend(pool)
    assert first.closed and second is not first and not second.closed


def test_a_refusal_of_the_checker_keeps_the_client(pool):
    first = lend(pool)
    with pytest.raises(SqlRefused), pool.client():
        raise SqlRefused("refused: table function file()", reason="table_function")
    assert lend(pool) is first and not first.closed


def test_closing_closes_every_client(pool):
    client = lend(pool)
    pool.close()
    pool.close()
    assert client.closed
