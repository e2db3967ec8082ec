"""Notifications to a real snmptrapd: v2c traps and informs, v3 authPriv traps and informs; the v2c encoder,
the v2c sender against a scripted receiver, and the drop log."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.ber import encoder as ber_encoder
from pysnmp.proto import api, rfc1902

from exporter.config.snmp import NotifyTarget
from exporter.config.values import ListenAddress
from exporter.snmp.engine import encode
from exporter.snmp.notify import DropLog, Notifier, notifier_engine_id
from exporter.snmp.syntax import BYTES, C64, G32, INT, OID, STR, TICKS, U32, NotificationDef
from exporter.snmp.v2send import (
    INFORM_PDU,
    SNMP_TRAP_OID,
    SYS_UP_TIME,
    TRAP_PDU,
    Malformed,
    V2cSender,
    decode_response,
    encode_notification,
)
from tests.conftest import ROOT, require_tool
from tests.support import snmp
from tests.support.process import Exporter
from tests.support.trapd import Received, Trapd
from tests.support.wait import async_wait_until

ENGINE_ID = "80001f8805aabbccddeeff00112233"
NOTIFIER_ID = "0x" + notifier_engine_id(bytes.fromhex(ENGINE_ID)).hex()
LVX = "1.3.6.1.4.1.8072.9999.9999"
WRITER = ["-v3", "-l", "authPriv", "-u", "admin", "-a", "SHA-256", "-A", "admin-auth-key", "-x", "AES",
          "-X", "admin-priv-key"]


def notify_config(ports: list[int], dead_port: int | None = None) -> str:
    v2c_trap, v2c_inform, v3_trap, v3_inform = ports
    text = f"""
[control]
enabled = true

[[snmp.users]]
name = "admin"
auth_key = "admin-auth-key"
priv_key = "admin-priv-key"
write = true

[[snmp.notify]]
address = "127.0.0.1:{v2c_trap}"
community = "trap-community"
mibs = ["libvirt-exporter", "libvirt", "vm"]

[[snmp.notify]]
address = "127.0.0.1:{v2c_inform}"
type = "inform"
community = "inform-community"

[[snmp.notify]]
address = "127.0.0.1:{v3_trap}"
version = "v3"
user = "trapper"
auth_key = "trapper-auth-key"
priv_key = "trapper-priv-key"

[[snmp.notify]]
address = "127.0.0.1:{v3_inform}"
version = "v3"
type = "inform"
user = "informer"
auth_key = "informer-auth-key"
priv_key = "informer-priv-key"
auth_protocol = "SHA-512"
priv_protocol = "AES-256"
"""
    if dead_port is not None:
        text += f"""
[[snmp.notify]]
address = "127.0.0.1:{dead_port}"
type = "inform"
community = "nobody-listens"
queue_size = 3
"""
    return text


@pytest.fixture
def trapd(tmp_path) -> Iterator[Trapd]:
    require_tool("snmptrapd", "snmptrapd")
    receiver = Trapd(tmp_path, 4, [
        f"-e {NOTIFIER_ID} trapper SHA-256 trapper-auth-key AES trapper-priv-key",
        "informer SHA-512 informer-auth-key AES-256 informer-priv-key",
    ])
    yield receiver
    receiver.stop()


def _exporter(trapd: Trapd, tmp_path, dead_port: int | None = None) -> tuple[Exporter, str]:
    """The demo host with control on, sending to the trap receiver's ports (and a dead one if given)."""
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}",
                            notify_config(trapd.ports, dead_port=dead_port))
    exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml",
                    "--snmp.engine-id", ENGINE_ID], log=tmp_path / "log")
    return exp, f"127.0.0.1:{port}"


def _set(target: str, *args: str) -> None:
    result = snmp.run("snmpset", *WRITER, "-t", "5", "-r", "0", target, *args)
    assert result.returncode == 0, result.stderr


