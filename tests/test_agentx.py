"""AgentX (RFC 2741): byte-level encodings, then the subagent against a real net-snmp snmpd master."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from exporter.config.snmp import parse_agentx_address
from exporter.snmp import agentx, mib, mib_libvirt, mib_lvx, mib_vm
from exporter.snmp import agentx_pdu as wire
from tests.conftest import DEMO_HOST, require_tool
from tests.support import snmp
from tests.support.process import Exporter
from tests.support.snmpd import COMMUNITY, RO_USER, RW_USER, Snmpd
from tests.support.wait import poll_until

LVX = ".".join(map(str, mib_lvx.LVX_ROOT))


# -- encodings ---------------------------------------------------------------------


def test_header_is_network_byte_order_and_flagged() -> None:
    data = wire.encode_header(wire.OPEN, 0, 0x01020304, 5, 6, 8)
    assert data == bytes([1, 1, 0x10, 0, 1, 2, 3, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 8])
    header = wire.decode_header(data)
    assert (header.type, header.session_id, header.transaction_id, header.packet_id, header.payload_length) == \
        (wire.OPEN, 0x01020304, 5, 6, 8) and header.big


def test_header_in_little_endian_is_read_too() -> None:
    data = bytes([1, wire.GET, 0, 0]) + struct.pack("<IIII", 0x01020304, 7, 9, 12)
    header = wire.decode_header(data)
    assert not header.big and (header.session_id, header.transaction_id, header.packet_id) == (0x01020304, 7, 9)
    assert header.payload_length == 12


@pytest.mark.parametrize(("data", "problem"), [
    (bytes([2, 1, 0x10, 0]) + bytes(16), "version"),
    (bytes([1, 1, 0x10, 0]) + struct.pack("!IIII", 0, 0, 0, 6), "payload length"),  # not a multiple of 4
    (bytes([1, 1, 0x10, 0]) + struct.pack("!IIII", 0, 0, 0, 1 << 24), "payload length"),
    (b"\x01\x01", "short header"),
])
def test_bad_headers_are_parse_errors(data: bytes, problem: str) -> None:
    with pytest.raises(wire.ParseError, match=problem):
        wire.decode_header(data)


def test_oid_encoding_folds_the_internet_prefix() -> None:
    # RFC 2741 5.1: 1.3.6.1.2.1.1.1.0 is prefix 2 with the sub-identifiers 1.1.1.0
    assert wire.encode_oid((1, 3, 6, 1, 2, 1, 1, 1, 0)) == bytes([4, 2, 0, 0]) + struct.pack("!4I", 1, 1, 1, 0)
    assert wire.encode_oid(mib_lvx.LVX_ROOT, include=True) == bytes([4, 4, 1, 0]) + struct.pack(
        "!4I", 1, 8072, 9999, 9999)
    assert wire.encode_oid(()) == b"\x00\x00\x00\x00"  # the null OID (an open end of a search range)
    assert wire.encode_oid((1, 2, 3)) == bytes([3, 0, 0, 0]) + struct.pack("!3I", 1, 2, 3)
    assert wire.encode_oid((1, 3, 6, 1, 300, 5)) == bytes([6, 0, 0, 0]) + struct.pack("!6I", 1, 3, 6, 1, 300, 5)
    assert wire.encode_oid((1, 3, 6, 1, 0, 7))[:2] == bytes([6, 0])  # prefix 0 means none
    for oid in [(1, 3, 6, 1, 2, 1, 236), (1, 3, 6, 1, 4, 1, 36957, 1, 1, 1, 2, 0xFFFFFFFF), (0, 0), ()]:
        for include in (False, True):
            encoded = wire.encode_oid(oid, include)
            assert wire.decode_oid(encoded, 0, True) == (oid, include, len(encoded))
    little = bytes([2, 4, 1, 0]) + struct.pack("<2I", 1, 8072)
    assert wire.decode_oid(little, 0, False) == ((1, 3, 6, 1, 4, 1, 8072), True, 12)
    with pytest.raises(wire.ParseError):
        wire.decode_oid(bytes([3, 0, 0, 0, 0, 0, 0, 1]), 0, True)  # three sub-identifiers announced, one given


def test_octet_strings_are_padded_to_four_bytes() -> None:
    assert wire.encode_octets(b"abcde") == struct.pack("!I", 5) + b"abcde\0\0\0"
    assert wire.encode_octets(b"") == b"\0\0\0\0"
    assert wire.encode_octets(b"abcd") == struct.pack("!I", 4) + b"abcd"
    assert wire.decode_octets(struct.pack("<I", 5) + b"abcde\0\0\0", 0, False) == (b"abcde", 12)


@pytest.mark.parametrize("vb", [
    wire.VarBind(wire.INTEGER, (1, 3, 6, 1, 4, 1, 1), -5),
    wire.VarBind(wire.OCTET_STRING, (1, 3, 6, 1, 4, 1, 1), b"web1"),
    wire.VarBind(wire.OBJECT_IDENTIFIER, (1, 3, 6, 1, 4, 1, 1), (1, 3, 6, 1, 4, 1, 8072)),
    wire.VarBind(wire.GAUGE32, (1, 3, 6, 1, 4, 1, 1), 2**32 - 1),
    wire.VarBind(wire.TIME_TICKS, (1, 3, 6, 1, 4, 1, 1), 12345),
    wire.VarBind(wire.COUNTER64, (1, 3, 6, 1, 4, 1, 1), 2**64 - 1),
    wire.VarBind(wire.NO_SUCH_INSTANCE, (1, 3, 6, 1, 4, 1, 1)),
    wire.VarBind(wire.END_OF_MIB_VIEW, (1, 3, 6, 1, 4, 1, 1)),
])
def test_varbinds_round_trip(vb: wire.VarBind) -> None:
    encoded = wire.encode_varbind(vb)
    assert encoded[:4] == struct.pack("!HH", vb.type, 0)
    assert wire.decode_varbind(encoded, 0, True) == (vb, len(encoded))


def test_counter64_and_integer_layout() -> None:
    vb = wire.encode_varbind(wire.VarBind(wire.COUNTER64, (1, 3, 6, 1, 2), 0x0102030405060708))
    assert vb.endswith(bytes(range(1, 9)))
    assert wire.encode_varbind(wire.VarBind(wire.INTEGER, (1, 3, 6, 1, 2), -1)).endswith(b"\xff\xff\xff\xff")


def test_search_ranges_context_and_response() -> None:
    ranges = wire.encode_oid((1, 3, 6, 1, 2, 1, 236), include=True) + wire.encode_oid((1, 3, 6, 1, 2, 1, 237))
    ranges += wire.encode_oid(mib_lvx.LVX_ROOT) + wire.encode_oid(())
    assert wire.decode_ranges(ranges, 0, True) == [((1, 3, 6, 1, 2, 1, 236), True, (1, 3, 6, 1, 2, 1, 237)),
                                                  (mib_lvx.LVX_ROOT, False, ())]
    payload = wire.encode_octets(b"ctx") + ranges
    raw = wire.build(wire.GET, payload, 1, 2, 3, flags=wire.NON_DEFAULT_CONTEXT)
    header = wire.decode_header(raw[:20])
    pdu = wire.split_pdu(header, raw[20:])
    assert pdu.context == b"ctx" and wire.decode_ranges(pdu.payload, 0, True)[1][0] == mib_lvx.LVX_ROOT
    response = wire.response_pdu(header, 100, 17, 2, [wire.VarBind(wire.NULL, (1, 3, 6, 1, 2))])
    assert response[1] == wire.RESPONSE and response[4:16] == struct.pack("!III", 1, 2, 3)
    assert response[20:28] == struct.pack("!IHH", 100, 17, 2)
    back = wire.split_pdu(wire.decode_header(response[:20]), response[20:])
    assert wire.decode_response(back) == (100, 17, 2, [wire.VarBind(wire.NULL, (1, 3, 6, 1, 2))])


def test_open_and_register_payloads() -> None:
    data = wire.open_pdu(1, 0, mib_lvx.LVX_ROOT, "libvirt-exporter")
    assert data[1] == wire.OPEN and data[20:24] == b"\0\0\0\0"  # timeout 0: the master's default
    assert data[24:28] == bytes([4, 4, 0, 0]) and data.endswith(wire.encode_octets(b"libvirt-exporter"))
    reg = wire.register_pdu(7, 2, mib_vm.VM_ROOT)
    assert reg[4:8] == struct.pack("!I", 7) and reg[20:24] == bytes([0, 127, 0, 0])
    assert reg[24:] == wire.encode_oid(mib_vm.VM_ROOT)


@pytest.mark.parametrize(("address", "parsed"), [
    ("/var/agentx/master", ("unix", "/var/agentx/master", 0)),
    ("unix:/run/agentx.sock", ("unix", "/run/agentx.sock", 0)),
    ("tcp:127.0.0.1:705", ("tcp", "127.0.0.1", 705)),
    ("tcp:[::1]:705", ("tcp", "::1", 705)),
])
def test_addresses(address: str, parsed: tuple[str, str, int]) -> None:
    assert parse_agentx_address(address) == parsed


@pytest.mark.parametrize("address", ["relative/path", "tcp:127.0.0.1", "tcp::705", "udp:1.2.3.4:705"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        parse_agentx_address(address)


# -- against a real snmpd ---------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Snmpd, Exporter, str, object]]:
    """snmpd (master, trap2sink to snmptrapd) and an exporter in mode both with control on."""
    require_tool("snmpd", "snmpd")
    require_tool("snmptrapd", "snmptrapd")
    from tests.support.trapd import Trapd

    folder = tmp_path_factory.mktemp("agentx")
    trapd = Trapd(folder / "trapd", 1, [])
    master = Snmpd(folder / "snmpd", trap_port=trapd.ports[0])
    port = snmp.free_udp_port()
    extra = f'[snmp.agentx]\nsocket = "{master.socket}"\n[control]\nenabled = true\n'
    cfg = snmp.agent_config(folder / "c.toml", folder / "state", f"127.0.0.1:{port}", extra, mode="both")
    exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{DEMO_HOST}"], log=folder / "log")
    try:
        exp.wait_ready()
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        exp.wait_output("registered 3 subtrees")
        yield master, exp, f"127.0.0.1:{port}", trapd
    finally:
        exp.stop()
        master.stop()
        trapd.stop()


def _walk(tool: str, target: str, args: list[str], root: str) -> dict[str, str]:
    out = snmp.ok(tool, *args, "-Oqn", "-Oe", "-OU", target, root, mibs=False)
    return snmp.values(out)


MOVING = {mib.BY_NAME[n].oid for n in ("lvxSnapshotAge", "vmHvUpTime", "lvxDomainUptime", "vmUpTime")}


def _steady(values: dict[str, str]) -> dict[str, str]:
    return {o: v for o, v in values.items()
            if mib.object_of(tuple(int(x) for x in o.split("."))).oid not in MOVING}


def test_walks_through_snmpd_match_the_standalone_agent(setup) -> None:
    master, _, standalone, _ = setup
    via_master = ["-v2c", "-c", COMMUNITY]
    for root in (LVX, ".".join(map(str, mib_libvirt.LIBVIRT_ROOT)), ".".join(map(str, mib_vm.VM_ROOT))):
        direct = _steady(_walk("snmpbulkwalk", standalone, snmp.V2_ARGS, root))
        assert len(direct) > 10, root
        assert _steady(_walk("snmpbulkwalk", master.target, via_master, root)) == direct, root  # GETBULK
        assert _steady(_walk("snmpwalk", master.target, via_master, root)) == direct, root  # GETNEXT
    one = f"{LVX}.1.2.1.2.5"
    assert snmp.ok("snmpget", *via_master, "-Oqv", master.target, one, mibs=False).strip() == '"web1"'
    missing = snmp.ok("snmpget", *via_master, master.target, f"{LVX}.1.2.1.2.999", mibs=False)
    assert "No Such Instance" in missing
    sys_descr = snmp.ok("snmpget", *via_master, "-Oqv", master.target, "1.3.6.1.2.1.1.1.0", mibs=False)
    assert "libvirt-exporter" not in sys_descr  # the system group stays snmpd's


def test_set_through_snmpd_with_its_own_users(setup) -> None:
    master, exp, standalone, _ = setup
    admin, oper = f"{LVX}.1.2.1.27.6", f"{LVX}.1.2.1.5.6"  # web2
    assert snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", standalone, oper, mibs=False).strip() == "1"
    refused = snmp.run("snmpset", *RO_USER, master.target, admin, "i", "2", mibs=False)
    assert refused.returncode != 0 and re.search(r"noAccess|authorizationError", refused.stderr), refused.stderr
    wrong = snmp.run("snmpset", *RW_USER, master.target, admin, "s", "paused", mibs=False)
    assert wrong.returncode != 0 and "wrongType" in wrong.stderr, wrong.stderr
    bad = snmp.run("snmpset", *RW_USER, master.target, admin, "i", "99", mibs=False)
    assert bad.returncode != 0 and "wrongValue" in bad.stderr, bad.stderr
    t0 = time.monotonic()
    snmp.ok("snmpset", *RW_USER, master.target, admin, "i", "2", mibs=False)  # pause
    assert time.monotonic() - t0 < 1.0
    assert snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", standalone, oper, mibs=False).strip() == "3"
    snmp.ok("snmpset", *RW_USER, master.target, admin, "i", "1", mibs=False)  # resume
    assert snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", standalone, oper, mibs=False).strip() == "1"
    log = exp.log_path.read_text()
    assert "principal=agentx-master" in log and "domain=web2 action=suspend result=success" in log
    assert "result=refused: WrongTypeError" in log


def test_lifecycle_trap_through_trap2sink(setup) -> None:
    master, exp, _, trapd = setup
    admin = f"{LVX}.1.2.1.27.3"  # db1
    before = len(trapd.received())
    snmp.ok("snmpset", *RW_USER, master.target, admin, "i", "2", mibs=False)
    snmp.ok("snmpset", *RW_USER, master.target, admin, "i", "1", mibs=False)
    got = trapd.wait_for(before + 2, timeout=15)[before:]
    oids = [r.trap_oid for r in got]
    assert f"{LVX}.0.3" in oids and f"{LVX}.0.4" in oids, oids  # suspended, resumed
    assert all('"db1"' in r.text for r in got if r.trap_oid.startswith(LVX))
    # the master is a notification target like the others: same queue, retries and counters
    sent = exp.scrape().get("libvirt_exporter_notifications_sent_total", target=f"agentx@{master.socket}")
    assert sent is not None and sent >= 2


def test_snmpd_restart_and_a_killed_subagent(setup, tmp_path: Path) -> None:
    master, exp, _, _ = setup
    probe = ["-v2c", "-c", COMMUNITY, "-t", "0.3", "-r", "0", "-Oqv", master.target, f"{LVX}.1.2.1.2.5"]
    master.stop()
    master.start()
    served = poll_until(lambda: snmp.run("snmpget", *probe, mibs=False).stdout.strip(), lambda a: a == '"web1"', 5,
                        every=0.1)
    assert served == '"web1"', f"subtrees not back within 5 s: {exp.output()[-800:]}"
    log = exp.log_path.read_text()
    assert log.count("AgentX session to") == 2 and "lost (the master closed the connection)" in log, log[-800:]
    assert "open again; subtrees registered" in log and exp.proc.poll() is None  # each change logged once
    # the subagent killed (the module's last use of it): snmpd keeps answering, and the subtrees go with it
    exp.proc.send_signal(signal.SIGKILL)
    exp.proc.wait()
    assert master.proc is not None and master.proc.poll() is None
    uptime = snmp.run("snmpget", "-v2c", "-c", COMMUNITY, master.target, "1.3.6.1.2.1.1.3.0", mibs=False)
    assert uptime.returncode == 0 and "Timeticks" in uptime.stdout
    assert "No Such Object" in snmp.run("snmpget", *probe[:-2], master.target, f"{LVX}.1.2.1.2.5", mibs=False).stdout
    # a new subagent (AgentX only) registers the same subtrees again: snmpd freed them with the dead session
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}",
                            f'[snmp.agentx]\nsocket = "{master.socket}"\n', mode="agentx")
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{DEMO_HOST}"], log=tmp_path / "log") as other:
        other.wait_output("registered 3 subtrees")
        # registered before its first poll: wait for the data, not a fixed time
        answer = poll_until(lambda: snmp.run("snmpget", *probe, mibs=False).stdout.strip(), lambda a: a == '"web1"',
                            30, every=0.1)
        assert answer == '"web1"', f"web1 not served through snmpd: {answer}"


def _udp_sockets(pid: int) -> list[str]:
    """The UDP sockets process ``pid`` holds, as ``udp 0100007F:1F90`` (table and local address, from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        for line in path.read_text().splitlines()[1:] if path.exists() else ():
            fields = line.split()
            if fields[9] in inodes:  # sl, local, remote, st, queues, timer, retransmits, uid, timeout, inode
                found.append(f"{table} {fields[1]}")
    return found


def test_agentx_only_builds_no_udp_agent(setup, tmp_path: Path) -> None:
    """snmp.mode = "agentx": the SNMP model answers GETs and SETs through snmpd, and no UDP agent is built: the
    process holds no UDP socket, nothing answers on the standalone listen address, and the fast path's counters
    stay at zero (as they always read in this mode)."""
    master, exp, _, _ = setup
    exp.stop()  # the mode-both exporter (killed already, when the module runs in order): its subtrees go with it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mine:  # the /proc reading sees a UDP socket
        mine.bind(("127.0.0.1", 0))
        assert _udp_sockets(os.getpid()), "no UDP socket found for this very test"
    port = snmp.free_udp_port()
    extra = f'[snmp.agentx]\nsocket = "{master.socket}"\n[control]\nenabled = true\n'
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}", extra, mode="agentx")
    via_master = ["-v2c", "-c", COMMUNITY, "-t", "0.3", "-r", "0", "-Oqv", master.target]
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{DEMO_HOST}"], log=tmp_path / "log") as only:
        only.wait_output("registered 3 subtrees")
        name = poll_until(lambda: snmp.run("snmpget", *via_master, f"{LVX}.1.2.1.2.5", mibs=False).stdout.strip(),
                          lambda a: a == '"web1"', 30, every=0.1)
        assert name == '"web1"', f"web1 not served through snmpd: {name}"
        admin, oper = f"{LVX}.1.2.1.27.6", f"{LVX}.1.2.1.5.6"  # web2
        snmp.ok("snmpset", *RW_USER, master.target, admin, "i", "2", mibs=False)  # pause, planned without pysnmp
        assert snmp.ok("snmpget", *via_master, oper, mibs=False).strip() == "3"
        assert _udp_sockets(only.proc.pid) == []
        direct = snmp.run("snmpget", *snmp.V2_ARGS, "-t", "0.3", "-r", "0", f"127.0.0.1:{port}", "1.3.6.1.2.1.1.3.0",
                          mibs=False)
        assert direct.returncode != 0 and "Timeout" in direct.stderr, direct.stdout + direct.stderr
        metrics = only.scrape()
        assert metrics.get("libvirt_exporter_snmp_fast_path_requests_total") == 0
        assert metrics.get("libvirt_exporter_snmp_dropped_packets_total") == 0
        assert "serving SNMP on udp" not in only.output() and "domain=web2 action=suspend result=success" in \
            only.output()


