"""The SNMP agent, read side, with the net-snmp tools as the client."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Iterator

import pytest

from exporter import fields
from exporter.hostgen import HostShape
from exporter.snmp import mib, mib_libvirt, mib_lvx, mib_vm
from exporter.snmp.syntax import BYTES, C64, G32, INT, OID, RC, RO, RW, STR, TICKS, U32, ObjectDef
from tests.conftest import ROOT, require, require_tool
from tests.support import snmp
from tests.support.process import Exporter

LVX = ".".join(map(str, mib_lvx.LVX_ROOT))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, str]]:
    """The demo host served over HTTP and SNMP, polled once an hour (a stable snapshot)."""
    require_tool("snmpget", "snmp")
    require(snmp.BASE_MIBS.joinpath("SNMPv2-SMI").exists(), "base MIBs missing: run `make base-mibs`")
    folder = tmp_path_factory.mktemp("agent")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(folder / "c.toml", folder / "state", f"127.0.0.1:{port}")
    exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml",
                    "--libvirt.poll-interval", "1h"], log=folder / "log")
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        yield exp, f"127.0.0.1:{port}"


def _walk(target: str, oid: str, *extra: str) -> dict[str, str]:
    return snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", "-Oe", "-OU", *extra, target, oid))


def _field_metrics() -> dict[str, tuple]:
    """The columns the field table gives a family: ("metric", family, factor), SNMP value x factor == sample,
    or ("truth", family) for a TruthValue shown as 0/1."""
    found: dict[str, tuple] = {}
    for f in fields.FIELDS:
        if f.column is None or f.family is None or f.table == "host":  # host scalars: checked one by one below
            continue
        if f.unit == "bool":
            found[f.column.name] = ("truth", f.family.name)
        elif f.unit == "percent":
            found[f.column.name] = ("percent", f.family.name)  # the column is a whole percent
        else:
            found[f.column.name] = ("metric", f.family.name, f.metric_value(2**20) / f.column_value(2**20))
    return found


# Column -> how /metrics shows the same value: the field table's columns (above), and these: ("label",
# family, label) means the value is that label of the family's series; ("none", reason) means /metrics has
# no counterpart.
COLUMN_METRICS: dict[str, tuple] = _field_metrics() | {
    "lvxDomainName": ("label", "libvirt_domain_info", "domain"),
    "lvxDomainUUID": ("label", "libvirt_domain_info", "uuid"),
    "lvxDomainId": ("none", "the hypervisor's run-time id is not exported to Prometheus"),
    "lvxDomainPersistent": ("label", "libvirt_domain_info", "persistent"),
    "lvxDomainAutostart": ("label", "libvirt_domain_info", "autostart"),
    "lvxDomainUptime": ("none", "uptime is not exported to Prometheus"),
    "lvxDomainAdminState": ("none", "control column"),
    "lvxDomainAction": ("none", "control column"),
    "lvxDomainLastAction": ("none", "control column"),
    "lvxDomainLastActionResult": ("none", "control column"),
    "lvxDomainLastActionError": ("none", "control column"),
    "lvxDomainLastActionTime": ("none", "control column"),
    "lvxDomainStatsAge": ("none", "a live age; test_realqemu's stuck-domain test holds it against /metrics"),
    "lvxBlockTarget": ("label", "libvirt_domain_block_stats_info", "target_device"),
    "lvxBlockSource": ("label", "libvirt_domain_block_stats_info", "source_file"),
    "lvxBlockBus": ("label", "libvirt_domain_block_stats_info", "target_bus"),
    "lvxBlockDriverType": ("label", "libvirt_domain_block_stats_info", "driver_type"),
    "lvxBlockSerial": ("label", "libvirt_domain_block_stats_info", "serial"),
    "lvxBlockCache": ("label", "libvirt_domain_block_stats_info", "driver_cache"),
    "lvxBlockDiscard": ("label", "libvirt_domain_block_stats_info", "driver_discard"),
    "lvxBlockProtocol": ("label", "libvirt_domain_block_stats_info", "source_protocol"),
    "lvxInterfaceTarget": ("label", "libvirt_domain_interface_stats_info", "target_device"),
    "lvxInterfaceMac": ("label", "libvirt_domain_interface_stats_info", "mac_address"),
    "lvxInterfaceModel": ("label", "libvirt_domain_interface_stats_info", "model_type"),
    "lvxInterfaceType": ("label", "libvirt_domain_interface_stats_info", "interface_type"),
    "lvxInterfaceSource": ("label", "libvirt_domain_interface_stats_info", "source_bridge|source_network"),
    "lvxInterfaceMtu": ("label", "libvirt_domain_interface_stats_info", "mtu_size"),
    "lvxInterfaceVirtualPort": ("label", "libvirt_domain_interface_stats_info", "virtual_interface"),
    "lvxPoolName": ("label", "libvirt_storage_pool_state", "storage_pool"),
    "lvxPoolUUID": ("label", "libvirt_storage_pool_state", "uuid"),
    "lvxNetworkName": ("label", "libvirt_network_info", "network"),
    "lvxNetworkUUID": ("label", "libvirt_network_info", "uuid"),
    "lvxNetworkBridge": ("label", "libvirt_network_info", "bridge"),
}
TABLES = (mib_lvx.DOMAIN_OBJECTS, mib_lvx.VCPU_OBJECTS, mib_lvx.BLOCK_OBJECTS, mib_lvx.INTERFACE_OBJECTS,
          mib_lvx.POOL_OBJECTS, mib_lvx.NETWORK_OBJECTS, mib_lvx.JOB_OBJECTS, mib_lvx.PERF_OBJECTS,
          mib_lvx.IOTHREAD_OBJECTS)
#: Columns the test driver has no data for (no jobs, perf events, halt polling or dirty rate): tests/test_jobs.py
#: and tests/test_groups.py hold them against real QEMU.
QEMU_ONLY = {o.name for o in mib_lvx.JOB_OBJECTS + mib_lvx.PERF_OBJECTS} | {
    "lvxDomainHaltPollSuccess", "lvxDomainHaltPollFail", "lvxDomainDirtyRateStatus", "lvxDomainDirtyRatePeriod",
    "lvxDomainDirtyRate", "lvxIoThreadPollMax", "lvxIoThreadPollGrow", "lvxIoThreadPollShrink"}


def _row_labels(obj: ObjectDef, index: tuple[int, ...], row: dict[str, str]) -> dict[str, str]:
    """The /metrics labels that pick the series of one SNMP row."""
    if obj in mib_lvx.POOL_OBJECTS:
        return {"storage_pool": row["lvxPoolName"], "uuid": row["lvxPoolUUID"]}
    if obj in mib_lvx.NETWORK_OBJECTS:
        return {"network": row["lvxNetworkName"], "uuid": row["lvxNetworkUUID"]}
    labels = {"domain": row["domain"], "uuid": row["uuid"]}
    if obj in mib_lvx.VCPU_OBJECTS:
        labels["vcpu"] = str(index[1])
    elif obj in mib_lvx.BLOCK_OBJECTS:
        labels["target_device"] = row["lvxBlockTarget"]
    elif obj in mib_lvx.INTERFACE_OBJECTS:
        labels["target_device"] = row["lvxInterfaceTarget"]
    elif obj in mib_lvx.IOTHREAD_OBJECTS:
        labels["iothread"] = str(index[1])
    return labels


def test_every_column_matches_metrics(agent: tuple[Exporter, str]) -> None:
    """Every column of every table has the value /metrics shows for the same object in the same snapshot."""
    exp, target = agent
    metrics = exp.scrape()
    assert set(COLUMN_METRICS) == {o.name for table in TABLES for o in table}
    host = _walk(target, f"{LVX}.1.1")
    assert int(host[f"{LVX}.1.1.12.0"]) == int(metrics.get("libvirt_exporter_snapshot_timestamp_seconds"))
    assert host[f"{LVX}.1.1.8.0"] == "6" and host[f"{LVX}.1.1.11.0"] == "1"
    assert host[f"{LVX}.1.1.5.0"] == str(int(metrics.get("libvirt_node_cpus")))
    walk = {tuple(int(x) for x in k.split(".")): v for k, v in _walk(target, f"{LVX}.1").items()}
    # Gather rows: (object, index) -> value, keyed by column name, plus domain name and uuid by domain index.
    rows: dict[tuple[str, tuple[int, ...]], dict[str, str]] = {}
    domains: dict[int, tuple[str, str]] = {}
    for oid, value in walk.items():
        obj = mib.object_of(oid)
        if obj is None or not any(obj in table for table in TABLES):
            continue
        index = oid[len(obj.oid):]
        table = next(t for t in TABLES if obj in t)
        rows.setdefault((table[0].name, index), {})[obj.name] = value
    for (_, index), row in rows.items():
        if "lvxDomainName" in row:
            domains[index[0]] = (row["lvxDomainName"], row["lvxDomainUUID"])
    assert len(domains) == 6
    seen: set[str] = set()
    for (_, index), row in rows.items():
        if "lvxPoolName" not in row and "lvxNetworkName" not in row:
            row["domain"], row["uuid"] = domains[index[0]]
        for name, value in row.items():
            spec = COLUMN_METRICS.get(name)
            if spec is None or spec[0] == "none":
                continue
            obj = mib.BY_NAME[name]
            labels = _row_labels(obj, index, row)
            seen.add(name)
            if spec[0] == "metric":
                sample = metrics.get(spec[1], **labels)
                assert sample is not None, (name, labels)
                assert int(value) * spec[2] == pytest.approx(sample, rel=1e-12), (name, labels)
            elif spec[0] == "truth":
                assert {"1": 1, "2": 0}[value] == metrics.get(spec[1], **labels), (name, labels)
            elif spec[0] == "percent":
                assert int(value) == round(metrics.get(spec[1], **labels)), (name, labels)
            else:
                (series,) = [s for s in metrics.series(spec[1]) if all(s.get(k) == v for k, v in labels.items())
                             or (spec[1] == "libvirt_domain_info" and s["uuid"] == labels["uuid"])]
                keys = spec[2].split("|")
                expected = next((series[k] for k in keys if series.get(k)), "")
                if name == "lvxInterfaceMac":
                    value = ":".join(f"{int(p, 16):02x}" for p in value.strip(":").split(":"))
                if name in ("lvxDomainPersistent", "lvxDomainAutostart"):
                    value = {"1": "true", "2": "false"}[value]
                assert value == expected, (name, labels, value, expected)
    # Every column with a Prometheus counterpart was compared somewhere, except these (no data on the demo host).
    no_data = {"lvxVcpuWait", "lvxVcpuDelay", "lvxBlockReadTime", "lvxBlockWriteTime", "lvxBlockFlushRequests",
               "lvxBlockFlushTime"}
    no_data |= QEMU_ONLY
    compared = {n for n, spec in COLUMN_METRICS.items() if spec[0] != "none"}
    assert compared - seen == no_data


def test_libvirt_mib_guest_table(agent: tuple[Exporter, str]) -> None:
    """libvirt-snmp's guest table: every domain, shut-off ones too, UUID index of 16 sub-ids, MiB, mapped states."""
    exp, target = agent
    metrics = exp.scrape()
    rows = snmp.values(snmp.ok("snmpwalk", *snmp.V2_ARGS, "-Oqn", "-OU", "-Oe", target, "1.3.6.1.4.1.36957.1.1"))
    names = {k: v for k, v in rows.items() if k.startswith("1.3.6.1.4.1.36957.1.1.1.2.")}
    assert sorted(names.values()) == ["batch1", "crashy1", "db1", "legacy1", "web1", "web2"]  # legacy1 is shut off
    for oid, name in names.items():
        index = oid.split(".")[11:]
        assert len(index) == 16  # no length prefix
        uuid = str(uuidlib.UUID(bytes=bytes(int(x) for x in index)))
        suffix = ".".join(index)
        ids = {"domain": name, "uuid": uuid}
        state = int(metrics.get("libvirt_domain_state_code", **ids))
        assert rows[f"1.3.6.1.4.1.36957.1.1.1.3.{suffix}"] == str(state)  # 1..6 pass through
        assert int(rows[f"1.3.6.1.4.1.36957.1.1.1.5.{suffix}"]) == \
            metrics.get("libvirt_domain_info_memory_usage_bytes", **ids) // 2**20
        assert int(rows[f"1.3.6.1.4.1.36957.1.1.1.6.{suffix}"]) == \
            metrics.get("libvirt_domain_info_maximum_memory_bytes", **ids) // 2**20
        assert rows[f"1.3.6.1.4.1.36957.1.1.1.9.{suffix}"] == "1"  # active, shut off or not, as libvirt-snmp
        assert f"1.3.6.1.4.1.36957.1.1.1.1.{suffix}" not in rows  # accessible-for-notify: not readable
    table = snmp.ok("snmptable", *snmp.V2_ARGS, "-Ob", "-Cf", "|", target, "libvirtGuestTable")
    assert "|\"web1\"|running|4|3072 MiB|4096 MiB|" in table


