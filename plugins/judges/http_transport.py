"""One bounded HTTP attempt for the OpenAI-compatible judge (``http.py``): a total deadline
per attempt (:class:`Watchdog`), a capped response body (:func:`read_capped`), and the
exceptions that sort a failed attempt into retry, give up, or not a completion.
Standard library only.
"""
from __future__ import annotations

import http.client
import socket
import urllib.request


class Retryable(Exception):
    """A transient failure: worth another try."""


class Fatal(Exception):
    """A failure another try will not fix (4xx other than 429)."""


class BadBody(Exception):
    """The server answered 200 with something that is not a (chat) completion."""


class TooLarge(Exception):
    """The server sent more than ``max_response_bytes``."""


class Watchdog:
    """A total deadline for one HTTP attempt. ``timeout`` bounds each socket read, so a server
    that sends a byte every second would otherwise hold a request for ever; when the deadline
    passes, the watchdog shuts the connection's socket down, which ends whatever read is
    blocked, and the attempt fails as a timeout."""

    def __init__(self, seconds: float):
        import threading

        self.fired = False
        self._sock = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def attach(self, sock) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


def watched_opener(watchdog: Watchdog):
    """A urllib opener (proxies and redirects as usual) whose connections report their socket
    to ``watchdog``."""
    def watched(base):
        class Connection(base):
            def connect(self):
                super().connect()
                watchdog.attach(self.sock)
        return Connection

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(watched(http.client.HTTPConnection), req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(watched(http.client.HTTPSConnection), req, context=self._context)

    return urllib.request.build_opener(Handler(), SecureHandler())


def read_capped(response, limit: int) -> bytes:
    """The response body, or TooLarge as soon as it passes ``limit`` bytes (never read whole)."""
    declared = response.headers.get("Content-Length") if response.headers else None
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the response is {int(declared)} bytes, more than max_response_bytes={limit}")
    chunks, total = [], 0
    while True:
        chunk = response.read(min(65536, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"the response is larger than max_response_bytes={limit}")
        chunks.append(chunk)
