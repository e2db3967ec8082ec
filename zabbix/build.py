"""Writes zabbix/libvirt-exporter-snmp.yaml: a Zabbix 6.0 template for the exporter's SNMP agent.

    python zabbix/build.py          # rewrite the template
    python zabbix/build.py --check  # exit 1 if it is not what this script makes

Every OID comes from exporter/snmp/mib.py (the MIB modules it puts together), the same declarations the agent
serves, and the UUIDs are derived from names so that a rebuild changes
nothing.  It discovers domains, disks and NICs by SNMP walk (low-level
discovery with ``discovery[...]`` OIDs) and has items, triggers and graphs.
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.snmp import mib, mib_lvx  # noqa: E402

OUT = Path(__file__).with_name("libvirt-exporter-snmp.yaml")
TEMPLATE = "libvirt-exporter SNMP"
GROUP = "Templates/Virtualization"


def _uuid(*parts: str) -> str:
    """A UUIDv4-shaped ID (what Zabbix's importer expects), derived from names."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, "libvirt-exporter/zabbix/" + "/".join(parts)).bytes
    return uuid.UUID(bytes=digest, version=4).hex


def oid(name: str) -> str:
    return ".".join(map(str, mib.BY_NAME[name].oid))


def _item(name: str, key: str, snmp_oid: str, **extra: Any) -> dict[str, Any]:
    item = {"uuid": _uuid("item", key), "name": name, "type": "SNMP_AGENT", "snmp_oid": snmp_oid, "key": key,
            "history": "7d"}
    item.update(extra)
    return item


def _trap_item(name: str, key: str, description: str) -> dict[str, Any]:
    """An item that the server's SNMP trapper fills (type SNMP_TRAP): each trap that snmptrapd wrote to the
    SNMPTrapperFile for this host's SNMP interface address, as text."""
    return {"uuid": _uuid("item", key), "name": name, "type": "SNMP_TRAP", "key": key, "delay": "0",
            "history": "7d", "trends": "0", "value_type": "LOG", "description": description}


def _per_second(multiplier: str | None = None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"type": "CHANGE_PER_SECOND", "parameters": [""]}]
    if multiplier:
        steps.append({"type": "MULTIPLIER", "parameters": [multiplier]})
    return {"preprocessing": steps}


def _graph(name: str, keys: list[str]) -> dict[str, Any]:
    colors = ["1A7C11", "F63100", "2774A4", "A54F10"]
    return {"uuid": _uuid("graph", name), "name": name, "graph_items": [
        {"sortorder": str(n), "color": colors[n % len(colors)], "item": {"host": TEMPLATE, "key": key}}
        for n, key in enumerate(keys)]}


def _trigger(name: str, expression: str, priority: str, description: str) -> dict[str, Any]:
    return {"uuid": _uuid("trigger", name), "expression": expression, "name": name, "priority": priority,
            "description": description}


STATE_MAP = {"uuid": _uuid("valuemap", "state"), "name": "LVX domain state", "mappings": [
    {"value": str(v), "newvalue": n} for v, n in enumerate(
        ["nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended"])]}
DISK_ERROR_MAP = {"uuid": _uuid("valuemap", "disk-error"), "name": "LVX disk error", "mappings": [
    {"value": "0", "newvalue": "none"}, {"value": "1", "newvalue": "unspecified"},
    {"value": "2", "newvalue": "no space"}]}
JOB_OPERATION_MAP = {"uuid": _uuid("valuemap", "job-operation"), "name": "LVX job operation", "mappings": [
    {"value": str(v), "newvalue": n} for v, n in enumerate(
        ["unknown", "start", "save", "restore", "incoming migration", "outgoing migration", "snapshot",
         "snapshot revert", "dump", "backup", "snapshot delete"])]}
JOB_TYPE_MAP = {"uuid": _uuid("valuemap", "job-type"), "name": "LVX job type", "mappings": [
    {"value": str(v), "newvalue": n} for v, n in enumerate(
        ["none", "bounded", "unbounded", "completed", "failed", "cancelled"])]}
CONNECTION_MAP = {"uuid": _uuid("valuemap", "connection"), "name": "LVX libvirt connection", "mappings": [
    {"value": "1", "newvalue": "up"}, {"value": "2", "newvalue": "down"}]}


