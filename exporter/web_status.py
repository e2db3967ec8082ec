"""The status page at ``/`` and the MIB texts under ``/mibs/``: what the service is doing, rendered from the
configuration, the current snapshot and the notifier's counters (cheap, and never a libvirt call)."""

from __future__ import annotations

import html
import logging
import site
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exporter import __version__
from exporter.config import Config
from exporter.config.values import redact_uri
from exporter.snapshot import STATE_NAMES, Snapshot, version_text

if TYPE_CHECKING:
    from exporter.snmp.notify import TargetStatus

log = logging.getLogger(__name__)

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


def escape(value: object) -> str:
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
    return "<table>" + "".join(f"<tr><th>{escape(label)}</th><td>{cell}</td></tr>" for label, cell in rows) + "</table>"


def _flag(ok: bool, yes: str, no: str) -> str:
    return f'<span class="{"ok" if ok else "bad"}">{escape(yes if ok else no)}</span>'


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
        self.uri = redact_uri(config.libvirt.uri)
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
            f"<title>libvirt exporter{escape(' on ' + host) if host else ''}</title>",
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>libvirt exporter {escape(__version__)}</h1>",
            f'<p class="status">Status: {status}</p>',
            "<h2>libvirt</h2>", self._libvirt(snap),
            "<h2>Domains</h2>", self._domains(snap),
            "<h2>Polling</h2>", self._polling(snap, now),
            "<h2>SNMP</h2>", self._snmp(),
            "<h2>Notification targets</h2>", self._targets(),
            "<h2>Links</h2>", self._links(metrics_path),
            f'<p class="muted">Page rendered at {escape(_utc(now))}.</p>',
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
        if cfg.snmp.enabled and cfg.snmp.mode in ("agentx", "both") and not self._agentx_connected():
            problems.append("AgentX master not connected")
        return problems

    def _libvirt(self, snap: Snapshot) -> str:
        rows = [("URI", f"<code>{escape(self.uri)}</code>"), ("Connected", _flag(snap.up, "yes", "no"))]
        if snap.host is not None:
            h = snap.host
            versions = ", ".join(x for x in (
                f"{h.driver} {version_text(h.hypervisor_version)}".strip() if h.driver else "",
                f"libvirt {version_text(h.libvirt_version)}" if h.libvirt_version else "") if x)
            rows.append(("Host", escape(h.hostname or "(unnamed)") + (f" ({escape(versions)})" if versions else "")))
        rows.append(("Reconnects", escape(snap.reconnects)))
        rows.append(("Events received", escape(snap.events)))
        return _rows(rows)

    def _domains(self, snap: Snapshot) -> str:
        if not snap.up:
            return '<p class="muted">No domains known: libvirt is not connected.</p>'
        counts = Counter(d.state for d in snap.domains)
        rows = "".join(f'<tr><td>{escape(name)}</td><td class="n">{counts[state]}</td></tr>'
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
            age = f"{escape(_seconds(max(0.0, now - snap.taken_at)))} (taken {escape(_utc(snap.taken_at))})"
        else:
            age = "no snapshot yet"
        rows = [("Snapshot age", age), ("Poll duration", escape(_seconds(snap.poll_duration_s))),
                ("Poll interval", escape(f"{cfg.libvirt.poll_interval_s:g} s"))]
        if snap.last_success_at:
            rows.append(("Last successful poll", escape(_utc(snap.last_success_at))))
        errors = sum(snap.poll_errors.values())
        rows.append(("Poll errors", escape(errors) if not errors else f'<span class="bad">{errors}</span> ('
                     + escape(", ".join(f"{k} {v}" for k, v in sorted(snap.poll_errors.items()) if v)) + ")"))
        if snap.stalled:
            rows.append(("Stalled", _flag(False, "", "yes: the current poll runs past its deadline")))
        return _rows(rows)

    def _snmp(self) -> str:
        cfg = self._config
        if not cfg.snmp.enabled:
            return '<p class="muted">SNMP is disabled (snmp.enabled = false).</p>'
        standalone, agentx = cfg.snmp.mode in ("standalone", "both"), cfg.snmp.mode in ("agentx", "both")
        running = self._agent_running()
        rows = [("Mode", escape(cfg.snmp.mode))]
        if running:
            rows.append(("Agent", _flag(True, "running", "")))
        else:
            rows.append(("Agent", '<span class="muted">not started: no community, user or notification target '
                                  "is configured</span>"))
        if standalone:
            rows.append(("Listening on", escape(", ".join(f"udp {a}" for a in cfg.snmp.listen_addresses))
                         if running else '<span class="muted">nothing</span>'))
        if agentx:
            rows.append(("AgentX master", f"<code>{escape(cfg.snmp.agentx_socket)}</code> "
                         + _flag(self._agentx_connected(), "connected", "not connected")))
        access = (f"{_plural(len(cfg.snmp.communities), 'v1/v2c community', 'v1/v2c communities')}, "
                  f"{_plural(len(cfg.snmp.users), 'SNMPv3 user', 'SNMPv3 users')}")
        rows.append(("Access", escape(access)))
        rows.append(("Lifecycle control", escape("enabled (SNMP SET)" if cfg.control.enabled else "off")))
        return _rows(rows)

    def _targets(self) -> str:
        cfg = self._config
        if self._notifications is None:
            if cfg.snmp.notify and not cfg.snmp.enabled:
                count = _plural(len(cfg.snmp.notify), "target", "targets")
                return f'<p class="muted">{count} configured, unused: SNMP is disabled.</p>'
            return '<p class="muted">None configured.</p>'
        rows = []
        for t in self._notifications():
            rows.append(f"<tr><td><code>{escape(t.where)}</code></td><td>{escape(t.kind)}</td>"
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
        items = "".join(f'<li><a href="{escape(href)}"{" download" if download else ""}>{escape(href)}</a> '
                        f"&ndash; {escape(what)}</li>" for href, what, download in links)
        missing = [name for name in MIB_FILES if name not in self.mibs]
        note = (f'<p class="muted">MIB files not found on this host: {escape(", ".join(missing))}.</p>'
                if missing else "")
        return f"<ul>{items}</ul>{note}"
