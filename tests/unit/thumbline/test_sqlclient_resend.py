"""OwnerClient sends a request again only when the owner cannot have read it.

A scripted owner on loopback: each connection answers its requests with the
replies given, in order, then closes; it counts the requests it read.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from thumbline.sqlclient import OwnerClient

OK = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}'
ROWS = b'{"columns":["one"],"types":["UInt8"],"rows":[[1]]}'
ROWS_OK = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ROWS), ROWS)


class Owner:
    def __init__(self, script: list[list[bytes]]) -> None:
        """``script``: per connection, the reply to each request it reads, then a close."""
        self.requests = 0
        self._script = script
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for replies in self._script:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                for reply in replies:
                    if not self._read_request(conn):
                        break
                    self.requests += 1
                    conn.sendall(reply)

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += conn.recv(65536)
        return True

    def close(self) -> None:
        if self._thread.is_alive():  # waiting for a connection: one that sends nothing
            socket.create_connection(self._sock.getsockname()).close()
        self._sock.close()
        self._thread.join(5)


@pytest.fixture
def owner() -> Iterator[list[Owner]]:
    owners: list[Owner] = []
    yield owners
    for o in owners:
        o.close()


def test_a_kept_connection_closed_before_any_reply_byte_is_sent_again_once(owner):
    # the owner answered the first request, then closed the kept connection (idle)
    owner.append(Owner([[OK], [ROWS_OK]]))
    client = OwnerClient(owner[0].url, "t")
    client.raw_insert("feedback", insert_block=b"{}")
    assert client.query("SELECT 1").result_rows == [(1,)]
    client.close()
    assert owner[0].requests == 2


def test_a_new_connection_closed_without_a_reply_is_not_sent_again(owner):
    owner.append(Owner([[b""], [OK]]))
    client = OwnerClient(owner[0].url, "t")
    with pytest.raises(OperationalError, match="did not answer"):
        client.raw_insert("feedback", insert_block=b"{}")
    client.close()
    assert owner[0].requests == 1


def test_a_reply_cut_after_its_first_bytes_is_not_sent_again(owner):
    # the owner had begun to answer: it read the request, so a resend would run it twice
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"
    owner.append(Owner([[OK, cut], [OK]]))
    client = OwnerClient(owner[0].url, "t")
    client.raw_insert("feedback", insert_block=b"{}")
    with pytest.raises(OperationalError, match="did not answer"):
        client.raw_insert("feedback", insert_block=b"{}")
    client.close()
    assert owner[0].requests == 2