def _domains() -> dict[str, Any]:
    idx = "{#SNMPINDEX}"
    state = f"lvx.domain.state[{idx}]"
    cpu = f"lvx.domain.cpu[{idx}]"
    prototypes = [
        _item("Domain {#DOMNAME}: state", state, f"{oid('lvxDomainOperState')}.{idx}",
              valuemap={"name": STATE_MAP["name"]}, trends="0",
              trigger_prototypes=[
                  _trigger("Domain {#DOMNAME} crashed", f"last(/{TEMPLATE}/{state})=6", "HIGH",
                           "libvirt reports the domain crashed."),
                  _trigger("Domain {#DOMNAME} is not running", f"last(/{TEMPLATE}/{state})<>1", "WARNING",
                           "The domain is paused, shut down or off; a crash has its own trigger."),
              ]),
        # lvxDomainCpuTime has no instance while the domain is off: that reads as no CPU used, not as an
        # unsupported item (the last step's custom value ends the preprocessing there).
        _item("Domain {#DOMNAME}: CPU usage", cpu, f"{oid('lvxDomainCpuTime')}.{idx}", value_type="FLOAT",
              units="cores", description="CPU seconds used per second (1 = one host core busy); 0 while the "
                                         "domain is not running.",
              preprocessing=[{"type": "CHECK_NOT_SUPPORTED", "parameters": [""], "error_handler": "CUSTOM_VALUE",
                              "error_handler_params": "0"},
                             *_per_second("0.000000001")["preprocessing"]]),
        _item("Domain {#DOMNAME}: vCPUs", f"lvx.domain.vcpus[{idx}]", f"{oid('lvxDomainVcpus')}.{idx}"),
        _item("Domain {#DOMNAME}: memory", f"lvx.domain.memory[{idx}]", f"{oid('lvxDomainMemory')}.{idx}",
              units="B", preprocessing=[{"type": "MULTIPLIER", "parameters": ["1024"]}]),
        _item("Domain {#DOMNAME}: maximum memory", f"lvx.domain.memory.max[{idx}]",
              f"{oid('lvxDomainMemoryMax')}.{idx}", units="B",
              preprocessing=[{"type": "MULTIPLIER", "parameters": ["1024"]}]),
    ]
    return {"uuid": _uuid("discovery", "domains"), "name": "Domain discovery", "type": "SNMP_AGENT",
            "snmp_oid": f"discovery[{{#DOMNAME}},{oid('lvxDomainName')},{{#DOMUUID}},{oid('lvxDomainUUID')}]",
            "key": "lvx.domain.discovery", "delay": "10m",
            "lifetime": "7d", "description": "Every domain libvirt knows, active or not, with its name and UUID.",
            "item_prototypes": prototypes,
            "graph_prototypes": [
                _graph("Domain {#DOMNAME}: CPU", [cpu]),
                _graph("Domain {#DOMNAME}: memory", [f"lvx.domain.memory[{idx}]", f"lvx.domain.memory.max[{idx}]"]),
            ]}


