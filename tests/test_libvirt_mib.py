"""LIBVIRT-MIB as a drop-in for libvirt-snmp 0.0.4 (issue 14): rows, SETs and libvirtGuestNotif.

Where each expected answer comes from: libvirt-snmp's source (github.com/libvirt/libvirt-snmp, ``src/``), run
under net-snmp's MFD helpers, whose ``mfd.h`` turns MFD_NOT_VALID_NOW into inconsistentValue,
MFD_NOT_VALID_EVER into wrongValue and MFD_CANNOT_CREATE_NOW into inconsistentName.

- Rows (``libvirtSnmp.c``: ``libvirtSnmpLoadGuests``, ``insertGuest``): every domain of
  ``virConnectListAllDomains(conn, &domains, 0)``, active or not, filled from ``virDomainGetInfo`` (state,
  vCPUs, memory in MiB, CPU time), RowStatus active(1) on every row.
- libvirtGuestState (``libvirtGuestTable_data_set.c``: ``libvirtGuestState_check_value``): only
  running->paused, running->shutdown and paused->running, judged from the row's current state; anything
  else, the state the domain already has included, is MFD_NOT_VALID_NOW (inconsistentValue).  A value
  outside the enumeration is wrongValue and a non-INTEGER wrongType (``libvirtGuestTable_interface.c``:
  ``_libvirtGuestTable_check_column``).
- libvirtGuestRowStatus: ``netsnmp_check_vb_rowstatus_value`` (wrongType; wrongValue for notReady and out of
  range), then ``libvirtGuestRowStatus_check_value`` (createAndWait: MFD_NOT_VALID_EVER, wrongValue).  In
  ``libvirtGuestTable_commit`` createAndGo calls ``libvirtSnmpCreate`` (running, or the State varbind of the
  same request) and destroy ``libvirtSnmpDestroy``; active and notInService always fail there.  A State
  varbind beside createAndGo is checked first against the shut-off row, so that request is inconsistentValue
  and nothing starts.
- Unknown UUID (``libvirtGuestTable_data_access.c``: ``libvirtGuestTable_validate_index``):
  MFD_CANNOT_CREATE_NOW, inconsistentName.  Read-only columns: notWritable.
- libvirtGuestNotif (``libvirtNotifications.c``: ``send_libvirtGuestNotif_trap``, called for every lifecycle
  event by ``domainEventCallback`` in ``libvirtSnmp.c``): libvirtGuestName.0, libvirtGuestUUID.0,
  libvirtGuestState.0, libvirtGuestRowStatus.0; RowStatus notInService(2) while the state is shutdown,
  shutoff or crashed, active(1) otherwise; nothing at all when ``virDomainGetInfo`` fails, as it does for
  an undefined domain.

Where libvirt-snmp's answer is a plain bug the exporter keeps its fix (cases marked "[fix]", listed in the
README): libvirt-snmp lets createAndGo of an active domain, destroy of an inactive one, active and
notInService through its checks and fails them in the commit (genErr, as recorded in issue 14), and answers
wrongLength (an error about a value) for an index that is not sixteen bytes.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from exporter.control import Controller
from exporter.exposition import Exposition
from exporter.poller import Poller
from exporter.snapshot import (
    STATE_PAUSED,
    STATE_PMSUSPENDED,
    STATE_RUNNING,
    STATE_SHUTOFF,
    Domain,
    Host,
    Snapshot,
)
from exporter.snmp import mib, mib_libvirt, mib_lvx, mib_system, mib_vm, setreq
from exporter.snmp.model import SnmpModel
from exporter.snmp.syntax import BYTES, C64, G32, INT, STR, U32, NotificationDef
from tests.conftest import DEMO_HOST, require_tool
from tests.support import snmp
from tests.support.process import Exporter
from tests.support.trapd import Trapd
from tests.support.wait import poll_until
from tests.test_events import HeldSource, _config, _run, _until, _xml, host  # noqa: F401 (host: a fixture)

GUEST = ".".join(map(str, mib_libvirt.LIBVIRT_GUEST_ENTRY))
NOTIF = ".".join(map(str, mib_libvirt.LIBVIRT_ROOT + (0, 1)))
COLUMNS = {"UUID": 1, "Name": 2, "State": 3, "CpuCount": 4, "MemoryCurrent": 5, "MemoryLimit": 6, "CpuTime": 7,
           "RowStatus": 9}
_TRAPD_HEADER = re.compile(r"->\[127\.0\.0\.1\]:\d+")  # the first line of each notification snmptrapd logs
_SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
#: The demo host's domains (examples/demo-host.xml) and the last byte of their UUIDs.
DEMO = {"web1": "a1", "web2": "a2", "db1": "b1", "batch1": "c1", "legacy1": "d1", "crashy1": "e1"}


def _uuid(name: str) -> str:
    return f"4d1f0a52-0c6c-4c3e-9b1a-0000000000{DEMO[name]}"


def _index(name: str) -> str:
    """The guest-table index of a demo domain; "unknown" a UUID no domain has, "short" an index of 3 sub-ids."""
    if name == "unknown":
        return ".".join(str(b) for b in uuidlib.UUID("00000000-0000-4000-8000-000000000bad").bytes)
    if name == "short":
        return "1.2.3"
    return ".".join(str(b) for b in uuidlib.UUID(_uuid(name)).bytes)


def _oid(column: str, name: str) -> str:
    return f"{GUEST}.{COLUMNS[column]}.{_index(name)}"


# -- the mapping, without processes ---------------------------------------------------------------------------

RUN = Domain("run", "00000000-0000-4000-8000-000000000001", 1, STATE_RUNNING, active=True, vcpus_current=2,
             memory_kib=2 << 20, max_memory_kib=4 << 20, cpu_time_ns=5)
PAUSED = Domain("paused", "00000000-0000-4000-8000-000000000002", 2, STATE_PAUSED, active=True)
OFF = Domain("off", "00000000-0000-4000-8000-000000000003", -1, STATE_SHUTOFF, vcpus_current=3,
             memory_kib=1 << 20, max_memory_kib=2 << 20)
PMS = Domain("pms", "00000000-0000-4000-8000-000000000004", 4, STATE_PMSUSPENDED, active=True)
SNAP = Snapshot(up=True, taken_at=1.0, host=Host(driver="TEST"), domains=(OFF, PAUSED, PMS, RUN))
INDEXES = {d.uuid: n for n, d in enumerate(SNAP.domains, start=1)}


def _guest(dom: Domain) -> tuple[int, ...]:
    return tuple(uuidlib.UUID(dom.uuid).bytes)


def _plan(*binds: tuple[str, Domain, int]) -> setreq.Plan:
    controller = Controller(lambda: None, timeout_s=1.0, reply_within_s=1.0)
    var_binds = [setreq.SetBind(mib.BY_NAME[column].oid + (_guest(dom) if column.startswith("libvirt")
                                                           else (INDEXES[dom.uuid],)),
                                setreq.Syntax.INTEGER, value) for column, dom, value in binds]
    return setreq.plan(var_binds, SNAP, {n: u for u, n in INDEXES.items()}, controller, 0)


def test_shut_off_domains_have_guest_rows() -> None:
    """Point 1: a shut-off domain has its libvirtGuestTable row: shutoff(5), active(1), name, vCPUs, memory in
    MiB and CPU time 0, as virDomainGetInfo gives libvirt-snmp for an inactive domain."""
    view = mib.build_view(SNAP, mib.Indexes(dict(INDEXES), {}, {}), mib_system.SystemInfo())
    entry = mib_libvirt.LIBVIRT_GUEST_ENTRY
    row = {column: view.get(entry + (number,) + _guest(OFF)) for column, number in COLUMNS.items()}
    assert row == {"UUID": None,  # accessible-for-notify: never read
                   "Name": (STR, "off"), "State": (INT, 5), "CpuCount": (U32, 3),
                   "MemoryCurrent": (G32, 1024), "MemoryLimit": (U32, 2048), "CpuTime": (C64, 0),
                   "RowStatus": (INT, 1)}
    names = [v for oid, (_, v) in view.items() if oid[:len(mib_libvirt.LIBVIRT_GUEST_ENTRY) + 1] ==
             mib_libvirt.LIBVIRT_GUEST_ENTRY + (2,)]
    assert sorted(names) == ["off", "paused", "pms", "run"]  # every domain, in UUID order
    assert view.get(mib_libvirt.LIBVIRT_GUEST_ENTRY + (7,) + _guest(RUN)) == (C64, 5)


def test_guest_state_to_the_state_it_has_is_inconsistent() -> None:
    """Point 2: libvirtGuestState running -> running and paused -> paused are inconsistentValue, as
    libvirtGuestState_check_value answers; lvxDomainAdminState keeps its idempotent success."""
    for dom, state in ((RUN, 1), (PAUSED, 3)):
        with pytest.raises(setreq.SetError, match=r"^inconsistentValue "):
            _plan(("libvirtGuestState", dom, state))
    # pmsuspended reads as paused(3) but is not libvirt's paused: libvirt-snmp's check allows nothing from it.
    with pytest.raises(setreq.SetError, match=r"^inconsistentValue "):
        _plan(("libvirtGuestState", PMS, 1))
    assert [s.verb for s in _plan(("libvirtGuestState", RUN, 3)).steps] == ["suspend"]
    assert [s.verb for s in _plan(("libvirtGuestState", PAUSED, 1)).steps] == ["resume"]
    assert [s.verb for s in _plan(("libvirtGuestState", RUN, 4)).steps] == ["shutdown"]
    for dom, admin in ((RUN, 1), (PAUSED, 2)):
        assert _plan(("lvxDomainAdminState", dom, admin)).steps == []  # ours: already there, nothing to do


def test_create_and_go_with_a_state_is_inconsistent() -> None:
    """Point 6: createAndGo with libvirtGuestState in the same request is inconsistentValue on the State
    varbind (libvirt-snmp checks it against the shut-off row first), paused or running alike; createAndGo
    alone starts the domain running."""
    for state in (3, 1):
        for binds, failed in (((("libvirtGuestRowStatus", OFF, 4), ("libvirtGuestState", OFF, state)), 1),
                              ((("libvirtGuestState", OFF, state), ("libvirtGuestRowStatus", OFF, 4)), 0)):
            with pytest.raises(setreq.SetError, match=r"^inconsistentValue ") as refused:
                _plan(*binds)
            assert refused.value.index == failed
    assert [s.verb for s in _plan(("libvirtGuestRowStatus", OFF, 4)).steps] == ["start"]


def _kinds(kind: str, state: int) -> dict[str, NotificationDef]:
    sent = mib.lifecycle_notifications(kind, RUN.name, RUN.uuid, 7, state, 0, persistent=True,
                                       previous_state=STATE_RUNNING)
    return {n.mib: n for n in sent}


def test_libvirt_guest_notif_varbinds_are_instance_zero() -> None:
    """Point 4: libvirtGuestNotif's varbinds are libvirtGuestName.0, UUID.0, State.0 and RowStatus.0, as
    send_libvirtGuestNotif_trap sends them; our MIB and VM-MIB keep varbinds indexed by the domain's row."""
    sent = _kinds("suspended", STATE_PAUSED)
    column = {name: mib.BY_NAME[name].oid for name in ("libvirtGuestName", "libvirtGuestUUID", "libvirtGuestState",
                                                        "libvirtGuestRowStatus")}
    assert sent["libvirt"].var_binds == (
        (column["libvirtGuestName"] + (0,), (STR, "run")),
        (column["libvirtGuestUUID"] + (0,), (BYTES, uuidlib.UUID(RUN.uuid).bytes)),
        (column["libvirtGuestState"] + (0,), (INT, 3)),
        (column["libvirtGuestRowStatus"] + (0,), (INT, 1)),
    )
    assert all(oid[-1] == 7 for oid, _ in sent["libvirt-exporter"].var_binds + sent["vm"].var_binds)
    # RowStatus by state, as libvirt-snmp: notInService for shutdown, shutoff and crashed, whatever "active" says
    for kind, state, row in (("shutdown", 4, 2), ("stopped", 5, 2), ("crashed", 6, 2), ("started", 1, 1),
                             ("pmsuspended", 7, 1)):
        assert _kinds(kind, state)["libvirt"].var_binds[3][1] == (INT, row), kind