class _Table(agentx.Handlers):
    """Three instances, for driving a session by hand (no libvirt, no snmpd: the PDUs are the subject)."""

    OIDS: ClassVar[list[tuple[int, ...]]] = [(1, 3, 6, 1, 4, 1, 99, 1, n) for n in (1, 2, 3)]

    def uptime_ticks(self) -> int:
        return 42

    def get(self, oid: wire.Oid) -> wire.VarBind:
        if oid in self.OIDS:
            return wire.VarBind(wire.INTEGER, oid, oid[-1])
        return wire.VarBind(wire.NO_SUCH_OBJECT, oid)

    def next(self, start: wire.Oid, include: bool, end: wire.Oid) -> wire.VarBind:
        for oid in self.OIDS:
            if (oid >= start if include else oid > start) and (not end or oid < end):
                return wire.VarBind(wire.INTEGER, oid, oid[-1])
        return wire.VarBind(wire.END_OF_MIB_VIEW, start)


def test_a_session_by_hand(tmp_path: Path) -> None:
    """A fake master on a unix socket: Open and Register as the RFC lays them out, then GetNext with the include
    flag, GetBulk with a non-repeater and an end bound, a little-endian Get, a Ping, and Close on stop."""
    import asyncio

    async def scenario() -> None:
        path = str(tmp_path / "master.sock")
        seen: list[wire.Pdu] = []
        replies: asyncio.Queue[wire.Pdu] = asyncio.Queue()
        ready = asyncio.Event()
        streams: dict[str, object] = {}

        async def read_pdu(reader: asyncio.StreamReader) -> wire.Pdu:
            header = wire.decode_header(await reader.readexactly(wire.HEADER))
            return wire.split_pdu(header, await reader.readexactly(header.payload_length))

        async def master(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            streams["writer"] = writer
            for _ in range(4):  # Open, then three Registers
                pdu = await read_pdu(reader)
                seen.append(pdu)
                writer.write(wire.response_pdu(wire.Header(wire.RESPONSE, 0, 77, 0, pdu.header.packet_id, 0), 0))
            ready.set()
            while True:
                try:
                    await replies.put(await read_pdu(reader))
                except asyncio.IncompleteReadError:
                    return

        server = await asyncio.start_unix_server(master, path)
        subtrees = [(1, 3, 6, 1, 4, 1, 99), (1, 3, 6, 1, 2, 1, 236), (1, 3, 6, 1, 4, 1, 36957)]
        session = agentx.Subagent(path, subtrees, _Table(), ident=(1, 3, 6, 1, 4, 1, 99), ping_s=0.3)
        session.start()
        await asyncio.wait_for(ready.wait(), 5)
        assert [p.header.type for p in seen] == [wire.OPEN, wire.REGISTER, wire.REGISTER, wire.REGISTER]
        assert all(p.header.flags & wire.NETWORK_BYTE_ORDER for p in seen)
        assert [wire.decode_oid(p.payload, 4, True)[0] for p in seen[1:]] == subtrees
        assert all(p.header.session_id == 77 for p in seen[1:])  # the session ID the master gave
        writer = streams["writer"]

        async def ask(data: bytes) -> wire.Pdu:
            writer.write(data)
            while True:
                pdu = await asyncio.wait_for(replies.get(), 5)
                if pdu.header.type == wire.RESPONSE:
                    return pdu
                assert pdu.header.type == wire.PING  # the session pings while idle: answer it
                writer.write(wire.response_pdu(pdu.header, 0))

        a, b, c = _Table.OIDS
        ranges = (wire.encode_oid(a, include=True) + wire.encode_oid(())
                  + wire.encode_oid(a) + wire.encode_oid(()))
        _, error, _, binds = wire.decode_response(await ask(wire.build(wire.GETNEXT, ranges, 77, 1, 10)))
        assert error == 0 and [v.name for v in binds] == [a, b]  # include: the start itself; without: the next
        bulk = struct.pack("!HH", 1, 3) + wire.encode_oid(b) + wire.encode_oid(()) + wire.encode_oid(a) \
            + wire.encode_oid(c)
        response = await ask(wire.build(wire.GETBULK, bulk, 77, 2, 11))
        assert response.header.packet_id == 11 and response.header.transaction_id == 2
        _, _, _, binds = wire.decode_response(response)
        assert [(v.type, v.name) for v in binds] == [
            (wire.INTEGER, c),  # the non-repeater
            (wire.INTEGER, b),  # then the repeater, bounded by its end (c): b, and the end of the view
            (wire.END_OF_MIB_VIEW, b),
        ]
        little = bytes([1, wire.GET, 0, 0]) + struct.pack("<IIII", 77, 3, 12, 24) \
            + bytes([4, 4, 0, 0]) + struct.pack("<4I", 1, 99, 1, 2) + bytes(4)  # a Get in little-endian order
        uptime, error, _, binds = wire.decode_response(await ask(little))
        assert (uptime, error, binds) == (42, 0, [wire.VarBind(wire.INTEGER, b, 2)])
        pong = await ask(wire.build(wire.PING, b"", 77, 5, 14))  # a ping from the master is answered too
        assert pong.header.packet_id == 14 and wire.decode_response(pong)[1] == 0
        _, error, _, _ = wire.decode_response(await ask(wire.build(wire.TESTSET, b"", 77, 4, 13)))
        assert error == wire.GEN_ERR  # the base handlers refuse SETs
        await session.stop()
        closing = await asyncio.wait_for(replies.get(), 5)
        while closing.header.type == wire.PING:
            closing = await asyncio.wait_for(replies.get(), 5)
        assert closing.header.type == wire.CLOSE and closing.payload[0] == wire.CLOSE_SHUTDOWN
        server.close()

    asyncio.run(scenario())