def _disks() -> dict[str, Any]:
    idx = "{#SNMPINDEX}"
    read, write = f"lvx.disk.read.bytes[{idx}]", f"lvx.disk.write.bytes[{idx}]"
    alloc, cap = f"lvx.disk.allocation[{idx}]", f"lvx.disk.capacity[{idx}]"
    prototypes = [
        _item("Disk {#DISKTARGET} of {#SNMPINDEX}: read", read, f"{oid('lvxBlockReadBytes')}.{idx}", units="Bps",
              **_per_second()),
        _item("Disk {#DISKTARGET} of {#SNMPINDEX}: write", write, f"{oid('lvxBlockWriteBytes')}.{idx}", units="Bps",
              **_per_second()),
        _item("Disk {#DISKTARGET} of {#SNMPINDEX}: read requests", f"lvx.disk.read.ops[{idx}]",
              f"{oid('lvxBlockReadRequests')}.{idx}", units="iops", **_per_second()),
        _item("Disk {#DISKTARGET} of {#SNMPINDEX}: write requests", f"lvx.disk.write.ops[{idx}]",
              f"{oid('lvxBlockWriteRequests')}.{idx}", units="iops", **_per_second()),
        _item("Disk {#DISKTARGET} of {#SNMPINDEX}: capacity", cap, f"{oid('lvxBlockCapacity')}.{idx}", units="B"),
        _item("Disk {#DISKTARGET} of {#SNMPINDEX}: error", f"lvx.disk.error[{idx}]",
              f"{oid('lvxBlockErrorCode')}.{idx}",
              valuemap={"name": DISK_ERROR_MAP["name"]}, trends="0",
              description="The error that keeps the domain paused (its error policy stopped it): none, unspecified "
                          "or no space.",
              trigger_prototypes=[
                  _trigger("Disk {#DISKTARGET} ({#DISKSOURCE}) has an I/O error",
                           f"last(/{TEMPLATE}/lvx.disk.error[{idx}])>0", "HIGH",
                           "The domain is paused by an I/O error on this disk: free space on the host's storage "
                           "(no space) or fix the storage, then resume the domain."),
              ]),
        _item("Disk {#DISKTARGET} of {#SNMPINDEX}: allocation", alloc, f"{oid('lvxBlockAllocation')}.{idx}",
              units="B", trigger_prototypes=[
                  _trigger("Disk {#DISKTARGET} ({#DISKSOURCE}) is over {$LVX.DISK.PUSED.MAX}% allocated",
                           f"last(/{TEMPLATE}/{alloc}) > {{$LVX.DISK.PUSED.MAX}} / 100 * last(/{TEMPLATE}/{cap}) "
                           f"and last(/{TEMPLATE}/{cap}) > 0", "WARNING",
                           "The image's allocation is close to the disk's capacity."),
              ]),
    ]
    return {"uuid": _uuid("discovery", "disks"), "name": "Disk discovery", "type": "SNMP_AGENT",
            "snmp_oid": f"discovery[{{#DISKTARGET}},{oid('lvxBlockTarget')},{{#DISKSOURCE}},{oid('lvxBlockSource')},"
                        f"{{#DISKREADS}},{oid('lvxBlockReadBytes')}]",
            "key": "lvx.disk.discovery", "delay": "10m", "lifetime": "7d",
            # lvxBlockTable lists a stopped domain's disks too, without their counters, capacity or allocation:
            # items for them would all be unsupported.  A counter is there only while the domain runs.
            "filter": {"conditions": [{"macro": "{#DISKREADS}", "operator": "EXISTS", "formulaid": "A"}]},
            "description": "Disks of active domains ({#DISKREADS}, the read counter, exists only while the "
                           "domain runs); {#SNMPINDEX} is lvxDomainIndex.position.",
            "item_prototypes": prototypes,
            "graph_prototypes": [_graph("Disk {#DISKTARGET} of {#SNMPINDEX}: throughput", [read, write])]}


def _nics() -> dict[str, Any]:
    idx = "{#SNMPINDEX}"
    rx, tx = f"lvx.nic.rx.bytes[{idx}]", f"lvx.nic.tx.bytes[{idx}]"
    prototypes = [
        _item("NIC {#NICTARGET}: received", rx, f"{oid('lvxInterfaceReceiveBytes')}.{idx}", units="bps",
              preprocessing=[{"type": "CHANGE_PER_SECOND", "parameters": [""]},
                             {"type": "MULTIPLIER", "parameters": ["8"]}]),
        _item("NIC {#NICTARGET}: sent", tx, f"{oid('lvxInterfaceTransmitBytes')}.{idx}", units="bps",
              preprocessing=[{"type": "CHANGE_PER_SECOND", "parameters": [""]},
                             {"type": "MULTIPLIER", "parameters": ["8"]}]),
        _item("NIC {#NICTARGET}: receive errors", f"lvx.nic.rx.errors[{idx}]",
              f"{oid('lvxInterfaceReceiveErrors')}.{idx}", **_per_second()),
        _item("NIC {#NICTARGET}: receive drops", f"lvx.nic.rx.drops[{idx}]",
              f"{oid('lvxInterfaceReceiveDrops')}.{idx}", **_per_second(),
              trigger_prototypes=[_trigger("NIC {#NICTARGET} drops packets",
                                           f"min(/{TEMPLATE}/lvx.nic.rx.drops[{idx}],5m)>0", "INFO",
                                           "Received packets dropped for 5 minutes.")]),
    ]
    return {"uuid": _uuid("discovery", "nics"), "name": "NIC discovery", "type": "SNMP_AGENT",
            "snmp_oid": f"discovery[{{#NICTARGET}},{oid('lvxInterfaceTarget')},{{#NICMAC}},{oid('lvxInterfaceMac')}]",
            "key": "lvx.nic.discovery", "delay": "10m", "lifetime": "7d",
            "description": "NICs of active domains; {#SNMPINDEX} is lvxDomainIndex.position.",
            "item_prototypes": prototypes,
            "graph_prototypes": [_graph("NIC {#NICTARGET}: traffic", [rx, tx])]}


