"""The libvirt boundary against the real test driver (no daemon)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import libvirt
import pytest

from exporter.errors import ConnectionLost
from exporter.hostgen import HostShape, domain_name, runstate
from exporter.snapshot import ALL_GROUPS, STATE_PAUSED, STATE_RUNNING, STATE_SHUTOFF
from exporter.source import Source, domxml


def _poll(uri: str, groups=ALL_GROUPS, keep=lambda _n: True):
    source = Source(uri)
    source.open()
    try:
        return source, source.poll(groups, keep)
    finally:
        source.close()


def test_default_host_matches_libvirt() -> None:
    """test:///default: every field matches what libvirt itself reports."""
    _, result = _poll("test:///default")
    conn = libvirt.openReadOnly("test:///default")
    (dom,) = result.domains
    ref = conn.lookupByName(dom.name)
    state, reason = ref.state()
    info = ref.info()
    assert (dom.uuid, dom.id, dom.state, dom.state_reason) == (ref.UUIDString(), ref.ID(), state, reason)
    assert dom.max_memory_kib == info[1] and dom.memory_kib == info[2]
    assert dom.vcpus_current == info[3] == len(dom.vcpus)
    assert dom.persistent == bool(ref.isPersistent()) and dom.autostart == bool(ref.autostart())
    assert dom.os_type == ET.fromstring(ref.XMLDesc()).findtext("os/type")
    # Counters of the test driver grow with the clock: ours lie between two direct reads.
    assert 0 < dom.cpu_time_ns <= ref.info()[4]
    host_info = conn.getInfo()
    assert result.host.cpus == host_info[2] and result.host.cpu_mhz == host_info[3]
    assert result.host.hostname == conn.getHostname()
    assert result.host.driver == "TEST"
    assert {p.name for p in result.pools} == {p.name() for p in conn.listAllStoragePools()}
    assert {n.name for n in result.networks} == {n.name() for n in conn.listAllNetworks()}
    conn.close()


def test_demo_host_devices_and_states(demo_uri: str) -> None:
    """The demo node file: states, disks, NICs, balloon and XML metadata all arrive."""
    source, result = _poll(demo_uri)
    # the test driver serves the state group in bulk, and an I/O thread group with no threads in it
    assert source.bulk_groups() == frozenset({"state", "iothread"})
    by_name = {d.name: d for d in result.domains}
    assert set(by_name) == {"web1", "web2", "db1", "batch1", "legacy1", "crashy1"}
    assert by_name["web1"].state == STATE_RUNNING
    assert by_name["batch1"].state == STATE_PAUSED
    assert by_name["legacy1"].state == STATE_SHUTOFF and by_name["legacy1"].id == -1
    web1 = by_name["web1"]
    assert web1.title == "Front-end web server"
    assert web1.max_memory_kib == 4096 * 1024 and web1.memory_kib == 3072 * 1024
    assert [b.target for b in web1.blocks] == ["vda", "vdb"]
    vda = web1.blocks[0]
    assert (vda.bus, vda.driver_type, vda.source) == ("virtio", "qcow2", "/var/lib/libvirt/images/web1.qcow2")
    assert vda.read_bytes and vda.capacity_bytes and vda.allocation_bytes is not None
    (nic,) = web1.interfaces
    assert (nic.target, nic.mac, nic.bridge, nic.model) == ("tap-web1", "52:54:00:00:a1:01", "br0", "virtio")
    assert nic.receive_bytes and nic.transmit_packets
    assert web1.memory.actual_kib == 3072 * 1024 and web1.memory.rss_kib is not None
    db1 = by_name["db1"]
    assert [n.target for n in db1.interfaces] == ["tap-db1a", "tap-db1b"]
    assert len(db1.vcpus) == 8 and db1.vcpus[0].physical_cpu is not None
    # An inactive domain has its configuration but no live counters.
    legacy = by_name["legacy1"]
    assert legacy.blocks[0].source == "/var/lib/libvirt/images/legacy1.img"
    assert legacy.blocks[0].read_bytes is None and legacy.interfaces == () and legacy.vcpus == ()
    assert legacy.vcpus_max == 1 and legacy.cpu_time_ns is None
    assert {p.name for p in result.pools} == {"images"}
    images = result.pools[0]
    ref_pool = libvirt.openReadOnly(demo_uri).storagePoolLookupByName("images").info()
    assert (images.state, images.capacity_bytes, images.allocation_bytes, images.available_bytes) == tuple(ref_pool)
    assert {(n.name, n.bridge, n.active) for n in result.networks} == {
        ("default", "virbr0", True), ("isolated", "virbr1", True)}
    assert all(v == 0 for v in result.errors.values())


