"""Fake OTLP/HTTP(S) endpoints on loopback that record what they get and answer as told.

mode:
  "answer"   read the request, answer with the next status of `statuses` (the last one repeats)
  "trickle"  read the request, then send a 200 answer one byte every `trickle` seconds
  "hang"     read the request, never answer
  "close"    read the request, hang up without an answer
  "silent"   accept the connection, never read nor write
  "handshake-trickle"  read the TLS client hello, answer a server hello one byte every `trickle` s
With `tls` (an ssl.SSLContext), the connection is TLS (the handshake is done in the handler).
"""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

from fakenet import LoopbackServer

REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 413: "Payload Too Large",
           415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}


@dataclass
class Request:
    method: str
    target: str
    headers: dict = field(default_factory=dict)  # lower-case names
    body: bytes = b""


class FakeEndpoint(LoopbackServer):
    def __init__(self, mode="answer", statuses=(200,), trickle=0.3, tls: ssl.SSLContext | None = None,
                 host="127.0.0.1", port=0):
        self.mode = mode
        self.statuses = list(statuses)
        self.trickle = trickle
        self.tls = tls
        self.host = host
        self.requests: list[Request] = []
        self.errors: list[str] = []
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        super().__init__(sock)

    def url(self, path="/opentelemetry/v1/metrics", scheme=None) -> str:
        scheme = scheme or ("https" if self.tls else "http")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path}"

    def bodies(self) -> list[bytes]:
        return [r.body for r in self.requests]

    def _serve(self, conn: socket.socket):
        try:
            conn.settimeout(30)
            if self.mode == "silent":
                self._stop.wait(60)
                return
            if self.mode == "handshake-trickle":  # a TLS server that sends its hello byte by byte
                conn.recv(65536)
                self.trickle_send(conn, b"\x16\x03\x03\x40\x00\x02" + b"\x00" * 400, self.trickle)
                return
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                self._conns.append(conn)
            while not self._stop.is_set():
                req = self._read_request(conn)
                if req is None:
                    return
                self.requests.append(req)
                if self.mode == "close":
                    return
                if self.mode == "hang":
                    self._stop.wait(60)
                    return
                if self.mode == "trickle":
                    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                              + b"X-Padding: " + b"p" * 200 + b"\r\nContent-Length: 0\r\n\r\n")
                    self.trickle_send(conn, answer, self.trickle)
                    return
                status = self.statuses[min(len(self.requests) - 1, len(self.statuses) - 1)]
                text = f"status {status} from the fake endpoint".encode()
                conn.sendall(f"HTTP/1.1 {status} {REASONS.get(status, 'Whatever')}\r\n".encode()
                             + b"Content-Type: text/plain\r\nContent-Length: "
                             + str(len(text)).encode() + b"\r\n\r\n" + text)
                if req.headers.get("connection", "").lower() == "close":
                    return
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.errors.append(repr(exc))
        finally:
            try:
                conn.close()
            except OSError:
                pass

    @staticmethod
    def _read_request(conn) -> Request | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                while b"\r\n" not in rest:
                    rest += conn.recv(65536)
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise ValueError("short chunk")
                    rest += chunk
                body += rest[:size]
                rest = rest[size + 2:]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                rest += chunk
            body = rest[:length]
        return Request(method, target, headers, body)
