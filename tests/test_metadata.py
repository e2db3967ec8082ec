"""What a domain's XML says beyond the basics: OpenStack Nova's instance element (libvirt_domain_openstack_info,
inovex's family and labels plus uuid; lvxMetadataTable), any other metadata that the [metadata] section maps
to labels (libvirt_domain_metadata_info; lvxMetadataTable from position 8), and the devices' serial, cache,
discard, protocol, MTU and Open vSwitch port (labels of the _info families; LVX columns)."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import fields, hostgen
from exporter.config import resolve
from exporter.errors import ConfigError
from exporter.metadata import compile_map
from exporter.poller import snapshot_of
from exporter.snapshot import ALL_GROUPS, NovaInstance
from exporter.snmp import mib, mib_lvx, mib_system
from exporter.source import Source, domxml
from exporter.textrender import snapshot_text
from tests.conftest import demo_agent
from tests.support import snmp
from tests.support.process import ROOT, Exporter

#: The [metadata] section of the tests: the site metadata that hostgen --site-metadata and the demo host carry.
SITE_NAMESPACES = {"site": hostgen.SITE_NAMESPACE}
SITE_LABELS = {"team": "/domain/metadata/site:owner/@team", "cost_centre": "/domain/metadata/site:owner/site:cost"}
SITE_TOML = f"""
[metadata.namespaces]
site = "{hostgen.SITE_NAMESPACE}"

[metadata.labels]
team = "{SITE_LABELS['team']}"
cost_centre = "{SITE_LABELS['cost_centre']}"
"""

INOVEX_LABELS = ["domain", "instance_name", "instance_id", "flavor_name", "user_name", "user_id", "project_name",
                 "project_id"]


def _xml(metadata: str) -> str:
    return f"<domain type='kvm'><name>i-1</name><uuid>00000000-0000-4000-8000-000000000001</uuid>" \
           f"<metadata>{metadata}</metadata></domain>"


def _nova(version: str) -> str:
    return (f'<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/{version}">'
            "<nova:package version='27.1.0'/><nova:name>srv</nova:name><nova:flavor name='m1.tiny'><nova:vcpus>1"
            "</nova:vcpus></nova:flavor><nova:owner><nova:user uuid='u-1'>alice</nova:user>"
            "<nova:project uuid='p-1'>demo</nova:project></nova:owner></nova:instance>")


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_nova_metadata_of_every_version(version: str) -> None:
    assert domxml.parse(_xml(_nova(version))).nova == NovaInstance("srv", "m1.tiny", "alice", "u-1", "demo", "p-1")


def test_other_metadata_is_not_novas() -> None:
    """Another manager's element named instance, an empty <metadata>, none at all: no Nova metadata."""
    other = "<x:instance xmlns:x='http://example.org/ns'><x:name>srv</x:name></x:instance>"
    assert domxml.parse(_xml(other)).nova is None
    assert domxml.parse(_xml("")).nova is None
    assert domxml.parse("<domain><name>n</name></domain>").nova is None
    partial = '<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:name>s</nova:name>' \
              "</nova:instance>"
    assert domxml.parse(_xml(partial)).nova == NovaInstance(name="s")  # what is missing is empty, not invented


def test_xpath_results_become_label_values() -> None:
    """An attribute, an element's text, string(), count(), a boolean, concat(); nothing found is ""."""
    mapping = compile_map({
        "team": "/domain/metadata/site:owner/@team", "cost": "/domain/metadata/site:owner/site:cost",
        "trimmed": "string(metadata/site:owner/site:note)", "disks": "count(devices/disk)",
        "tagged": "boolean(metadata/site:owner/site:tag[. = 'prod'])", "both": "concat(name, '@', @type)",
        "absent": "/domain/metadata/other:thing", "tags": "metadata/site:owner/site:tag",
    }, {**SITE_NAMESPACES, "other": "http://example.org/other"})
    xml = (f"<domain type='kvm'><name>i-1</name><metadata><s:owner xmlns:s='{hostgen.SITE_NAMESPACE}' team='db'>"
           "<s:cost>cc-1</s:cost><s:note>\n  spaced  \n</s:note><s:tag>prod</s:tag><s:tag>eu</s:tag></s:owner>"
           "</metadata><devices><disk/><disk/></devices></domain>")
    assert mapping.names == ("team", "cost", "trimmed", "disks", "tagged", "both", "absent", "tags")
    assert dict(mapping.evaluate(xml)) == {"team": "db", "cost": "cc-1", "trimmed": "spaced", "disks": "2",
                                           "tagged": "true", "both": "i-1@kvm", "absent": "", "tags": "prod"}
    # A domain with none of it has no labels at all (no series), and neither has XML that does not parse.
    assert mapping.evaluate("<domain type='kvm'><name>n</name></domain>") == (
        ("team", ""), ("cost", ""), ("trimmed", ""), ("disks", "0"), ("tagged", "false"), ("both", "n@kvm"),
        ("absent", ""), ("tags", ""))
    only_site = compile_map(SITE_LABELS, SITE_NAMESPACES)
    assert only_site.evaluate("<domain type='kvm'><name>n</name></domain>") == ()
    assert only_site.evaluate("<domain><name>") == ()
    assert domxml.parse(xml).metadata == ()  # no [metadata] section, nothing read