def test_generated_host(make_host) -> None:
    """A generated 200-domain host: every domain, state and device is present."""
    shape = HostShape(domains=200, disks=2, nics=3, vcpus=4)
    _, result = _poll(make_host(shape))
    assert len(result.domains) == 200
    for i, dom in enumerate(result.domains):
        assert dom.name == domain_name(shape, i)
        assert dom.state == runstate(shape, i)
        assert len(dom.blocks) == 2
        if dom.active:
            assert len(dom.interfaces) == 3 and len(dom.vcpus) == 4
            assert all(n.receive_bytes is not None for n in dom.interfaces)


def test_collectors_limit_what_is_polled(demo_uri: str) -> None:
    """A disabled group is neither polled nor present in the result."""
    _, result = _poll(demo_uri, groups=("state",))
    web1 = next(d for d in result.domains if d.name == "web1")
    assert web1.blocks == () and web1.interfaces == () and web1.vcpus == ()
    assert web1.cpu_time_ns is None and web1.memory.actual_kib is None
    assert result.pools == () and result.networks == () and result.host.cpus is None


def test_domain_filter(demo_uri: str) -> None:
    """Filtered-out domains never reach the snapshot."""
    _, result = _poll(demo_uri, keep=lambda name: name.startswith("web"))
    assert [d.name for d in result.domains] == ["web1", "web2"]


def test_unreachable_uri_raises_connection_lost(tmp_path) -> None:
    """A URI that cannot be opened becomes the project's ConnectionLost."""
    source = Source(f"test+unix:///default?socket={tmp_path}/nothing-here")
    with pytest.raises(ConnectionLost, match="nothing-here"):
        source.open()
    with pytest.raises(ConnectionLost):
        source.poll(ALL_GROUPS)


def test_xml_is_cached_until_invalidated(demo_uri: str) -> None:
    """Domain XML is parsed once per definition, not every poll."""
    source = Source(demo_uri)
    source.open()
    calls = []
    original = domxml.parse

    def counting(xml: str, metadata=None):
        calls.append(1)
        return original(xml, metadata)

    domxml.parse = counting
    try:
        source.poll(ALL_GROUPS)
        first = len(calls)
        source.poll(ALL_GROUPS)
        assert len(calls) == first == 6
        source.invalidate("4d1f0a52-0c6c-4c3e-9b1a-0000000000a1")
        source.poll(ALL_GROUPS)
        assert len(calls) == first + 1
    finally:
        domxml.parse = original
        source.close()


def test_domxml_units_and_sources() -> None:
    """Memory units convert to KiB; every disk source kind is understood."""
    cfg = domxml.parse(
        "<domain><memory unit='GiB'>2</memory><currentMemory unit='MiB'>1536</currentMemory>"
        "<vcpu current='2'>4</vcpu><os><type arch='aarch64' machine='virt'>hvm</type></os><devices>"
        "<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='sdb' bus='scsi'/></disk>"
        "<disk type='volume' device='disk'><source pool='p' volume='v1'/><target dev='vdc'/></disk>"
        "<disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdd'/></disk>"
        "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>"
        "</devices></domain>"
    )
    assert cfg.max_memory_kib == 2 * 1024 * 1024 and cfg.memory_kib == 1536 * 1024
    assert (cfg.vcpus_max, cfg.vcpus_current, cfg.arch, cfg.machine) == (4, 2, "aarch64", "virt")
    assert [d.source for d in cfg.disks] == ["/dev/sdb", "p/v1", "pool/img", ""]
    assert cfg.disk("hdc").device == "cdrom"
    assert domxml.parse("<not xml") == domxml.DomainConfig()


