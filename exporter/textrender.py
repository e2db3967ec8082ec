"""A snapshot written as exposition text, family by family: what prometheus_client writes for
:func:`exporter.prometheus.snapshot_families`, byte for byte but for the order of the labels in a series
(the families' declared order here, sorted by name there).

The per-domain families (nearly every series) are written a column at a time: a family's values for all
domains' objects read in one pass, formatted by :func:`~exporter.gofloat.go_floats` and joined to label
texts that :class:`~exporter.labelsets.LabelSets` keeps from one rendering to the next.  The few other
series (the exporter's own, the host's, pools and networks) go through :func:`exporter.prometheus.fill`.
Each family is encoded as soon as it is written, so a rendering holds little more than its output.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import add, attrgetter, is_not, mul
from typing import Any

from exporter import fields
from exporter.fieldtypes import InfoFamily
from exporter.gofloat import Numbers, go_floats
from exporter.labelsets import CHILDREN, DOMAIN_INFOS, OWN_TABLES, DomainLabels, LabelSets, label_text
from exporter.prometheus import METADATA_INFO, SPECS, enabled_specs, fill
from exporter.snapshot import NO_JOB, NO_PERF, Domain, Snapshot


class _Lines:
    """A :class:`~exporter.prometheus.Sink` writing the series that are not a domain's, as text lines."""

    def __init__(self, groups: frozenset[str]) -> None:
        self._enabled = enabled_specs(groups)
        self.lines: dict[str, list[str]] = {}

    def add(self, name: str, labels: Iterable[str], value: float | int | None) -> None:
        spec = self._enabled.get(name)
        if spec is None or value is None:
            return
        values = tuple(labels)
        self._line(name, tuple(zip(spec.labels, values, strict=True)), value)

    def add_named(self, name: str, labels: tuple[str, ...], named: tuple[tuple[str, str], ...], value: int
                  ) -> None:
        spec = self._enabled.get(name)
        if spec is not None:
            self._line(name, (*zip(spec.labels, labels, strict=True), *named), value)

    def _line(self, name: str, pairs: tuple[tuple[str, str], ...], value: float | int) -> None:
        text = f"{{{label_text(pairs)}" if pairs else " "
        self.lines.setdefault(name, []).append(f"{name}{text}{go_floats((value,))[0]}\n")


@dataclass(frozen=True, slots=True)
class _Step:
    """How one family is written: its header, and where its per-domain series come from (kind "" for none)."""

    name: str
    header: str
    kind: str = ""  # "field", "info", "metadata" or ""
    table: str = ""
    read: Callable[[Any], Any] | None = None  # field: the raw value of an object
    factor: float | None = None  # field: what the raw value is multiplied by
    truth: bool = False  # field: a truth value, written 0 or 1
    info: int = -1  # info: the family's position in DOMAIN_INFOS


def _header(name: str, kind: str, help: str) -> str:
    return f"# HELP {name} {help.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n# TYPE {name} {kind}\n"


@functools.lru_cache(maxsize=8)
def _steps(groups: frozenset[str]) -> tuple[_Step, ...]:
    """One step per family that ``groups`` export, in :data:`SPECS` order."""
    domain_tables = set(OWN_TABLES) | {table for table, _, _ in CHILDREN}
    by_field = {f.family.name: f for f in fields.FIELDS if f.family is not None and f.table in domain_tables}
    by_info = {i.family.name: n for n, i in enumerate(DOMAIN_INFOS)}
    enabled = enabled_specs(groups)
    steps = []
    for spec in SPECS:
        if spec.name not in enabled:
            continue
        header = _header(spec.name, spec.kind, spec.help)
        field = by_field.get(spec.name)
        if field is not None:
            factor, truth = field.metric_scale()
            steps.append(_Step(spec.name, header, "field", field.table, attrgetter(field.attr), factor, truth))
        elif spec.name in by_info:
            info = by_info[spec.name]
            steps.append(_Step(spec.name, header, "info", DOMAIN_INFOS[info].table, info=info))
        elif spec.name == METADATA_INFO:
            steps.append(_Step(spec.name, header, "metadata"))
        else:
            steps.append(_Step(spec.name, header))
    return tuple(steps)


