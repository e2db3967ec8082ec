"""The running service on the test driver: HTTP endpoints, events, filters."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import libvirt

from exporter.config import resolve
from exporter.poller import Poller
from exporter.snapshot import STATE_PAUSED, STATE_RUNNING
from exporter.source import start_event_loop
from tests.conftest import require
from tests.support.process import Exporter, free_port, http_get
from tests.support.wait import wait_until


def test_demo_service_endpoints(demo_uri: str, tmp_path) -> None:
    """/metrics shows the six demo domains; /, /healthz, 404 and 405 behave."""
    with Exporter(["--libvirt.uri", demo_uri], log=tmp_path / "log") as exp:
        metrics = exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        assert metrics.get("libvirt_up") == 1
        states = {s["domain"]: metrics.get("libvirt_domain_state_code", domain=s["domain"])
                  for s in metrics.series("libvirt_domain_state_code")}
        assert states == {"web1": 1, "web2": 1, "db1": 1, "batch1": 3, "legacy1": 5, "crashy1": 6}
        assert any(n.startswith("process_") for n in metrics.names())
        status, body = http_get(exp.url + "/")
        assert status == 200 and b'href="/metrics"' in body
        status, body = http_get(exp.url + "/healthz")
        assert status == 200 and b'"libvirt_up": true' in body
        assert http_get(exp.url + "/nope")[0] == 404
        with socket.create_connection(("127.0.0.1", exp.port)) as sock:
            sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 405")
        assert exp.stop() == 0
    assert "Traceback" not in exp.output()


def test_ipv6_and_two_listen_addresses(demo_uri: str, tmp_path) -> None:
    """Several listen addresses, IPv6 loopback among them, all serve the same data."""
    require(socket.has_ipv6, "no IPv6 support in this Python build")
    port4, port6 = free_port(), free_port()
    listen = f"127.0.0.1:{port4},[::1]:{port6}"
    with Exporter(["--libvirt.uri", demo_uri], listen=listen, log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        for url in (f"http://127.0.0.1:{port4}/metrics", f"http://[::1]:{port6}/metrics"):
            status, body = http_get(url)
            assert status == 200 and b"libvirt_domains_number 6.0" in body, url


def test_wildcard_listens_on_ipv4_and_ipv6(demo_uri: str, tmp_path) -> None:
    """The default form :PORT serves both 127.0.0.1 and ::1 from one dual-stack socket."""
    require(socket.has_ipv6, "no IPv6 support in this Python build")
    port = free_port()
    exp = Exporter(["--libvirt.uri", demo_uri], listen=f":{port}", log=tmp_path / "log")
    exp.url = f"http://127.0.0.1:{port}"
    with exp:
        for url in (f"http://127.0.0.1:{port}/healthz", f"http://[::1]:{port}/healthz"):
            assert http_get(url)[0] == 200, url


def test_listen_address_in_use_is_reported(demo_uri: str, tmp_path) -> None:
    """A port already taken stops the exporter with a clear message, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exp = Exporter(["--libvirt.uri", demo_uri], listen=f"127.0.0.1:{port}", log=tmp_path / "log")
        assert exp.proc.wait(timeout=20) == 1
        out = exp.output()
        assert f"cannot listen on 127.0.0.1:{port}" in out and "Traceback" not in out


def test_domain_filter_and_collectors(demo_uri: str, tmp_path) -> None:
    """--domain.exclude drops domains; --no-collector.block drops block families."""
    with Exporter(["--libvirt.uri", demo_uri, "--domain.exclude", "web.*", "--no-collector.block"],
                  log=tmp_path / "log") as exp:
        metrics = exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="up")
        assert metrics.get("libvirt_domains_number") == 4
        assert not [s for s in metrics.series("libvirt_domain_state_code") if s["domain"].startswith("web")]
        assert not [n for n in metrics.names() if n.startswith("libvirt_domain_block_stats")]
        assert metrics.get("libvirt_domain_interface_stats_receive_bytes_total", domain="db1",
                           target_device="tap-db1a") is not None


