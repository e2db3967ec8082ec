"""The label sets of each domain's series, as exposition text, kept from one rendering to the next.

A domain's labels (its name and uuid, its devices' and vCPUs' names, the info families' metadata labels)
come from its definition and change seldom, while its numbers change every poll.  :class:`LabelSets`
writes them once per definition: each domain's entry is keyed by its uuid and holds a fingerprint, the
tuple of every attribute its labels are read from (the info families' label attributes, the metadata,
each device's and vCPU's name...).  A domain whose fingerprint is unchanged at the next rendering reuses
its entry; a new fingerprint (a rename, a new disk, a changed source or state) writes a new one; a domain
that is gone loses its entry, so that the cache holds the domains of the last snapshot rendered and no more.

Label texts are written in the family's declared label order (domain, uuid, then the table's and the info
family's own; prometheus_client sorts them by name, which is the one difference between the two renderings),
values escaped, and followed by ``} `` so that a line is the family's ``name{``, the label text and the
value.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any

from exporter import fields
from exporter.fieldtypes import InfoFamily
from exporter.snapshot import Domain

#: The tables of a domain's vCPUs and devices: (table, the domain's attribute holding its objects, the
#: attribute that names each one in the table's third label).
CHILDREN: tuple[tuple[str, str, str], ...] = (
    ("iothread", "iothreads", "id"),
    ("pin", "vcpu_pins", "vcpu"),
    ("vcpu", "vcpus", "number"),
    ("block", "blocks", "target"),
    ("interface", "interfaces", "target"),
)
#: Tables whose series are the domain's own (its labels are domain and uuid).
OWN_TABLES = ("domain", "job", "perf")
#: Info families of a domain's tables, in :data:`fields.INFO_FAMILIES` order.
DOMAIN_INFOS: tuple[InfoFamily, ...] = tuple(
    i for i in fields.INFO_FAMILIES if i.table in OWN_TABLES or i.table in {c[0] for c in CHILDREN})


def escape(value: str) -> str:
    """A label value escaped as the exposition format needs it."""
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value  # nearly every label value: nothing to escape
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """``name="value",...} `` of (name, value) pairs, in their order (the family's declared label order)."""
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs) + "} "


def _fingerprint_getter(table: str, first: tuple[str, ...]) -> Callable[[Any], Any]:
    """Reads what the labels of an object of ``table`` depend on: ``first`` and each info label's attribute
    (the top one of a dotted attribute: ``nova`` for ``nova.name``)."""
    attrs = list(first)
    for info in DOMAIN_INFOS:
        if info.table == table:
            for label in info.labels:
                top = label.attr.split(".", 1)[0]
                if top not in attrs:
                    attrs.append(top)
    return operator.attrgetter(*attrs)


_DOMAIN_KEY = _fingerprint_getter("domain", ("name", "uuid", "metadata"))
_CHILD_KEYS = tuple((operator.attrgetter(attr), _fingerprint_getter(table, (name,)))
                    for table, attr, name in CHILDREN)
_EXTRA_LABEL = tuple(fields.TABLES[table].labels[2] for table, _, _ in CHILDREN)


def fingerprint(dom: Domain) -> tuple[Any, ...]:
    """Everything the label sets of ``dom``'s series are made of."""
    return (_DOMAIN_KEY(dom), *(tuple(map(key, children(dom))) for children, key in _CHILD_KEYS))


@dataclass(frozen=True, slots=True)
class DomainLabels:
    """One domain's label texts (each ending in ``} ``)."""

    key: tuple[Any, ...]  # the fingerprint they were written for
    own: str  # of the domain's own series (tables domain, job, perf)
    children: tuple[tuple[str, ...], ...]  # per table of CHILDREN, of each object's series
    info: tuple[tuple[str | None, ...], ...]  # per family of DOMAIN_INFOS, of each object's (None: no series)
    metadata: str | None  # of libvirt_domain_metadata_info (None: the domain has none)


def _objects(dom: Domain, table: str) -> list[tuple[Any, tuple[tuple[str, str], ...]]]:
    """(object, its table labels as pairs) of each object of ``table`` in ``dom``."""
    ids = (("domain", dom.name), ("uuid", dom.uuid))
    if table in OWN_TABLES:
        return [(dom, ids)]
    n = next(n for n, child in enumerate(CHILDREN) if child[0] == table)
    _, attr, name = CHILDREN[n]
    return [(obj, (*ids, (_EXTRA_LABEL[n], str(getattr(obj, name))))) for obj in getattr(dom, attr)]


def _build(dom: Domain, key: tuple[Any, ...], infos: frozenset[int]) -> DomainLabels:
    """The label texts of ``dom``, of the info families at positions ``infos`` of DOMAIN_INFOS (the others
    are left empty); a text that two tables share (a vCPU's, in the vcpu and pin tables) is kept once."""
    ids = (("domain", dom.name), ("uuid", dom.uuid))
    seen: dict[str, str] = {}
    children = tuple(tuple(seen.setdefault(text, text) for text in (label_text(pairs) for _, pairs in
                                                                    _objects(dom, table)))
                     for table, _, _ in CHILDREN)
    info = tuple(
        tuple(label_text((*pairs, *((lb.name, lb.get(obj)) for lb in family.labels))) if family.present(obj)
              else None for obj, pairs in _objects(dom, family.table)) if n in infos else ()
        for n, family in enumerate(DOMAIN_INFOS))
    metadata = label_text((*ids, *dom.metadata)) if dom.metadata else None
    return DomainLabels(key, label_text(ids), children, info, metadata)


def _host_fingerprint(domains: tuple[Domain, ...]) -> tuple[list[Any], ...]:
    """The fingerprints of all domains at once, table by table (each domain's, then each table's objects
    of all domains and how many each domain has): one pass per table, no call per domain."""
    found: list[list[Any]] = [list(map(_DOMAIN_KEY, domains))]
    for children, key in _CHILD_KEYS:
        found.append(list(map(len, map(children, domains))))
        found.append(list(map(key, chain.from_iterable(map(children, domains)))))
    return tuple(found)


class LabelSets:
    """Each domain's :class:`DomainLabels`, kept for the domains of the last snapshot rendered."""

    def __init__(self, groups: frozenset[str]) -> None:
        """``groups``: the enabled collectors (the label texts of the info families they do not export are
        not written)."""
        self._infos = frozenset(n for n, info in enumerate(DOMAIN_INFOS) if info.group in groups)
        self._entries: dict[str, DomainLabels] = {}
        self._last: tuple[tuple[list[Any], ...], list[DomainLabels]] | None = None
        self.written = 0  # entries written so far (for tests)

    def __len__(self) -> int:
        return len(self._entries)

    def of(self, domains: tuple[Domain, ...]) -> list[DomainLabels]:
        """The entry of each domain, in order; entries of domains not among them are dropped."""
        host = _host_fingerprint(domains)
        if self._last is not None and self._last[0] == host:  # the usual poll: no definition changed
            return self._last[1]
        old, new = self._entries, {}
        result = []
        for dom in domains:
            key = fingerprint(dom)
            entry = old.get(dom.uuid)
            if entry is None or entry.key != key:
                entry = _build(dom, key, self._infos)
                self.written += 1
            new[dom.uuid] = entry
            result.append(entry)
        self._entries = new
        self._last = (host, result)
        return result
