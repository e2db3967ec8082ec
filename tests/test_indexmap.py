"""Stable SNMP row indexes kept in the state directory."""

from __future__ import annotations

import json

import pytest

from exporter.indexmap import IndexMap, StateError


def test_indexes_survive_a_restart(tmp_path) -> None:
    """A UUID keeps its index when the map is reloaded from disk."""
    path = tmp_path / "indexes.json"
    first = IndexMap(path).assign("domain", ["a", "b", "c"])
    assert first == {"a": 1, "b": 2, "c": 3}
    again = IndexMap(path).assign("domain", ["c", "d", "a"])
    assert again == {"c": 3, "d": 4, "a": 1}


def test_index_never_reused_even_after_forgetting(tmp_path) -> None:
    """A forgotten UUID frees its entry, but its index is never handed out again."""
    now = [1000.0]
    path = tmp_path / "indexes.json"
    imap = IndexMap(path, forget_after_s=100, clock=lambda: now[0])
    assert imap.assign("domain", ["a", "b"]) == {"a": 1, "b": 2}
    now[0] += 500
    assert imap.assign("domain", ["b", "new"]) == {"b": 2, "new": 3}  # "a" forgotten
    reloaded = IndexMap(path, forget_after_s=100, clock=lambda: now[0])
    assert reloaded.assign("domain", ["a"]) == {"a": 4}


def test_namespaces_are_independent(tmp_path) -> None:
    """Domains, pools and networks each count from 1."""
    imap = IndexMap(tmp_path / "i.json")
    assert imap.assign("domain", ["x"]) == {"x": 1}
    assert imap.assign("pool", ["y"]) == {"y": 1}


def test_steady_host_writes_nothing(tmp_path) -> None:
    """Assigning known UUIDs again does not rewrite the file."""
    path = tmp_path / "i.json"
    imap = IndexMap(path)
    imap.assign("domain", ["a"])
    stamp = path.stat().st_mtime_ns
    imap.assign("domain", ["a"])
    assert path.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps({"version": 2}),
     json.dumps({"version": 1, "namespaces": {"domain": {"next": 2, "indexes": {"a": [1, 0], "b": [1, 0]}}}}),
     json.dumps({"version": 1, "namespaces": {"domain": {"next": 2, "indexes": {"a": [5, 0]}}}})],
)
def test_damaged_file_is_refused(tmp_path, content: str) -> None:
    """A damaged file stops start-up with its path, instead of silently renumbering rows."""
    path = tmp_path / "i.json"
    path.write_text(content)
    with pytest.raises(StateError, match=str(path)):
        IndexMap(path)


def test_unwritable_directory_is_reported(tmp_path) -> None:
    """A state directory that cannot be written gives a clear StateError."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match=r"cannot (read|write) .*Not a directory"):
        IndexMap(blocker / "sub" / "i.json").assign("domain", ["a"])
    readonly = tmp_path / "ro"
    readonly.mkdir()
    imap = IndexMap(readonly / "sub-is-a-file" / "i.json")
    (readonly / "sub-is-a-file").write_text("")
    with pytest.raises(StateError, match="cannot write"):
        imap.assign("domain", ["a"])
