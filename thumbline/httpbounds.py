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
import logging
import socket
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from thumbline.chwire import EndpointError, error_reply

__all__ = ["BoundedHTTPServer", "BoundedHandler"]

logger = logging.getLogger(__name__)

#: How long a refused connection stays open, its reply sent, before it is closed.
LINGER_SECONDS = 0.5
#: Refused connections open at once; past it the oldest is closed at once.
MAX_LINGERING = 256


class BoundedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding at most ``max_connections`` connections at once."""

    daemon_threads = True
    # Refusals happen at accept, quickly: a longer queue answers a burst of connections
    # (workers reconnecting at once, or a flood) with replies instead of dropped SYNs.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BoundedHandler], *, max_connections: int
    ) -> None:
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._held = 0
        self._count_lock = threading.Lock()
        self._lingering: deque[tuple[float, socket.socket]] = deque()
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
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client is gone, or its buffer full: the close is the refusal
        # Closed now, a request arriving after the reply would make the kernel reset the
        # connection, and the client would see the reset, not the reply: it stays open a
        # moment, its input read and dropped, closed by service_actions.
        if len(self._lingering) >= MAX_LINGERING:
            _close(self._lingering.popleft()[1])
        self._lingering.append((time.monotonic() + LINGER_SECONDS, request))

    def service_actions(self) -> None:
        """Close the refused connections whose moment has passed (each turn of serve_forever)."""
        super().service_actions()
        now = time.monotonic()
        while self._lingering and self._lingering[0][0] <= now:
            _close(self._lingering.popleft()[1])

    def server_close(self) -> None:
        super().server_close()
        while self._lingering:
            _close(self._lingering.popleft()[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-reply is no error of ours; anything else is logged."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("a client of %s went away", self.server_address, exc_info=True)
        else:
            logger.exception("serving a connection of %s failed", self.server_address)


def _close(sock: socket.socket) -> None:
    """Close ``sock`` after dropping what it received (unread input makes the close a reset)."""
    try:
        for _ in range(16):  # at most 1 MiB: a sender of more is reset
            if not sock.recv(65536):
                break
    except OSError:  # nothing more to read (BlockingIOError), or the client is gone
        pass
    sock.close()


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