def test_lifecycle_notifications_reach_snmptrapd(trapd: Trapd, tmp_path) -> None:
    """pause, resume, power off, start: each arrives as v2c trap, v2c inform, v3 trap and v3 inform."""
    exp, target = _exporter(trapd, tmp_path)
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        i = snmp.domain_index(target, "web1")
        for state in ("paused", "running", "off", "running"):
            _set(target, f"lvxDomainAdminState.{i}", "i", state)
        # suspended(3), resumed(4), stopped(2), started(1), in that order, on every target
        expected = [f"{LVX}.0.3", f"{LVX}.0.4", f"{LVX}.0.2", f"{LVX}.0.1"]
        for p in trapd.ports:
            got = [r.trap_oid for r in trapd.wait_for(4 if p != trapd.ports[0] else 12, port=p)
                   if r.trap_oid.startswith(LVX)]
            assert got == expected, (p, got)
        v2c = trapd.received()
        first = next(r for r in v2c if r.port == trapd.ports[0] and r.trap_oid == f"{LVX}.0.3")
        assert f".{LVX}.1.2.1.2.{i} = STRING: \"web1\"" in first.text  # varbinds indexed by the row
        assert f".{LVX}.1.2.1.5.{i} = INTEGER: 3" in first.text  # paused
        # libvirt-snmp's and VM-MIB's notifications go to the target that asked for them
        others = [r.trap_oid for r in v2c if r.port == trapd.ports[0] and not r.trap_oid.startswith(LVX)]
        assert others == ["1.3.6.1.4.1.36957.0.1", "1.3.6.1.2.1.236.0.4", "1.3.6.1.4.1.36957.0.1",
                          "1.3.6.1.2.1.236.0.1", "1.3.6.1.4.1.36957.0.1", "1.3.6.1.2.1.236.0.3",
                          "1.3.6.1.4.1.36957.0.1", "1.3.6.1.2.1.236.0.1"]
        paused_vm = next(r for r in v2c if r.trap_oid == "1.3.6.1.2.1.236.0.4")
        assert f".1.3.6.1.2.1.236.1.4.1.6.{i} = INTEGER: 4" in paused_vm.text  # the state before: running
        metrics = exp.scrape()
        sent = {s["target"]: metrics.get("libvirt_exporter_notifications_sent_total", target=s["target"])
                for s in metrics.series("libvirt_exporter_notifications_sent_total")}
        assert sent == {f"v2c-trap@127.0.0.1:{trapd.ports[0]}": 12, f"v2c-inform@127.0.0.1:{trapd.ports[1]}": 4,
                        f"v3-trap@127.0.0.1:{trapd.ports[2]}": 4, f"v3-inform@127.0.0.1:{trapd.ports[3]}": 4}
    assert f"SNMPv3 traps come from engine ID {NOTIFIER_ID}" in exp.output()


def test_action_failure_notification(trapd: Trapd, tmp_path) -> None:
    """A SET whose libvirt call fails sends lvxDomainActionFailed with libvirt's message."""
    exp, target = _exporter(trapd, tmp_path)
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        i = snmp.domain_index(target, "legacy1")
        result = snmp.run("snmpset", *WRITER, "-t", "5", "-r", "0", target, f"lvxDomainAdminState.{i}", "i", "paused")
        assert "commitFailed" in result.stderr
        (failed,) = [r for r in trapd.wait_for(1, port=trapd.ports[3]) if r.trap_oid == f"{LVX}.0.10"]
        assert "unsupported flags" in failed.text and f".{LVX}.1.2.1.29.{i} = INTEGER: 2" in failed.text


def test_dead_inform_target_delays_nobody(trapd: Trapd, tmp_path) -> None:
    """An inform target nobody answers: retried and its overflow counted, while the others get theirs at once."""
    dead = snmp.free_udp_port()
    exp, target = _exporter(trapd, tmp_path, dead_port=dead)
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        i = snmp.domain_index(target, "web2")
        t0 = time.monotonic()
        for _ in range(3):
            _set(target, f"lvxDomainAdminState.{i}", "i", "paused")
            _set(target, f"lvxDomainAdminState.{i}", "i", "running")
        got = trapd.wait_for(6, port=trapd.ports[1])  # the live inform target
        assert len(got) == 6 and time.monotonic() - t0 < 10
        dead_name = f"v2c-inform@127.0.0.1:{dead}"
        metrics = exp.wait_for(
            lambda m: (m.get("libvirt_exporter_notification_retries_total", target=dead_name) or 0) >= 1,
            timeout=20, what="a retry to the dead target")
        assert metrics.get("libvirt_exporter_notifications_sent_total", target=dead_name) == 0
        assert metrics.get("libvirt_exporter_notifications_dropped_total", target=dead_name) >= 2  # queue of 3
        assert metrics.get("libvirt_exporter_notification_queue_length", target=dead_name) == 3
    log = exp.output()
    assert log.count(f"notification queue for {dead_name} is full") == 1  # logged once, not per drop
    assert log.count(f"inform to {dead_name} not acknowledged") == 1
    # SIGTERM does not wait for the dead target: the three informs still queued are logged as dropped, once
    assert log.count(f"exiting with 3 notification(s) to {dead_name} not delivered (queued or unacknowledged)") == 1
    assert "exiting with" not in log.replace(f"exiting with 3 notification(s) to {dead_name}", "")