@pytest.mark.parametrize(("section", "key", "fragment"), [
    ({"labels": {"team": "/domain/metadata/site:owner["}}, "metadata.labels.team", "not a valid XPath expression"),
    ({"labels": {"team": "/domain/metadata/nope:owner"}}, "metadata.labels.team",
     "cannot be evaluated: Undefined namespace prefix"),
    ({"labels": {"team": "lower-case(name)"}}, "metadata.labels.team", "cannot be evaluated: Unregistered function"),
    ({"labels": {"uuid": "uuid"}}, "metadata.labels.uuid", "clashes with the label 'uuid'"),
    ({"labels": {"domain": "name"}}, "metadata.labels.domain", "clashes with the label 'domain'"),
    ({"labels": {"cost-centre": "name"}}, "metadata.labels.cost-centre", "not a valid Prometheus label name"),
    ({"labels": {"__name": "name"}}, "metadata.labels.__name", "not a valid Prometheus label name"),
    ({"labels": {"team": ""}}, "metadata.labels.team", "must be an XPath expression"),
    ({"labels": {"team": 3}}, "metadata.labels.team", "expected a string, got int"),
    ({"labels": ["name"]}, "metadata.labels", "expected a table of strings"),
    ({"namespaces": {"site": ""}, "labels": {"team": "name"}}, "metadata.namespaces.site", "must be a namespace URI"),
    ({"namespaces": {"a:b": "urn:x"}}, "metadata.namespaces.a:b", "not a valid namespace prefix"),
    ({"team": "name"}, "metadata.team", "unknown key"),
])
def test_bad_metadata_section_names_the_key(section: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({}, {}, {"metadata": section}, config_file="/etc/c.toml")
    assert info.value.key == key and fragment in str(info.value), str(info.value)


def test_bad_metadata_section_stops_the_command(tmp_path) -> None:
    """Exit 2 with one line naming the key, before anything listens."""
    path = tmp_path / "c.toml"
    path.write_text('[metadata.labels]\nteam = "/domain/metadata/site:owner/@team"\n')
    result = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "libvirt-exporter: configuration error: metadata.labels.team: cannot be evaluated: Undefined namespace "
        f"prefix (from config file {path})"], result.stderr


def _site_values(xml: str) -> dict[str, str]:
    """team and cost centre as ElementTree reads them from the XML libvirt gave back (not through XPath)."""
    owner = ET.fromstring(xml).find(f"metadata/{{{hostgen.SITE_NAMESPACE}}}owner")
    if owner is None:
        return {}
    return {"team": owner.get("team", ""), "cost_centre": owner.findtext(f"{{{hostgen.SITE_NAMESPACE}}}cost", "")}


