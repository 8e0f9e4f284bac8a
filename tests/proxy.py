"""A TCP proxy on a loopback port that a test can cut and restore.

Put it between the service and something it depends on (moto's S3 server,
PostgreSQL) and point the service at the proxy's port. ``cut()`` resets every
open connection and refuses new ones at once (they are accepted and reset), so
the dependency is unavailable as if it had gone away; ``restore()`` lets
connections through again. The dependency itself keeps running (and keeps its
state), which stopping moto or the machine's PostgreSQL would not.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

from tests.servers import LOOPBACK

_BUFFER = 64 * 1024


@dataclass
class ProxyCounts:
    """What the proxy saw: connections passed through and connections refused."""

    passed: int = 0
    refused: int = 0
    reset: int = 0


@dataclass
class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; ``cut()`` and ``restore()`` it."""

    target: tuple[str, int]
    counts: ProxyCounts = field(default_factory=ProxyCounts)

    def __post_init__(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(128)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> "TcpProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close every connection; safe to call twice."""
        self._stopped.set()
        self.cut()
        try:
            self._listener.close()
        except OSError:
            pass
        self._thread.join(timeout=5)

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore()``."""
        with self._lock:
            self._cut = True
            doomed, self._open = self._open, set()
            self.counts.reset += len(doomed) // 2
        for sock in doomed:
            _reset(sock)

    def restore(self) -> None:
        """Let connections through again."""
        with self._lock:
            self._cut = False

    @property
    def is_cut(self) -> bool:
        with self._lock:
            return self._cut

    # ------------------------------------------------------------ forwarding

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
                if refused:
                    self.counts.refused += 1
            if refused:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._cut:  # cut while we connected
                    _reset(client)
                    _reset(upstream)
                    continue
                self._open.update((client, upstream))
                self.counts.passed += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_BUFFER)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # One side ended: end the other so its pump stops too.
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def _reset(sock: socket.socket) -> None:
    """End a connection abruptly, as a crashed or unreachable peer would."""
    try:
        # SO_LINGER 0: the close sends an RST, not a polite FIN after the data.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # shutdown wakes a pump thread blocked in recv() on it; close alone would not.
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
