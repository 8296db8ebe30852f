"""Bounds on the connections of a threaded HTTP server: how many, and how long each waits.

:class:`BoundedHTTPServer` serves each connection in a thread of its own, as
``ThreadingHTTPServer`` does, but holds at most ``max_connections`` at once: one
more is answered ``503`` (ClickHouse's ``Code: 202``) from the accepting thread
and closed, without a thread and without reading it. :class:`BoundedHandler`
bounds a connection's time: the head of each request (the request line and
headers) must be whole within ``idle_seconds`` of the connection's start or of
the previous reply (so a keep-alive connection idle that long is closed, and a
head sent a byte at a time too), and a body may pause at most ``idle_seconds``
between bytes. A bounded number of connections, each bounded in time, is a
bounded number of threads whatever a client sends.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from thumbline.chwire import EndpointError, error_reply

__all__ = ["BoundedHTTPServer", "BoundedHandler"]


class BoundedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding at most ``max_connections`` connections at once."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BoundedHandler], *, max_connections: int
    ) -> None:
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._held = 0
        self._count_lock = threading.Lock()
        super().__init__(address, handler)

    @property
    def connections(self) -> int:
        """Connections held now (each has its thread)."""
        return self._held

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            return self._refuse(request)
        with self._count_lock:
            self._held += 1
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:  # the connection is closed: its slot is free
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self._held -= 1
        self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 and close, in the accepting thread: nothing here may wait."""
        reply = error_reply(
            EndpointError(
                202,
                f"the SQL port holds {self.max_connections} connections already; retry shortly, "
                "close idle clients, or raise THUMBLINE_SQL_MAX_CONNECTIONS",
            ),
            "", lambda text: text,
        )  # fmt: skip
        head = [f"HTTP/1.1 {reply.status} Service Unavailable"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        head += [f"Content-Length: {len(reply.body)}", "Connection: close", "", ""]
        try:
            request.setblocking(False)
            try:  # what has come already: unread, the close would reset the reply away
                request.recv(65536)
            except BlockingIOError:
                pass
            request.send("\r\n".join(head).encode() + reply.body)  # fits a fresh socket buffer
        except OSError:
            pass  # the client is gone, or its buffer full: the close is the refusal
        self.shutdown_request(request)


class _Deadline(io.RawIOBase):
    """A socket's reads, each waiting at most until ``deadline`` when one is set, else at
    most ``idle`` seconds."""

    def __init__(self, sock: socket.socket, idle: float) -> None:
        self._sock = sock
        self.idle = idle
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wait = self.idle if self.deadline is None else self.deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError("the request's head did not arrive in time")
        self._sock.settimeout(wait)
        return self._sock.recv_into(buffer)


class BoundedHandler(BaseHTTPRequestHandler):
    """A request handler whose connection waits at most ``idle_seconds`` (see the module).

    A timeout closes the connection without a reply (``BaseHTTPRequestHandler``
    catches ``TimeoutError``), as a ClickHouse server closes an idle keep-alive one.
    """

    idle_seconds: float = 30.0
    _reader: _Deadline

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.idle_seconds)  # writes too: a reader that stalls
        self._reader = _Deadline(self.connection, self.idle_seconds)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.idle_seconds
        try:
            super().handle_one_request()
        finally:
            self._reader.deadline = None

    def parse_request(self) -> bool:
        ok = super().parse_request()
        # The head is whole: the body's bytes may each wait idle_seconds, and so may writes.
        self._reader.deadline = None
        self.connection.settimeout(self.idle_seconds)
        return ok