def test_domain_vanishing_mid_poll_is_skipped() -> None:
    """A domain destroyed between the bulk call and its per-domain calls is skipped, the rest kept.

    The fault is real (libvirt raises "domain not found" for a really gone
    domain); only its timing is forced, by destroying the domain from a second
    connection at the moment the poll reaches it.
    """
    admin = libvirt.open("test:///default")
    admin.createXML("<domain type='test'><name>victim</name><memory>1024</memory><vcpu>1</vcpu>"
                    "<os><type>hvm</type></os></domain>", 0)

    class RacingSource(Source):
        def _config(self, dom, uuid, dom_id, stale):  # type: ignore[no-untyped-def]
            if dom.name() == "victim":
                admin.lookupByName("victim").destroy()  # transient: gone for good
            return super()._config(dom, uuid, dom_id, stale)

    source = RacingSource("test:///default")
    source.open()
    try:
        result = source.poll(ALL_GROUPS)
    finally:
        source.close()
        admin.close()
    assert [d.name for d in result.domains] == ["test"]
    assert sum(result.errors.values()) == 0


def test_failing_group_is_counted_and_the_poll_goes_on(demo_uri: str) -> None:
    """One stats group failing for one domain is counted under its group; everything else is served.

    The test driver never fails blockStats, so this fault is injected at the
    source boundary: the domain object of web1 raises a real libvirtError
    from blockStats.  This is the only libvirt stand-in in the suite.
    """

    class FailingBlocks:
        def __init__(self, dom):  # type: ignore[no-untyped-def]
            self._dom = dom

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self._dom, name)

        def blockStats(self, target):  # type: ignore[no-untyped-def]
            raise libvirt.libvirtError("injected: block device is busy")

    class InjectingSource(Source):
        def _domain(self, conn, job, *args, **kwargs):  # type: ignore[no-untyped-def]
            if job.name == "web1":
                job = dataclasses.replace(job, dom=FailingBlocks(job.dom))
            return super()._domain(conn, job, *args, **kwargs)

    source = InjectingSource(demo_uri)
    source.open()
    try:
        result = source.poll(ALL_GROUPS)
    finally:
        source.close()
    assert result.errors["block"] == 2  # web1 has two disks
    web1 = next(d for d in result.domains if d.name == "web1")
    assert all(b.read_bytes is None and b.capacity_bytes for b in web1.blocks)  # blockInfo still worked
    assert web1.interfaces[0].receive_bytes is not None
    assert len(result.domains) == 6


#: The pure parsers of the boundary: they take plain dicts, tuples and ints and must never import libvirt,
#: directly or through another exporter module (tests/test_parse.py feeds them recorded answers).
PURE_MODULES = ("exporter.source.parse", "exporter.source.domain", "exporter.source.domxml")


def _module_imports(path) -> tuple[set[str], set[str]]:  # type: ignore[no-untyped-def]
    """(libvirt modules, exporter modules) that ``path`` imports anywhere: top level, functions, TYPE_CHECKING."""
    import ast

    libvirt_mods: set[str] = set()
    exporter_mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        libvirt_mods.update(n for n in names if n.split(".")[0].startswith("libvirt"))
        exporter_mods.update(n for n in names if n.split(".")[0] == "exporter")
    return libvirt_mods, exporter_mods


def test_only_source_imports_libvirt() -> None:
    """The exporter/source/ package is the single libvirt boundary, and its pure parsers stay libvirt-free."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    package = root / "exporter"
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    imports = {name: _module_imports(path) for name, path in modules.items()}
    importers = {name for name, (libvirt_mods, _) in imports.items() if libvirt_mods}
    # The same by text, so that an import the AST walk would miss (importlib, __import__) is caught too.
    importers |= {name for name, path in modules.items()
                  if re.search(r"^\s*(import libvirt|from libvirt)|import_module\(.libvirt|__import__\(.libvirt",
                               path.read_text(encoding="utf-8"), re.M)}
    outside = sorted(n for n in importers if not n.startswith("exporter.source."))
    assert outside == [], f"only exporter/source/ may import libvirt: {outside}"
    assert "exporter.source.connection" in importers  # the check does see a real importer

    for pure in PURE_MODULES:
        assert pure in modules, pure
        trail, todo, reached = {pure: [pure]}, [pure], set()
        while todo:
            current = todo.pop()
            reached.add(current)
            for imported in imports[current][1]:
                if imported in modules and imported not in trail:
                    trail[imported] = [*trail[current], imported]
                    todo.append(imported)
        dirty = sorted(" -> ".join(trail[m]) for m in reached if m in importers)
        assert dirty == [], f"{pure} must not import libvirt, even indirectly: {dirty}"