# -- the v2c encoder and the Response decoder ---------------------------------------------------------------

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
LVX_OID = tuple(int(x) for x in LVX.split("."))
#: A notification with a value of every syntax, some at or past their range (saturated or wrapped on encoding).
SAMPLE = NotificationDef("libvirt-exporter", LVX_OID + (0, 3), (
    (LVX_OID + (1, 2, 1, 2, 7), (STR, "wéb-1")),
    (LVX_OID + (1, 2, 1, 5, 7), (INT, -129)),
    (LVX_OID + (1, 2, 1, 6, 7), (INT, 2**40)),
    (LVX_OID + (1, 2, 1, 9, 7), (BYTES, b"\x00\xff\x80")),
    (LVX_OID + (1, 2, 1, 10, 7), (C64, 2**64 - 1)),
    (LVX_OID + (1, 2, 1, 11, 7), (G32, 2**32 + 5)),
    (LVX_OID + (1, 2, 1, 12, 7), (U32, 128)),
    (LVX_OID + (1, 2, 1, 13, 7), (TICKS, 2**32 + 3)),
    (LVX_OID + (1, 2, 1, 14, 7), (OID, (1, 3, 6, 1, 4, 1, 200000, 0))),
    (LVX_OID + (1, 2, 1, 15, 7), (STR, "")),
))


def _expected_varbinds(notification: NotificationDef, ticks: int) -> list[tuple[tuple[int, ...], object]]:
    """The varbinds as the pysnmp path built them."""
    return [(SYS_UP_TIME, rfc1902.TimeTicks(ticks % 2**32)),
            (SNMP_TRAP_OID, rfc1902.ObjectIdentifier(notification.trap_oid)),
            *((oid, encode(value, 0.0)) for oid, value in notification.var_binds)]


@pytest.mark.parametrize(("pdu_type", "pdu_class"), [(TRAP_PDU, "SNMPv2TrapPDU"), (INFORM_PDU, "InformRequestPDU")])
@pytest.mark.parametrize("request_id", [1, 0x7FFFFFFF, 128])
def test_v2c_encoding_decodes_with_pysnmp(pdu_type: int, pdu_class: str, request_id: int) -> None:
    """Every field of our message, as pysnmp decodes it; and the very bytes pysnmp encodes for the same message."""
    ticks = 2**32 + 4242  # TimeTicks wrap
    data = encode_notification(b"trap-community", pdu_type, request_id, ticks, SAMPLE)
    message, rest = ber_decoder.decode(data, asn1Spec=V2C.Message())
    assert rest == b""
    assert int(message["version"]) == 1  # SNMPv2c
    assert bytes(V2C.apiMessage.get_community(message)) == b"trap-community"
    pdu = V2C.apiMessage.get_pdu(message)
    assert pdu.tagSet == getattr(V2C, pdu_class).tagSet
    assert int(V2C.apiPDU.get_request_id(pdu)) == request_id
    assert int(V2C.apiPDU.get_error_status(pdu)) == 0 and int(V2C.apiPDU.get_error_index(pdu)) == 0
    got = V2C.apiPDU.get_varbinds(pdu)
    expected = _expected_varbinds(SAMPLE, ticks)
    assert len(got) == len(expected)
    for (name, value), (want_name, want_value) in zip(got, expected, strict=True):
        assert tuple(name) == want_name
        assert value.tagSet == want_value.tagSet, want_name  # the same SNMP type
        assert value == want_value, want_name
    assert int(got[0][1]) == 4242 and got[4][1] == rfc1902.Integer32(2**31 - 1)  # wrapped, saturated

    same = getattr(V2C, pdu_class)()
    V2C.apiPDU.set_defaults(same)
    V2C.apiPDU.set_request_id(same, request_id)
    V2C.apiPDU.set_varbinds(same, expected)
    whole = V2C.Message()
    V2C.apiMessage.set_defaults(whole)
    V2C.apiMessage.set_community(whole, b"trap-community")
    V2C.apiMessage.set_pdu(whole, same)
    assert ber_encoder.encode(whole) == data


