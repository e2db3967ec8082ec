"""Site metadata: XPath expressions over a domain's XML, each giving one label of
``libvirt_domain_metadata_info`` (and one row of lvxMetadataTable).

Nova's own metadata has a family of its own (``libvirt_domain_openstack_info``); this
is for every other manager (oVirt, Proxmox-style tags, a site's own elements), set in
the config file::

    [metadata.namespaces]
    site = "http://example.org/xmlns/site/1.0"

    [metadata.labels]
    team = "/domain/metadata/site:owner/@team"
    cost_centre = "string(/domain/metadata/site:owner/site:cost)"

An expression is evaluated with the domain's ``<domain>`` element as the context node, once per
definition (not per poll).  A string, number or boolean result is the label's value; a node-set
gives the string value of its first node (an element's text, an attribute's value); nothing found
gives "".  Pure: never talks to libvirt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

#: The labels every series of the family already has.
RESERVED = ("domain", "uuid")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Domain XML comes from libvirt, but what is inside <metadata> was written by whoever defined the domain.
_EMPTY_DOMAIN = etree.fromstring(b"<domain/>")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=False)


class MetadataError(ValueError):
    """A label or namespace of the ``[metadata]`` section that cannot be used; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class MetadataMap:
    """The configured labels, in the order of the config file, each with its compiled expression."""

    labels: tuple[tuple[str, str], ...] = ()  # (label, XPath expression)
    namespaces: tuple[tuple[str, str], ...] = ()  # (prefix, namespace URI)
    _compiled: tuple[Any, ...] = field(default=(), compare=False, hash=False, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.labels)

    def __bool__(self) -> bool:
        return bool(self.labels)

    def evaluate(self, xml: str) -> tuple[tuple[str, str], ...]:
        """(label, value) for every configured label, "" where nothing is found; () if every value is empty
        or the XML cannot be parsed."""
        if not self.labels:
            return ()
        try:
            root = etree.fromstring(xml.encode(), _PARSER)
        except etree.XMLSyntaxError:
            return ()
        values = tuple((name, _evaluate(compiled, root)) for (name, _), compiled in zip(self.labels, self._compiled,
                                                                                          strict=True))
        return values if any(value for _, value in values) else ()


def _evaluate(xpath: Any, root: Any) -> str:
    try:
        return _text(xpath(root))
    except etree.XPathError:  # checked at start-up; a document can still make a function fail
        return ""


def _text(result: Any) -> str:
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return "" if result != result else (str(int(result)) if result.is_integer() else repr(result))
    if isinstance(result, list):
        if not result:
            return ""
        first = result[0]
        if isinstance(first, str):  # an attribute or text node: lxml gives a "smart string"
            return str(first).strip()
        if isinstance(first, etree._Element):
            return "".join(first.itertext()).strip()
        return str(first).strip()
    return str(result).strip()


def compile_map(labels: Mapping[str, str], namespaces: Mapping[str, str]) -> MetadataMap:
    """Check and compile the ``[metadata]`` section; raises :class:`MetadataError` naming the bad key."""
    for prefix, uri in namespaces.items():
        key = f"metadata.namespaces.{prefix}"
        if not _PREFIX.fullmatch(prefix) or ":" in prefix:
            raise MetadataError(key, "is not a valid namespace prefix")
        if not isinstance(uri, str) or not uri.strip():
            raise MetadataError(key, "must be a namespace URI (a non-empty string)")
    compiled = []
    for name, expression in labels.items():
        key = f"metadata.labels.{name}"
        if not _LABEL.fullmatch(name) or name.startswith("__"):
            raise MetadataError(key, "is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting "
                                     "with __)")
        if name in RESERVED:
            raise MetadataError(key, f"clashes with the label {name!r} that every domain series already has")
        if not isinstance(expression, str) or not expression.strip():
            raise MetadataError(key, "must be an XPath expression (a non-empty string)")
        try:
            xpath = etree.XPath(expression, namespaces=dict(namespaces))
        except etree.XPathSyntaxError as exc:
            raise MetadataError(key, f"is not a valid XPath expression: {exc}") from None
        try:  # an undefined prefix or an unknown function shows only when the expression runs
            xpath(_EMPTY_DOMAIN)
        except etree.XPathError as exc:
            raise MetadataError(key, f"cannot be evaluated: {exc}") from None
        compiled.append(xpath)
    return MetadataMap(tuple(labels.items()), tuple(namespaces.items()), tuple(compiled))
