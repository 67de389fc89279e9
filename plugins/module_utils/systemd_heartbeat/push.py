# SPDX-License-Identifier: MIT
"""The push: one POST of a gzipped OTLP payload to VictoriaMetrics, and what its answer means
for the payload (kept for the next tick, or dropped because the endpoint says it is bad).

Plain http is written straight to a socket, https through the ssl module on the same socket
(http.client pulls in the email package, which costs more CPU than the rest of a tick).
Every blocking step (DNS, connect, TLS handshake, each write and read) gets only what is left
of the tick's Deadline, so an endpoint that trickles its answer cannot stretch a tick.
"""
import _socket
import posix

from .model import DeadlineExceeded, HeartbeatError

# The endpoint says the payload itself is bad: sending it again will not help.
REJECTING_STATUSES = frozenset((400, 413, 415, 422))
ANSWER_MAX = 65536


class PushFailed(HeartbeatError):
    """The payload did not land, for a reason that may pass (network, 5xx, 401, 404, 429...): keep it."""


class PushRejected(HeartbeatError):
    """The endpoint answered that the payload is bad (REJECTING_STATUSES): drop it."""


class Endpoint:
    """Where to push: the URL split into its parts, the Authorization header value (or None),
    a CA file for https."""

    __slots__ = ("url", "scheme", "host", "port", "path", "authorization", "ca_file")

    def __init__(self, url: str, authorization: "str | None" = None, ca_file: "str | None" = None):
        self.url, self.authorization, self.ca_file = url, authorization, ca_file
        self.scheme, self.host, self.port, self.path = split_url(url)


def split_url(url: str) -> tuple[str, str, int, str]:
    """'http://host:port/path' -> (scheme, host, port, path); HeartbeatError naming what is
    wrong. Credentials in the URL are refused without echoing them: they belong in a private file."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        shown = f"{scheme}://***@{authority.rpartition('@')[2]}/{path}"[:120]
        raise HeartbeatError(f"{shown}: credentials in a URL are refused (they would show in process "
                             f"lists and logs); put them in --auth-file")
    if not sep or scheme not in ("http", "https") or not authority:
        raise HeartbeatError(f"{url[:120]}: not an http(s) URL")
    if not (url.isascii() and url.isprintable()) or " " in url:
        raise HeartbeatError(f"{url[:120]}: spaces, control or non-ASCII characters (percent-encode them)")
    host, port = authority, "443" if scheme == "https" else "80"
    if authority.startswith("["):  # [::1]:8428
        host, bracket, tail = authority[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise HeartbeatError(f"{url[:120]}: bad IPv6 literal")
        port = tail[1:] if tail else port
    elif ":" in authority:
        host, port = authority.rsplit(":", 1)
    if not host:
        raise HeartbeatError(f"{url[:120]}: no host")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise HeartbeatError(f"{url[:120]}: port must be 1-65535, got {port[:20]!r}")
    return scheme, host, int(port), "/" + path


def read_authorization(path: str) -> str:
    """The Authorization header from a credentials file: 'Bearer <token>' or 'Basic <user>:<password>'.

    The file must be private (a systemd credential, or mode 0600): a secret readable by
    others is refused, and its content is never echoed in an error.
    """
    try:
        status = posix.stat(path)
        with open(path, encoding="utf-8") as handle:
            line = next((x.strip() for x in handle if x.strip()), "")
    except OSError as error:
        raise HeartbeatError(f"cannot read credentials {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise HeartbeatError(f"credentials {path}: not UTF-8 text") from None
    if status.st_mode & 0o077:
        raise HeartbeatError(f"credentials {path} are readable by group or others (mode "
                             f"{status.st_mode & 0o777:04o}); make them private: chmod 600, or a systemd credential")
    scheme, _space, secret = line.partition(" ")
    if scheme == "Bearer" and secret.strip() and secret.strip().isprintable():
        return "Bearer " + secret.strip()
    if scheme == "Basic" and ":" in secret and secret.strip().isprintable():
        import binascii

        return "Basic " + binascii.b2a_base64(secret.strip().encode("utf-8"), newline=False).decode("ascii")
    raise HeartbeatError(f"credentials {path}: the first line must be 'Bearer <token>' or 'Basic <user>:<password>'")


def post_payload(endpoint: Endpoint, payload: bytes, deadline) -> None:
    """POST a gzipped protobuf. PushRejected when the endpoint says the payload is bad,
    PushFailed for everything else that went wrong; both name the URL, the status and the
    server's message."""
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
               "User-Agent": "systemd-heartbeat"}
    if endpoint.authorization:
        headers["Authorization"] = endpoint.authorization
    try:
        status, reason, message = http_post(endpoint, headers, payload, deadline)
    except DeadlineExceeded:
        raise PushFailed(f"push to {endpoint.url} failed: no answer within the {deadline.timeout:g} s timeout") from None
    except (OSError, ValueError) as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (
            error.strerror if isinstance(error, OSError) and error.strerror else
            getattr(error, "reason", None) or str(error) or type(error).__name__)
        raise PushFailed(f"push to {endpoint.url} failed: {reason}") from None
    if not 200 <= status < 300:
        first_line = message.strip().splitlines()[0][:200] if message.strip() else "no message"
        error_class = PushRejected if status in REJECTING_STATUSES else PushFailed
        raise error_class(f"push to {endpoint.url} failed: HTTP {status} {reason}: {first_line}")