def _jobs() -> dict[str, Any]:
    """The domains with a job running (a migration, save, dump...): discovered often, gone when it ends."""
    idx = "{#SNMPINDEX}"
    remaining, elapsed = f"lvx.job.memory.remaining[{idx}]", f"lvx.job.elapsed[{idx}]"
    prototypes = [
        _item("Job of domain {#SNMPINDEX}: operation", f"lvx.job.operation[{idx}]", f"{oid('lvxJobOperation')}.{idx}",
              valuemap={"name": JOB_OPERATION_MAP["name"]}, trends="0"),
        _item("Job of domain {#SNMPINDEX}: time elapsed", elapsed, f"{oid('lvxJobTimeElapsed')}.{idx}", units="s",
              preprocessing=[{"type": "MULTIPLIER", "parameters": ["0.001"]}], value_type="FLOAT"),
        _item("Job of domain {#SNMPINDEX}: memory moved", f"lvx.job.memory.processed[{idx}]",
              f"{oid('lvxJobMemoryProcessed')}.{idx}", units="B"),
        _item("Job of domain {#SNMPINDEX}: memory left", remaining, f"{oid('lvxJobMemoryRemaining')}.{idx}", units="B",
              trigger_prototypes=[
                  _trigger("Job of domain {#SNMPINDEX} is not progressing",
                           f"min(/{TEMPLATE}/{remaining},10m)>=last(/{TEMPLATE}/{remaining}) "
                           f"and last(/{TEMPLATE}/{remaining})>0 and last(/{TEMPLATE}/{elapsed})>600", "WARNING",
                           "The guest memory a migration (or save) has still to move has not shrunk in 10 minutes."),
              ]),
    ]
    return {"uuid": _uuid("discovery", "jobs"), "name": "Job discovery", "type": "SNMP_AGENT",
            "snmp_oid": f"discovery[{{#JOBTYPE}},{oid('lvxJobType')},{{#JOBOPERATION}},{oid('lvxJobOperation')}]",
            "key": "lvx.job.discovery", "delay": "1m", "lifetime": "1h",
            "description": "Domains with a running job; {#SNMPINDEX} is lvxDomainIndex.",
            "item_prototypes": prototypes,
            "graph_prototypes": [_graph("Job of domain {#SNMPINDEX}: memory",
                                        [f"lvx.job.memory.processed[{idx}]", remaining])]}


def _last_jobs() -> dict[str, Any]:
    """The outcome of each domain's last completed job."""
    idx = "{#SNMPINDEX}"
    outcome = f"lvx.job.last.type[{idx}]"
    prototypes = [
        _item("Last job of domain {#SNMPINDEX}: outcome", outcome, f"{oid('lvxJobLastType')}.{idx}",
              valuemap={"name": JOB_TYPE_MAP["name"]}, trends="0",
              trigger_prototypes=[
                  _trigger("Last job of domain {#SNMPINDEX} did not complete", f"last(/{TEMPLATE}/{outcome})>3",
                           "WARNING", "The domain's last migration, save or dump failed or was cancelled."),
              ]),
        _item("Last job of domain {#SNMPINDEX}: operation", f"lvx.job.last.operation[{idx}]",
              f"{oid('lvxJobLastOperation')}.{idx}", valuemap={"name": JOB_OPERATION_MAP["name"]}, trends="0"),
        _item("Last job of domain {#SNMPINDEX}: duration", f"lvx.job.last.elapsed[{idx}]",
              f"{oid('lvxJobLastTimeElapsed')}.{idx}", units="s", value_type="FLOAT",
              preprocessing=[{"type": "MULTIPLIER", "parameters": ["0.001"]}]),
    ]
    return {"uuid": _uuid("discovery", "last-jobs"), "name": "Last job discovery", "type": "SNMP_AGENT",
            "snmp_oid": f"discovery[{{#JOBLASTTYPE}},{oid('lvxJobLastType')},"
                        f"{{#JOBLASTOPERATION}},{oid('lvxJobLastOperation')}]",
            "key": "lvx.job.last.discovery", "delay": "10m", "lifetime": "7d",
            "description": "Domains whose last job libvirt reported complete; {#SNMPINDEX} is lvxDomainIndex.",
            "item_prototypes": prototypes}


#: Discovery rules that find nothing on a host without jobs (the test driver's): held against a real QEMU job.
JOB_RULES = ("lvx.job.discovery", "lvx.job.last.discovery")


