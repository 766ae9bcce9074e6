#!/usr/bin/python3
"""Test fixture: a dead-man's switch that appends every POST body to /var/tmp/deadman.log."""
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open("/var/tmp/deadman.log", "ab") as log:
            log.write(body + b"\n")
        self.send_response(200)
        self.end_headers()


HTTPServer(("127.0.0.1", 9199), Handler).serve_forever()