def test_libvirt_state_mapping() -> None:
    """States outside libvirt-snmp's enumeration map onto declared values."""
    assert [mib_libvirt.libvirt_guest_state(s) for s in range(8)] == [2, 1, 2, 3, 4, 5, 6, 3]


def test_system_group_and_named_lookup(agent: tuple[Exporter, str]) -> None:
    """sysDescr/sysObjectID/sysName/sysContact, and a domain addressed by name."""
    _, target = agent
    out = snmp.ok("snmpget", *snmp.V2_ARGS, target, "sysDescr.0", "sysObjectID.0", "sysName.0", "sysContact.0",
                  "sysLocation.0", "sysUpTime.0", "lvxDomainNameIndex.'web1'")
    assert "libvirt-exporter" in out and "TEST" in out
    assert "SNMPv2-MIB::sysObjectID.0 = OID: LIBVIRT-EXPORTER-MIB::lvxMIB" in out
    assert 'sysContact.0 = STRING: test contact' in out
    index = re.search(r"lvxDomainNameIndex\.'web1' = INTEGER: (\d+)", out).group(1)
    name = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, f"lvxDomainName.{index}")
    assert name.strip() == "web1"


def test_v3_authpriv_and_bad_credentials(agent: tuple[Exporter, str]) -> None:
    """v3 authPriv with SHA-256/AES works; a wrong key, user or community gets no data."""
    _, target = agent
    assert snmp.ok("snmpget", *snmp.V3_ARGS, "-Oqv", "-OU", target, "lvxDomainCount.0").strip() == "6"
    bad_key = snmp.run("snmpget", *[a if a != snmp.V3_AUTH else "wrong-auth-key" for a in snmp.V3_ARGS],
                       "-t", "1", "-r", "0", target, "lvxDomainCount.0")
    assert bad_key.returncode != 0 and "Authentication failure" in bad_key.stderr
    bad_user = snmp.run("snmpget", *[a if a != snmp.V3_USER else "nobody" for a in snmp.V3_ARGS],
                        "-t", "1", "-r", "0", target, "lvxDomainCount.0")
    assert bad_user.returncode != 0 and "Unknown user name" in bad_user.stderr
    weaker = snmp.run("snmpget", "-v3", "-l", "authNoPriv", "-u", snmp.V3_USER, "-a", "SHA-256", "-A", snmp.V3_AUTH,
                      "-t", "1", "-r", "0", target, "lvxDomainCount.0")
    # The user is authPriv: a lower security level is refused, and no value is returned.
    assert weaker.returncode != 0 and "Unsupported security level" in weaker.stderr and "Gauge32" not in weaker.stdout
    wrong = snmp.run("snmpget", "-v2c", "-c", "not-the-community", "-t", "1", "-r", "0", target, "sysDescr.0")
    assert wrong.returncode != 0 and "Timeout" in wrong.stderr  # a wrong community gets no answer at all


