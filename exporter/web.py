"""HTTP front end: ``/metrics``, a status page at ``/``, ``/healthz`` and the MIB texts under ``/mibs/``.

Each listen address gets a threading HTTP server in a daemon thread.  Handlers
only render the current snapshot; they never call libvirt.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.config.values import ListenAddress
from exporter.web_status import MIB_PATH, StatusPage, escape
from exporter.webconfig import BasicAuth, WebConfig

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
#: The status page is plain HTML with inline style: no script, no frame, nothing fetched from elsewhere.
_PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, dual: bool, app: _App) -> None:
        self.address_family = family
        self.dual = dual
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # The wildcard address serves IPv4 too on the IPv6 socket.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if self.dual else 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        tls = self.app.tls
        if tls is not None:  # the handshake happens in the request's own thread, under its timeout
            sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _App:
    def __init__(self, metrics_path: str, render_metrics: Callable[[bool], bytes | Sequence[bytes]],
                 health: Callable[[], dict[str, Any]], web: WebConfig, page: StatusPage | None = None):
        self.metrics_path = metrics_path
        self.render_metrics = render_metrics
        self.health = health
        self.page = page
        self.tls: ssl.SSLContext | None = web.tls
        self.auth = BasicAuth(web.users) if web.users else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"libvirt-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # garbage gets an error with a status line, never an HTTP/0.9 reply
    timeout = 30  # seconds a client may take to send its request

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # a failure ends this connection only (handle_error logs it)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _accepts_gzip(self) -> bool:
        return "gzip" in self.headers.get("Accept-Encoding", "")

    def _send(self, status: int, body: bytes | Sequence[bytes], content_type: str, head: bool = False,
              gzipped: bool = False, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """``body``: the bytes, or parts of them sent one after the other (not copied into one)."""
        parts = [body] if isinstance(body, bytes) else body
        encoding = "gzip" if gzipped else ""
        if not gzipped and sum(map(len, parts)) > 1024 and self._accepts_gzip():
            parts = [gzip.compress(b"".join(parts), compresslevel=1)]
            encoding = "gzip"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(map(len, parts))))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            for part in parts:
                self.wfile.write(part)

    def _route(self, head: bool) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        if app.auth is not None and not app.auth.allows(self.headers.get("Authorization")):
            self._send(401, b"unauthorized\n", _TEXT, head,
                       headers=(("WWW-Authenticate", 'Basic realm="libvirt-exporter", charset="UTF-8"'),))
            return
        try:
            if path == app.metrics_path:
                gzipped = self._accepts_gzip()
                self._send(200, app.render_metrics(gzipped), CONTENT_TYPE, head, gzipped)
            elif path == "/healthz":
                self._send(200, (json.dumps(app.health()) + "\n").encode(), "application/json", head)
            elif path == "/":
                body = app.page.render(app.metrics_path) if app.page is not None else _landing(app.metrics_path)
                self._send(200, body, _HTML, head, headers=_PAGE_HEADERS)
            elif path.startswith(MIB_PATH) and app.page is not None and path[len(MIB_PATH):] in app.page.mibs:
                self._send(200, app.page.mibs[path[len(MIB_PATH):]], _TEXT, head,
                           headers=(("X-Content-Type-Options", "nosniff"),))
            else:
                self._send(404, b"not found\n", _TEXT, head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("error serving %s", path)
            self._send(500, b"internal error\n", _TEXT, head)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _not_allowed(self) -> None:
        self.close_connection = True  # any request body is left unread: never parse it as a next request
        self._send(405, b"method not allowed\n", _TEXT, headers=(("Allow", "GET, HEAD"),))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # POST, PUT or any other method: 405 with Allow, not http.server's 501
            return self._not_allowed
        raise AttributeError(name)


def _landing(metrics_path: str) -> bytes:
    """The page without a :class:`StatusPage` (a server built without one): the version and the links."""
    return (
        "<!DOCTYPE html><html><head><title>libvirt exporter</title></head><body>"
        f"<h1>libvirt exporter {__version__}</h1>"
        f'<p><a href="{escape(metrics_path)}">Metrics</a> &middot; <a href="/healthz">Health</a></p>'
        "</body></html>\n"
    ).encode()


# -- the status page ----------------------------------------------------------

#: How often a serving loop checks whether it is asked to stop (a wakeup of no cost; it bounds shutdown).
_STOP_POLL_S = 0.05


def _bind_targets(address: ListenAddress) -> list[tuple[socket.AddressFamily, str, bool]]:
    if address.host == "":
        if socket.has_ipv6:
            return [(socket.AF_INET6, "::", True)]
        return [(socket.AF_INET, "0.0.0.0", False)]
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {address.host}")
    family, _, _, _, sockaddr = infos[0]
    return [(socket.AddressFamily(family), str(sockaddr[0]), False)]


class WebServer:
    """The HTTP listeners.  ``start`` raises OSError if an address cannot be bound."""

    def __init__(
        self,
        addresses: tuple[ListenAddress, ...],
        metrics_path: str,
        render_metrics: Callable[[bool], bytes | Sequence[bytes]],
        health: Callable[[], dict[str, Any]],
        web: WebConfig | None = None,
        page: StatusPage | None = None,
    ) -> None:
        self._addresses = addresses
        self._app = _App(metrics_path, render_metrics, health, web or WebConfig(), page)
        self._servers: list[_Server] = []

    def start(self) -> None:
        for address in self._addresses:
            for family, host, dual in _bind_targets(address):
                try:
                    server = _Server((host, address.port), family, dual, self._app)
                except OSError as exc:
                    if dual:  # IPv6 disabled on this host: fall back to IPv4 only
                        server = _Server(("0.0.0.0", address.port), socket.AF_INET, False, self._app)
                    else:
                        self.stop()
                        raise OSError(f"cannot listen on {address}: {exc.strerror or exc}") from None
                self._servers.append(server)
                threading.Thread(target=server.serve_forever, kwargs={"poll_interval": _STOP_POLL_S},
                                 name=f"http-{address}", daemon=True).start()
                log.info("serving metrics on %s://%s%s%s", "https" if self._app.tls else "http", address,
                         self._app.metrics_path, " (basic auth)" if self._app.auth else "")

    def stop(self) -> None:
        # shutdown() waits until the serving loop notices, which it checks every _STOP_POLL_S (socketserver's
        # default half a second made SIGTERM take that long for each listening socket).
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
