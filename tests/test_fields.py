"""The field table (exporter/fields.py) against itself, the MIB text, and both renderers, in process."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import fields
from exporter.fieldtypes import COUNTER
from exporter.prometheus import SPEC_BY_NAME
from exporter.snapshot import (
    ALL_GROUPS,
    EXPORT_GROUPS,
    Block,
    DirtyRate,
    Domain,
    Host,
    Interface,
    IoThread,
    IoTune,
    Job,
    Memory,
    Network,
    Perf,
    Snapshot,
    StoragePool,
    Vcpu,
)
from exporter.snmp import mib, mib_lvx, mib_system
from exporter.snmp.syntax import resolve
from exporter.textrender import snapshot_text
from tests.conftest import require
from tests.support import snmp

#: The MIB text's types for each syntax tag.
_SYNTAX = {
    "int": {"Integer32", "INTEGER", "TruthValue", "LvxDomainState"},
    "str": {"DisplayString", "OCTET STRING", "OctetString"},
    "bytes": {"MacAddress", "UUID"},
    "u32": {"Unsigned32"},
    "g32": {"Gauge32"},
    "c64": {"Counter64", "LvxGauge64"},
}
_UNITS = {"ns", "ms", "kib", "mib", "bytes", "mhz", "count", "code", "bool", "text", "s", "percent"}


def test_table_is_consistent() -> None:
    """Names, numbers and units are unique and well formed; every family's group is a collector."""
    names = [f.family.name for f in fields.FIELDS if f.family] + [i.family.name for i in fields.INFO_FAMILIES]
    assert len(names) == len(set(names))
    columns = [(f.table, f.column.number) for f in fields.FIELDS if f.column]
    assert len(columns) == len(set(columns))
    column_names = [f.column.name for f in fields.FIELDS if f.column]
    assert len(column_names) == len(set(column_names))
    for f in fields.FIELDS:
        assert f.table in fields.TABLES and f.unit in _UNITS and f.group in ALL_GROUPS + EXPORT_GROUPS, f
        assert f.family is not None or f.column is not None, f"{f.attr}: in no front end"
        if f.family is not None:
            assert re.fullmatch(r"libvirt_[a-z_]+", f.family.name), f.family.name
            assert f.family.name.endswith("_total") == (f.family.kind == COUNTER), f.family.name
            if f.unit == "ns":
                assert "_seconds" in f.family.name, f.family.name
            if f.unit in ("kib", "bytes"):
                assert "_bytes" in f.family.name, f.family.name
    bulk = [(f.table, f.bulk) for f in fields.FIELDS if f.bulk]
    assert len(bulk) == len(set(bulk)) + 1  # balloon.current is both the balloon size and memory in use


def test_mib_text_and_table_agree() -> None:
    """Every column of the table is in LIBVIRT-EXPORTER-MIB at its number with its syntax, and every
    column of the MIB's tables is in the table or declared explicitly in exporter/snmp/mib_lvx.py."""
    require(snmp.BASE_MIBS.joinpath("SNMPv2-SMI").exists(), "base MIBs missing: run `make base-mibs`")
    nodes = snmp.compiled_mibs()["LIBVIRT-EXPORTER-MIB"]
    in_text = {name: node for name, node in nodes.items() if isinstance(node, dict)
               and node.get("nodetype") in ("column", "scalar") and node.get("maxaccess") != "not-accessible"}
    for f in fields.FIELDS:
        if f.column is None:
            continue
        node = in_text.get(f.column.name)
        assert node is not None, f"{f.column.name} is in the field table but not in the MIB text"
        entry = ".".join(map(str, mib_lvx.ENTRIES[f.table]))
        assert node["oid"] == f"{entry}.{f.column.number}", f.column.name
        assert node["syntax"]["type"] in _SYNTAX[f.column.syntax], (f.column.name, node["syntax"])
        if f.unit == "bool":
            assert node["syntax"]["type"] == "TruthValue", f.column.name
    tables = {".".join(map(str, entry)): table for table, entry in mib_lvx.ENTRIES.items()}
    by_table = {table: {f.column.name for f in fields.of_table(table) if f.column} for table in fields.TABLES}
    explicit = {o.name for o in mib_lvx.OBJECTS} - {f.column.name for f in fields.FIELDS if f.column}
    for name, node in in_text.items():
        table = tables.get(node["oid"].rsplit(".", 1)[0])
        if table is not None:
            assert name in by_table[table] or name in explicit, f"{name} is in the MIB text but served by nobody"