def test_v1_never_sees_counter64(agent: tuple[Exporter, str]) -> None:
    """SNMPv1: walks skip Counter64 objects (RFC 3584), a GET of one is noSuchName."""
    _, target = agent
    walk = snmp.ok("snmpwalk", "-v1", "-c", snmp.COMMUNITY, "-On", target, LVX)
    assert "Counter64" not in walk and "lvx" not in walk and f"{LVX}.1.2.1.2." in walk
    assert f"{LVX}.1.2.1.13." not in walk  # lvxDomainCpuTime
    get = snmp.run("snmpget", "-v1", "-c", snmp.COMMUNITY, target, f"{LVX}.1.2.1.13.5")
    assert "noSuchName" in get.stdout + get.stderr


def test_unknown_oids(agent: tuple[Exporter, str]) -> None:
    """noSuchObject, noSuchInstance and endOfMibView where each is due."""
    _, target = agent
    out = snmp.ok("snmpget", *snmp.V2_ARGS, target, f"{LVX}.77.0", f"{LVX}.1.2.1.13.999")
    assert "No Such Object" in out and "No Such Instance" in out
    last = snmp.ok("snmpgetnext", *snmp.V2_ARGS, target, "1.3.6.1.4.1.99999")
    assert "No more variables left in this MIB View" in last