def test_site_metadata_of_a_generated_host(tmp_path) -> None:
    """hostgen --site-metadata with Nova's too: libvirt_domain_metadata_info for the domains whose XML (as the
    test driver gives it back) has the site element, with its values, and lvxMetadataTable's rows 8 and 9; the
    Nova rows stay at 1-7."""
    import libvirt

    shape = hostgen.HostShape(domains=15, nova=True, site=True)
    node = tmp_path / "node.xml"
    node.write_text(hostgen.node_xml(shape))
    conn = libvirt.openReadOnly(f"test://{node}")
    try:
        expected = {d.name(): _site_values(d.XMLDesc(0)) for d in conn.listAllDomains(0)}
    finally:
        conn.close()
    assert sum(1 for v in expected.values() if v) == 12 and {"team": "team2", "cost_centre": ""} in expected.values()
    source = Source(f"test://{node}", metadata=compile_map(SITE_LABELS, SITE_NAMESPACES))
    source.open()
    try:
        snap = snapshot_of(source.poll(ALL_GROUPS), time.time(), 0.1)
    finally:
        source.close()
    text = snapshot_text(snap, frozenset(ALL_GROUPS)).decode()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "libvirt_domain_metadata_info"]
    served = {s.labels["domain"]: s.labels for s in family.samples}
    assert served == {name: {"domain": name, "uuid": hostgen.domain_uuid(shape, int(name.removeprefix("vm"))),
                             **values} for name, values in expected.items() if values}
    assert list(family.samples[0].labels) == ["domain", "uuid", "team", "cost_centre"]

    indexes = mib.Indexes({d.uuid: n for n, d in enumerate(snap.domains, start=1)}, {}, {})
    view = mib.build_view(snap, indexes, mib_system.SystemInfo())
    label, value = mib_lvx.LVX_METADATA_ENTRY + (2,), mib_lvx.LVX_METADATA_ENTRY + (3,)
    for n, dom in enumerate(snap.domains, start=1):
        site = {view.get(label + (n, pos)): view.get(value + (n, pos)) for pos in (8, 9)}
        if expected[dom.name]:
            assert {k[1]: v[1] for k, v in site.items() if k and v} == expected[dom.name]
        else:
            assert site == {None: None}
        nova_rows = [view.get(label + (n, pos)) for pos in range(1, 8)]
        assert all(nova_rows) == (dom.nova is not None)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hostgen.HostShape, object]]:
    """A generated host with Nova metadata on three domains in four, polled once in process."""
    shape = hostgen.HostShape(domains=12, nova=True)
    node = tmp_path_factory.mktemp("nova") / "node.xml"
    node.write_text(hostgen.node_xml(shape))
    source = Source(f"test://{node}")
    source.open()
    try:
        result = source.poll(ALL_GROUPS)
    finally:
        source.close()
    yield shape, snapshot_of(result, time.time(), 0.1)


def test_openstack_info_only_for_novas_domains(generated: tuple[hostgen.HostShape, object]) -> None:
    shape, snap = generated
    text = snapshot_text(snap, frozenset(ALL_GROUPS)).decode()  # type: ignore[arg-type]
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "libvirt_domain_openstack_info"]
    series = {s.labels["domain"]: s for s in family.samples}
    expected = {hostgen.domain_name(shape, i): hostgen.nova_instance(shape, i) for i in range(shape.domains)}
    assert set(series) == {name for name, nova in expected.items() if nova is not None} and len(series) == 9
    for name, sample in series.items():
        nova = expected[name]
        assert nova is not None and sample.value == 1
        assert sorted(sample.labels) == sorted([*INOVEX_LABELS, "uuid"])
        assert sample.labels == {
            "domain": name, "uuid": sample.labels["instance_id"], "instance_name": nova.name,
            "instance_id": hostgen.domain_uuid(shape, int(name.removeprefix(shape.prefix))),
            "flavor_name": nova.flavor, "user_name": nova.user_name, "user_id": nova.user_id,
            "project_name": nova.project_name, "project_id": nova.project_id}


def test_metadata_table_holds_the_same_labels(generated: tuple[hostgen.HostShape, object]) -> None:
    _, snap = generated
    domains = snap.domains  # type: ignore[attr-defined]
    indexes = mib.Indexes({d.uuid: n for n, d in enumerate(domains, start=1)}, {}, {})
    view = mib.build_view(snap, indexes, mib_system.SystemInfo())  # type: ignore[arg-type]
    label, value = mib_lvx.LVX_METADATA_ENTRY + (2,), mib_lvx.LVX_METADATA_ENTRY + (3,)
    for n, dom in enumerate(domains, start=1):
        rows = {view.get(label + (n, pos)): view.get(value + (n, pos)) for pos in range(1, 9)}
        if dom.nova is None:
            assert rows == {None: None}
            continue
        got = {k[1]: v[1] for k, v in rows.items() if k is not None and v is not None}
        assert got == {lb.name: lb.get(dom) for lb in fields.OPENSTACK.labels}
        assert list(got) == INOVEX_LABELS[1:]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, str]]:
    """The demo host (three of its domains are Nova's, one has the site metadata of examples/demo.toml) served
    over HTTP and SNMP, with that [metadata] section."""
    with demo_agent(tmp_path_factory.mktemp("demo-nova"), SITE_TOML) as served:
        yield served


