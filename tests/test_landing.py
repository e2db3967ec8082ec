"""The status page at ``/``: what it shows, what it never shows (secrets), the MIB texts it links to; and the
demo's page in headless Chromium, with a screenshot kept in the test's tmp dir."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time
import urllib.request
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from exporter import __version__
from exporter.config import Config, LibvirtSettings, SnmpSettings, WebSettings
from exporter.config.snmp import Community, NotifyTarget, V3User
from exporter.config.values import ListenAddress, redact_uri
from exporter.snapshot import EMPTY, STATE_PAUSED, STATE_RUNNING, STATE_SHUTOFF, Domain, Host, Snapshot
from exporter.snmp.notify import TargetStatus
from exporter.web_status import MIB_FILES, StatusPage, load_mibs, mib_directories
from tests.conftest import DEMO_HOST, ROOT, require_tool
from tests.support.process import Exporter, http_get
from tests.support.snmp import free_udp_port

# Secrets of the page tests: none may ever appear on the page.
TRAP_COMMUNITY = "trap-community-5ecret"
NOTIFY_USER, NOTIFY_AUTH, NOTIFY_PRIV = "notify-user", "notify-auth-5ecret", "notify-priv-5ecret"
DEMO_SECRETS = ("public", "demo-auth-pass", "demo-priv-pass")  # examples/demo.toml's community and keys
KEYFILE = "/etc/libvirt-exporter/ssh-key-5ecret"


class _Text(HTMLParser):
    """A page's visible text (whitespace collapsed) and its links."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title"):
            self._skip += 1
        self.scripts += tag == "script"
        if tag == "a":
            self.links += [value for name, value in attrs if name == "href" and value]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())


def _parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    parser.close()
    return parser


# -- the page, rendered in-process --------------------------------------------