def test_every_set_is_refused_for_read_only_principals(agent: tuple[Exporter, str]) -> None:
    """No principal can write by default: v2c and v3 SETs of every writable object fail."""
    _, target = agent
    writable = [o for o in mib.OBJECTS if o.access in (RW, RC)]
    assert writable
    for obj in writable:
        oid = ".".join(map(str, obj.oid)) + (".0" if obj.oid[:len(mib_lvx.LVX_HOST)] == mib_lvx.LVX_HOST else ".1")
        for args in (snmp.V2_ARGS, snmp.V3_ARGS):
            result = snmp.run("snmpset", *args, "-t", "2", "-r", "0", target, oid, "i", "1")
            assert result.returncode != 0, (obj.name, result.stdout)
            # Never notWritable: the principal's (empty) write view is checked before anything else.
            assert re.search(r"noAccess|authorizationError", result.stderr), (obj.name, result.stderr)


def test_ipv6_listener(tmp_path) -> None:
    """The agent listens on [::1] when configured so."""
    require_tool("snmpget", "snmp")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"[::1]:{port}")
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", "test:///default"], log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="up")
        out = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-OU", f"udp6:[::1]:{port}", "lvxDomainCount.0")
        assert out.strip() == "1"


def test_indexes_survive_restart(tmp_path) -> None:
    """A domain keeps its lvxDomainIndex across restarts (state directory)."""
    require_tool("snmpget", "snmp")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}")
    seen = []
    for uri in (f"test://{ROOT}/examples/demo-host.xml", "test:///default", f"test://{ROOT}/examples/demo-host.xml"):
        with Exporter(["--config.file", str(cfg), "--libvirt.uri", uri], log=tmp_path / "log") as exp:
            exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="up")
            seen.append(snmp.values(snmp.ok("snmpwalk", *snmp.V2_ARGS, "-Oqn", f"127.0.0.1:{port}",
                                            f"{LVX}.1.2.1.2")))
    assert seen[0] == seen[2]  # same names at the same indexes after two restarts
    assert set(seen[1].values()) == {"test"} and set(seen[1]) & set(seen[0]) == set()  # a new UUID, a new index


def test_thousand_domains_walk_in_order(make_host, tmp_path) -> None:
    """A 1000-domain host walks completely, strictly increasing, in every served MIB."""
    require_tool("snmpbulkwalk", "snmp")
    uri = make_host(HostShape(domains=1000, disks=2, nics=2, vcpus=4))
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}")
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", uri, "--libvirt.poll-interval", "1h"],
                  log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 1000, timeout=60, what="1000 domains")
        vm = ".".join(map(str, mib_vm.VM_ROOT))
        for root, rows in ((LVX + ".1.2.1.2", 1000), ("1.3.6.1.4.1.36957.1.1.1.2", 1000), (vm + ".1.4.1.2", 1000),
                           ("1.3.6.1.4.1.36957", None), (vm, None), (LVX, None)):
            out = snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", "-Cr50", f"127.0.0.1:{port}", root, timeout=300)
            oids = [tuple(int(x) for x in line.split(" ", 1)[0].lstrip(".").split(".")) for line in out.splitlines()
                    if "No more variables left" not in line]
            assert oids == sorted(set(oids)), f"{root}: not strictly increasing"
            if rows is not None:
                assert len(oids) == rows
        assert len(oids) > 80_000  # the whole tree: about 84 instances a domain


def test_views_limit_what_a_principal_sees(tmp_path) -> None:
    """A community granted only the system group sees nothing else; a write-enabled one gets notWritable."""
    require_tool("snmpwalk", "snmp")
    port = snmp.free_udp_port()
    extra = """
[snmp.views]
system-only = ["1.3.6.1.2.1.1"]

[[snmp.communities]]
name = "system-only-community"
view = "system-only"

[[snmp.communities]]
name = "writer-community"
write = true
"""
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}", extra)
    target = f"127.0.0.1:{port}"
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml"],
                  log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        walk = snmp.ok("snmpwalk", "-v2c", "-c", "system-only-community", "-On", target, ".1.3.6.1")
        oids = [line.split(" ", 1)[0] for line in walk.splitlines() if "No more variables left" not in line]
        assert len(oids) == 7 and all(o.startswith(".1.3.6.1.2.1.1.") for o in oids), oids
        hidden = snmp.ok("snmpget", "-v2c", "-c", "system-only-community", target, "lvxDomainCount.0")
        assert "No Such Object" in hidden
        denied = snmp.run("snmpset", "-v2c", "-c", "system-only-community", target, "lvxDomainAdminState.5", "i", "2")
        assert "noAccess" in denied.stderr
        refused = snmp.run("snmpset", "-v2c", "-c", "writer-community", target, "lvxDomainAdminState.5", "i", "2")
        assert refused.returncode != 0 and "notWritable" in refused.stderr  # control is not enabled yet
    assert "SNMP community 3 (v1/v2c, cleartext) is allowed to write" in exp.output()
    assert "writer-community" not in exp.output() and "system-only-community" not in exp.output()


