"""The served MIBs as a whole: every object of every module, and one snapshot laid out in all of them.

Each module is declared in its own file: the system group (:mod:`~exporter.snmp.mib_system`), our
LIBVIRT-EXPORTER-MIB (:mod:`~exporter.snmp.mib_lvx`, its value columns from :mod:`exporter.fields`),
libvirt-snmp's LIBVIRT-MIB (:mod:`~exporter.snmp.mib_libvirt`) and RFC 7666's VM-MIB
(:mod:`~exporter.snmp.mib_vm`).  ``tests/test_snmp.py`` (``test_mib_and_code_agree``,
``test_every_served_oid_resolves_in_the_mibs``) and ``tests/test_fields.py`` hold these declarations against
the MIB texts in ``mibs/``.  :func:`build_view` turns one snapshot into a :class:`~exporter.snmp.view.MibView`,
built once per snapshot and then only read by request handlers (and patched per event, :func:`put_domain`
and :func:`domain_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.snapshot import Domain, Snapshot
from exporter.snmp import mib_libvirt, mib_lvx, mib_system, mib_vm
from exporter.snmp.syntax import NotificationDef, ObjectDef, OidT
from exporter.snmp.view import Builder, Catalog, MibView

OBJECTS: tuple[ObjectDef, ...] = mib_system.OBJECTS + mib_lvx.OBJECTS + mib_libvirt.OBJECTS + mib_vm.OBJECTS
BY_NAME: Mapping[str, ObjectDef] = {o.name: o for o in OBJECTS}
CATALOG = Catalog(OBJECTS)
#: Objects readable through GET and walks (accessible-for-notify ones are not).
READABLE = CATALOG.readable
object_of = CATALOG.object_of


@dataclass(frozen=True, slots=True)
class Indexes:
    """Stable row indexes by UUID, from the index map."""

    domains: dict[str, int]  # the agent adds a domain's index when an event announces it
    pools: Mapping[str, int]
    networks: Mapping[str, int]


def build_view(
    snap: Snapshot,
    indexes: Indexes,
    system: mib_system.SystemInfo,
    *,
    table_last_change_ticks: int = 0,
    started_at: Mapping[str, float] | None = None,
    actions: Mapping[str, tuple[int, int, str, int]] | None = None,
    spin_lock: int = 0,
) -> MibView:
    """Every served instance for one snapshot.

    ``started_at`` gives the start time of domains the agent saw start (for
    lvxDomainUptime); ``actions`` the last action per domain UUID as
    (action, result, error, time) for the control columns.
    """
    b = Builder()
    put_scalars(b, snap, system, table_last_change_ticks, spin_lock, sum(1 for d in snap.domains if d.active))
    for dom in snap.domains:
        index = indexes.domains.get(dom.uuid)
        if index is not None:
            put_domain(b, dom, index, (started_at or {}).get(dom.uuid), (actions or {}).get(dom.uuid))
    mib_lvx.put_pools(b, snap.pools, indexes.pools)
    mib_lvx.put_networks(b, snap.networks, indexes.networks)
    return b.view(CATALOG)


def put_scalars(b: Builder, snap: Snapshot, system: mib_system.SystemInfo, table_last_change_ticks: int,
                spin_lock: int, active_count: int) -> None:
    """The scalars (system group, host, counts), which depend on the snapshot as a whole."""
    mib_system.put_scalars(b, snap, system, mib_lvx.LVX_ROOT)
    mib_lvx.put_scalars(b, snap, table_last_change_ticks, spin_lock, active_count)
    mib_vm.put_scalars(b, snap, system, table_last_change_ticks)


def put_domain(b: Builder, dom: Domain, index: int, started: float | None,
               action: tuple[int, int, str, int] | None) -> None:
    """Every row of one domain, in every table that has one."""
    mib_lvx.put_domain(b, dom, index, started, action)
    mib_libvirt.put_domain(b, dom)
    mib_vm.put_domain(b, dom, index, started)


def domain_rows(dom: Domain, index: int) -> list[tuple[OidT, OidT, OidT]]:
    """(table entry, first row, end row) of every row range that ``dom`` may have in a view, whatever its
    values: its index in the indexed tables, its name in lvxDomainNameTable, its UUID in libvirtGuestTable."""
    vm = [(entry, (index,), (index + 1,)) for entry in mib_vm.INDEXED_BY_DOMAIN]
    return [*mib_lvx.domain_ranges(dom, index), *vm, mib_libvirt.domain_range(dom)]


def event_notifications(kind: str, dom: Domain, index: int, detail: int, device: str) -> list[NotificationDef]:
    """The notifications of an event that changes no state (a migration's start or end, a disk error): ours only,
    since LIBVIRT-MIB and VM-MIB have none for them."""
    found = mib_lvx.event_notification(kind, dom, index, detail, device)
    return [found] if found is not None else []


def lifecycle_notifications(
    kind: str, name: str, uuid: str, index: int, state: int, reason: int, *, persistent: bool,
    previous_state: int | None,
) -> list[NotificationDef]:
    """The notifications of every MIB for one lifecycle event: ours and VM-MIB's with varbinds indexed by the
    domain's row, libvirt-snmp's as it sends it (:func:`~exporter.snmp.mib_libvirt.libvirt_guest_notification`,
    whose row status comes from the state alone; none for undefined).
    """
    result = []
    ours = mib_lvx.lifecycle_notification(kind, name, uuid, index, state, reason)
    if ours is not None:
        result.append(ours)
        if kind != "undefined":
            result.append(mib_libvirt.libvirt_guest_notification(name, uuid, state))
    vm = mib_vm.lifecycle_notification(kind, name, uuid, index, persistent=persistent, previous_state=previous_state)
    if vm is not None:
        result.append(vm)
    return result

