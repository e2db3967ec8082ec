"""HTTP front end: ``/metrics``, a status page at ``/``, ``/healthz`` and the MIB texts under ``/mibs/``.

Each listen address gets a threading HTTP server in a daemon thread.  Handlers
only render the current snapshot; they never call libvirt.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import site
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.config import Config, ListenAddress, redact_uri
from exporter.snapshot import STATE_NAMES, Snapshot, version_text
from exporter.webconfig import BasicAuth, WebConfig

if TYPE_CHECKING:
    from exporter.snmp.notify import TargetStatus

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
    def __init__(self, metrics_path: str, render_metrics: Callable[[bool], bytes], health: Callable[[], dict[str, Any]],
                 web: WebConfig, page: StatusPage | None = None):
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

    def _send(self, status: int, body: bytes, content_type: str, head: bool = False, gzipped: bool = False,
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        encoding = "gzip" if gzipped else ""
        if not gzipped and len(body) > 1024 and self._accepts_gzip():
            body = gzip.compress(body, compresslevel=1)
            encoding = "gzip"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

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
        f'<p><a href="{_e(metrics_path)}">Metrics</a> &middot; <a href="/healthz">Health</a></p>'
        "</body></html>\n"
    ).encode()


# -- the status page ----------------------------------------------------------

MIB_FILES = ("LIBVIRT-EXPORTER-MIB.txt", "LIBVIRT-MIB.txt")
MIB_PATH = "/mibs/"
_MIB_MAX_BYTES = 1 << 20

#: The notification targets as ``Notifier.status`` gives them.
NotificationStatus = Callable[[], Sequence["TargetStatus"]]


def mib_directories() -> list[Path]:
    """Where the MIB texts may be: next to the package (a source checkout), then where pip puts data files."""
    dirs = [Path(__file__).resolve().parent.parent / "mibs", Path(sys.prefix) / "share" / "snmp" / "mibs"]
    user_base = site.getuserbase()
    if user_base:
        dirs.append(Path(user_base) / "share" / "snmp" / "mibs")
    dirs += [Path("/usr/local/share/snmp/mibs"), Path("/usr/share/snmp/mibs")]
    return dirs


def load_mibs(directories: Sequence[Path]) -> dict[str, bytes]:
    """Our MIB files, each from the first directory holding it (read once: the server never opens a path
    a request names)."""
    found: dict[str, bytes] = {}
    for name in MIB_FILES:
        for folder in directories:
            try:
                with open(folder / name, "rb") as handle:
                    text = handle.read(_MIB_MAX_BYTES + 1)
            except OSError:
                continue
            if 0 < len(text) <= _MIB_MAX_BYTES:
                found[name] = text
                break
    missing = [name for name in MIB_FILES if name not in found]
    if missing:
        log.info("MIB files not found (so not served): %s", ", ".join(missing))
    return found


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 100:
        return f"{value:.1f} s"
    return f"{value:.0f} s"


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _rows(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table: labels and already escaped cells."""
    return "<table>" + "".join(f"<tr><th>{_e(label)}</th><td>{cell}</td></tr>" for label, cell in rows) + "</table>"


def _flag(ok: bool, yes: str, no: str) -> str:
    return f'<span class="{"ok" if ok else "bad"}">{_e(yes if ok else no)}</span>'


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em 2em;max-width:64em;color:#1b1b1b}"
    "h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.1em;margin:1.2em 0 .3em}"
    "table{border-collapse:collapse}th,td{text-align:left;padding:.2em 1em .2em 0;border-bottom:1px solid #e3e3e3;"
    "vertical-align:top}th{font-weight:600;min-width:11em}td.n,th.n{text-align:right}"
    ".ok{color:#17692a}.bad{color:#b3001b;font-weight:600}.muted{color:#666}code{font-family:ui-monospace,monospace,monospace;font-size:.95em}"
    "p.status{font-size:1.1em;margin:.3em 0 1em}"
)