def test_undefined_sends_no_libvirt_guest_notif() -> None:
    """Point 5: an undefine sends no libvirtGuestNotif (libvirt-snmp cannot read the domain any more); our MIB's
    lvxDomainUndefined and VM-MIB's vmDeleted are still sent."""
    sent = _kinds("undefined", STATE_SHUTOFF)
    assert sorted(sent) == ["libvirt-exporter", "vm"]
    assert sent["libvirt-exporter"].trap_oid == mib_lvx.LVX_ROOT + (0, 8)
    assert sent["vm"].trap_oid == mib_vm.VM_ROOT + (0, 10)


class _Recorder:
    """Stands in for the Notifier: keeps every notification of every MIB."""

    def __init__(self) -> None:
        self.sent: list[NotificationDef] = []

    def wants(self, _mib: str) -> bool:
        return True

    def submit(self, notification: NotificationDef) -> None:
        self.sent.append(notification)


def test_defined_domain_notification_is_shutoff_not_in_service(host: libvirt.virConnect,  # noqa: F811
                                                               tmp_path: Path) -> None:
    """Point 3: on libvirt's test driver, a domain defined by another connection (libvirt's own defined event)
    sends libvirtGuestNotif with State shutoff(5) and RowStatus notInService(2), on the .0 instances; its
    undefine then sends our MIB's and VM-MIB's notifications and no libvirtGuestNotif."""
    recorder = _Recorder()
    uuid = "00000000-0000-4000-8000-00000000defd"
    xml = _xml("newly").replace("<name>newly</name>", f"<name>newly</name><uuid>{uuid}</uuid>")

    def sent(mib_name: str) -> list[NotificationDef]:
        return [n for n in recorder.sent if n.mib == mib_name]

    async def body(_poller: Poller, _source: HeldSource, agent: SnmpModel, _exposition: Exposition) -> None:
        agent.notifier = recorder  # type: ignore[assignment]
        dom = host.defineXML(xml)
        await _until(lambda: len(sent("libvirt")) == 1, "the libvirtGuestNotif of the defined event")
        (notif,) = sent("libvirt")
        assert notif.trap_oid == mib_libvirt.LIBVIRT_ROOT + (0, 1)
        assert notif.var_binds == (
            (mib.BY_NAME["libvirtGuestName"].oid + (0,), (STR, "newly")),
            (mib.BY_NAME["libvirtGuestUUID"].oid + (0,), (BYTES, uuidlib.UUID(uuid).bytes)),
            (mib.BY_NAME["libvirtGuestState"].oid + (0,), (INT, 5)),  # shutoff
            (mib.BY_NAME["libvirtGuestRowStatus"].oid + (0,), (INT, 2)),  # notInService
        )
        dom.undefine()
        await _until(lambda: any(n.trap_oid == mib_vm.VM_ROOT + (0, 10) for n in recorder.sent), "vmDeleted")
        await _until(lambda: any(n.trap_oid == mib_lvx.LVX_ROOT + (0, 8) for n in recorder.sent), "lvxDomainUndefined")
        await asyncio.sleep(0.2)
        assert len(sent("libvirt")) == 1  # still only the defined one

    _run(_config(tmp_path), body)


