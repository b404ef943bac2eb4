"""A plain HTTP/1.1 upstream for gateway tests: echoes what reached it, streams, hangs on request.

Run as ``python upstream.py NAME``; prints ``PORT`` on its first stdout line. Paths:
``POST /echo`` answers JSON with the replica's name, the body's length and sha256 and the headers
received; ``GET /blob?n=N`` streams N bytes chunked; ``GET /hang?s=S`` answers after S seconds.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = sys.argv[1] if len(sys.argv) > 1 else "upstream"
BLOCK = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes

    def log_message(self, format: str, *args: object) -> None:
        return

    def _read_body(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                data = self.rfile.read(size)
                self.rfile.read(2)
                digest.update(data)
                total += len(data)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, BLOCK))
                digest.update(data)
                total += len(data)
                left -= len(data)
        return total, digest.hexdigest()

    def _json(self, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length, sha = self._read_body()
        headers = [[k, v] for k, v in self.headers.items()]
        self._json({"replica": NAME, "length": length, "sha256": sha, "headers": headers})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/hang":
            time.sleep(float(query.get("s", ["1"])[0]))
            self._json({"replica": NAME})
        elif url.path == "/blob":
            left = int(query.get("n", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = bytes(range(256)) * (BLOCK // 256)
            while left:
                part = block[: min(left, BLOCK)]
                self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
                left -= len(part)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._json({"replica": NAME, "path": self.path})


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