@pytest.mark.parametrize(("uri", "shown"), [
    ("qemu:///system", "qemu:///system"),
    ("test:///default", "test:///default"),
    ("myhost", "myhost"),  # a uri_aliases name
    ("qemu+ssh://root:hunter2@kvm1.example.org:2222/system?keyfile=/root/.ssh/id&no_verify=1",
     "qemu+ssh://(hidden)@kvm1.example.org:2222/system?keyfile=(hidden)&no_verify=1"),
    ("qemu+ssh://admin@kvm1/system", "qemu+ssh://(hidden)@kvm1/system"),
    ("qemu+ssh://admin:pa/ss@word@kvm1/system", "qemu+ssh://(hidden)@kvm1/system"),  # an unescaped / and @
    ("qemu+tls://kvm1/system?pkipath=/etc/pki/kvm1&tls_priority=NORMAL",
     "qemu+tls://kvm1/system?pkipath=(hidden)&tls_priority=NORMAL"),
    ("qemu+libssh2://kvm1/system?known_hosts=/x&sshauth=privkey&no_tty",
     "qemu+libssh2://kvm1/system?known_hosts=(hidden)&sshauth=privkey&no_tty"),
    ("qemu+ssh://kvm1/system?PASSWORD=x&&", "qemu+ssh://kvm1/system?PASSWORD=(hidden)"),
    ("qemu+ssh://[fd00::1]:22/system#frag", "qemu+ssh://[fd00::1]:22/system"),
    ("test+unix:///default?socket=/run/x/libvirt-sock", "test+unix:///default?socket=/run/x/libvirt-sock"),
])
def test_uri_is_shown_without_credentials(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def _config(*, libvirt: dict[str, Any] | None = None, web: dict[str, Any] | None = None,
            snmp: dict[str, Any] | None = None) -> Config:
    """The page's test configuration, with some settings of a section changed."""
    snmp_settings = SnmpSettings(
        listen_addresses=(ListenAddress("127.0.0.1", 1161), ListenAddress("::1", 1161)),
        communities=(Community("public"), Community("private-rw", write=True)),
        users=(V3User("monitor", "demo-auth-pass", "demo-priv-pass"),),
        notify=(NotifyTarget(ListenAddress("192.0.2.7", 162), community=TRAP_COMMUNITY, queue_size=50),
                NotifyTarget(ListenAddress("192.0.2.8", 10162), kind="inform", version="v3",
                             user=V3User(NOTIFY_USER, NOTIFY_AUTH, NOTIFY_PRIV))),
    )
    return Config(
        libvirt=replace(LibvirtSettings(uri=f"qemu+ssh://root:hunter2@kvm1/system?keyfile={KEYFILE}"), **libvirt or {}),
        web=replace(WebSettings(), **web or {}), snmp=replace(snmp_settings, **snmp or {}))


def _snapshot(now: float) -> Snapshot:
    domains = tuple(Domain(f"d{n}", f"uuid-{n}", n, state, active=state != STATE_SHUTOFF)
                    for n, state in enumerate([STATE_RUNNING] * 3 + [STATE_PAUSED, STATE_SHUTOFF]))
    host = Host(hostname="kvm1<b>", driver="QEMU", hypervisor_version=8_002_001, libvirt_version=9_000_000,
                uri="qemu+ssh://root:hunter2@kvm1/system")
    return Snapshot(up=True, taken_at=now - 4.0, poll_duration_s=0.042, last_success_at=now - 4.0, host=host,
                    domains=domains)


def _stats() -> list[TargetStatus]:
    return [TargetStatus("192.0.2.7:162", "v2c trap", 50, 3, 12, 0, 0),
            TargetStatus("192.0.2.8:10162", "v3 inform", 1000, 9, 4, 2, 7)]


def test_page_shows_what_a_person_checks_and_no_secret() -> None:
    now = 1_800_000_000.0
    page = StatusPage(_config(), lambda: _snapshot(now), agent_running=lambda: True, notifications=_stats,
                      clock=lambda: now)
    body = page.render("/metrics").decode()
    parsed = _parse(body)
    text = parsed.text
    for expected in (
        f"libvirt exporter {__version__}", "Status: OK",
        "URI qemu+ssh://(hidden)@kvm1/system?keyfile=(hidden)", "Connected yes",
        "kvm1<b> (QEMU 8.2.1, libvirt 9.0.0)",
        "running 3 paused 1 shutoff 1 total 5 active 4",
        "Snapshot age 4.0 s (taken 2027-01-15 07:59:56 UTC)", "Poll duration 42 ms", "Poll interval 15 s",
        "Mode standalone", "Agent running", "Listening on udp 127.0.0.1:1161, udp [::1]:1161",
        "Access 2 v1/v2c communities, 1 SNMPv3 user", "Lifecycle control off",
        "Target Type Queued Sent Dropped Retries",
        "192.0.2.7:162 v2c trap 3 of 50 12 0 0", "192.0.2.8:10162 v3 inform 9 of 1000 4 2 7",
        "/metrics – Prometheus metrics", "/healthz – health check (JSON)",
        "/mibs/LIBVIRT-EXPORTER-MIB.txt – MIB text", "/mibs/LIBVIRT-MIB.txt – MIB text",
    ):
        assert expected in text, f"{expected!r} not in {text!r}"
    assert parsed.links == ["/metrics", "/healthz", "/mibs/LIBVIRT-EXPORTER-MIB.txt", "/mibs/LIBVIRT-MIB.txt"]
    assert "<b>" not in body and "kvm1&lt;b&gt;" in body  # escaped
    assert parsed.scripts == 0
    for secret in ("hunter2", "root", KEYFILE, "private-rw", TRAP_COMMUNITY, NOTIFY_USER, NOTIFY_AUTH, NOTIFY_PRIV,
                   "monitor", *DEMO_SECRETS):
        assert secret not in body, secret


def test_page_escapes_what_comes_from_configuration_and_libvirt() -> None:
    config = _config(libvirt={"uri": "test:///tmp/<script>alert(1)</script>.xml"},
                     web={"telemetry_path": '/m"><script>'})
    snap = _snapshot(time.time()).replace(host=Host(hostname="<img src=x onerror=alert(1)>", driver="<i>"))
    body = StatusPage(config, lambda: snap).render(config.web.telemetry_path).decode()
    assert "<script" not in body and "<img" not in body and "<i>" not in body
    assert "test:///tmp/&lt;script&gt;alert(1)&lt;/script&gt;.xml" in body
    assert 'href="/m&quot;&gt;&lt;script&gt;"' in body


def test_page_when_libvirt_is_not_there() -> None:
    config = _config(snmp={"communities": (), "users": (), "notify": (), "mode": "both"})
    text = _parse(StatusPage(config, lambda: EMPTY).render("/metrics").decode()).text
    assert "Status: no poll finished yet; AgentX master not connected" in text
    assert "Connected no" in text and "No domains known: libvirt is not connected." in text
    assert "Snapshot age no snapshot yet" in text
    assert "Agent not started" in text and "AgentX master /var/agentx/master not connected" in text
    assert "Notification targets None configured." in text
    down = EMPTY.replace(taken_at=time.time(), stalled=True, poll_errors={"domain": 2})
    text = _parse(StatusPage(_config(snmp={"enabled": False}), lambda: down).render("/metrics").decode()).text
    assert "Status: libvirt not connected; poll running past its deadline" in text
    assert "Poll errors 2 (domain 2)" in text and "Stalled yes" in text
    assert "SNMP is disabled" in text and "2 targets configured, unused: SNMP is disabled." in text


def test_mib_texts_come_from_the_source_tree_or_say_they_are_missing(tmp_path: Path) -> None:
    assert mib_directories()[0] == ROOT / "mibs"
    mibs = load_mibs(mib_directories())
    assert {name: (ROOT / "mibs" / name).read_bytes() for name in MIB_FILES} == mibs
    (tmp_path / "LIBVIRT-MIB.txt").write_text("LIBVIRT-MIB DEFINITIONS ::= BEGIN\nEND\n")
    page = StatusPage(_config(), lambda: EMPTY, mib_dirs=[tmp_path / "none", tmp_path])
    assert list(page.mibs) == ["LIBVIRT-MIB.txt"]
    text = _parse(page.render("/metrics").decode()).text
    assert "/mibs/LIBVIRT-MIB.txt" in text and "MIB files not found on this host: LIBVIRT-EXPORTER-MIB.txt" in text


# -- the demo's page in headless Chromium ------------------------------------


def _chromium(binary: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
               f"--user-data-dir={folder / 'chromium-profile'}", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=folder,
                                env={**os.environ, "HOME": str(folder)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within 120 s: {command}")
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, dict(response.headers.items()), response.read()


def test_demo_page_in_headless_chromium(tmp_path: Path) -> None:
    chromium = require_tool("chromium", "chromium")
    snmp_port, trap_port, inform_port = free_udp_port(), free_udp_port(), free_udp_port()
    config = tmp_path / "demo.toml"
    config.write_text((ROOT / "examples" / "demo.toml").read_text() + f"""
[[snmp.notify]]
address = "127.0.0.1:{trap_port}"
community = "{TRAP_COMMUNITY}"
queue_size = 100

[[snmp.notify]]
address = "127.0.0.1:{inform_port}"
type = "inform"
version = "v3"
user = "{NOTIFY_USER}"
auth_key = "{NOTIFY_AUTH}"
priv_key = "{NOTIFY_PRIV}"
""")
    config.chmod(0o600)
    uri = f"test://{DEMO_HOST}?keyfile={KEYFILE}"
    args = ["--config.file", str(config), "--libvirt.uri", uri, "--state.directory", str(tmp_path / "state"),
            "--snmp.listen-address", f"127.0.0.1:{snmp_port}"]
    screenshot = tmp_path / "landing.png"
    with Exporter(args, log=tmp_path / "exporter.log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="libvirt_up 1")
        exp.wait_output("sending SNMP v3 informs")
        status, headers, raw = _get(exp.url + "/")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert "script-src" not in headers["Content-Security-Policy"]
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")

        _chromium(chromium, tmp_path, f"--screenshot={screenshot}", "--window-size=1280,1400", exp.url + "/")
        dom = _chromium(chromium, tmp_path, "--dump-dom", exp.url + "/").stdout
        links = {}
        for href in _parse(dom).links:
            links[href] = http_get(exp.url + href)
    assert "Traceback" not in exp.output()

    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1280, 1400) and len(png) > 2000, (width, height, len(png))

    page = _parse(dom)
    text = page.text
    for expected in (
        f"libvirt exporter {__version__}", "Status: OK",
        f"URI test://{DEMO_HOST}?keyfile=(hidden) Connected yes",
        "running 3 paused 1 shutoff 1 crashed 1 total 6 active",
        "Mode standalone", "Agent running", f"Listening on udp 127.0.0.1:{snmp_port}",
        "Access 1 v1/v2c community, 1 SNMPv3 user",
    ):
        assert expected in text, f"{expected!r} not in {text!r}"
    assert re.search(r"Snapshot age \d+(\.\d)? m?s \(taken 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC\) "
                     r"Poll duration \d+(\.\d)? m?s", text), text
    assert re.search(rf"127\.0\.0\.1:{trap_port} v2c trap \d+ of 100 \d+ \d+ \d+", text), text
    assert re.search(rf"127\.0\.0\.1:{inform_port} v3 inform \d+ of 1000 \d+ \d+ \d+", text), text
    assert page.scripts == 0
    for secret in (KEYFILE, TRAP_COMMUNITY, NOTIFY_USER, NOTIFY_AUTH, NOTIFY_PRIV, *DEMO_SECRETS):
        assert secret not in dom and secret.encode() not in raw, secret

    assert set(links) == {"/metrics", "/healthz", "/mibs/LIBVIRT-EXPORTER-MIB.txt", "/mibs/LIBVIRT-MIB.txt"}
    assert all(status == 200 for status, _ in links.values()), {k: s for k, (s, _) in links.items()}
    assert b"libvirt_up 1" in links["/metrics"][1]
    for name in MIB_FILES:
        body = links[f"/mibs/{name}"][1]
        assert body == (ROOT / "mibs" / name).read_bytes()
        assert f"{name.removesuffix('.txt')} DEFINITIONS ::= BEGIN".encode() in body


def test_only_the_shipped_mib_names_are_served(demo_uri: str, tmp_path: Path) -> None:
    with Exporter(["--libvirt.uri", demo_uri, "--no-snmp.enabled"], log=tmp_path / "log") as exp:
        for path in ("/mibs/", "/mibs/pyproject.toml", "/mibs/../pyproject.toml", "/mibs/%2e%2e/pyproject.toml",
                     "/mibs/LIBVIRT-MIB.txt/", "/mibs//LIBVIRT-MIB.txt"):
            assert http_get(exp.url + path)[0] == 404, path
        status, body = http_get(exp.url + "/mibs/LIBVIRT-MIB.txt?download=1")
        assert status == 200 and body == (ROOT / "mibs" / "LIBVIRT-MIB.txt").read_bytes()
