"""The SQL port under a flood of connections: each one is bounded in time, and their number.

The owner of the chDB store (``thumbline up``) serves every worker's writes on
this port, one thread per connection. Without bounds, any local user holding
connections open (half a request head, then nothing) would take one thread each,
for ever: a few hundred starve the process. Here a connection that sends no
whole request within ``THUMBLINE_SQL_IDLE_SECONDS`` is closed, one past
``THUMBLINE_SQL_MAX_CONNECTIONS`` is turned away with a 503, and thumbline's own
clients and clickhouse-connect reconnect by themselves when an idle
keep-alive connection was closed.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from thumbline.settings import load_settings
from thumbline.sqlclient import OwnerClient
from thumbline.sqlserver import SqlServer

WRITER_PASSWORD, READER_PASSWORD = "w-conns-4c1e-9a7b2d60", "r-conns-7d2f-31e8c5b9"
#: How long a test waits for a condition before it fails (never how fast it must be).
PATIENCE = 30.0


@pytest.fixture
def serve(store, store_settings, tmp_path) -> Iterator[Callable[..., SqlServer]]:
    """Start a SqlServer on the session's store with the given bounds; stopped after the test."""
    servers: list[SqlServer] = []

    def start(*, idle: float = 1.0, connections: int = 64) -> SqlServer:
        settings = load_settings(
            data_dir=tmp_path / f"owner{len(servers)}", clickhouse_url=store_settings.store_url,
            clickhouse_database=store_settings.clickhouse_database,
            sql_writer_password=WRITER_PASSWORD, sql_reader_password=READER_PASSWORD,
            sql_idle_seconds=idle, sql_max_connections=connections,
        )  # fmt: skip
        servers.append(SqlServer(settings, writer=store).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def address(server: SqlServer) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(server.url)
    return parts.hostname or "", parts.port or 0


def closed_by_server(conn: socket.socket) -> bool:
    """Read until the server closes ``conn`` (True), or PATIENCE passes (False)."""
    conn.settimeout(PATIENCE)
    try:
        while conn.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def ping(server: SqlServer) -> int:
    """The status of a ClickHouse-interface query, as a tool sends it."""
    auth = base64.b64encode(f"thumbline:{WRITER_PASSWORD}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{server.url}/?query=SELECT+1", headers={"Authorization": f"Basic {auth}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=PATIENCE) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def test_a_client_that_sends_half_a_request_head_is_disconnected(serve):
    server = serve(idle=1.0)
    with socket.create_connection(address(server)) as conn:
        conn.sendall(b"POST /sql HTTP/1.1\r\nHost: x\r\n")
        assert closed_by_server(conn), "a half-sent head held its connection open"


def test_a_client_that_trickles_its_head_is_disconnected(serve):
    # One byte at a time, each well within the idle time: the head as a whole is bounded.
    server = serve(idle=1.0)
    with socket.create_connection(address(server)) as conn:
        conn.sendall(b"GET /ping HTTP/1.1\r\n")
        deadline, closed = time.monotonic() + PATIENCE, False
        while not closed and time.monotonic() < deadline:
            try:
                conn.sendall(b"X")
                conn.settimeout(0.2)
                closed = conn.recv(4096) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed, "a head sent one byte at a time held its connection open"


def test_an_idle_keep_alive_connection_is_closed(serve):
    server = serve(idle=1.0)
    with socket.create_connection(address(server)) as conn:
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while not reply.endswith(b"Ok.\n"):
            reply += conn.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert closed_by_server(conn), "an idle keep-alive connection stayed open"


def test_connections_past_the_bound_are_refused_and_threads_stay_bounded(serve):
    cap = 4
    server = serve(idle=600.0, connections=cap)  # the holders are never timed out here
    before = threading.active_count()
    with ExitStack() as stack:
        for _ in range(cap):
            conn = stack.enter_context(socket.create_connection(address(server)))
            conn.sendall(b"POST /sql HTTP/1.1\r\nHost: x\r\n")
        assert wait_for(lambda: server.connections == cap)
        for _ in range(50):
            with socket.create_connection(address(server)) as extra:
                extra.settimeout(10)
                try:
                    reply = extra.recv(4096)
                except TimeoutError:
                    pytest.fail("a connection past the bound was held, not refused")
                assert reply.startswith(b"HTTP/1.1 503 "), reply
                assert b"X-ClickHouse-Exception-Code: 202" in reply
                assert b"THUMBLINE_SQL_MAX_CONNECTIONS" in reply
        # a join helper's client says what to do, as a transient failure it waits out
        client = OwnerClient(server.url, server.token)
        with pytest.raises(OperationalError, match="THUMBLINE_SQL_MAX_CONNECTIONS"):
            client.query("SELECT 1")
        client.close()
        assert threading.active_count() <= before + cap
    # the holders went away: their threads end, and a tool's query is served
    assert wait_for(lambda: server.connections == 0)
    assert ping(server) == 200


def test_the_owner_client_queries_again_after_its_idle_connection_was_closed(serve):
    server = serve(idle=1.0)
    client = OwnerClient(server.url, server.token)
    try:
        assert client.query("SELECT 1 AS one").result_rows == [(1,)]
        assert wait_for(lambda: server.connections == 0)  # the server closed it
        assert client.query("SELECT 2 AS two").result_rows == [(2,)]
    finally:
        client.close()


def test_clickhouse_connect_queries_again_after_its_idle_connection_was_closed(serve):
    server = serve(idle=1.0)
    host, port = address(server)
    client = clickhouse_connect.get_client(
        host=host, port=port, username="thumbline", password=WRITER_PASSWORD,
        database=server.settings.clickhouse_database,
    )  # fmt: skip
    try:
        assert client.query("SELECT 1").result_rows == [(1,)]
        assert wait_for(lambda: server.connections == 0)
        assert client.query("SELECT 2").result_rows == [(2,)]
    finally:
        client.close()