def _full_domain() -> Domain:
    """A domain with every field set, each to a different number."""
    numbers = iter(range(1001, 10_000, 7))

    def filled(cls: Any, **given: Any) -> Any:
        values = {}
        for fld in dataclasses.fields(cls):
            if fld.name in given:
                continue
            if fld.type in ("int | None", "int"):
                values[fld.name] = next(numbers)
        return cls(**values, **given)

    return filled(Domain, name="full", uuid="6695eb01-f6a4-8304-79aa-97f2502e193f", state=1, active=True,
                  persistent=True, autostart=False, timed_out=False, stats_at=1_700_000_000.0, os_type="hvm",
                  job=filled(Job), last_job=filled(Job), perf=filled(Perf), dirty_rate=filled(DirtyRate),
                  iothreads=(filled(IoThread, id=1),),
                  memory=filled(Memory), vcpus=(filled(Vcpu, number=0), filled(Vcpu, number=1)),
                  blocks=(filled(Block, target="vda", source="/img/a.qcow2", bus="virtio", driver_type="qcow2",
                                 iotune=filled(IoTune), error_code=2),),
                  interfaces=(filled(Interface, target="tap0", mac="52:54:00:00:00:01", model="virtio",
                                     interface_type="bridge", bridge="br0"),))


def _snapshot() -> Snapshot:
    host = Host(hostname="h", driver="QEMU", cpus=8, cpu_mhz=2400, memory_total_bytes=2**34,
                memory_free_bytes=2**33)
    return Snapshot(up=True, taken_at=time.time(), host=host, domains=(_full_domain(),),
                    pools=(StoragePool("p", "11111111-2222-3333-4444-555555555555", 2, True, 10, 5, 5),),
                    networks=(Network("n", "21111111-2222-3333-4444-555555555555", True, False, "virbr0"),))


def _objects(snap: Snapshot) -> dict[str, list[tuple[Any, tuple[str, ...]]]]:
    """Each table's objects with their label values, as the renderer labels them."""
    dom = snap.domains[0]
    ids = (dom.name, dom.uuid)
    assert snap.host is not None
    return {
        "domain": [(dom, ids)], "job": [(dom, ids)], "perf": [(dom, ids)],
        "iothread": [(io, (*ids, str(io.id))) for io in dom.iothreads], "host": [(snap.host, ())],
        "vcpu": [(v, (*ids, str(v.number))) for v in dom.vcpus],
        "block": [(b, (*ids, b.target)) for b in dom.blocks],
        "interface": [(n, (*ids, n.target)) for n in dom.interfaces],
        "pool": [(p, (p.name, p.uuid)) for p in snap.pools], "network": [(n, (n.name, n.uuid)) for n in snap.networks],
    }


def test_every_family_renders_its_field() -> None:
    """/metrics holds, for every field with a family, the snapshot value in the family's base unit."""
    snap = _snapshot()
    samples = {}
    text = snapshot_text(snap, frozenset(ALL_GROUPS + EXPORT_GROUPS)).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    checked = 0
    for table, objects in _objects(snap).items():
        for f in fields.of_table(table):
            if f.family is None:
                continue
            spec = SPEC_BY_NAME[f.family.name]
            assert spec.labels == fields.TABLES[table].labels and spec.kind == f.family.kind
            for obj, ids in objects:
                name = f.family.name
                key = (name, tuple(sorted(zip(spec.labels, ids, strict=True))))
                expected = f.metric_value(f.get(obj))
                assert expected is not None, f"{f.attr} not set in the test's snapshot"
                assert samples[key] == pytest.approx(expected, rel=1e-12), (name, ids)
                checked += 1
    assert checked >= sum(1 for f in fields.FIELDS if f.family)


def test_every_column_serves_its_field() -> None:
    """The SNMP view holds, for every field with a column, the snapshot value in the column's unit."""
    snap = _snapshot()
    dom = snap.domains[0]
    indexes = mib.Indexes({dom.uuid: 4}, {snap.pools[0].uuid: 2}, {snap.networks[0].uuid: 3})
    view = mib.build_view(snap, indexes, mib_system.SystemInfo())
    rows: dict[str, list[tuple[int, ...]]] = {
        "domain": [(4,)], "job": [(4,)], "perf": [(4,)], "iothread": [(4, 1)], "host": [(0,)],
        "vcpu": [(4, 0), (4, 1)], "block": [(4, 1)],
        "interface": [(4, 1)],
        "pool": [(2,)], "network": [(3,)],
    }
    now = time.time()
    for table, objects in _objects(snap).items():
        for f in fields.of_table(table):
            if f.column is None:
                continue
            for (obj, _ids), row in zip(objects, rows[table], strict=True):
                oid = mib_lvx.ENTRIES[table] + (f.column.number,) + row
                entry = view.get(oid)
                assert entry is not None, (f.column.name, row)
                syntax, value = resolve(entry, now)
                expected = resolve((f.column.syntax, f.column_value(f.get(obj))), now)
                assert (syntax, value) == expected, (f.column.name, row)



def test_used_percent_is_derived_only_from_both_figures() -> None:
    """inovex's used_percent: (available - usable) / available; absent (not 0, not NaN) without both."""
    assert Memory(available_kib=1000, usable_kib=250).used_percent == 75.0
    assert Memory(available_kib=1000).used_percent is None
    assert Memory(usable_kib=250).used_percent is None
    assert Memory(available_kib=0, usable_kib=0).used_percent is None
