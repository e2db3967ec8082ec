"""The served instances of one snapshot: sorted columns of values, read by every protocol path.

A :class:`Builder` collects a snapshot's instances (the MIB modules put them in); its :class:`MibView` is
then only read: a GET is a bisect, a GETNEXT a bisect over column OIDs and then over that column's rows.
Which object an OID belongs to, and so which exception a GET without a value gets, is the
:class:`Catalog`'s answer, built once from every MIB module's objects (exporter/snmp/mib.py).
"""

from __future__ import annotations

import bisect
import enum
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from exporter.snmp.syntax import NOTIFY, ObjectDef, OidT, Value

C = TypeVar("C")
B = TypeVar("B")


class Catalog:
    """Every served object, found by OID."""

    __slots__ = ("_by_oid", "readable")

    def __init__(self, objects: Iterable[ObjectDef]) -> None:
        self._by_oid = {o.oid: o for o in objects}
        #: Objects readable through GET and walks (accessible-for-notify ones are not).
        self.readable = frozenset(o.oid for o in self._by_oid.values() if o.access != NOTIFY)

    def object_of(self, oid: OidT) -> ObjectDef | None:
        """The served object that ``oid`` is an instance of, if any."""
        for length in range(len(oid), 0, -1):
            obj = self._by_oid.get(oid[:length])
            if obj is not None:
                return obj
        return None