def _response(community: bytes, request_id: int, error_status: int = 0, pdu_class: str = "ResponsePDU",
              version: int = 1) -> bytes:
    """A message built and encoded by pysnmp (version 0 is SNMPv1's)."""
    pdu = getattr(V2C, pdu_class)()
    V2C.apiPDU.set_defaults(pdu)
    V2C.apiPDU.set_request_id(pdu, request_id)
    V2C.apiPDU.set_error_status(pdu, error_status)
    V2C.apiPDU.set_varbinds(pdu, [(SYS_UP_TIME, rfc1902.TimeTicks(5))])
    message = V2C.Message()
    V2C.apiMessage.set_defaults(message)
    message["version"] = version
    V2C.apiMessage.set_community(message, community)
    V2C.apiMessage.set_pdu(message, pdu)
    return bytes(ber_encoder.encode(message))


def test_v2c_response_decoding() -> None:
    """A Response-PDU gives its community, request-id and error fields; anything else is Malformed."""
    got = decode_response(_response(b"c", 123456789, error_status=5))
    assert (got.community, got.request_id, got.error_status, got.error_index) == (b"c", 123456789, 5, 0)
    assert decode_response(_response(b"", -7)).request_id == -7
    good = _response(b"c", 1)
    for bad in [b"", b"\x30", good[:-1], good + b"\x00", b"\x04\x03abc", b"\x30\x83\xff\xff\xff" + good[2:],
                _response(b"c", 1, version=0), _response(b"c", 1, pdu_class="SNMPv2TrapPDU"),
                _response(b"c", 1, pdu_class="GetRequestPDU"), bytes(range(40))]:
        with pytest.raises(Malformed):
            decode_response(bad)


# -- the drop log ---------------------------------------------------------------------------------------------


