"""HTTP servers on loopback ports that never finish answering, for deadline tests and the bench.

``HangingServer`` reads each request and never answers it; ``TricklingServer``
sends its status line and headers at once (or a byte at a time too), then its
body one byte every ``interval`` seconds. Both count what happened (requests, bytes sent, clients
that hung up) and hold each connection until the client leaves or the server
stops, so nothing they start outlives a test. They speak just enough HTTP/1.1
for ``requests``: a library server (``http.server``) would not let a test
stall mid-answer.
"""

from __future__ import annotations

import socket
import threading
import time

from tests.servers import LOOPBACK


class _StallingServer:
    """A listening socket and one thread per connection; use as a context manager."""

    def __init__(self):
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.1)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.requests = 0          # requests received (attempts of the client)
        self.hung_up = 0           # connections the client closed before the answer ended

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        thread = threading.Thread(target=self._accept, name=type(self).__name__, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            with self._lock:
                self._threads.append(thread)

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.1)
            if not self._read_request(connection):
                return
            with self._lock:
                self.requests += 1
            if not self._answer(connection):
                with self._lock:
                    self.hung_up += 1

    def _read_request(self, connection: socket.socket) -> bool:
        """Read up to the end of the request's headers (GETs have no body)."""
        received = b""
        while b"\r\n\r\n" not in received:
            if self._stopping.is_set():
                return False
            try:
                chunk = connection.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                return False
            received += chunk
        return True

    def _closed_by_client(self, connection: socket.socket) -> bool:
        try:
            return connection.recv(1, socket.MSG_PEEK) == b""
        except (TimeoutError, BlockingIOError):
            return False
        except OSError:
            return True

    def _answer(self, connection: socket.socket) -> bool:
        """Answer (or not); return False when the client hung up first."""
        raise NotImplementedError


class HangingServer(_StallingServer):
    """Accepts every request and never answers it."""

    def _answer(self, connection: socket.socket) -> bool:
        while not self._stopping.is_set():
            if self._closed_by_client(connection):
                return False
            time.sleep(0.05)
        return True


class TricklingServer(_StallingServer):
    """Answers ``200`` with a ``length``-byte body sent one byte every ``interval`` seconds.

    With ``headers=True`` the status line and headers trickle too, a byte at a
    time; ``bytes_sent`` then counts theirs as well (``head`` is their length).
    """

    def __init__(self, *, length: int = 40, interval: float = 0.5, headers: bool = False):
        super().__init__()
        self.length = length
        self.interval = interval
        self.headers = headers
        self.head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {length}\r\n\r\n").encode()
        self.bytes_sent = 0

    def _answer(self, connection: socket.socket) -> bool:
        try:
            if self.headers:
                trickled = self.head + b" " * self.length
            else:
                connection.sendall(self.head)
                trickled = b" " * self.length
            for byte in trickled:
                if self._stopping.wait(self.interval) or self._closed_by_client(connection):
                    return False
                connection.sendall(bytes([byte]))
                with self._lock:
                    self.bytes_sent += 1
        except OSError:
            return False
        return True
