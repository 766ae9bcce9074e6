#!/usr/bin/python3
"""TEST DOUBLE for RStudio Workbench (Molecule only; not the IDE).

Listens where the IDE would (default 127.0.0.1:8787) so the scenario can prove what nginx
does in front of it:
  * any HTTP request -> 200 with a JSON body: method, path, the request headers nginx passed
    on, and the length of the request body;
  * a websocket upgrade -> 101, then every text frame is echoed back prefixed with "echo:".
Standard library only. Usage: cdsops-test-double-ide [ADDRESS] [PORT]
"""
import base64
import hashlib
import json
import socketserver
import struct
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cdsops-test-double-ide"

    def log_message(self, fmt, *args):  # keep the journal quiet
        pass

    def _reply(self):
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        body = json.dumps({
            "test_double": True,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_length": length,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Frame-Options", "ALLOWALL")  # nginx must replace this
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        self._reply()

    do_POST = do_PUT = do_HEAD = _reply

    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            masked = head[1] & 0x80
            if n == 126:
                n = struct.unpack("!H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if masked else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if opcode == 8:  # close
                self.wfile.write(b"\x88\x00")
                return
            if opcode == 1:
                out = b"echo:" + data
                self.wfile.write(bytes([0x81, len(out)]) + out if len(out) < 126 else
                                 bytes([0x81, 126]) + struct.pack("!H", len(out)) + out)
                self.wfile.flush()


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True


if __name__ == "__main__":
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8787
    Server((addr, port), Handler).serve_forever()