# -- the SET cases, against the exporter's own agent and through snmpd --------------------------------------------


@dataclass(frozen=True)
class Case:
    what: str  # the request, and where the expected answer comes from
    request: tuple[tuple[str, str, str, str], ...]  # (column, domain, snmpset type, value)
    error: str | None  # the SNMP error, None for success
    failed: int  # the 1-based varbind the error names (0 on success)
    after: tuple[tuple[str, int], ...]  # (domain, libvirtGuestState read afterwards)
    notif: tuple[str, int, int] | None  # (domain, State, RowStatus) of the libvirtGuestNotif it causes


CASES = (
    Case("running -> paused suspends (check_value: running->paused)",
         (("State", "web2", "i", "3"),), None, 0, (("web2", 3),), ("web2", 3, 1)),
    Case("paused -> paused, the state it has (check_value: MFD_NOT_VALID_NOW)",
         (("State", "web2", "i", "3"),), "inconsistentValue", 1, (("web2", 3),), None),
    Case("paused -> shutdown (check_value: shutdown only from running)",
         (("State", "web2", "i", "4"),), "inconsistentValue", 1, (("web2", 3),), None),
    Case("paused -> running resumes (check_value: paused->running)",
         (("State", "web2", "i", "1"),), None, 0, (("web2", 1),), ("web2", 1, 1)),
    Case("running -> running, the state it has (check_value: MFD_NOT_VALID_NOW)",
         (("State", "web2", "i", "1"),), "inconsistentValue", 1, (("web2", 1),), None),
    Case("running -> blocked: in the enumeration, not a transition (check_value)",
         (("State", "web2", "i", "2"),), "inconsistentValue", 1, (("web2", 1),), None),
    Case("shutoff -> running: the State never starts a domain (check_value)",
         (("State", "legacy1", "i", "1"),), "inconsistentValue", 1, (("legacy1", 5),), None),
    Case("crashed -> running (check_value)",
         (("State", "crashy1", "i", "1"),), "inconsistentValue", 1, (("crashy1", 6),), None),
    Case("a State outside the enumeration (_check_column: wrongValue)",
         (("State", "web1", "i", "7"),), "wrongValue", 1, (("web1", 1),), None),
    Case("a State that is not an INTEGER (netsnmp_check_vb_type_and_size: wrongType)",
         (("State", "web1", "s", "paused"),), "wrongType", 1, (("web1", 1),), None),
    Case("createAndGo with State paused: the State is checked against shutoff first (check_value)",
         (("RowStatus", "legacy1", "i", "4"), ("State", "legacy1", "i", "3")), "inconsistentValue", 2,
         (("legacy1", 5),), None),
    Case("createAndGo with State running: the same (check_value)",
         (("RowStatus", "legacy1", "i", "4"), ("State", "legacy1", "i", "1")), "inconsistentValue", 2,
         (("legacy1", 5),), None),
    Case("State paused, then createAndGo: the State varbind is named (check_value)",
         (("State", "legacy1", "i", "3"), ("RowStatus", "legacy1", "i", "4")), "inconsistentValue", 1,
         (("legacy1", 5),), None),
    Case("createAndGo starts a defined domain running (commit: libvirtSnmpCreate)",
         (("RowStatus", "legacy1", "i", "4"),), None, 0, (("legacy1", 1),), ("legacy1", 1, 1)),
    Case("[fix] createAndGo of an active domain (libvirt-snmp: the commit fails, genErr)",
         (("RowStatus", "legacy1", "i", "4"),), "inconsistentValue", 1, (("legacy1", 1),), None),
    Case("destroy powers it off (commit: libvirtSnmpDestroy; the notification says notInService)",
         (("RowStatus", "legacy1", "i", "6"),), None, 0, (("legacy1", 5),), ("legacy1", 5, 2)),
    Case("[fix] destroy of an inactive domain (libvirt-snmp: the commit fails, genErr)",
         (("RowStatus", "legacy1", "i", "6"),), "inconsistentValue", 1, (("legacy1", 5),), None),
    Case("[fix] active on a row, which reads active: nothing to do, as RFC 2579 says (libvirt-snmp: genErr)",
         (("RowStatus", "legacy1", "i", "1"),), None, 0, (("legacy1", 5),), None),
    Case("[fix] notInService: not supported, wrongValue as RFC 2579 says (libvirt-snmp: genErr)",
         (("RowStatus", "web1", "i", "2"),), "wrongValue", 1, (("web1", 1),), None),
    Case("notReady (netsnmp_check_vb_rowstatus_value: wrongValue)",
         (("RowStatus", "web1", "i", "3"),), "wrongValue", 1, (("web1", 1),), None),
    Case("createAndWait (RowStatus check_value: MFD_NOT_VALID_EVER)",
         (("RowStatus", "web1", "i", "5"),), "wrongValue", 1, (("web1", 1),), None),
    Case("a RowStatus outside 1..6 (netsnmp_check_vb_rowstatus_value: wrongValue)",
         (("RowStatus", "web1", "i", "7"),), "wrongValue", 1, (("web1", 1),), None),
    Case("[fix] State and destroy of one domain in one request: one action a domain (libvirt-snmp destroys, then "
         "fails the state change: genErr)",
         (("State", "web1", "i", "3"), ("RowStatus", "web1", "i", "6")), "inconsistentValue", 2, (("web1", 1),),
         None),
    Case("a read-only column (_check_column: notWritable)",
         (("Name", "web1", "s", "renamed"),), "notWritable", 1, (("web1", 1),), None),
    Case("a UUID no domain has (validate_index: MFD_CANNOT_CREATE_NOW, inconsistentName)",
         (("State", "unknown", "i", "3"),), "inconsistentName", 1, (), None),
    Case("[fix] an index that is not 16 bytes (libvirt-snmp: wrongLength)",
         (("State", "short", "i", "3"),), "inconsistentName", 1, (), None),
    Case("running -> shutdown (check_value: running->shutdown; the test driver powers off at once)",
         (("State", "web2", "i", "4"),), None, 0, (("web2", 5),), ("web2", 5, 2)),
)


