"""The README's metrics table, made from the declarations (:data:`exporter.prometheus.SPECS`, which takes
every per-object family from the field table) so that the two cannot drift apart.

``python -m exporter.docs`` rewrites the table in README.md; ``tests/test_prometheus.py`` fails while the
README's table differs from :func:`metrics_table`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from exporter import fields
from exporter.prometheus import METADATA_INFO, SPECS

_HEADER = "| metric | type | labels | collector | SNMP (LIBVIRT-EXPORTER-MIB) | meaning |\n|---|---|---|---|---|---|\n"


def metrics_table() -> str:
    """The metrics table in Markdown, a row per family in exposition order."""
    column = {f.family.name: f.column.name for f in fields.FIELDS if f.family is not None and f.column is not None}
    column[fields.OPENSTACK.family.name] = column[METADATA_INFO] = "lvxMetadataTable"
    rows = []
    for spec in SPECS:
        labels = ", ".join(f"`{label}`" for label in spec.labels)
        snmp = f"`{column[spec.name]}`" if spec.name in column else ""
        rows.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.group} | {snmp} | {spec.help} |\n")
    return _HEADER + "".join(rows)


def table_span(text: str) -> tuple[int, int]:
    """Where the metrics table is in the README's text: (start, end) offsets."""
    start = text.index("| metric | type |", text.index("## Metrics"))
    end = text.index("\n\n", start) + 1
    return start, end


def main() -> int:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = table_span(text)
    readme.write_text(text[:start] + metrics_table() + text[end:], encoding="utf-8")
    print(f"rewrote the metrics table in {readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
