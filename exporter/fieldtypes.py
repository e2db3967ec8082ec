"""The types of the field table (:mod:`exporter.fields`): a field, its Prometheus family and MIB column, an
info family and its labels, and the small constructors the table is written with."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GAUGE = "gauge"
COUNTER = "counter"

#: A snapshot unit -> the factor that turns it into the Prometheus base unit.
_BASE_UNIT: dict[str, float] = {"ns": 1e-9, "ms": 1e-3, "kib": 1024, "mib": 1024**2, "mhz": 1e6}


@dataclass(frozen=True, slots=True)
class Family:
    """A Prometheus family; its labels are its table's (:data:`TABLES`)."""

    name: str  # full exposed name; counters end in _total
    kind: str  # GAUGE or COUNTER
    help: str


@dataclass(frozen=True, slots=True)
class Column:
    """A column (or, for the host, a scalar) of LIBVIRT-EXPORTER-MIB."""

    number: int  # sub-identifier under the table's entry (or lvxHost)
    name: str
    syntax: str
    unit: str = ""  # the MIB's unit when it differs from the field's ("kib" for a field in bytes)


@dataclass(frozen=True, slots=True)
class Field:
    table: str  # a key of TABLES
    attr: str  # attribute of the table's snapshot object; dotted for a nested one ("memory.rss_kib")
    unit: str  # the snapshot's unit: ns, kib, bytes, mhz, count, code, bool, text
    group: str  # the collector that polls and exports it
    family: Family | None = None
    column: Column | None = None
    bulk: str = ""  # the key in libvirt's bulk stats, after the table's prefix ("rd.reqs" for block.N.rd.reqs)

    def get(self, obj: Any) -> Any:
        return getter(self.attr)(obj)

    def metric_value(self, raw: Any) -> float | int | None:
        """The value in the Prometheus family's base unit."""
        if raw is None:
            return None
        if self.unit == "bool":
            return int(raw)
        factor = _BASE_UNIT.get(self.unit)
        value: float | int = raw if factor is None else raw * factor
        return value

    def column_value(self, raw: Any) -> Any:
        """The value as the MIB column holds it (before the syntax's range is applied on the wire)."""
        if raw is None:
            return None
        if self.unit == "bool":
            return 1 if raw else 2  # TruthValue
        if self.unit == "percent":
            return round(raw)  # a whole percent: SNMP has no fractions
        if self.column is not None and self.column.unit == "kib" and self.unit == "bytes":
            return raw // 1024
        return raw

    # The renderers read tens of thousands of values per snapshot: they take these specialised readers,
    # which give what metric_value(get(obj)) and column_value(get(obj)) give, with no call in between.

    def metric_reader(self) -> Callable[[Any], Any]:
        """``obj`` -> the value in the family's base unit (None when absent)."""
        get = getter(self.attr)
        factor = _BASE_UNIT.get(self.unit)
        if self.unit == "bool":
            return lambda obj: None if (v := get(obj)) is None else int(v)
        if factor is not None:
            return lambda obj: None if (v := get(obj)) is None else v * factor
        return get

    def metric_scale(self) -> tuple[float | None, bool]:
        """(the factor :meth:`metric_value` multiplies by, or None; whether a truth value becomes 0 or 1): for
        renderers that convert a whole column at once, as :meth:`metric_reader` does value by value."""
        return (None, True) if self.unit == "bool" else (_BASE_UNIT.get(self.unit), False)

    def column_reader(self) -> Callable[[Any], Any]:
        """``obj`` -> the value as the MIB column holds it (None when absent)."""
        get = getter(self.attr)
        if self.unit == "bool":
            return lambda obj: None if (v := get(obj)) is None else (1 if v else 2)
        if self.unit == "percent":
            return lambda obj: None if (v := get(obj)) is None else round(v)
        if self.column is not None and self.column.unit == "kib" and self.unit == "bytes":
            return lambda obj: None if (v := get(obj)) is None else v // 1024
        return get


@dataclass(frozen=True, slots=True)
class Label:
    """A label of an info family: its name and how it is read from the table's object."""

    name: str
    get: Callable[[Any], str]
    attr: str = ""  # the attribute of the table's object it is read from (dotted for a nested one)


@dataclass(frozen=True, slots=True)
class InfoFamily:
    """A family whose series carries metadata as labels and the value 1."""

    table: str
    group: str
    family: Family
    labels: tuple[Label, ...]
    present: Callable[[Any], bool] = lambda _obj: True  # whether an object has the series at all
    value: Callable[[Any], Any] = lambda _obj: 1  # the series' value: 1, but for inovex's libvirt_domain_info_state


@dataclass(frozen=True, slots=True)
class Table:
    labels: tuple[str, ...]  # the labels every series of the table has, in order
    bulk_prefix: str = ""  # "block.N." style prefix of its bulk-stats keys, N the device's position



def getter(attr: str) -> Callable[[Any], Any]:
    return operator.attrgetter(attr)


def gauge(name: str, help: str) -> Family:
    return Family(name, GAUGE, help)


def counter(name: str, help: str) -> Family:
    return Family(name, COUNTER, help)


def column(number: int, name: str, syntax: str, unit: str = "") -> Column:
    return Column(number, name, syntax, unit)


def truth_text(value: bool) -> str:
    return str(value).lower()


def label(name: str, attr: str, convert: Callable[[Any], str] | None = None) -> Label:
    """A label read from ``attr``, a text attribute unless ``convert`` makes text of it."""
    get = getter(attr)
    if convert is None:
        return Label(name, get, attr)
    return Label(name, lambda obj: convert(get(obj)), attr)


#: inovex's family and labels (plus uuid), for the domains OpenStack Nova defined; the instance's id is the
#: domain's UUID.  LIBVIRT-EXPORTER-MIB's lvxMetadataTable holds the same labels, row by row.