@dataclass
class Served:
    """One way of reaching LIBVIRT-MIB: the exporter's own agent, or snmpd with the exporter as its subagent."""

    path: str
    exp: Exporter
    target: str  # the agent asked: the exporter's own, or snmpd
    read: list[str]  # a principal that may read
    write: list[str]  # a principal that may write
    trapd: Trapd  # where the libvirtGuestNotif arrive

    def get(self, *oids: str) -> list[str]:
        out = snmp.ok("snmpget", *self.read, "-Oqv", self.target, *oids, mibs=False)
        return [line.strip().strip('"') for line in out.splitlines()][: len(oids)]

    def walk(self, oid: str) -> dict[str, str]:
        return snmp.values(snmp.ok("snmpwalk", *self.read, "-Oqn", self.target, oid, mibs=False))

    def set(self, *args: str) -> subprocess.CompletedProcess[str]:
        return snmp.run("snmpset", *self.write, "-On", "-t", "10", "-r", "0", self.target, *args, mibs=False)

    def notifications(self) -> list[dict[str, str]]:
        """The libvirtGuestNotif received so far, each as {varbind OID: value} (whitespace in values folded:
        snmptrapd may break a Hex-STRING across lines)."""
        result = []
        records: list[str] = []
        for line in self.trapd.log.read_text(errors="replace").splitlines():
            if _TRAPD_HEADER.search(line):
                records.append("")
            elif records:
                records[-1] += " " + line
        for record in records:
            binds = {}
            for part in record.split("\t"):
                found = re.match(r"\s*\.([\d.]+) = [\w-]+: ?(.*)$", part)
                if found:
                    binds[found.group(1)] = " ".join(found.group(2).split()).strip('"')
            if binds.get(_SNMP_TRAP_OID) == "." + NOTIF:
                result.append({oid: value for oid, value in binds.items() if oid.startswith(GUEST + ".")})
        return result


