"""A minimal DLCS Orchestrator on a loopback port for ``.ci/fuzz.sh``.

It answers every named query (``GET /iiif-resource/v3/...``) with a manifest
that has no canvases, so the manifests the fuzzer registers and completes get
rebuilt and published (their assets reported missing) instead of stopping at
"DLCS_ORCHESTRATOR_URL is not configured". Anything else is a 404.

Run: ``python tests/fuzz_orchestrator.py PORT_FILE``; it binds a free port on
127.0.0.1, writes the port number to PORT_FILE and serves until terminated.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EMPTY_MANIFEST = json.dumps({
    "@context": "http://iiif.io/api/presentation/3/context.json",
    "id": "https://dlcs.invalid/iiif-resource/v3/named-query",
    "type": "Manifest",
    "items": [],
}).encode()


class NamedQueryHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server naming
        if self.path.startswith("/iiif-resource/v3/"):
            self._answer(200, EMPTY_MANIFEST)
        else:
            self._answer(404, b'{"description": "not found"}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # quiet: the service's own log tells what it asked


def main(port_file: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NamedQueryHandler)
    partial = Path(port_file + ".partial")
    partial.write_text(str(server.server_address[1]))
    partial.replace(port_file)  # the reader never sees a half-written number
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