def test_unreachable_libvirt_keeps_serving(tmp_path) -> None:
    """libvirt that is not there: libvirt_up 0, no domains, retries with backoff, the process keeps serving."""
    uri = f"test+unix:///default?socket={tmp_path}/missing"
    with Exporter(["--libvirt.uri", uri, "--libvirt.reconnect-backoff-max", "1s"], log=tmp_path / "log") as exp:
        metrics = exp.wait_for(lambda m: m.get("libvirt_exporter_poll_errors_total", group="connection") >= 2,
                               what="two failed connection attempts")
        assert metrics.get("libvirt_up") == 0
        assert not [n for n in metrics.names() if n.startswith("libvirt_domain")]
        first = metrics.get("libvirt_exporter_poll_errors_total", group="connection")
        time.sleep(3)
        later = exp.scrape().get("libvirt_exporter_poll_errors_total", group="connection")
        assert 1 <= later - first <= 6, "reconnects must back off (1 s cap here), not spin"
    # The loss is logged once, not on every attempt.
    assert exp.output().count("is unreachable") == 1


def _run_poller(config, stop: asyncio.Event, box: dict) -> None:
    async def main() -> None:
        box["loop"] = asyncio.get_running_loop()
        box["stop"] = stop
        await box["poller"].run(stop)

    asyncio.run(main())


def _first_state(poller: Poller) -> int | None:
    """The state of the snapshot's first domain (None while it has none)."""
    snap = poller.snapshot
    return snap.domains[0].state if snap.domains else None


def test_events_update_snapshot_at_once() -> None:
    """A suspend made through another connection shows in the snapshot well before the next poll."""
    start_event_loop()
    config = resolve({"libvirt.poll_interval": "60s"}, {}, {})
    poller = Poller(config.libvirt)
    box: dict = {"poller": poller}
    stop = asyncio.Event()
    thread = threading.Thread(target=_run_poller, args=(config, stop, box), daemon=True)
    thread.start()
    wait_until(lambda: poller.snapshot.up, 30, "the first poll", every=0.02)
    assert poller.snapshot.up
    first_poll = poller.snapshot.taken_at
    other = libvirt.open("test:///default")
    dom = other.lookupByName("test")
    try:
        dom.suspend()
        t0 = time.monotonic()
        # (2 s at most: the event must do it well within 1 s, asserted below; the next poll is 60 s away)
        wait_until(lambda: _first_state(poller) == STATE_PAUSED, 2, "the suspend in the snapshot", every=0.01)
        assert poller.snapshot.domains[0].state == STATE_PAUSED
        assert time.monotonic() - t0 < 1.0
        assert poller.snapshot.taken_at == first_poll  # the event did it, not a poll
        assert poller.snapshot.events >= 1
        dom.resume()
        wait_until(lambda: _first_state(poller) == STATE_RUNNING, 2, "the resume in the snapshot", every=0.01)
        assert poller.snapshot.domains[0].state == STATE_RUNNING
    finally:
        if dom.state()[0] == STATE_PAUSED:
            dom.resume()
        other.close()
        box["loop"].call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_no_snmp_principals_no_agent(demo_uri: str, tmp_path) -> None:
    """With no community, user or notification target, no SNMP agent starts and no state is written."""
    state = tmp_path / "state"
    with Exporter(["--libvirt.uri", demo_uri, "--state.directory", str(state)], log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="up")
    assert "SNMP agent not started: no community, user or notification target is configured" in exp.output()
    assert not state.exists()


def test_log_never_shows_the_uri_credentials(tmp_path) -> None:
    """The poller's log names libvirt's URI without its user, password or secret-bearing query values."""
    exp = Exporter(["--libvirt.uri", f"qemu+unix://admin:hunter2@/system?socket={tmp_path}/none&keyfile=/k/secret",
                    "--state.directory", str(tmp_path / "state")], log=tmp_path / "log")
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 0, what="libvirt down")
        wait_until(lambda: "is unreachable" in exp.output(), 30, "the poller to log the failed connection")
        output = exp.output()
    assert "is unreachable" in output and "(hidden)@" in output
    assert "hunter2" not in output and "/k/secret" not in output