@pytest.fixture(params=["standalone", "agentx"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """The demo host with control on, reached directly or through snmpd; libvirtGuestNotif to a snmptrapd
    (directly, or through snmpd's trap2sink)."""
    require_tool("snmpset", "snmp")
    require_tool("snmptrapd", "snmptrapd")
    trapd = Trapd(tmp_path / "trapd", 1, [])
    master = None
    port = snmp.free_udp_port()
    target = f"127.0.0.1:{port}"
    try:
        if request.param == "agentx":
            require_tool("snmpd", "snmpd")
            from tests.support.snmpd import COMMUNITY, RW_USER, Snmpd

            master = Snmpd(tmp_path / "snmpd", trap_port=trapd.ports[0])
            extra = f'[snmp.agentx]\nsocket = "{master.socket}"\nnotify_mibs = ["libvirt"]\n'
            asked, read, write = master.target, ["-v2c", "-c", COMMUNITY], RW_USER
        else:
            extra = (f'[[snmp.notify]]\naddress = "127.0.0.1:{trapd.ports[0]}"\ncommunity = "trap-community"\n'
                     'mibs = ["libvirt"]\n')
            asked, read, write = target, snmp.V2_ARGS, snmp.OPERATOR_ARGS
        cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", target, snmp.OPERATOR_CONFIG + extra,
                                mode=request.param)
        with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{DEMO_HOST}", "--libvirt.poll-interval",
                       "1h"], log=tmp_path / "log") as exp:
            exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
            if master is not None:
                exp.wait_output("registered 3 subtrees")
            yield Served(request.param, exp, asked, read, write, trapd)
    finally:
        if master is not None:
            master.stop()
        trapd.stop()


