"""A TCP proxy in front of a real S3 server that adds what a real network does: latency and faults.

Localhost has no network latency and a healthy local server never fails, so neither the
retries nor the projection model could be checked against anything. :class:`FaultyProxy`
listens on a free port of 127.0.0.1 and forwards every connection to the server, except as
its ``mode`` says:

* ``"pass"``: forwarded, ``delay`` seconds added before each request (a round trip);
* ``"503"``: every request answered ``503 SlowDown`` (S3's "reduce your request rate");
* ``"hang"``: the connection accepted and never answered (a timeout);
* ``"down"``: every connection closed at once, and the open ones cut (a server that stopped).

``fail_next(n, mode)`` applies a fault to the next ``n`` requests only, then passes
again, as a server that recovers; ``stop_after(n)`` forwards ``n`` more requests, then goes
``"down"`` (a server that stops mid-epoch). The proxy is a real socket server that clients reach by
its endpoint URL, so every library's own client (boto3, Arrow, Lance, obstore) meets the
fault as it would meet the network's.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

MODES = ("pass", "503", "hang", "down")
_METHODS = {b"GET", b"PUT", b"POST", b"HEAD", b"DELETE"}
_SLOW_DOWN = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%s"
)
_SLOW_DOWN_BODY = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>'  # noqa: E501


class FaultyProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream_url``'s host and port, faults and delays as set."""

    def __init__(self, upstream_url: str, delay: float = 0.0) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.delay = delay
        self.mode = "pass"
        self.faults_left = 0
        self._fault_mode = "pass"
        self.faults = 0
        """Requests that met a fault."""
        self.requests = 0
        """Requests forwarded (chunks from a client that begin with an HTTP method)."""
        self._stop_at: int | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="faulty-s3-proxy")

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyProxy:
        self._thread.start()
        return self

    def set_mode(self, mode: str) -> None:
        """Apply ``mode`` to every request from now on; ``"down"`` also cuts the open connections."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        with self._lock:
            self.mode, self.faults_left = mode, 0
            cut = list(self._open) if mode == "down" else []
        for connection in cut:
            _close(connection)

    def fail_next(self, count: int, mode: str = "503") -> None:
        """The next ``count`` requests meet ``mode``; the ones after are forwarded."""
        with self._lock:
            self.mode, self._fault_mode, self.faults_left = "pass", mode, count

    def stop_after(self, requests: int) -> None:
        """Forward ``requests`` more requests, then cut every connection and refuse new ones."""
        with self._lock:
            self._stop_at = self.requests + requests

    def _fault_for_request(self) -> str:
        """What the request beginning now meets."""
        with self._lock:
            self.requests += 1
            if self._stop_at is not None and self.requests > self._stop_at:
                self.mode, self._stop_at = "down", None
            if self.faults_left > 0:
                self.faults_left -= 1
                mode = self._fault_mode
            else:
                mode = self.mode
            self.faults += mode != "pass"
            return mode

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "down":
                _close(client)
            else:
                threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.add(connection)

    def _forward(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        for connection in (client, server):
            self._track(connection)
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()
        self._pump(client, server, True)

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        try:
            while chunk := source.recv(1 << 16):
                if from_client and chunk.split(b" ", 1)[0] in _METHODS and not self._request_passes(source):
                    return
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for connection in (source, target):
                _close(connection)
                with self._lock:
                    self._open.discard(connection)

    def _request_passes(self, client: socket.socket) -> bool:
        """Whether the request beginning now is forwarded; if not, it meets its fault here."""
        mode = self._fault_for_request()
        if mode == "down":
            self.set_mode("down")
        elif mode == "503":
            client.sendall(_SLOW_DOWN % (len(_SLOW_DOWN_BODY), _SLOW_DOWN_BODY))
        elif mode == "hang":
            self._stopped.wait(120)
        elif self.delay:
            time.sleep(self.delay)
        return mode == "pass"

    def stop(self) -> None:
        self._stopped.set()
        _close(self._listener)
        with self._lock:
            cut = list(self._open)
        for connection in cut:
            _close(connection)

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        connection.close()
    except OSError:
        pass


__all__ = ["MODES", "FaultyProxy"]