#: Our MIB's notifications (lvxNotifications.N), numeric as snmptrapd writes them without the MIB loaded, or by
#: name with it; a Zabbix item key holds the regular expression in quotes.
NOTIFICATION_REGEX = (r"(" + re.escape("." + ".".join(map(str, mib_lvx.LVX_ROOT)) + ".0.") + r"[0-9]+"
                      r"|LIBVIRT-EXPORTER-MIB::lvx[A-Za-z]+)\b")
NOTIFICATION_KEY = f'snmptrap["{NOTIFICATION_REGEX}"]'


def template() -> dict[str, Any]:
    connection = "lvx.libvirt.connection"
    items = [
        _item("libvirt connection", connection, f"{oid('lvxLibvirtConnection')}.0",
              valuemap={"name": CONNECTION_MAP["name"]}, trends="0",
              triggers=[_trigger("libvirt connection lost", f"last(/{TEMPLATE}/{connection})=2", "HIGH",
                                 "The exporter cannot reach libvirtd on this host."),
                        _trigger("libvirt exporter not answering SNMP", f"nodata(/{TEMPLATE}/{connection},5m)=1",
                                 "AVERAGE", "No answer from the exporter's SNMP agent for 5 minutes.")]),
        _item("Snapshot age", "lvx.snapshot.age", f"{oid('lvxSnapshotAge')}.0", units="s",
              triggers=[_trigger("libvirt data is stale", f"min(/{TEMPLATE}/lvx.snapshot.age,5m)>300", "WARNING",
                                 "The exporter has served the same snapshot for 5 minutes: a libvirt call hangs.")]),
        _item("Domains", "lvx.domains", f"{oid('lvxDomainCount')}.0"),
        _item("Active domains", "lvx.domains.active", f"{oid('lvxDomainActiveCount')}.0"),
        _item("Host CPUs", "lvx.host.cpus", f"{oid('lvxHostCpus')}.0"),
        _item("Host memory free", "lvx.host.memory.free", f"{oid('lvxHostMemoryFree')}.0", units="B",
              preprocessing=[{"type": "MULTIPLIER", "parameters": ["1024"]}]),
        _item("Host memory total", "lvx.host.memory.total", f"{oid('lvxHostMemoryTotal')}.0", units="B",
              preprocessing=[{"type": "MULTIPLIER", "parameters": ["1024"]}]),
        _item("Hypervisor driver version", "lvx.host.driver.version", f"{oid('lvxHostDriverVersion')}.0",
              value_type="CHAR", trends="0"),
        _trap_item("libvirt-exporter notifications", NOTIFICATION_KEY,
                   "The exporter's own notifications (lvxDomainStarted, lvxDomainCrashed, lvxDomainActionFailed...), "
                   "as snmptrapd's trap receiver wrote them to the server's SNMPTrapperFile."),
        _trap_item("Other SNMP notifications", "snmptrap.fallback",
                   "Notifications from this address that no other snmptrap item took (libvirt-snmp's "
                   "libvirtGuestNotif, VM-MIB's, when the exporter sends them)."),
    ]
    return {"zabbix_export": {
        "version": "6.0",
        "date": "2026-11-26T00:00:00Z",
        "groups": [{"uuid": _uuid("group", GROUP), "name": GROUP}],
        "templates": [{
            "uuid": _uuid("template", TEMPLATE),
            "template": TEMPLATE,
            "name": TEMPLATE,
            "description": "libvirt-exporter's SNMP agent (LIBVIRT-EXPORTER-MIB): the hypervisor, its domains, "
                           "their disks and NICs, discovered by SNMP walk. Set the host's SNMP interface to the "
                           "exporter's address and port (default 1161) and {$SNMP_COMMUNITY}.",
            "groups": [{"name": GROUP}],
            "items": items,
            "discovery_rules": [_domains(), _disks(), _nics(), _jobs(), _last_jobs()],
            "macros": [{"macro": "{$LVX.DISK.PUSED.MAX}", "value": "90",
                        "description": "Allocation, in percent of capacity, above which a disk trigger fires."}],
            "valuemaps": [STATE_MAP, CONNECTION_MAP, DISK_ERROR_MAP, JOB_OPERATION_MAP, JOB_TYPE_MAP],
        }],
        # A graph is not part of its template in an export: it sits beside the templates and names them.
        "graphs": [_graph("libvirt domains", ["lvx.domains", "lvx.domains.active"])],
    }}


def render() -> str:
    return yaml.safe_dump(template(), sort_keys=False, allow_unicode=True, width=120)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python zabbix/build.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
