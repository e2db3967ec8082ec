"""Hostile input: thousands of malformed SNMP packets and broken HTTP requests; the agent keeps answering."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto.api import v2c

from exporter.snmp import mib_lvx, mib_vm
from tests.conftest import DEMO_HOST, require_tool
from tests.support import snmp
from tests.support.process import Exporter

SYS_DESCR = (1, 3, 6, 1, 2, 1, 1, 1, 0)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, int]]:
    require_tool("snmpget", "snmp")
    folder = tmp_path_factory.mktemp("fuzz")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(folder / "c.toml", folder / "state", f"127.0.0.1:{port}")
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{DEMO_HOST}"], log=folder / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        yield exp, port


def _v2c(pdu_type: type, names: list[tuple[int, ...]], community: bytes = snmp.COMMUNITY.encode(),
         version: int = 1, request_id: int = 1) -> bytes:
    pdu = pdu_type()
    (v2c.apiBulkPDU if pdu_type is v2c.GetBulkRequestPDU else v2c.apiPDU).set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, request_id)
    v2c.apiPDU.set_varbinds(pdu, [(n, v2c.Null()) for n in names])
    msg = v2c.Message()
    v2c.apiMessage.set_defaults(msg)
    msg.setComponentByPosition(0, version)
    v2c.apiMessage.set_community(msg, community)
    v2c.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


def _capture_v3(agent_port: int) -> list[bytes]:
    """Real SNMPv3 datagrams (discovery and an authPriv GET) from snmpget, caught by a relay to the agent."""
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.settimeout(0.2)
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.settimeout(2)
    seen: list[bytes] = []
    done = threading.Event()

    def pump() -> None:
        while not done.is_set():
            try:
                data, client = relay.recvfrom(65535)
            except TimeoutError:
                continue
            seen.append(data)
            upstream.sendto(data, ("127.0.0.1", agent_port))
            try:
                relay.sendto(upstream.recvfrom(65535)[0], client)
            except TimeoutError:
                pass

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        snmp.ok("snmpget", *snmp.V3_ARGS, f"127.0.0.1:{relay.getsockname()[1]}", "sysDescr.0")
    finally:
        done.set()
        thread.join()
        relay.close()
        upstream.close()
    assert len(seen) >= 2
    return seen


def _ask(sock: socket.socket, port: int, request_id: int) -> bool:
    """A valid SNMPv2c GET; True if the answer came back with its request ID."""
    sock.sendto(_v2c(v2c.GetRequestPDU, [SYS_DESCR], request_id=request_id), ("127.0.0.1", port))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return False
        try:
            msg, _ = decoder.decode(data, asn1Spec=v2c.Message())
        except Exception:
            continue
        if int(v2c.apiPDU.get_request_id(v2c.apiMessage.get_pdu(msg))) == request_id:
            return True
    return False


def _mutants(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    while True:
        seed = bytearray(rng.choice(seeds))
        kind = rng.randrange(7)
        if kind == 0:  # random bytes
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        elif kind == 1:  # truncated
            yield bytes(seed[:rng.randrange(len(seed))])
        elif kind == 2:  # bit flips
            for _ in range(rng.randrange(1, 6)):
                seed[rng.randrange(len(seed))] ^= 1 << rng.randrange(8)
            yield bytes(seed)
        elif kind == 3:  # a huge length somewhere
            at = rng.randrange(1, len(seed))
            huge = rng.choice([b"\x84\xff\xff\xff\xff", b"\x84\x7f\xff\xff\xff", b"\x89" + b"\xff" * 9, b"\x80"])
            yield bytes(seed[:at]) + huge + bytes(seed[at + 1:])
        elif kind == 4:  # bytes inserted or appended
            at = rng.randrange(len(seed) + 1)
            yield bytes(seed[:at]) + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) + bytes(seed[at:])
        elif kind == 5:  # a byte replaced by a boundary value
            seed[rng.randrange(len(seed))] = rng.choice([0x00, 0x7F, 0x80, 0x81, 0xFF])
            yield bytes(seed)
        else:  # a very long OID or many varbinds, well formed
            arcs, count = rng.choice([(10, 200), (130, 20), (500, 1)])
            names = [tuple([1, 3] + [rng.randrange(2**32) for _ in range(arcs)])]
            yield _v2c(v2c.GetNextRequestPDU, names * count)


def test_ten_thousand_malformed_snmp_packets(agent: tuple[Exporter, int]) -> None:
    exp, port = agent
    seeds = [
        _v2c(v2c.GetRequestPDU, [SYS_DESCR]),
        _v2c(v2c.GetNextRequestPDU, [mib_lvx.LVX_ROOT]),
        _v2c(v2c.GetBulkRequestPDU, [mib_lvx.LVX_ROOT, mib_vm.VM_ROOT]),
        _v2c(v2c.SetRequestPDU, [mib_lvx.LVX_ROOT + (1, 2, 1, 27, 1)]),
        _v2c(v2c.GetRequestPDU, [SYS_DESCR], version=0),  # SNMPv1
        _v2c(v2c.GetRequestPDU, [SYS_DESCR], version=2),  # no such version
        _v2c(v2c.GetRequestPDU, [SYS_DESCR], version=3),  # v3 number, v2c body
        _v2c(v2c.GetRequestPDU, [SYS_DESCR], community=b"wrong-community"),
        *_capture_v3(port),  # real v3 discovery and authPriv GET: flips break auth, keys, engine fields
    ]
    rng = random.Random(2741)
    mutants = _mutants(seeds, rng)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    checker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    checker.settimeout(5)
    sent = 0
    try:
        for batch in range(50):
            for _ in range(200):
                sender.sendto(next(mutants), ("127.0.0.1", port))
                sent += 1
            while True:  # drain the agent's answers to the mutants
                sender.setblocking(False)
                try:
                    sender.recv(65535)
                except BlockingIOError:
                    break
            # after every 200 bad packets a good one is answered (the agent handles datagrams in order)
            # (asked up to three times: a burst of big datagrams may fill the socket buffer and drop one)
            assert any(_ask(checker, port, 10_000 + batch * 3 + n) for n in range(3)), \
                f"no answer after {sent} malformed packets: {exp.output()[-1500:]}"
        assert exp.proc.poll() is None
        # both protocol paths still work end to end
        assert "libvirt-exporter" in snmp.ok("snmpget", *snmp.V2_ARGS, f"127.0.0.1:{port}", "sysDescr.0")
        assert "libvirt-exporter" in snmp.ok("snmpget", *snmp.V3_ARGS, f"127.0.0.1:{port}", "sysDescr.0")
    finally:
        sender.close()
        checker.close()
    assert sent == 10_000
    metrics = exp.scrape()
    assert metrics.get("libvirt_exporter_snmp_fast_path_requests_total") >= 50
    dropped = metrics.get("libvirt_exporter_snmp_dropped_packets_total")
    log = exp.log_path.read_text(errors="replace") if exp.log_path else ""
    assert "Traceback" not in log
    assert log.count("dropped a malformed SNMP packet") == (1 if dropped else 0)  # logged once, then counted


def _raw_http(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1."), response[:100]
    return int(response.split(b" ", 2)[1])


def test_http_garbage_gets_4xx(agent: tuple[Exporter, int], tmp_path: Path) -> None:
    exp, _ = agent
    port = exp.port
    cases = {
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n": 400,  # a TLS hello
        b"GARBAGE\r\n\r\n": 400,
        b"GET /metrics HTTP/9.9\r\n\r\n": 505,
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n": 414,
        b"GET /metrics HTTP/1.1\r\nX-Long: " + b"b" * 70_000 + b"\r\n\r\n": 431,
        b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n": 431,
        b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n": 404,
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n": 404,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello": 405,
        b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n": 405,
        b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n": 405,
    }
    for request, expected in cases.items():  # an unsupported HTTP version gets 505, as the README says
        status = _status(_raw_http(port, request))
        assert status == expected, (request[:40], status)
    # half-sent requests hold a connection each, and nobody else waits for them
    stalled = []
    try:
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Partial: ")
            stalled.append(sock)
        t0 = time.monotonic()
        assert exp.scrape().get("libvirt_up") == 1
        assert time.monotonic() - t0 < 2
    finally:
        for sock in stalled:
            sock.close()
    # random bytes
    rng = random.Random(9)
    for _ in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) + b"\r\n\r\n"
        response = _raw_http(port, junk, timeout=5)
        if response:
            assert 400 <= _status(response) < 500, response[:80]
    assert exp.proc.poll() is None and exp.scrape().get("libvirt_up") == 1
    assert "Traceback" not in exp.output()