def resolve(name: str, port: int, deadline) -> list[tuple]:
    """getaddrinfo within the deadline. An address literal resolves at once; a name is
    resolved in a thread, which a hung resolver cannot keep past the deadline (the process
    exits without waiting for it)."""
    # bytes: a str host makes getaddrinfo import the idna codec (and re with it), 7 ms a tick;
    # split_url allows ASCII only
    host = name.encode("ascii")
    try:
        return _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM, 0, _socket.AI_NUMERICHOST)
    except _socket.gaierror:
        pass
    import _thread

    answer: list = []
    done = _thread.allocate_lock()
    done.acquire()

    def lookup():
        try:
            answer.append(_socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM))
        except OSError as error:
            answer.append(error)
        finally:
            done.release()

    _thread.start_new_thread(lookup, ())
    if not done.acquire(timeout=deadline.remaining(f"resolving {name}")):
        raise DeadlineExceeded(f"resolving {name} did not finish within the {deadline.timeout:g} s timeout")
    if isinstance(answer[0], OSError):
        raise answer[0]
    return answer[0]


def connect_tcp(host: str, port: int, deadline):
    """socket.create_connection with the C module: each resolved address in turn."""
    failure: OSError = OSError(f"no address for {host!r}")
    for family, kind, protocol, _name, address in resolve(host, port, deadline):
        connection = _socket.socket(family, kind, protocol)
        try:
            connection.settimeout(deadline.remaining("connecting"))
            connection.connect(address)
            return connection
        except OSError as error:
            connection.close()
            failure = error
    raise failure


def open_connection(endpoint: Endpoint, deadline):
    """A connected socket, wrapped in TLS (certificate and host name verified) for https."""
    connection = connect_tcp(endpoint.host, endpoint.port, deadline)
    if endpoint.scheme != "https":
        return connection
    import ssl

    try:
        context = ssl.create_default_context(cafile=endpoint.ca_file)
        # the handshake's reads and writes share this one timeout (CPython's ssl keeps a
        # deadline per call), so a trickling server cannot stretch it
        connection.settimeout(deadline.remaining("the TLS handshake"))
        return context.wrap_socket(connection, server_hostname=endpoint.host)
    except BaseException:
        connection.close()
        raise


def http_post(endpoint: Endpoint, headers: dict, payload: bytes, deadline) -> tuple[int, str, str]:
    """HTTP/1.1 POST with Connection: close; (status, reason, first 2 KiB of the body)."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (f"POST {endpoint.path} HTTP/1.1\r\nHost: {host}:{endpoint.port}\r\n{lines}"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode("latin-1")
    connection = open_connection(endpoint, deadline)
    try:
        send_all(connection, head + payload, deadline)
        answer = b""
        while len(answer) < ANSWER_MAX:
            connection.settimeout(deadline.remaining("reading the answer"))
            try:
                chunk = connection.recv(ANSWER_MAX)
            except OSError as error:  # a TLS peer that closes without close_notify, after answering
                if answer and type(error).__name__ == "SSLEOFError":
                    break
                raise
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and is_complete(answer):
                break
    finally:
        connection.close()
    return parse_answer(answer)


def send_all(connection, data: bytes, deadline) -> None:
    """sendall, with what is left of the deadline for each write (an SSL socket's sendall
    would give every write the whole timeout again)."""
    view = memoryview(data)
    while view:
        connection.settimeout(deadline.remaining("sending the payload"))
        view = view[connection.send(view):]


def parse_answer(answer: bytes) -> tuple[int, str, str]:
    head_bytes, _blank, content = answer.partition(b"\r\n\r\n")
    status_line = head_bytes.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not (parts[1].isascii() and parts[1].isdigit()):
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    if b"transfer-encoding: chunked" in head_bytes.lower():
        content = content.partition(b"\r\n")[2]  # drop the first chunk's size line
    return int(parts[1]), parts[2][:80] if len(parts) > 2 else "", content[:2048].decode("utf-8", "replace")


def is_complete(answer: bytes) -> bool:
    """Whether a response with a Content-Length has arrived in full (else read to EOF)."""
    head, _blank, content = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _colon, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(content) >= int(value)
    return False