class _Columns:
    """The objects of each domain table across all domains of a snapshot, with their label texts, in the
    order the series are written (domain by domain, each domain's objects in order)."""

    def __init__(self, domains: tuple[Domain, ...], labels: list[DomainLabels]) -> None:
        self._domains = domains
        self._labels = labels
        self._tables: dict[str, tuple[list[Any], list[str]]] = {}

    def table(self, table: str) -> tuple[list[Any], list[str]]:
        found = self._tables.get(table)
        if found is None:
            found = self._tables[table] = self._gather(table)
        return found

    def _gather(self, table: str) -> tuple[list[Any], list[str]]:
        domains, labels = self._domains, self._labels
        if table == "domain":
            return list(domains), [entry.own for entry in labels]
        if table in ("job", "perf"):  # a row only while the domain has a job (or had one) or perf events on
            if table == "job":
                has = [d.job is not NO_JOB or d.last_job is not NO_JOB for d in domains]
            else:
                has = [d.perf is not NO_PERF for d in domains]
            return list(compress(domains, has)), [entry.own for entry in compress(labels, has)]
        n = next(n for n, child in enumerate(CHILDREN) if child[0] == table)
        objects = attrgetter(CHILDREN[n][1])
        return (list(chain.from_iterable(map(objects, domains))),
                list(chain.from_iterable(entry.children[n] for entry in labels)))

    def field(self, step: _Step) -> tuple[list[str], list[Any]]:
        """(label texts, values) of a field's series."""
        objs, labels = self.table(step.table)
        assert step.read is not None
        values = list(map(step.read, objs))
        if None in values:
            keep = list(map(is_not, values, repeat(None)))
            values, labels = list(compress(values, keep)), list(compress(labels, keep))
        if step.truth:
            values = list(map(int, values))
        elif step.factor is not None:
            values = list(map(mul, values, repeat(step.factor)))
        return labels, values

    def info(self, step: _Step) -> tuple[list[str], list[Any]]:
        """(label texts, values) of an info family's series."""
        family: InfoFamily = DOMAIN_INFOS[step.info]
        if family.table in OWN_TABLES:
            objs = list(self._domains)
            texts: list[str | None] = [entry.info[step.info][0] for entry in self._labels]
        else:
            objs = self.table(family.table)[0]
            texts = list(chain.from_iterable(entry.info[step.info] for entry in self._labels))
        if None in texts:
            keep = list(map(is_not, texts, repeat(None)))
            objs, texts = list(compress(objs, keep)), list(compress(texts, keep))
        values = list(map(family.value, objs))
        if None in values:
            keep = list(map(is_not, values, repeat(None)))
            values, texts = list(compress(values, keep)), list(compress(texts, keep))
        return texts, values  # type: ignore[return-value]  # no None left

    def metadata(self) -> tuple[list[str], list[Any]]:
        texts = [entry.metadata for entry in self._labels if entry.metadata is not None]
        return texts, [1] * len(texts)


def _series(name: str, labels: list[str], values: list[Any], numbers: Numbers) -> str:
    """The lines of one family's series: ``name{`` + label text + value, each."""
    if not values:
        return ""
    return f"{name}{{" + f"\n{name}{{".join(map(add, labels, numbers.texts(name, values))) + "\n"


class TextRenderer:
    """Writes snapshots as exposition text, keeping each domain's label sets between renderings."""

    def __init__(self, groups: frozenset[str]) -> None:
        self._groups = groups
        self.labels = LabelSets(groups)
        self._numbers = Numbers()

    def render(self, snap: Snapshot) -> list[bytes]:
        """The exposition of ``snap`` without its ages, family by family."""
        lines = _Lines(self._groups)
        fill(lines, snap, None, domains=False)
        columns = _Columns(snap.domains, self.labels.of(snap.domains))
        out = []
        numbers = self._numbers
        for step in _steps(self._groups):
            own = "".join(lines.lines.pop(step.name, ()))
            if step.kind == "field":
                body = _series(step.name, *columns.field(step), numbers)
            elif step.kind == "info":
                body = _series(step.name, *columns.info(step), numbers)
            elif step.kind == "metadata":
                body = _series(step.name, *columns.metadata(), numbers)
            else:
                body = ""
            if own or body:
                out.append(f"{step.header}{own}{body}".encode())
        numbers.done()
        return out


def snapshot_text(snap: Snapshot, groups: frozenset[str], renderer: TextRenderer | None = None) -> bytes:
    """The exposition text of one snapshot, without its age (cacheable).  A ``renderer`` that rendered
    earlier snapshots reuses the label sets of the domains they had."""
    return b"".join((renderer or TextRenderer(groups)).render(snap))
