"""What the fake bus and the fake endpoints share: a listening socket served by threads."""
from __future__ import annotations

import socket
import threading
import time


class LoopbackServer:
    """Accepts connections on `sock` (already bound) and serves each in a thread with _serve(conn)."""

    def __init__(self, sock: socket.socket):
        self.connections = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._sock = sock
        self._sock.listen(32)
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _serve(self, conn: socket.socket):
        raise NotImplementedError

    def stop(self):
        self._stop.set()
        self._sock.close()
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._thread.join(2)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def trickle_send(self, conn, data: bytes, delay: float):
        """Send one byte every `delay` seconds (until stopped)."""
        for i in range(len(data)):
            if self._stop.is_set():
                return
            conn.sendall(data[i:i + 1])
            time.sleep(delay)