def test_shut_off_domain_rows_over_snmp(served: Served) -> None:
    """Point 1, on the wire: the demo host's shut-off legacy1 reads shutoff(5), active(1), its name, one vCPU,
    1024 MiB and CPU time 0, and a walk of the table lists all six domains (standalone and through snmpd)."""
    columns = ("Name", "State", "CpuCount", "MemoryCurrent", "MemoryLimit", "CpuTime", "RowStatus")
    assert served.get(*(_oid(c, "legacy1") for c in columns)) == ["legacy1", "5", "1", "1024", "1024", "0", "1"]
    walked = served.walk(f"{GUEST}.2")
    assert sorted(walked.values()) == sorted(DEMO)
    assert set(walked) == {_oid("Name", name) for name in DEMO}


def test_libvirt_mib_set_cases(served: Served) -> None:
    """Every SET case class of CASES, in order, on one demo host: the error and the varbind it names, the
    states read afterwards, and the libvirtGuestNotif each successful action causes (and no other)."""
    expected: list[dict[str, str]] = []
    for case in CASES:
        args = [a for column, name, kind, value in case.request for a in (_oid(column, name), kind, value)]
        result = served.set(*args)
        if case.error is None:
            assert result.returncode == 0 and result.stderr == "", (case.what, result.stderr)
        else:
            assert f"Reason: {case.error}" in result.stderr, (case.what, result.stderr)
            column, name, _, _ = case.request[case.failed - 1]
            assert f"Failed object: .{_oid(column, name)}\n" in result.stderr, (case.what, result.stderr)
        for name, state in case.after:
            read = poll_until(lambda name=name: served.get(_oid("State", name)),
                              lambda got, state=state: got == [str(state)], 30, every=0.1)
            assert read == [str(state)], (case.what, name)
        if case.notif is not None:
            name, state, row = case.notif
            expected.append({f"{GUEST}.2.0": name, f"{GUEST}.3.0": str(state), f"{GUEST}.9.0": str(row),
                             f"{GUEST}.1.0": " ".join(f"{b:02X}" for b in uuidlib.UUID(_uuid(name)).bytes)})
            poll_until(served.notifications, lambda got: len(got) >= len(expected), 30, every=0.1)
        assert served.notifications() == expected, case.what
    time.sleep(1)  # nothing late: every refused request ran nothing
    assert served.notifications() == expected
    log = served.exp.log_path.read_text() if served.exp.log_path else ""
    assert log.count("result=refused") == sum(c.error is not None for c in CASES)
    assert "Traceback" not in log
