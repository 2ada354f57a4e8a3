"""The server's life: the listening socket, the model's processes, HTTP in a thread of its own,
the batcher fed from the main thread, signals, and the guards on connections.

    serve(settings, on_info, log)   listen, start the model processes, serve until SIGTERM or
                                    SIGINT (what is in flight is answered), or until no model
                                    process is left (UserError); returns the batcher's counts

Connections are guarded below HTTP (uvicorn's own protocol, subclassed): a connection must
finish a request's headers within the request timeout, as its body must (else 408 and close),
and at most `max_connections` are open at once: one more is answered 503 and closed at once, so
that connections that never finish cannot take every file descriptor. A connection answered
before its request's body has arrived (a 413) is closed the way nginx closes it (a lingering
close): what is left of the body is read and thrown away, up to LINGER_BYTES and the request
timeout, so that a client that sends its whole body before reading (urllib, libretranslatepy)
reads the answer instead of a reset connection.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mtkit.config import DecodeConfig
from mtkit.errors import Interrupted, UserError
from mtkit.serving import workers as model_workers
from mtkit.serving.app import ServeOptions, create_app
from mtkit.serving.batcher import SIGNAL_CHECK, Batcher, BatcherStats

FD_RESERVE = 64  # file descriptors kept for everything but client connections (pipes, files, the socket)
LINGER_BYTES = 64 << 20  # of a refused body read and thrown away before its connection is closed


@dataclass(frozen=True)
class ServerSettings:
    """Everything `mtkit serve` was asked for (checked by the command line)."""

    model: model_workers.ModelSpec
    decode: DecodeConfig
    source: str
    target: str
    host: str = "127.0.0.1"
    port: int = 5000
    api_key: str | None = None
    max_chars: int = 20_000
    max_queue: int = 2048
    max_batch: int = 256
    batch_wait: float = 0.005  # seconds
    workers: int = 0  # 0: as workers.plan decides
    timeout: float = 30.0  # seconds for a request's headers, and again for its body, to arrive
    max_connections: int = 0  # 0: as many as the file descriptors allow (auto_max_connections)
    cors_origins: tuple[str, ...] = field(default=("*",))


@dataclass(frozen=True)
class Started:
    """What the server says once it listens: where, and with how many model processes."""

    url: str
    processes: int
    threads: int
    max_connections: int


def auto_max_connections() -> int:
    """Open connections allowed by default: what the process's file descriptors allow, less a
    reserve, and at most 4,096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 4096 if soft == resource.RLIM_INFINITY else soft - FD_RESERVE
    return max(1, min(4096, limit))


def serve(settings: ServerSettings, on_started: Callable[[Started], None], log: Callable[[str], None]) -> BatcherStats:
    """Serve until stopped (see the module docstring)."""
    max_connections = settings.max_connections or auto_max_connections()
    sock = listen(settings.host, settings.port)
    count, threads = model_workers.processes_and_threads(settings.model.model_dir, settings.model.device, settings.model.precision,
                                        settings.workers)
    pool = model_workers.start(dataclasses.replace(settings.model, threads=threads), count)
    try:
        batcher = Batcher(pool, settings.decode, max_queue=settings.max_queue, max_batch=settings.max_batch,
                          max_wait=settings.batch_wait)
        options = ServeOptions(settings.source, settings.target, settings.api_key, settings.max_chars,
                               max_alternatives=settings.decode.beam - 1, read_timeout=settings.timeout,
                               cors_origins=settings.cors_origins, max_positions=pool[0].max_positions)
        protocol = guarded_protocol(settings.timeout, max_connections, log)
        server = http_server(create_app(batcher, options, log), protocol)
        where = sock.getsockname()
        on_started(Started(f"http://{_url_host(where[0])}:{where[1]}", count, threads, max_connections))
        run(server, sock, batcher)
    finally:
        model_workers.close_all(pool, timeout=10)
    if batcher.error is not None:
        raise UserError(f"mtkit serve stopped: {batcher.error}")
    return batcher.stats