class Missing(enum.Enum):
    """Why a GET finds no value (the exceptions of RFC 3416)."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"


class _Column:
    """The instances of one object (a column, or one scalar), in index order."""

    __slots__ = ("oid", "rows", "syntax", "values")

    def __init__(self, oid: OidT, syntax: str, rows: list[OidT], values: list[Any]) -> None:
        self.oid = oid
        self.syntax = syntax
        self.rows = rows  # index suffixes, sorted
        self.values = values  # python values (or callables of the time), aligned with rows


class MibView:
    """Every served instance, in OID order, kept by column.  Immutable once built.

    Each column holds its row indexes and raw values in two lists (a row's
    index tuple is shared by all the columns of its table), so a view costs a
    few list slots per instance rather than an OID tuple and a dict entry.
    GETNEXT is a bisect over column OIDs and then over that column's rows.
    """

    __slots__ = ("_size", "_starts", "catalog", "columns")

    def __init__(self, columns: list[_Column], catalog: Catalog) -> None:
        self.catalog = catalog
        self.columns = sorted(columns, key=lambda c: c.oid)
        self._starts = [c.oid for c in self.columns]
        self._size = sum(len(c.rows) for c in self.columns)

    def __len__(self) -> int:
        return self._size

    def _column_of(self, oid: OidT) -> tuple[int, OidT | None]:
        """(position of the last column starting at or before ``oid``, ``oid``'s index in it or None)."""
        pos = bisect.bisect_right(self._starts, oid) - 1
        if pos >= 0:
            prefix = self.columns[pos].oid
            if oid[:len(prefix)] == prefix:
                return pos, oid[len(prefix):]
        return pos, None

    def get(self, oid: OidT) -> Value | None:
        pos, index = self._column_of(oid)
        if index is None:
            return None
        col = self.columns[pos]
        row = bisect.bisect_left(col.rows, index)
        if row < len(col.rows) and col.rows[row] == index:
            return col.syntax, col.values[row]
        return None

    def lookup(self, oid: OidT) -> Value | Missing:
        """A GET of ``oid``: its value, or which exception every read path answers (RFC 3416 4.2.1):
        noSuchInstance for an object we serve that has no such row, noSuchObject for anything else."""
        entry = self.get(oid)
        if entry is not None:
            return entry
        obj = self.catalog.object_of(oid)
        readable = obj is not None and obj.oid in self.catalog.readable
        return Missing.NO_SUCH_INSTANCE if readable else Missing.NO_SUCH_OBJECT

    def position_after(self, oid: OidT) -> tuple[int, int]:
        """(column, row) of the first instance strictly after ``oid``; the column may be past the end."""
        pos, index = self._column_of(oid)
        if index is not None:
            row = bisect.bisect_right(self.columns[pos].rows, index)
            if row < len(self.columns[pos].rows):
                return pos, row
        return pos + 1, 0

    def walk(self, oid: OidT) -> Iterator[tuple[OidT, Value]]:
        """The instances strictly after ``oid``, in order."""
        pos, row = self.position_after(oid)
        for col in self.columns[pos:]:
            for index, value in zip(col.rows[row:], col.values[row:], strict=False):
                yield col.oid + index, (col.syntax, value)
            row = 0

    def items(self) -> Iterator[tuple[OidT, Value]]:
        return self.walk(())

    def patched(self, remove: Iterable[tuple[OidT, OidT, OidT]],
                add: Builder, scalars: Builder) -> MibView:
        """A new view: rows ``remove``d (table entry, first row, end row), ``add``'s rows put in, and the
        scalar columns replaced by ``scalars``'.  Only the columns touched are copied; the others are shared
        with this view, which stays as it was."""
        columns = {c.oid: c for c in self.columns}
        copied: dict[OidT, _Column] = {}

        def own(oid: OidT, syntax: str) -> _Column:
            col = copied.get(oid)
            if col is None:
                old = columns.get(oid)
                col = copied[oid] = _Column(oid, syntax, list(old.rows), list(old.values)) if old is not None \
                    else _Column(oid, syntax, [], [])
            return col

        by_entry: dict[OidT, list[_Column]] = {}
        for col in self.columns:
            by_entry.setdefault(col.oid[:-1], []).append(col)
        for entry, first, end in remove:
            for old in by_entry.get(entry, ()):
                rows = copied[old.oid].rows if old.oid in copied else old.rows
                lo = bisect.bisect_left(rows, first)
                if lo < len(rows) and rows[lo] < end:
                    col = own(old.oid, old.syntax)
                    hi = bisect.bisect_left(col.rows, end, lo)
                    del col.rows[lo:hi], col.values[lo:hi]
        for oid, (syntax, rows, values) in add.cells():
            col = own(oid, syntax)
            for row, value in zip(rows, values, strict=False):
                at = bisect.bisect_left(col.rows, row)
                if at < len(col.rows) and col.rows[at] == row:
                    col.values[at] = value
                else:
                    col.rows.insert(at, row)
                    col.values.insert(at, value)
        for oid, (syntax, rows, values) in scalars.cells():
            copied[oid] = _Column(oid, syntax, list(rows), list(values))
        columns.update(copied)
        return MibView([c for c in columns.values() if c.rows], self.catalog)


def bulk_rounds(cursors: Sequence[C], rounds: int, step: Callable[[C], tuple[C | None, B]]) -> Iterator[list[B]]:
    """The repeated part of a GETBULK (RFC 3416 4.2.3; AgentX's GetBulk, RFC 2741 7.2.3.3, the same).

    ``step(cursor)`` gives (the cursor after it, or None at the end of the view; its binding). Each round
    yields one binding per cursor; a cursor that ended keeps giving its end binding; the rounds stop
    early once every cursor has ended.
    """
    current: list[C] = list(cursors)
    ended: dict[int, B] = {}
    for _ in range(rounds if current else 0):
        row = []
        for j, cursor in enumerate(current):
            if j not in ended:
                following, bind = step(cursor)
                if following is None:
                    ended[j] = bind
                else:
                    current[j] = following
                row.append(bind)
            else:
                row.append(ended[j])
        yield row
        if len(ended) == len(current):
            return


class Builder:
    """Collects instances column by column (a snapshot's, or one domain's for a patch)."""

    def __init__(self) -> None:
        self._columns: dict[OidT, tuple[str, list[OidT], list[Any]]] = {}
        self._slots: dict[tuple[OidT, int], tuple[list[OidT], list[Any]]] = {}  # (entry, column) -> its lists

    def _slot(self, obj: OidT, syntax: str) -> tuple[list[OidT], list[Any]]:
        col = self._columns.get(obj)
        if col is None:
            col = self._columns[obj] = (syntax, [], [])
        return col[1], col[2]

    def put(self, obj: OidT, index: OidT, syntax: str, value: Any) -> None:
        if value is not None:
            rows, values = self._slot(obj, syntax)
            rows.append(index)
            values.append(value)

    def _column_slot(self, entry: OidT, column: int, syntax: str) -> tuple[list[OidT], list[Any]]:
        self._slots[(entry, column)] = slot = self._slot(entry + (column,), syntax)
        return slot

    def columns(self, entry: OidT, index: OidT, cells: Iterable[tuple[int, str, Any]]) -> None:
        """One row's cells of the table under ``entry``: (column, syntax, value), None values left out."""
        slots = self._slots
        for column, syntax, value in cells:
            if value is not None:
                rows, values = slots.get((entry, column)) or self._column_slot(entry, column, syntax)
                rows.append(index)
                values.append(value)

    def read(self, entry: OidT, index: OidT, readers: Iterable[tuple[int, str, Callable[[Any], Any]]],
             obj: Any) -> None:
        """:meth:`columns` with each cell's value read from ``obj``: (column, syntax, reader) (no tuple made
        per cell: this fills most of a view)."""
        slots = self._slots
        for column, syntax, reader in readers:
            value = reader(obj)
            if value is not None:
                rows, values = slots.get((entry, column)) or self._column_slot(entry, column, syntax)
                rows.append(index)
                values.append(value)

    def cells(self) -> Iterator[tuple[OidT, tuple[str, list[OidT], list[Any]]]]:
        return iter(self._columns.items())

    def view(self, catalog: Catalog) -> MibView:
        result = []
        for oid, (syntax, rows, values) in self._columns.items():
            if any(a >= b for a, b in itertools.pairwise(rows)):  # rows not in index order (or repeated): sort
                by_index = dict(zip(rows, values, strict=False))  # a repeated index keeps its last value
                rows = sorted(by_index)
                values = [by_index[r] for r in rows]
            result.append(_Column(oid, syntax, rows, values))
        return MibView(result, catalog)