def test_engine_id_fixed_and_boots_persisted(tmp_path) -> None:
    """The engine ID stays the same across restarts and snmpEngineBoots, kept in the state directory, goes up."""
    require_tool("snmpget", "snmp")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}")
    boots = []
    for _ in range(2):
        with Exporter(["--config.file", str(cfg), "--libvirt.uri", "test:///default"], log=tmp_path / "log") as exp:
            exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="up")
            count = snmp.ok("snmpget", *snmp.V3_ARGS, "-Oqv", "-OU", f"127.0.0.1:{port}", "lvxDomainCount.0")
            assert count.strip() == "1"
        (engine_dir,) = (tmp_path / "state" / "__pysnmp").iterdir()
        boots.append((engine_dir.name, int((engine_dir / "boots").read_text())))
    assert boots[0][0] == boots[1][0]  # same engine ID
    assert boots[1][1] == boots[0][1] + 1


def test_snmptranslate_resolves_every_node() -> None:
    """Every node of our MIB texts, objects and notifications alike, resolves to its OID with snmptranslate."""
    modules = snmp.compiled_mibs()
    for module in ("LIBVIRT-EXPORTER-MIB", "LIBVIRT-MIB"):
        nodes = {name: node["oid"] for name, node in modules[module].items()
                 if isinstance(node, dict) and "oid" in node}
        assert len(nodes) > 10
        out = snmp.ok("snmptranslate", "-On", *[f"{module}::{name}" for name in sorted(nodes)])
        assert [line.lstrip(".") for line in out.splitlines() if line] == [nodes[n] for n in sorted(nodes)]


def test_smilint_clean() -> None:
    """smilint -l 6 prints nothing for our MIB; LIBVIRT-MIB only its one compatibility warning, ignored."""
    smilint = require_tool("smilint", "smitools")
    env = {"SMIPATH": f"{snmp.BASE_MIBS}:{ROOT / 'mibs'}", "PATH": "/usr/bin:/bin"}
    ours = subprocess.run([smilint, "-l", "6", str(ROOT / "mibs/LIBVIRT-EXPORTER-MIB.txt")], capture_output=True,
                          text=True, env=env)
    assert ours.stdout + ours.stderr == ""
    # libvirt-snmp's index column is accessible-for-notify; keeping it is the point of the module.
    compat = subprocess.run([smilint, "-l", "6", "-i", "index-element-accessible",
                             str(ROOT / "mibs/LIBVIRT-MIB.txt")], capture_output=True, text=True, env=env)
    assert compat.stdout + compat.stderr == ""


_SYNTAX = {
    INT: {"Integer32", "INTEGER", "TruthValue", "TestAndIncr", "RowStatus", "LvxDomainState"},
    STR: {"DisplayString", "OCTET STRING", "OctetString"},
    BYTES: {"MacAddress", "UUID"},
    U32: {"Unsigned32"},
    G32: {"Gauge32"},
    C64: {"Counter64", "LvxGauge64"},
    TICKS: {"TimeTicks", "TimeStamp"},
    OID: {"OBJECT IDENTIFIER", "ObjectIdentifier"},
}


def test_mib_and_code_agree() -> None:
    """Every object the code serves is in the MIBs with the same OID, syntax and access, and vice versa."""
    require(snmp.BASE_MIBS.joinpath("SNMPv2-SMI").exists(), "base MIBs missing: run `make base-mibs`")
    modules = snmp.compiled_mibs()
    in_mibs = {}
    for module in ("LIBVIRT-EXPORTER-MIB", "LIBVIRT-MIB"):
        for name, node in modules[module].items():
            if isinstance(node, dict) and node.get("class") == "objecttype" and node.get("nodetype") in (
                    "scalar", "column") and node.get("maxaccess") != "not-accessible":
                in_mibs[name] = node
    system = {n: v for n, v in modules["SNMPv2-MIB"].items() if isinstance(v, dict)
              and v.get("oid", "").startswith("1.3.6.1.2.1.1.") and v.get("nodetype") == "scalar"
              and v["oid"].count(".") == 7}
    served = {o.name: o for o in mib.OBJECTS if o not in mib_vm.OBJECTS}  # VM-MIB: see test_vm_mib_facts
    assert set(served) - set(system) == set(in_mibs), set(served) - set(system) ^ set(in_mibs)
    for name, node in {**in_mibs, **{k: v for k, v in system.items() if k in served}}.items():
        obj = served[name]
        assert ".".join(map(str, obj.oid)) == node["oid"], name
        if name in ("sysContact", "sysName", "sysLocation"):
            assert obj.access == RO  # read-write in SNMPv2-MIB; served read-only, set in the config
        else:
            assert node["maxaccess"] == obj.access, name
        assert node["syntax"]["type"] in _SYNTAX[obj.syntax], (name, node["syntax"])