class StatusPage:
    """The landing page: where a person checks the exporter.

    It is rendered from the configuration, the current snapshot and the notifier's counters, so it is cheap
    and never calls libvirt.  Every value is HTML-escaped; no secret is shown: the URI loses its credentials
    and query values, communities and SNMPv3 users are only counted, and notification targets appear as
    their version, kind and address.  It also holds the MIB texts served under ``/mibs/``.
    """

    def __init__(
        self,
        config: Config,
        snapshot: Callable[[], Snapshot],
        *,
        agent_running: Callable[[], bool] = lambda: False,
        agentx_connected: Callable[[], bool] = lambda: False,
        notifications: NotificationStatus | None = None,
        clock: Callable[[], float] = time.time,
        mib_dirs: Sequence[Path] | None = None,
    ) -> None:
        self._config = config
        self._snapshot = snapshot
        self._agent_running = agent_running
        self._agentx_connected = agentx_connected
        self._notifications = notifications
        self._clock = clock
        self.uri = redact_uri(config.libvirt_uri)
        self.mibs = load_mibs(mib_dirs if mib_dirs is not None else mib_directories())

    def render(self, metrics_path: str) -> bytes:
        snap = self._snapshot()
        now = self._clock()
        problems = self._problems(snap)
        host = snap.host.hostname if snap.host is not None and snap.host.hostname else ""
        status = _flag(not problems, "OK", "; ".join(problems))
        parts = [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>libvirt exporter{_e(' on ' + host) if host else ''}</title>",
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>libvirt exporter {_e(__version__)}</h1>",
            f'<p class="status">Status: {status}</p>',
            "<h2>libvirt</h2>", self._libvirt(snap),
            "<h2>Domains</h2>", self._domains(snap),
            "<h2>Polling</h2>", self._polling(snap, now),
            "<h2>SNMP</h2>", self._snmp(),
            "<h2>Notification targets</h2>", self._targets(),
            "<h2>Links</h2>", self._links(metrics_path),
            f'<p class="muted">Page rendered at {_e(_utc(now))}.</p>',
            "</body></html>\n",
        ]
        return "".join(parts).encode("utf-8")

    def _problems(self, snap: Snapshot) -> list[str]:
        problems = []
        if not snap.up:
            problems.append("libvirt not connected" if snap.taken_at else "no poll finished yet")
        if snap.stalled:
            problems.append("poll running past its deadline")
        if sum(snap.stuck_calls.values()):
            problems.append("libvirt calls stuck")
        cfg = self._config
        if cfg.snmp_enabled and cfg.snmp_mode in ("agentx", "both") and not self._agentx_connected():
            problems.append("AgentX master not connected")
        return problems

    def _libvirt(self, snap: Snapshot) -> str:
        rows = [("URI", f"<code>{_e(self.uri)}</code>"), ("Connected", _flag(snap.up, "yes", "no"))]
        if snap.host is not None:
            h = snap.host
            versions = ", ".join(x for x in (
                f"{h.driver} {version_text(h.hypervisor_version)}".strip() if h.driver else "",
                f"libvirt {version_text(h.libvirt_version)}" if h.libvirt_version else "") if x)
            rows.append(("Host", _e(h.hostname or "(unnamed)") + (f" ({_e(versions)})" if versions else "")))
        rows.append(("Reconnects", _e(snap.reconnects)))
        rows.append(("Events received", _e(snap.events)))
        return _rows(rows)

    def _domains(self, snap: Snapshot) -> str:
        if not snap.up:
            return '<p class="muted">No domains known: libvirt is not connected.</p>'
        counts = Counter(d.state for d in snap.domains)
        rows = "".join(f'<tr><td>{_e(name)}</td><td class="n">{counts[state]}</td></tr>'
                       for state, name in STATE_NAMES.items() if counts[state])
        active = sum(d.active for d in snap.domains)
        timed_out = sum(d.timed_out for d in snap.domains)
        footer = (f'<tr><th>total</th><td class="n">{len(snap.domains)}</td></tr>'
                  f'<tr><th>active</th><td class="n">{active}</td></tr>')
        if timed_out:
            footer += f'<tr><th>stats timed out</th><td class="n bad">{timed_out}</td></tr>'
        return f'<table><tr><th>State</th><th class="n">Domains</th></tr>{rows}{footer}</table>'

    def _polling(self, snap: Snapshot, now: float) -> str:
        cfg = self._config
        if snap.taken_at:
            age = f"{_e(_seconds(max(0.0, now - snap.taken_at)))} (taken {_e(_utc(snap.taken_at))})"
        else:
            age = "no snapshot yet"
        rows = [("Snapshot age", age), ("Poll duration", _e(_seconds(snap.poll_duration_s))),
                ("Poll interval", _e(f"{cfg.poll_interval_s:g} s"))]
        if snap.last_success_at:
            rows.append(("Last successful poll", _e(_utc(snap.last_success_at))))
        errors = sum(snap.poll_errors.values())
        rows.append(("Poll errors", _e(errors) if not errors else f'<span class="bad">{errors}</span> ('
                     + _e(", ".join(f"{k} {v}" for k, v in sorted(snap.poll_errors.items()) if v)) + ")"))
        if snap.stalled:
            rows.append(("Stalled", _flag(False, "", "yes: the current poll runs past its deadline")))
        return _rows(rows)

    def _snmp(self) -> str:
        cfg = self._config
        if not cfg.snmp_enabled:
            return '<p class="muted">SNMP is disabled (snmp.enabled = false).</p>'
        standalone, agentx = cfg.snmp_mode in ("standalone", "both"), cfg.snmp_mode in ("agentx", "both")
        running = self._agent_running()
        rows = [("Mode", _e(cfg.snmp_mode))]
        if running:
            rows.append(("Agent", _flag(True, "running", "")))
        else:
            rows.append(("Agent", '<span class="muted">not started: no community, user or notification target '
                                  "is configured</span>"))
        if standalone:
            rows.append(("Listening on", _e(", ".join(f"udp {a}" for a in cfg.snmp_listen_addresses))
                         if running else '<span class="muted">nothing</span>'))
        if agentx:
            rows.append(("AgentX master", f"<code>{_e(cfg.agentx_socket)}</code> "
                         + _flag(self._agentx_connected(), "connected", "not connected")))
        access = (f"{_plural(len(cfg.snmp_communities), 'v1/v2c community', 'v1/v2c communities')}, "
                  f"{_plural(len(cfg.snmp_users), 'SNMPv3 user', 'SNMPv3 users')}")
        rows.append(("Access", _e(access)))
        rows.append(("Lifecycle control", _e("enabled (SNMP SET)" if cfg.control_enabled else "off")))
        return _rows(rows)

    def _targets(self) -> str:
        cfg = self._config
        if self._notifications is None:
            if cfg.snmp_notify and not cfg.snmp_enabled:
                count = _plural(len(cfg.snmp_notify), "target", "targets")
                return f'<p class="muted">{count} configured, unused: SNMP is disabled.</p>'
            return '<p class="muted">None configured.</p>'
        rows = []
        for t in self._notifications():
            rows.append(f"<tr><td><code>{_e(t.where)}</code></td><td>{_e(t.kind)}</td>"
                        f'<td class="n">{t.queued} of {t.capacity}</td><td class="n">{t.sent}</td>'
                        f'<td class="n{" bad" if t.dropped else ""}">{t.dropped}</td>'
                        f'<td class="n">{t.retries}</td></tr>')
        if not rows:
            return '<p class="muted">None configured.</p>'
        return ('<table><tr><th>Target</th><th>Type</th><th class="n">Queued</th><th class="n">Sent</th>'
                '<th class="n">Dropped</th><th class="n">Retries</th></tr>' + "".join(rows) + "</table>")

    def _links(self, metrics_path: str) -> str:
        links = [(metrics_path, "Prometheus metrics", False), ("/healthz", "health check (JSON)", False)]
        links += [(MIB_PATH + name, "MIB text", True) for name in MIB_FILES if name in self.mibs]
        items = "".join(f'<li><a href="{_e(href)}"{" download" if download else ""}>{_e(href)}</a> '
                        f"&ndash; {_e(what)}</li>" for href, what, download in links)
        missing = [name for name in MIB_FILES if name not in self.mibs]
        note = (f'<p class="muted">MIB files not found on this host: {_e(", ".join(missing))}.</p>'
                if missing else "")
        return f"<ul>{items}</ul>{note}"


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
        render_metrics: Callable[[bool], bytes],
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
                threading.Thread(target=server.serve_forever, name=f"http-{address}", daemon=True).start()
                log.info("serving metrics on %s://%s%s%s", "https" if self._app.tls else "http", address,
                         self._app.metrics_path, " (basic auth)" if self._app.auth else "")

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