class _FakeTimers:
    """An injected clock and call_later: time moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pending: list[tuple[float, Callable[[], None], list[bool]]] = []

    def clock(self) -> float:
        return self.now

    def schedule(self, delay: float, callback: Callable[[], None]) -> object:
        cancelled = [False]
        self.pending.append((self.now + delay, callback, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled[0] = True

        return Handle()

    def advance(self, to: float) -> None:
        """Move to ``to``, running every timer due by then, in order."""
        while True:
            due = sorted((t for t in self.pending if not t[2][0] and t[0] <= to), key=lambda t: t[0])
            if not due:
                break
            when, callback, _cancelled = due[0]
            self.pending.remove(due[0])
            self.now = max(self.now, when)
            callback()
        self.now = to


_COUNTED = re.compile(r"dropped (\d+), dropping|: (\d+) more dropped")


def _drop_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[tuple[float, int]]:
    return [(r.created, int(m.group(1) or m.group(2))) for r in caplog.records
            if name in r.getMessage() and (m := _COUNTED.search(r.getMessage()))]


def test_drop_log_first_at_once_then_summed_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """First drop logged at once; later ones summed, one line a minute at most; every drop in a line, exactly."""
    caplog.set_level(logging.ERROR, logger="exporter.snmp.notify")
    timers = _FakeTimers()
    drops = DropLog("v2c-trap@x", 5, clock=timers.clock, schedule=timers.schedule, queued=lambda: 5)
    lines: list[tuple[float, int]] = []

    def seen() -> list[tuple[float, int]]:
        nonlocal lines
        new = [(timers.now, count) for _, count in _drop_lines(caplog, "v2c-trap@x")[len(lines):]]
        lines += new
        return new

    drops.dropped()  # t=1000
    assert seen() == [(1000.0, 1)]
    assert "notification queue for v2c-trap@x is full (5)" in caplog.text
    for t in range(1001, 1031):  # 30 more within the minute: summed, not logged
        timers.advance(t)
        drops.dropped()
    timers.advance(1059.9)
    assert seen() == []
    timers.advance(1060.0)  # a minute after the first line: the sum
    assert seen() == [(1060.0, 30)]
    assert "30 more dropped in the last 60s, queue full (31 dropped in all; 5 of 5 queued now)" in caplog.text
    for t in (1061, 1062, 1100):  # the overflow goes on, then ends: reported a minute after the last line
        timers.advance(t)
        drops.dropped()
    timers.advance(1119)
    assert seen() == []
    timers.advance(1120)
    assert seen() == [(1120.0, 3)]
    timers.advance(1200)
    assert seen() == []
    drops.dropped()  # a new overflow, more than a minute after the last line: at once
    assert seen() == [(1200.0, 1)]
    timers.advance(1210)
    drops.dropped()
    drops.dropped()
    drops.flush()  # shutdown: what is left, now
    assert seen() == [(1210.0, 2)]
    drops.flush()
    timers.advance(5000)
    assert seen() == []
    assert sum(count for _, count in lines) == drops.total == 37 and drops.unreported == 0
    regular = [t for t, _ in lines[:-1]]
    assert all(b - a >= 60 for a, b in itertools.pairwise(regular))


def test_notifier_counts_every_drop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A queue of 3 and 10 notifications: 7 dropped, counted exactly, and all 7 in the log by the end."""
    caplog.set_level(logging.ERROR, logger="exporter.snmp.notify")
    timers = _FakeTimers()
    target = NotifyTarget(ListenAddress("127.0.0.1", 9), community="c", queue_size=3)
    notifier = Notifier([target], bytes.fromhex(ENGINE_ID), tmp_path, clock=timers.clock)
    name = notifier.target_names[0]
    for _ in range(10):
        notifier.submit(SAMPLE)
    assert notifier.dropped[name] == 7 and notifier.stats() == [(name, 0, 7, 0, 3)]
    assert [count for _, count in _drop_lines(caplog, name)] == [1]
    caplog.set_level(logging.WARNING, logger="exporter.snmp.notify")
    asyncio.run(notifier.stop())
    assert [count for _, count in _drop_lines(caplog, name)] == [1, 6]
    # the three that were queued are dropped at exit too, logged with their count, and counted
    assert [r.getMessage() for r in caplog.records if "exiting" in r.getMessage()] == [
        f"exiting with 3 notification(s) to {name} not delivered (queued); dropped"]
    assert notifier.dropped[name] == 10


# -- the v2c sender against a scripted receiver ----------------------------------------------------------------


def _numbered(i: int, mib_name: str = "libvirt-exporter") -> NotificationDef:
    return NotificationDef(mib_name, LVX_OID + (0, 3), ((LVX_OID + (1, 2, 1, 2, 1), (STR, f"n{i}")),
                                                        (LVX_OID + (1, 2, 1, 5, 1), (INT, i))))


async def _until(condition: Callable[[], object], what: str, timeout: float = 30.0, every: float = 0.005) -> None:
    """Wait for ``condition``, checking it ``every`` seconds."""
    await async_wait_until(condition, timeout, what, every)


