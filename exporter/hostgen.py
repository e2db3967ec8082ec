"""Generate hosts for libvirt's test driver: N domains x D disks x I NICs x V vCPUs.

Used by the tests and the benchmarks, and handy for trying the exporter at
scale without a hypervisor::

    python -m exporter.hostgen --domains 1000 --disks 2 --nics 2 --vcpus 4 -o /tmp/host.xml
    libvirt-exporter --libvirt.uri test:///tmp/host.xml

Every fifth domain after the first is paused and every seventh shut off, so a
generated host shows several states (use ``--all-running`` to avoid that).
"""

from __future__ import annotations

import argparse
import sys
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from exporter.snapshot import NovaInstance

_NAMESPACE = uuidlib.UUID("a4a7c1de-52b5-4c44-9d6c-6c1b7e0f0000")


@dataclass(frozen=True, slots=True)
class HostShape:
    domains: int = 10
    disks: int = 2
    nics: int = 2
    vcpus: int = 4
    memory_mib: int = 1024
    mixed_states: bool = True
    prefix: str = "vm"
    nova: bool = False  # give most domains OpenStack Nova's metadata (see nova_instance)
    site: bool = False  # give most domains a site's own metadata (see site_owner)


def domain_name(shape: HostShape, index: int) -> str:
    return f"{shape.prefix}{index:05d}"


def domain_uuid(shape: HostShape, index: int) -> str:
    return str(uuidlib.uuid5(_NAMESPACE, domain_name(shape, index)))


#: Nova's metadata namespace as recent releases write it.
NOVA_NAMESPACE = "http://openstack.org/xmlns/libvirt/nova/1.1"


def nova_instance(shape: HostShape, index: int) -> NovaInstance | None:
    """The Nova metadata of domain ``index``: every fourth domain has none (not every domain is Nova's)."""
    if not shape.nova or index % 4 == 3:
        return None
    project = index % 3
    return NovaInstance(name=f"server-{index}", flavor=("m1.small", "m1.large")[index % 2],
                        user_name=f"user{project}", user_id=str(uuidlib.uuid5(_NAMESPACE, f"user{project}")),
                        project_name=f"project{project}", project_id=str(uuidlib.uuid5(_NAMESPACE, f"p{project}")))


def _nova_xml(nova: NovaInstance | None) -> str:
    if nova is None:
        return ""
    return (f"<nova:instance xmlns:nova={quoteattr(NOVA_NAMESPACE)}>"
            f"<nova:name>{escape(nova.name)}</nova:name><nova:flavor name={quoteattr(nova.flavor)}/><nova:owner>"
            f"<nova:user uuid={quoteattr(nova.user_id)}>{escape(nova.user_name)}</nova:user>"
            f"<nova:project uuid={quoteattr(nova.project_id)}>{escape(nova.project_name)}</nova:project>"
            "</nova:owner></nova:instance>")


#: The namespace of the made-up site metadata (``--site-metadata``), for trying the [metadata] section.
SITE_NAMESPACE = "http://example.org/xmlns/site/1.0"


def site_owner(shape: HostShape, index: int) -> tuple[str, str] | None:
    """(team, cost centre) of domain ``index`` in its site metadata: every fifth domain has none, every third
    no cost centre ("")."""
    if not shape.site or index % 5 == 4:
        return None
    return f"team{index % 3}", "" if index % 3 == 2 else f"cc-{100 + index % 4}"


def _metadata_xml(shape: HostShape, index: int) -> str:
    nova = _nova_xml(nova_instance(shape, index))
    site = ""
    owner = site_owner(shape, index)
    if owner is not None:
        cost = f"<site:cost>{escape(owner[1])}</site:cost>" if owner[1] else ""
        site = f"<site:owner xmlns:site={quoteattr(SITE_NAMESPACE)} team={quoteattr(owner[0])}>{cost}</site:owner>"
    return f"<metadata>{nova}{site}</metadata>" if nova or site else ""


def runstate(shape: HostShape, index: int) -> int:
    """The initial state given to domain ``index``: 1 running, 3 paused, 5 shut off."""
    if not shape.mixed_states or index == 0:
        return 1
    if index % 7 == 0:
        return 5
    if index % 5 == 0:
        return 3
    return 1


def domain_xml(shape: HostShape, index: int, *, domain_type: str = "test", with_runstate: bool = True) -> str:
    name = domain_name(shape, index)
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file={quoteattr(f'/var/lib/libvirt/images/{name}-{d}.qcow2')}/>"
        f"<target dev='vd{chr(ord('a') + d)}' bus='virtio'/></disk>"
        for d in range(shape.disks)
    )
    nics = "".join(
        f"<interface type='bridge'><mac address='52:54:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:"
        f"{index & 255:02x}:{n:02x}'/><source bridge='br{n}'/>"
        f"<target dev='t{index:05d}n{n}'/><model type='virtio'/></interface>"
        for n in range(shape.nics)
    )
    extra = ""
    ns = ""
    if with_runstate and runstate(shape, index) != 1:
        ns = " xmlns:test='http://libvirt.org/schemas/domain/test/1.0'"
        extra = f"<test:runstate>{runstate(shape, index)}</test:runstate>"
    return (
        f"<domain type='{domain_type}'{ns}><name>{name}</name><uuid>{domain_uuid(shape, index)}</uuid>"
        f"<memory unit='MiB'>{shape.memory_mib}</memory><vcpu>{shape.vcpus}</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os>{_metadata_xml(shape, index)}"
        f"<devices>{disks}{nics}<memballoon model='virtio'/></devices>{extra}</domain>"
    )


def node_xml(shape: HostShape) -> str:
    domains = "\n".join(domain_xml(shape, i) for i in range(shape.domains))
    return (
        "<node>\n<cpu><mhz>2400</mhz><model>x86_64</model><nodes>1</nodes><sockets>2</sockets>"
        "<cores>16</cores><threads>2</threads></cpu>\n<memory>536870912</memory>\n"
        f"{domains}\n</node>\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.hostgen", description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--disks", type=int, default=2)
    parser.add_argument("--nics", type=int, default=2)
    parser.add_argument("--vcpus", type=int, default=4)
    parser.add_argument("--all-running", action="store_true")
    parser.add_argument("--nova", action="store_true", help="give most domains OpenStack Nova's metadata")
    parser.add_argument("--site-metadata", action="store_true",
                        help=f"give most domains a site's own metadata (<site:owner team=...><site:cost>, namespace "
                             f"{SITE_NAMESPACE})")
    parser.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    args = parser.parse_args(argv)
    for name in ("domains", "disks", "nics", "vcpus"):
        if getattr(args, name) < (1 if name in ("domains", "vcpus") else 0):
            parser.error(f"--{name} is too small")
    shape = HostShape(args.domains, args.disks, args.nics, args.vcpus, mixed_states=not args.all_running,
                      nova=args.nova, site=args.site_metadata)
    text = node_xml(shape)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