def test_every_served_oid_resolves_in_the_mibs(agent: tuple[Exporter, str]) -> None:
    """A full walk of the agent: snmptranslate resolves every OID to a named object of our MIBs."""
    _, target = agent
    out = snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-On", target, ".1.3.6.1")
    oids = [line.split(" ", 1)[0] for line in out.splitlines() if "No more variables left" not in line]
    assert len(oids) > 200
    seen_objects = set()
    vm_facts = {oid: name for name, (oid, _) in RFC7666_FACTS.items()}
    for oid in oids:
        obj = mib.object_of(tuple(int(x) for x in oid.lstrip(".").split(".")))
        assert obj is not None, oid
        seen_objects.add(".".join(map(str, obj.oid)))
    # VM-MIB's text is not shipped: its OIDs are held against the RFC's facts instead.
    seen_vm = {o for o in seen_objects if o.startswith("1.3.6.1.2.1.236.")}
    assert {vm_facts.get(o) for o in seen_vm} >= {"vmName", "vmOperState", "vmCpuTime", "vmStorageReadIOs"}
    assert None not in {vm_facts.get(o) for o in seen_vm}, seen_vm - set(vm_facts)
    names = [line for line in snmp.ok("snmptranslate", *sorted(seen_objects - seen_vm)).splitlines() if line]
    assert len(names) == len(seen_objects - seen_vm)
    for line in names:
        assert re.match(r"^(LIBVIRT-EXPORTER-MIB|LIBVIRT-MIB|SNMPv2-MIB)::\w+$", line), line
    # Objects with no instance on the demo host, and why.
    not_applicable = {
        "lvxDomainUptime": "known only for domains the agent saw start; the demo domains start before it",
        "lvxVcpuWait": "the test driver has no bulk vCPU statistics",
        "lvxVcpuDelay": "the test driver has no bulk vCPU statistics",
        "lvxBlockReadTime": "the test driver's blockStats has no times",
        "lvxBlockWriteTime": "the test driver's blockStats has no times",
        "lvxBlockFlushRequests": "the test driver's blockStats has no flush counters",
        "lvxBlockFlushTime": "the test driver's blockStats has no flush counters",
        "libvirtGuestUUID": "accessible-for-notify: sent in notifications, never read",
        "vmAffectedVMs": "accessible-for-notify: bulk notifications only",
        "vmStorageReadLatency": "the test driver's blockStats has no times",
        "vmStorageWriteLatency": "the test driver's blockStats has no times",
    } | {name: "none on the test driver: served on real QEMU (test_jobs.py, test_groups.py)" for name in QEMU_ONLY}
    missing = {o.name for o in mib.OBJECTS if ".".join(map(str, o.oid)) not in seen_objects}
    assert missing == set(not_applicable), missing ^ set(not_applicable)


# Facts of RFC 7666 (VM-MIB), written down from the RFC: OID and max-access of each
# object, and the enumerations whose numbers matter.  The RFC's text is not shipped.
RFC7666_FACTS: dict[str, tuple[str, str]] = {
    "vmHvSoftware": ("1.3.6.1.2.1.236.1.1.1", "read-only"),
    "vmHvVersion": ("1.3.6.1.2.1.236.1.1.2", "read-only"),
    "vmHvObjectID": ("1.3.6.1.2.1.236.1.1.3", "read-only"),
    "vmHvUpTime": ("1.3.6.1.2.1.236.1.1.4", "read-only"),
    "vmNumber": ("1.3.6.1.2.1.236.1.2", "read-only"),
    "vmTableLastChange": ("1.3.6.1.2.1.236.1.3", "read-only"),
    "vmName": ("1.3.6.1.2.1.236.1.4.1.2", "read-only"),
    "vmUUID": ("1.3.6.1.2.1.236.1.4.1.3", "read-only"),
    "vmOSType": ("1.3.6.1.2.1.236.1.4.1.4", "read-only"),
    "vmAdminState": ("1.3.6.1.2.1.236.1.4.1.5", "read-only"),
    "vmOperState": ("1.3.6.1.2.1.236.1.4.1.6", "read-only"),
    "vmAutoStart": ("1.3.6.1.2.1.236.1.4.1.7", "read-only"),
    "vmPersistent": ("1.3.6.1.2.1.236.1.4.1.8", "read-only"),
    "vmCurCpuNumber": ("1.3.6.1.2.1.236.1.4.1.9", "read-only"),
    "vmMinCpuNumber": ("1.3.6.1.2.1.236.1.4.1.10", "read-only"),
    "vmMaxCpuNumber": ("1.3.6.1.2.1.236.1.4.1.11", "read-only"),
    "vmMemUnit": ("1.3.6.1.2.1.236.1.4.1.12", "read-only"),
    "vmCurMem": ("1.3.6.1.2.1.236.1.4.1.13", "read-only"),
    "vmMinMem": ("1.3.6.1.2.1.236.1.4.1.14", "read-only"),
    "vmMaxMem": ("1.3.6.1.2.1.236.1.4.1.15", "read-only"),
    "vmUpTime": ("1.3.6.1.2.1.236.1.4.1.16", "read-only"),
    "vmCpuTime": ("1.3.6.1.2.1.236.1.4.1.17", "read-only"),
    "vmCpuCoreTime": ("1.3.6.1.2.1.236.1.5.1.2", "read-only"),
    "vmCpuAffinity": ("1.3.6.1.2.1.236.1.6.1.3", "read-only"),
    "vmStorageParent": ("1.3.6.1.2.1.236.1.7.1.3", "read-only"),
    "vmStorageSourceType": ("1.3.6.1.2.1.236.1.7.1.4", "read-only"),
    "vmStorageSourceTypeString": ("1.3.6.1.2.1.236.1.7.1.5", "read-only"),
    "vmStorageResourceID": ("1.3.6.1.2.1.236.1.7.1.6", "read-only"),
    "vmStorageAccess": ("1.3.6.1.2.1.236.1.7.1.7", "read-only"),
    "vmStorageMediaType": ("1.3.6.1.2.1.236.1.7.1.8", "read-only"),
    "vmStorageMediaTypeString": ("1.3.6.1.2.1.236.1.7.1.9", "read-only"),
    "vmStorageSizeUnit": ("1.3.6.1.2.1.236.1.7.1.10", "read-only"),
    "vmStorageDefinedSize": ("1.3.6.1.2.1.236.1.7.1.11", "read-only"),
    "vmStorageAllocatedSize": ("1.3.6.1.2.1.236.1.7.1.12", "read-only"),
    "vmStorageReadIOs": ("1.3.6.1.2.1.236.1.7.1.13", "read-only"),
    "vmStorageWriteIOs": ("1.3.6.1.2.1.236.1.7.1.14", "read-only"),
    "vmStorageReadOctets": ("1.3.6.1.2.1.236.1.7.1.15", "read-only"),
    "vmStorageWriteOctets": ("1.3.6.1.2.1.236.1.7.1.16", "read-only"),
    "vmStorageReadLatency": ("1.3.6.1.2.1.236.1.7.1.17", "read-only"),
    "vmStorageWriteLatency": ("1.3.6.1.2.1.236.1.7.1.18", "read-only"),
    "vmNetworkIfIndex": ("1.3.6.1.2.1.236.1.8.1.2", "read-only"),
    "vmNetworkParent": ("1.3.6.1.2.1.236.1.8.1.3", "read-only"),
    "vmNetworkModel": ("1.3.6.1.2.1.236.1.8.1.4", "read-only"),
    "vmNetworkPhysAddress": ("1.3.6.1.2.1.236.1.8.1.5", "read-only"),
    "vmPerVMNotificationsEnabled": ("1.3.6.1.2.1.236.1.9", "read-write"),
    "vmBulkNotificationsEnabled": ("1.3.6.1.2.1.236.1.10", "read-write"),
    "vmAffectedVMs": ("1.3.6.1.2.1.236.1.11", "accessible-for-notify"),
}
RFC7666_OPER_STATE = {"unknown": 1, "other": 2, "preparing": 3, "running": 4, "suspending": 5, "suspended": 6,
                      "resuming": 7, "paused": 8, "migrating": 9, "shuttingdown": 10, "shutdown": 11, "crashed": 12}