def http_server(app, protocol: type):
    """uvicorn serving app over `protocol`; answers in flight get 20 s after SIGTERM."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=20,
                                         lifespan="off", http=protocol))


def run(server, sock: socket.socket, batcher: Batcher) -> None:
    """HTTP in a thread of its own, the batcher's feeding of the model processes driven from this
    (the main) thread. The first SIGTERM or SIGINT stops accepting; what is in flight is answered,
    then the command returns (exit 0); a second one stops at once. When no model process is left,
    the server stops too (after answering what is in flight with the error)."""

    def stop(signum: int, frame: object) -> None:
        if server.should_exit:
            raise Interrupted(signum)
        server.should_exit = True

    def serve_http() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            batcher.close()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    http = threading.Thread(target=serve_http, name="mtkit-http", daemon=True)
    http.start()
    try:
        batcher.run()
        server.should_exit = True  # already, unless the model processes are gone
        while http.is_alive():  # with a timeout, as in Batcher: a signal to another thread is still handled
            http.join(SIGNAL_CHECK)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads (a taken port is found at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections of such a socket; without it a
    # kept-alive connection waited 40 ms for each answer (Nagle's algorithm against delayed ACKs)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# ----------------------------------------------------------------------------- guarded connections
def _raw_response(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


@dataclass
class _Refusals:
    """Connections refused since the last log line (one line a second at most)."""

    count: int = 0
    logged: float = 0.0


def guarded_protocol(timeout: float, max_connections: int, log: Callable[[str], None]) -> type:
    """uvicorn's HTTP protocol (httptools) with a bound on open connections and a timeout on
    each request's headers (see the module docstring)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    refusals = _Refusals()
    late = _raw_response("408 Request Timeout", f"Request timeout: the headers did not arrive within {timeout:g} s")
    full = _raw_response("503 Service Unavailable", f"Too many connections (at most {max_connections:,}); try again")

    class Guarded(HttpToolsProtocol):
        _headers_due: Any = None
        _body_done = True  # the current request's body has all arrived
        _lingering: Any = None  # while a refused body is read away: the timer that ends it
        _drained = 0
        _refused = False  # a connection beyond max_connections, answered 503

        def connection_made(self, transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self.transport, self._refused = transport, True  # connection_lost still comes, and uses it
                transport.write(full)
                if transport.can_write_eof():  # the answer, then the end: what the client sent is read away
                    transport.write_eof()
                self.loop.call_later(1.0, transport.close)
                refusals.count += 1
                if time.monotonic() - refusals.logged >= 1:
                    log(f"refused {refusals.count} connection(s): {max_connections:,} are open (--max-connections)")
                    refusals.count, refusals.logged = 0, time.monotonic()
                return
            super().connection_made(transport)
            self._expect_headers()

        def _expect_headers(self) -> None:
            self._headers_due = self.loop.call_later(timeout, self._headers_late)

        def _headers_late(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(late)
                self.transport.close()

        def _cancel(self) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
                self._headers_due = None

        def on_headers_complete(self) -> None:
            self._cancel()
            self._body_done = False
            super().on_headers_complete()
            if self.cycle is not None:
                self.cycle.transport = _Lingering(self, self.transport)  # type: ignore[assignment]

        def on_message_complete(self) -> None:
            self._body_done = True
            super().on_message_complete()
            if self._lingering is not None:
                self._end_lingering()

        def linger(self) -> None:
            """The answer is written and the connection is to close, but the body is still coming."""
            if self._lingering is None:
                self._lingering = self.loop.call_later(timeout, self._end_lingering)

        def _end_lingering(self) -> None:
            if self._lingering is not None:
                self._lingering.cancel()
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._lingering is not None:
                self._drained += len(data)
                if self._drained > LINGER_BYTES:
                    self._end_lingering()
                    return
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._headers_due is None and self._lingering is None:
                self._expect_headers()  # the next request's headers (an idle one is closed sooner, by keep-alive)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            if self._lingering is not None:
                self._lingering.cancel()
            super().connection_lost(exc)

    return Guarded


class _Lingering:
    """A request's transport as uvicorn's request cycle sees it: closing it while the request's
    body is still arriving lingers instead (see the module docstring)."""

    def __init__(self, protocol: Any, transport: Any):
        self._protocol, self._transport = protocol, transport

    def close(self) -> None:
        if self._protocol._body_done or self._transport.is_closing():
            self._transport.close()
        else:
            self._protocol.linger()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