def test_demo_metadata_over_http_and_snmp(demo: tuple[Exporter, str]) -> None:
    """The same labels for the same domains through /metrics (both metadata families) and a walk of
    lvxMetadataTable."""
    exp, target = demo
    metrics = exp.scrape()
    by_uuid = {s["uuid"]: s for s in metrics.series("libvirt_domain_openstack_info")}
    assert {s["domain"] for s in by_uuid.values()} == {"web1", "web2", "db1"}
    assert by_uuid[next(u for u, s in by_uuid.items() if s["domain"] == "db1")]["project_name"] == "data"
    (site,) = metrics.series("libvirt_domain_metadata_info")
    assert (site["domain"], site["team"], site["cost_centre"]) == ("batch1", "analytics", "cc-204")
    by_uuid[site["uuid"]] = site
    names = {s["uuid"]: s["domain"] for s in metrics.series("libvirt_domain_info")}
    walk = snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", target, "lvxMetadataTable"))
    domain_uuid = snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", target, "lvxDomainUUID"))
    uuid_of = {oid.rsplit(".", 1)[1]: value.strip('"') for oid, value in domain_uuid.items()}
    table: dict[str, dict[str, str]] = {}
    entry = ".".join(map(str, mib_lvx.LVX_METADATA_ENTRY))
    for oid, value in walk.items():
        column, index, position = oid.lstrip(".").removeprefix(entry + ".").split(".")
        table.setdefault(f"{index}.{position}", {})[column] = value.strip('"')
    served: dict[str, dict[str, str]] = {}
    for key, row in table.items():
        uuid = uuid_of[key.split(".")[0]]
        served.setdefault(uuid, {})[row["2"]] = row["3"]
    assert set(served) == set(by_uuid)
    for uuid, labels in served.items():
        series = by_uuid[uuid]
        assert labels == {k: v for k, v in series.items() if k not in ("domain", "uuid")}, names[uuid]


def test_device_definitions_give_inovex_labels() -> None:
    """A disk's serial, driver cache and discard modes and network protocol, a NIC's MTU and Open vSwitch
    interface id, from the domain XML."""
    xml = """<domain type='kvm'><name>i</name><devices>
      <disk type='network' device='disk'><driver name='qemu' type='raw' cache='writeback' discard='unmap'/>
        <source protocol='rbd' name='volumes/volume-1'><host name='10.0.0.1' port='6789'/></source>
        <target dev='vda' bus='virtio'/><serial>vol-1</serial></disk>
      <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
      <interface type='bridge'><mac address='fa:16:3e:00:00:01'/><source bridge='br-int'/>
        <virtualport type='openvswitch'><parameters interfaceid='port-1'/></virtualport>
        <target dev='tap1'/><model type='virtio'/><mtu size='1442'/></interface>
      <interface type='network'><source network='default'/><target dev='tap2'/></interface>
    </devices></domain>"""
    cfg = domxml.parse(xml)
    rbd, cdrom = cfg.disks
    assert (rbd.serial, rbd.driver_name, rbd.cache, rbd.discard, rbd.protocol, rbd.source) == (
        "vol-1", "qemu", "writeback", "unmap", "rbd", "volumes/volume-1")
    assert (cdrom.serial, cdrom.cache, cdrom.discard, cdrom.protocol) == ("", "", "", "")
    ovs, plain = cfg.nics
    assert (ovs.mtu, ovs.virtual_interface) == (1442, "port-1")
    assert (plain.mtu, plain.virtual_interface) == (None, "")


def test_demo_device_labels_over_http_and_snmp(demo: tuple[Exporter, str]) -> None:
    """web1's first disk and NIC carry the labels in /metrics, and the same values in the LVX columns."""
    exp, target = demo
    metrics = exp.scrape()
    (vda,) = [s for s in metrics.series("libvirt_domain_block_stats_info")
              if s["domain"] == "web1" and s["target_device"] == "vda"]
    assert (vda["serial"], vda["driver_name"], vda["driver_cache"], vda["driver_discard"], vda["source_protocol"]) \
        == ("0c3f9b5e-5f7a-4d5c-9e2b-7d1a6c8e4f01", "qemu", "none", "unmap", "")
    (nic,) = [s for s in metrics.series("libvirt_domain_interface_stats_info") if s["domain"] == "web1"]
    assert (nic["mtu_size"], nic["virtual_interface"]) == ("1450", "7d4e2a6b-1c3f-4e5d-8a9b-0c1d2e3f4a5b")
    serials = snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", target, "lvxBlockSerial"))
    assert "0c3f9b5e-5f7a-4d5c-9e2b-7d1a6c8e4f01" in serials.values()
    mtus = snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", "-OU", target, "lvxInterfaceMtu"))
    assert list(mtus.values()) == ["1450"]  # the only NIC whose definition sets one