RFC7666_ADMIN_STATE = {"running": 1, "suspended": 2, "paused": 3, "shutdown": 4}


def test_vm_mib_facts() -> None:
    """Our VM-MIB objects have the RFC's OIDs and access; libvirt states map to the RFC's enumerations."""
    ours = {o.name: o for o in mib_vm.OBJECTS}
    assert set(ours) | set(mib_vm.NOT_SERVED) >= set(RFC7666_FACTS)
    for name, (oid, access) in RFC7666_FACTS.items():
        assert ".".join(map(str, ours[name].oid)) == oid, name
        if access == "read-write":
            assert ours[name].access == RO  # served read-only: set in the configuration
        else:
            assert ours[name].access == access, name
    oper = RFC7666_OPER_STATE
    assert [mib_vm.vm_oper_state(s) for s in range(8)] == [
        oper["unknown"], oper["running"], oper["running"], oper["paused"], oper["shuttingdown"], oper["shutdown"],
        oper["crashed"], oper["suspended"]]
    admin = RFC7666_ADMIN_STATE
    assert [mib_vm.vm_admin_state(s) for s in range(8)] == [
        admin["shutdown"], admin["running"], admin["running"], admin["paused"], admin["shutdown"],
        admin["shutdown"], admin["shutdown"], admin["suspended"]]


def test_vm_mib_values(agent: tuple[Exporter, str]) -> None:
    """vmTable and friends over SNMP: index shared with our MIB, CPU time in microseconds, sizes in units."""
    exp, target = agent
    metrics = exp.scrape()
    vm = snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", "-Ox", target, "1.3.6.1.2.1.236.1"))
    ours = _walk(target, f"{LVX}.1.2.1.2")
    for oid, name in ours.items():
        index = oid.rsplit(".", 1)[1]
        assert vm[f"1.3.6.1.2.1.236.1.4.1.2.{index}"].replace(" ", "") == name.encode().hex().upper()
    web1 = next(k.rsplit(".", 1)[1] for k, v in ours.items() if v == "web1")
    ids = {"domain": "web1", "uuid": "4d1f0a52-0c6c-4c3e-9b1a-0000000000a1"}
    plain = snmp.values(snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqn", "-Oe", "-OU", target,
                                f"1.3.6.1.2.1.236.1.4.1.6.{web1}", f"1.3.6.1.2.1.236.1.4.1.17.{web1}",
                                f"1.3.6.1.2.1.236.1.4.1.12.{web1}", f"1.3.6.1.2.1.236.1.4.1.13.{web1}",
                                f"1.3.6.1.2.1.236.1.7.1.11.{web1}.1", f"1.3.6.1.2.1.236.1.7.1.10.{web1}.1",
                                "1.3.6.1.2.1.236.1.2.0"))
    assert plain[f"1.3.6.1.2.1.236.1.4.1.6.{web1}"] == "4"  # running
    cpu_us = int(plain[f"1.3.6.1.2.1.236.1.4.1.17.{web1}"])
    assert cpu_us == pytest.approx(metrics.get("libvirt_domain_info_cpu_time_seconds_total", **ids) * 1e6, rel=1e-9)
    unit = int(plain[f"1.3.6.1.2.1.236.1.4.1.12.{web1}"])
    assert int(plain[f"1.3.6.1.2.1.236.1.4.1.13.{web1}"]) * unit == \
        metrics.get("libvirt_domain_info_memory_usage_bytes", **ids)
    size_unit = int(plain[f"1.3.6.1.2.1.236.1.7.1.10.{web1}.1"])
    capacity = metrics.get("libvirt_domain_block_stats_capacity_bytes", **ids, target_device="vda")
    assert int(plain[f"1.3.6.1.2.1.236.1.7.1.11.{web1}.1"]) == capacity // size_unit
    assert plain["1.3.6.1.2.1.236.1.2.0"] == "6"