class _Receiver(asyncio.DatagramProtocol):
    """Decodes what arrives (with pysnmp) and answers as ``script`` says."""

    def __init__(self, script: Callable[[_Receiver, int, int, tuple[str | int, ...]], None]) -> None:
        self.script = script
        self.arrived: list[tuple[int, int]] = []  # (request-id, the notification's number)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        message, _ = ber_decoder.decode(data, asn1Spec=V2C.Message())
        pdu = V2C.apiMessage.get_pdu(message)
        request_id = int(V2C.apiPDU.get_request_id(pdu))
        number = int(V2C.apiPDU.get_varbinds(pdu)[3][1])
        self.arrived.append((request_id, number))
        self.script(self, request_id, number, addr)

    def reply(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


class _Outcomes:
    def __init__(self) -> None:
        self.sent = 0
        self.retries = 0
        self.failed: list[str] = []

    def sender(self, host: str, inform: bool = True, **options: float) -> V2cSender:
        def sent() -> None:
            self.sent += 1

        def retried() -> None:
            self.retries += 1

        return V2cSender("scripted", b"c", inform, lambda: 77, sent, retried, self.failed.append, **options)


async def _with_receiver(host: str, script: Callable[[_Receiver, int, int, tuple[str | int, ...]], None],
                         body: Callable[[_Receiver, int], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    transport, receiver = await loop.create_datagram_endpoint(lambda: _Receiver(script), local_addr=(host, 0),
                                                              family=family)
    try:
        await body(receiver, transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


def _loopback_hosts() -> list[str]:
    hosts = ["127.0.0.1"]
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        hosts.append("::1")
    except OSError:
        pass
    return hosts


@pytest.mark.parametrize("host", _loopback_hosts())
def test_v2c_informs_ignore_junk_and_retransmit(host: str) -> None:
    """Junk, other communities, unknown request-ids and answers from another port are ignored; an inform
    whose first copy goes unanswered is retransmitted; all are counted sent once acknowledged, in order."""
    count = 40
    outcomes = _Outcomes()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        spoofer, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(host, 0), family=family)
        copies: dict[int, int] = {}

        def script(receiver: _Receiver, request_id: int, number: int, addr: tuple[str | int, ...]) -> None:
            copies[number] = copies.get(number, 0) + 1
            for junk in (b"", b"\x00junk", _response(b"c", request_id)[:-3], _response(b"other", request_id),
                         _response(b"c", request_id, version=0), _response(b"c", request_id + 1000),
                         _response(b"c", request_id, pdu_class="SNMPv2TrapPDU")):
                receiver.reply(junk, addr)
            if number % 5 == 1 and copies[number] == 1:
                return  # lost: the sender must send it again
            if number % 5 == 2 and copies[number] == 1:
                spoofer.sendto(_response(b"c", request_id), addr)  # right request-id, wrong sender
                return
            receiver.reply(_response(b"c", request_id), addr)

        async def body(receiver: _Receiver, port: int) -> None:
            sender = outcomes.sender(host, window=8, timeout=0.2)
            await sender.open(host, port)
            queue: asyncio.Queue[NotificationDef] = asyncio.Queue()
            for i in range(count):
                queue.put_nowait(_numbered(i))
            worker = asyncio.ensure_future(sender.run(queue))
            try:
                await _until(lambda: outcomes.sent == count, f"{count} acknowledgements")
                assert sender.pending == 0 and queue.empty()
                assert sender.retransmitted >= 16  # 8 lost, 8 answered by the wrong sender
                assert sender.ignored >= 7 * count + 8
            finally:
                worker.cancel()
                sender.close()
            firsts = [number for n, (_, number) in enumerate(receiver.arrived)
                      if number not in {m for _, m in receiver.arrived[:n]}]
            assert firsts == list(range(count))  # first sent in queue order
            assert {number for _, number in receiver.arrived} == set(range(count))
            assert len({request_id for request_id, _ in receiver.arrived}) == count  # one id each, kept on resend

        try:
            await _with_receiver(host, script, body)
        finally:
            spoofer.close()

    asyncio.run(main())
    assert outcomes.retries == 0 and outcomes.failed == []


def test_v2c_informs_back_off_while_unanswered_then_recover(caplog: pytest.LogCaptureFixture) -> None:
    """A receiver that answers nothing: one round per inform, then only the oldest is retried, with backoff;
    once it answers, everything goes again and is acknowledged.  Logged once each way; an error answer
    gives the inform up."""
    caplog.set_level(logging.WARNING, logger="exporter.snmp.v2send")
    outcomes = _Outcomes()
    state = {"up": False}

    def script(receiver: _Receiver, request_id: int, number: int, addr: tuple[str | int, ...]) -> None:
        if state["up"]:
            receiver.reply(_response(b"c", request_id, error_status=5 if number == 9 else 0), addr)

    async def body(receiver: _Receiver, port: int) -> None:
        sender = outcomes.sender("127.0.0.1", window=4, timeout=0.05, backoff_first=0.05, backoff_max=0.1)
        await sender.open("127.0.0.1", port)
        queue: asyncio.Queue[NotificationDef] = asyncio.Queue()
        for i in range(10):
            queue.put_nowait(_numbered(i))
        worker = asyncio.ensure_future(sender.run(queue))
        try:
            await _until(lambda: outcomes.retries >= 3, "three failed rounds")
            assert sender.pending == 5  # four outstanding, one held: the window is closed while failing
            assert {number for _, number in receiver.arrived} == {0, 1, 2, 3}
            mark = len(receiver.arrived)
            await _until(lambda: outcomes.retries >= 5, "two more rounds")
            assert {number for _, number in receiver.arrived[mark:]} == {0}  # only the oldest one is probed
            state["up"] = True
            await _until(lambda: outcomes.sent + len(outcomes.failed) == 10, "every inform answered")
        finally:
            worker.cancel()
            sender.close()

    asyncio.run(_with_receiver("127.0.0.1", script, body))
    assert outcomes.sent == 9 and len(outcomes.failed) == 1 and "error-status 5" in outcomes.failed[0]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("inform to scripted not acknowledged (no response within 0.15s)" in m for m in messages) == 1
    assert sum("notifications to scripted are delivered again" in m for m in messages) == 1


def test_v2c_traps_leave_in_order_and_paced(tmp_path: Path) -> None:
    """Traps: one datagram each, in queue order, counted sent as they go; never more than the burst at once."""
    outcomes = _Outcomes()

    async def body(receiver: _Receiver, port: int) -> None:
        sender = outcomes.sender("127.0.0.1", inform=False, trap_rate=2000.0, trap_burst=10)
        await sender.open("127.0.0.1", port)
        queue: asyncio.Queue[NotificationDef] = asyncio.Queue()
        for i in range(200):
            queue.put_nowait(_numbered(i))
        worker = asyncio.ensure_future(sender.run(queue))
        try:
            await _until(lambda: len(receiver.arrived) == 200, "200 traps")
            assert outcomes.sent == 200 and sender.pending == 0
        finally:
            worker.cancel()
            sender.close()
        assert [number for _, number in receiver.arrived] == list(range(200))

    asyncio.run(_with_receiver("127.0.0.1", lambda *_: None, body))


# -- through snmptrapd ----------------------------------------------------------------------------------------


def _numbers(received: list[Received]) -> list[int]:
    return [int(m.group(1)) for r in received if (m := re.search(r'STRING: "n(\d+)"', r.text))]


def test_v2c_bulk_to_snmptrapd_exactly_once(tmp_path: Path) -> None:
    """2000 traps to one target and 1000 informs to another: each arrives once, in order, and the counters
    agree (nothing dropped, nothing retried).

    The informs are queued all at once (their window keeps snmptrapd's socket buffer from overflowing).  The
    traps are queued 250 at a time, each batch once snmptrapd has logged the one before: nothing tells a trap
    sender that its receiver has stalled (this machine is shared), and a stalled snmptrapd's socket buffer
    holds about 300 of them.
    """
    require_tool("snmptrapd", "snmptrapd")
    trapd = Trapd(tmp_path / "trapd", 2, [])
    traps, informs = 2000, 1000
    targets = [NotifyTarget(ListenAddress("127.0.0.1", trapd.ports[0]), community="bulk-traps",
                            mibs=frozenset({"libvirt-exporter"}), queue_size=traps),
               NotifyTarget(ListenAddress("127.0.0.1", trapd.ports[1]), kind="inform", community="bulk-informs",
                            mibs=frozenset({"vm"}), queue_size=informs)]
    try:
        notifier = Notifier(targets, bytes.fromhex(ENGINE_ID), tmp_path / "state")
        trap_name, inform_name = notifier.target_names

        async def main() -> None:
            await notifier.start()
            try:
                for i in range(informs):
                    notifier.submit(_numbered(i, "vm"))
                for start in range(0, traps, 250):
                    for i in range(start, start + 250):
                        notifier.submit(_numbered(i))
                    logged = start + 250
                    await _until(lambda logged=logged: sum(r.port == trapd.ports[0]
                                                           for r in trapd.received()) >= logged,
                                 "snmptrapd to log the batch", timeout=30, every=0.05)
                await _until(lambda: notifier.sent[trap_name] == traps and notifier.sent[inform_name] == informs,
                             "every notification sent", timeout=60)
            finally:
                await notifier.stop()

        asyncio.run(main())
        got = trapd.wait_for(traps + informs, timeout=60)
        assert _numbers([r for r in got if r.port == trapd.ports[0]]) == list(range(traps))
        assert _numbers([r for r in got if r.port == trapd.ports[1]]) == list(range(informs))
        assert notifier.stats() == [(trap_name, traps, 0, 0, 0), (inform_name, informs, 0, 0, 0)]
    finally:
        trapd.stop()


def test_v2c_lines_in_snmptrapd_as_through_pysnmp(tmp_path: Path) -> None:
    """The same notification, through our encoder and through pysnmp: snmptrapd logs the same varbinds."""
    require_tool("snmptrapd", "snmptrapd")
    trapd = Trapd(tmp_path / "trapd", 4, [])
    try:
        async def send(ports: list[int], via_pysnmp: bool) -> None:
            notifier = Notifier([NotifyTarget(ListenAddress("127.0.0.1", ports[0]), community="same"),
                                 NotifyTarget(ListenAddress("127.0.0.1", ports[1]), kind="inform", community="same")],
                                bytes.fromhex(ENGINE_ID), tmp_path / "state")
            notifier._v2c_via_pysnmp = via_pysnmp
            notifier.uptime_ticks = lambda: 4242
            await notifier.start()
            try:
                notifier.submit(SAMPLE)
                await _until(lambda: sum(notifier.sent.values()) == 2, "both sent")
            finally:
                await notifier.stop()

        asyncio.run(send(trapd.ports[:2], via_pysnmp=False))
        asyncio.run(send(trapd.ports[2:], via_pysnmp=True))
        got = {r.port: r.text for r in trapd.wait_for(4)}
        assert len(got) == 4
        assert got[trapd.ports[0]] == got[trapd.ports[2]] and got[trapd.ports[1]] == got[trapd.ports[3]]
        assert "Timeticks: (4242)" in got[trapd.ports[0]] and "Counter64: 18446744073709551615" in got[trapd.ports[0]]
    finally:
        trapd.stop()


def test_event_notifications_are_the_mibs() -> None:
    """lvxDomainMigrationStarted, lvxDomainMigrationEnded and lvxDomainDiskError as the code builds them: the MIB's
    OID and exactly its OBJECTS, in order, indexed by the domain's row (and the disk's, found by its source path),
    the event's detail last.  Runs without QEMU: the disk error is sent for real in tests/test_limits.py; a real
    migration is not tested here."""
    from exporter.snapshot import Block, Domain
    from exporter.snmp import mib
    from exporter.snmp.syntax import INT
    from tests.support.snmp import compiled_mibs

    ours = compiled_mibs()["LIBVIRT-EXPORTER-MIB"]
    dom = Domain(name="d", uuid="00000000-0000-4000-8000-000000000001", id=3, state=1,
                 blocks=(Block(target="vda", source="/a"), Block(target="vdb", source="/b")))
    for kind, detail, device, mib_name in (("migration_started", 5, "", "lvxDomainMigrationStarted"),
                                           ("migration_ended", 3, "", "lvxDomainMigrationEnded"),
                                           ("io_error", 2, "/b", "lvxDomainDiskError")):
        (notification,) = mib.event_notifications(kind, dom, 7, detail, device)
        node = ours[mib_name]
        assert ".".join(map(str, notification.trap_oid)) == node["oid"], kind
        objects = [mib.object_of(oid) for oid, _ in notification.var_binds]
        assert [o.name for o in objects if o is not None] == [o["object"] for o in node["objects"]], kind
        rows = {oid[len(o.oid):] for (oid, _), o in zip(notification.var_binds, objects, strict=True) if o}
        assert rows == ({(7,)} if kind != "io_error" else {(7,), (7, 2)}), kind
        assert notification.var_binds[-1][1] == (INT, detail), kind
    assert mib.event_notifications("started", dom, 7, 0, "") == []
