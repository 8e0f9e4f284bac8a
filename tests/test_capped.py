"""read_capped over real loopback connections: framing, decoding, the size cap and the deadline."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.stalling import TricklingServer
from webhook.capped import read_capped
from webhook.domain import Deadline

BODY = b'{"items": [' + b",".join(b'{"n": %d}' % n for n in range(20_000)) + b"]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(BODY), 7_000):
                chunk = BODY[start:start + 7_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = gzip.compress(BODY) if self.path == "/gzip" else BODY
        if self.path == "/gzip":
            self.send_header("Content-Encoding", "gzip")
        if self.path == "/superscript-length":
            # Byte 0xB2 ("\u00b2" in latin-1): a digit to str.isdigit(), not to int().
            # The body then runs to the end of the connection.
            self.send_header("Content-Length", "\u00b2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def session():
    with requests.Session() as session:
        session.trust_env = False
        yield session


@pytest.mark.parametrize("path", ["/plain", "/chunked", "/gzip", "/superscript-length"])
@pytest.mark.parametrize("deadline", [None, 30], ids=["no-deadline", "deadline"])
def test_the_whole_body_is_read_however_it_is_framed(server, session, path, deadline):
    with session.get(server + path, stream=True, timeout=10) as response:
        body = read_capped(response, len(BODY),
                           None if deadline is None else Deadline.after(deadline))

    assert body == BODY


@pytest.mark.parametrize("path", ["/plain", "/chunked", "/gzip"])
def test_a_body_over_the_cap_is_refused(server, session, path):
    with session.get(server + path, stream=True, timeout=10) as response:
        assert read_capped(response, len(BODY) - 1) is None


def test_a_trickling_body_ends_at_the_deadline(session):
    with TricklingServer(length=40, interval=0.2) as trickle:
        with session.get(trickle.url, stream=True, timeout=5) as response:
            with pytest.raises(requests.ReadTimeout):
                read_capped(response, 1000, Deadline.after(1))

    assert 0 < trickle.bytes_sent < trickle.length