def test_printed_demo_walk_works(tmp_path) -> None:
    """The snmpwalk line `make demo` prints works as printed against the demo configuration."""
    require_tool("snmpwalk", "snmp")
    makefile = (ROOT / "Makefile").read_text()
    line = re.search(r'@echo "      (snmpwalk [^"]+)"', makefile).group(1)
    defaults = dict(re.findall(r"^(DEMO_\w+) \??= (.+)$", makefile, re.M))  # the demo's addresses and MIB flags
    for name in ("DEMO_MIBS", "DEMO_SNMP_ADDRESS"):
        line = line.replace(f"$({name})", defaults[name])
    command = line.replace("$(CURDIR)", str(ROOT)).replace("$(BASE_MIBS)", "build/base-mibs")
    config = snmp.demo_config(tmp_path / "demo.toml")  # as `make demo` does
    exp = Exporter(["--config.file", str(config),
                    "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml",
                    "--state.directory", str(tmp_path / "state")], log=tmp_path / "log")
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT)
        readme = (ROOT / "README.md").read_text().split("## SNMP", 1)[1].split("\n## ", 1)[0]
        examples = re.findall(r"^    (snmp\w+ .+)$", readme, re.M)
        assert len(examples) == 3
        for example in examples:  # the README's commands work as written against the demo
            ran = subprocess.run(example, shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert ran.returncode == 0 and ran.stderr == "", (example, ran.stderr)
            assert "web1" in ran.stdout or "lvxDomainNameIndex.'web1' = INTEGER: 5" in ran.stdout, ran.stdout
            assert "No Such" not in ran.stdout
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # The demo host by name through all three MIBs: ours, libvirt-snmp's and VM-MIB (mib-2.236).
    assert "LIBVIRT-EXPORTER-MIB::lvxDomainName.5 = STRING: web1" in result.stdout
    assert re.search(r'LIBVIRT-MIB::libvirtGuestName\.\S+ = STRING: "web1"', result.stdout)
    assert 'SNMPv2-SMI::mib-2.236.1.4.1.2.5 = STRING: "web1"' in result.stdout


def test_snmp_errors_at_start_up(tmp_path) -> None:
    """A busy SNMP port, a damaged index file or a secret on the command line stop start-up clearly."""
    require_tool("snmpget", "snmp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}")
        exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", "test:///default"], log=tmp_path / "log")
        assert exp.proc.wait(timeout=20) == 1
        assert f"cannot listen for SNMP on 127.0.0.1:{port}" in exp.output()
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "snmp-indexes.json").write_text("{broken")
    cfg = snmp.agent_config(tmp_path / "c2.toml", tmp_path / "state", f"127.0.0.1:{snmp.free_udp_port()}")
    exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", "test:///default"], log=tmp_path / "log2")
    assert exp.proc.wait(timeout=20) == 1
    assert "snmp-indexes.json is damaged" in exp.output() and "Traceback" not in exp.output()
    env_secret = subprocess.run([sys.executable, "-m", "exporter"], cwd=ROOT,
                                capture_output=True, text=True,
                                env={"PATH": "/usr/bin:/bin", "LIBVIRT_EXPORTER_SNMP_COMMUNITIES": "x"})
    assert env_secret.returncode == 2 and "only in the config file" in env_secret.stderr


def test_scalar_types(agent: tuple[Exporter, str]) -> None:
    """Gauges and counters have the SNMP types the MIB declares."""
    _, target = agent
    out = snmp.ok("snmpget", *snmp.V2_ARGS, target, "lvxDomainCount.0", "lvxHostMemoryTotal.0",
                  "lvxSnapshotAge.0", "lvxDomainTableLastChange.0", "lvxLibvirtConnection.0")
    assert "Gauge32: 6" in out and "lvxLibvirtConnection.0 = INTEGER: up(1)" in out
    assert "Timeticks" in out


def test_fast_path_and_pysnmp_agree(agent: tuple[Exporter, str]) -> None:
    """v2c and v3 walks give the same instances and values (both on the fast paths; the v3 fast path against
    pysnmp alone: tests/test_fastv3.py)."""
    _, target = agent
    moving = {mib.BY_NAME[n].oid for n in ("sysUpTime", "lvxSnapshotAge", "vmHvUpTime", "lvxDomainUptime", "vmUpTime",
                                           "lvxDomainStatsAge")}

    def walk(*args: str) -> dict[str, str]:
        out = snmp.ok("snmpbulkwalk", *args, "-Oqn", "-Oe", "-OU", "-Cr25", target, ".1.3.6.1")
        return {oid: value for oid, value in snmp.values(out).items()
                if mib.object_of(tuple(int(x) for x in oid.strip(".").split("."))).oid not in moving}

    fast, slow = walk(*snmp.V2_ARGS), walk(*snmp.V3_ARGS)
    assert len(fast) > 300 and fast == slow
    # GETNEXT and GET agree too, including at the edges of the view
    for oid in (f"{LVX}.1.2.1.13.999", "1.3.6.1.2.1.1.7.0", "1.3.6.1.4.1.99999"):
        for tool in ("snmpgetnext", "snmpget"):
            v2 = snmp.run(tool, *snmp.V2_ARGS, "-On", target, oid)
            v3 = snmp.run(tool, *snmp.V3_ARGS, "-On", target, oid)
            assert (v2.returncode, v2.stdout) == (v3.returncode, v3.stdout), (tool, oid)
