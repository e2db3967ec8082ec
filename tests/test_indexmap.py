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


# -- the journal: a new UUID appends one line, the main file is rewritten only when compacting --

def _journal(path):
    return path.with_name(path.name + ".journal")


def _lines(path) -> list[str]:
    journal = _journal(path)
    return journal.read_text().splitlines() if journal.exists() else []


def _uuids(n: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}-{i:08d}-0000-0000-0000-000000000000" for i in range(n)]


def _frozen(start: float = 1_000_000.0) -> tuple[list[float], object]:
    now = [start]
    return now, lambda: now[0]


def test_new_uuid_appends_one_line_and_leaves_the_main_file_alone(tmp_path) -> None:
    """One new UUID: one JSON line in the journal; the main file keeps its inode, mtime and bytes."""
    path = tmp_path / "i.json"
    imap = IndexMap(path)
    assert imap.assign("domain", ["a", "b"]) == {"a": 1, "b": 2}  # creates the main file
    before = path.stat()
    content = path.read_bytes()
    assert imap.assign("domain", ["a", "c"]) == {"a": 1, "c": 3}
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert path.read_bytes() == content
    (line,) = _lines(path)
    assert {k: v for k, v in json.loads(line).items() if k != "seen"} == {"ns": "domain", "uuid": "c", "index": 3}
    assert imap.assign("pool", ["p"]) == {"p": 1}
    assert len(_lines(path)) == 2 and path.read_bytes() == content


@pytest.mark.parametrize("size", [100, 2000])
def test_bytes_per_new_uuid_do_not_grow_with_the_map(tmp_path, size: int) -> None:
    """A new UUID writes the same few bytes at 100 entries as at 2,000."""
    path = tmp_path / "i.json"
    _now, clock = _frozen()
    imap = IndexMap(path, clock=clock)
    imap.assign("domain", _uuids(size))  # one big call: one compaction
    main = path.read_bytes()
    assert not _journal(path).exists()
    for uuid in _uuids(5, prefix="new"):
        imap.assign("domain", [uuid])
    assert path.read_bytes() == main
    lines = _lines(path)
    assert len(lines) == 5 and all(len(line) < 100 for line in lines)


def test_bytes_per_new_uuid_are_the_same_at_100_and_2000(tmp_path) -> None:
    """The journal grows by the same amount per new UUID whatever the map's size (bar the index's digits)."""
    sizes = {}
    for size in (100, 2000):
        path = tmp_path / f"{size}.json"
        _, clock = _frozen()
        imap = IndexMap(path, clock=clock)
        imap.assign("domain", _uuids(size))
        imap.assign("domain", ["new-one"])
        sizes[size] = _journal(path).stat().st_size
    assert sizes[2000] - sizes[100] == len("2001") - len("101")
    assert sizes[2000] < 100


def test_restart_reloads_main_and_journal_and_compacts(tmp_path) -> None:
    """Indexes survive a restart with part of them only in the journal; loading folds the journal in."""
    path = tmp_path / "i.json"
    imap = IndexMap(path)
    first = imap.assign("domain", ["a", "b"])
    first |= imap.assign("domain", ["c"])
    first |= imap.assign("domain", ["d"])
    pools = imap.assign("pool", ["p"])
    assert len(_lines(path)) == 3
    again = IndexMap(path)
    assert not _journal(path).exists()  # folded into the main file
    raw = json.loads(path.read_text())
    assert raw["version"] == 1
    assert {u: i for u, (i, _) in raw["namespaces"]["domain"]["indexes"].items()} == first
    assert raw["namespaces"]["domain"]["next"] == 5
    assert again.assign("domain", ["d", "c", "b", "a", "e"]) == first | {"e": 5}
    assert again.assign("pool", ["p", "q"]) == pools | {"q": 2}


def test_version_1_file_loads_unchanged(tmp_path) -> None:
    """A file written by the previous release loads as it is and is not rewritten for a new UUID."""
    path = tmp_path / "i.json"
    path.write_text(json.dumps({"version": 1, "namespaces": {
        "domain": {"next": 8, "indexes": {"a": [3, 1_000_000.0], "b": [7, 1_000_000.0]}},
        "network": {"next": 2, "indexes": {"n": [1, 1_000_000.0]}}}}, sort_keys=True))
    content = path.read_bytes()
    _, clock = _frozen(1_000_010.0)
    imap = IndexMap(path, clock=clock)
    assert imap.assign("domain", ["b", "a", "c"]) == {"b": 7, "a": 3, "c": 8}
    assert imap.assign("network", ["n"]) == {"n": 1}
    assert path.read_bytes() == content
    assert len(_lines(path)) == 1


def test_torn_last_line_is_ignored_with_a_warning(tmp_path, caplog) -> None:
    """A crash in the middle of an append leaves a partial last line: it is dropped, its index never reused."""
    path = tmp_path / "i.json"
    imap = IndexMap(path)
    imap.assign("domain", ["a"])
    imap.assign("domain", ["b"])
    with _journal(path).open("a") as handle:
        handle.write('{"ns":"domain","uuid":"c","index":3,"se')  # no newline: cut short
    with caplog.at_level("WARNING", logger="exporter.indexmap"):
        again = IndexMap(path)
    assert "cut short" in caplog.text and str(_journal(path)) in caplog.text
    assert not _journal(path).exists()
    assert again.assign("domain", ["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
    assert again.assign("domain", ["d"]) == {"d": 4}
    assert _journal(path).read_text().endswith("}\n") and json.loads(_lines(path)[-1])["index"] == 4


def test_complete_last_line_without_newline_is_kept(tmp_path) -> None:
    """A last record that is whole but lacks its newline still reserves its index."""
    path = tmp_path / "i.json"
    IndexMap(path).assign("domain", ["a"])
    _journal(path).write_text('{"ns":"domain","uuid":"b","index":2,"seen":1.0}')
    assert IndexMap(path).assign("domain", ["b", "c"]) == {"b": 2, "c": 3}


@pytest.mark.parametrize(
    "lines",
    [['{"ns":"domain","uuid":"b","index":2,"se', '{"ns":"domain","uuid":"c","index":3,"seen":1.0}'],  # torn, mid
     ['{"ns":"domain","uuid":"b","index":2,"seen":1.0}', "", '{"ns":"domain","uuid":"c","index":3,"seen":1.0}'],
     ['{"ns":"domain","uuid":"b","index":1,"seen":1.0}'],  # collides with "a" in the main file
     ['{"ns":"domain","uuid":"b","index":2,"seen":1.0}', '{"ns":"domain","uuid":"c","index":2,"seen":1.0}'],
     ['{"ns":"domain","uuid":"b","index":"2","seen":1.0}'],
     ['{"ns":"domain","uuid":"b","index":true,"seen":1.0}'],
     ['{"ns":"domain","uuid":7,"index":2,"seen":1.0}'],
     ['{"ns":"domain","uuid":"b","index":2,"seen":"yesterday"}'],
     ['{"ns":"domain","uuid":"b","index":2147483648,"seen":1.0}'],
     ['{"ns":"domain","uuid":"b","index":2}'],
     ['["domain","b",2,1.0]']],
)
def test_damaged_journal_is_refused(tmp_path, lines: list[str]) -> None:
    """Damage other than a torn last line stops start-up, naming the journal; nothing is rewritten."""
    path = tmp_path / "i.json"
    IndexMap(path).assign("domain", ["a"])
    content = path.read_bytes()
    _journal(path).write_text("\n".join(lines) + "\n")
    with pytest.raises(StateError, match=f"{_journal(path)} is damaged"):
        IndexMap(path)
    assert path.read_bytes() == content and _journal(path).exists()


def test_journal_left_behind_by_an_interrupted_compaction(tmp_path) -> None:
    """A crash after the main file's rename but before the journal's removal: its lines are already folded."""
    now, clock = _frozen()
    path = tmp_path / "i.json"
    imap = IndexMap(path, forget_after_s=100, clock=clock)
    imap.assign("domain", ["a"])
    imap.assign("domain", ["b"])
    imap.assign("domain", ["c"])
    stale_journal = _journal(path).read_bytes()
    now[0] += 500
    assert imap.assign("domain", ["c"]) == {"c": 3}  # forgets a and b: compaction
    assert not _journal(path).exists()
    _journal(path).write_bytes(stale_journal)  # as if the removal never happened
    again = IndexMap(path, forget_after_s=100, clock=clock)
    assert again.assign("domain", ["c", "a", "b"]) == {"c": 3, "a": 4, "b": 5}  # a and b stay forgotten


def test_forgetting_runs_at_most_once_a_minute(tmp_path) -> None:
    """A call naming a known UUID does not scan the map; stale entries go at the next minutely pass."""
    now, clock = _frozen()
    path = tmp_path / "i.json"
    imap = IndexMap(path, forget_after_s=100, clock=clock)
    imap.assign("domain", ["a", "b"])  # the first call runs a pass
    now[0] += 101  # a is stale and the last pass was 101 s ago: this call runs one
    imap.assign("domain", ["b"])  # b, named here, is kept
    assert set(json.loads(path.read_text())["namespaces"]["domain"]["indexes"]) == {"b"}
    stamp = path.stat().st_mtime_ns
    now[0] += 110  # b is stale (110 s unseen) and a pass is due
    imap.assign("pool", ["p"])
    assert json.loads(path.read_text())["namespaces"]["domain"]["indexes"] == {}
    assert path.stat().st_mtime_ns != stamp
    now[0] += 30  # within a minute of the last pass: no scan, no write
    stamp = path.stat().st_mtime_ns
    imap.assign("pool", ["p"])
    assert path.stat().st_mtime_ns == stamp
    assert imap.assign("domain", ["a", "b"]) == {"a": 3, "b": 4}  # never reused


def test_stale_entry_waits_for_the_next_pass(tmp_path) -> None:
    """Within a minute of the last pass an entry past its time is kept; the next pass drops it."""
    now, clock = _frozen()
    path = tmp_path / "i.json"
    imap = IndexMap(path, forget_after_s=100, clock=clock)
    imap.assign("domain", ["a", "b"])  # pass at +0
    on_disk = lambda: set(json.loads(path.read_text())["namespaces"]["domain"]["indexes"])  # noqa: E731
    now[0] += 90
    imap.assign("domain", ["b"])  # pass at +90: a unseen 90 s, kept
    now[0] += 30
    imap.assign("domain", ["b"])  # +120: a unseen 120 s, but the last pass was 30 s ago
    assert on_disk() == {"a", "b"}
    now[0] += 30
    imap.assign("domain", ["b"])  # +150: pass, a goes
    assert on_disk() == {"b"}


def test_last_seen_refresh_is_written_hourly(tmp_path) -> None:
    """A host polling the same domains rewrites the main file about once an hour, with fresh last-seen times."""
    now, clock = _frozen()
    path = tmp_path / "i.json"
    imap = IndexMap(path, clock=clock)
    imap.assign("domain", ["a", "b"])
    start = now[0]
    writes = 0
    stamp = path.stat().st_mtime_ns
    for _ in range(3 * 60 * 2):  # three hours of 30-second polls
        now[0] += 30
        imap.assign("domain", ["a", "b"])
        if path.stat().st_mtime_ns != stamp:
            writes += 1
            stamp = path.stat().st_mtime_ns
    assert 2 <= writes <= 3
    seen = [s for _, s in json.loads(path.read_text())["namespaces"]["domain"]["indexes"].values()]
    assert all(now[0] - s <= 2 * 3600 + 60 for s in seen) and all(s > start for s in seen)
    assert not _journal(path).exists()


def test_refresh_survives_a_restart_every_half_hour(tmp_path) -> None:
    """Frequent restarts do not keep last-seen times from reaching the disk (so live entries are never forgotten)."""
    now, clock = _frozen()
    path = tmp_path / "i.json"
    IndexMap(path, forget_after_s=4 * 3600, clock=clock).assign("domain", ["a"])
    for _ in range(20):  # ten hours
        now[0] += 1800
        assert IndexMap(path, forget_after_s=4 * 3600, clock=clock).assign("domain", ["a"]) == {"a": 1}
    (_, seen), = json.loads(path.read_text())["namespaces"]["domain"]["indexes"].values()
    assert now[0] - seen <= 3600 + 1800


def test_journal_bound_triggers_compaction(tmp_path) -> None:
    """Past the bound the journal is folded into the main file and starts again."""
    path = tmp_path / "i.json"
    _, clock = _frozen()
    imap = IndexMap(path, clock=clock, journal_limit=3)
    imap.assign("domain", ["a"])  # creates the main file
    for uuid in "bcd":
        imap.assign("domain", [uuid])
    assert len(_lines(path)) == 3
    inode = path.stat().st_ino
    imap.assign("domain", ["e"])  # a fourth line would pass the bound
    assert not _journal(path).exists()
    assert path.stat().st_ino != inode
    assert json.loads(path.read_text())["namespaces"]["domain"]["next"] == 6
    imap.assign("domain", ["f"])
    assert len(_lines(path)) == 1
    assert IndexMap(path).assign("domain", list("abcdef")) == {u: i for i, u in enumerate("abcdef", 1)}


def test_journal_bound_scales_with_the_map(tmp_path) -> None:
    """With more entries than the bound, the journal may hold as many lines as the main file has entries."""
    path = tmp_path / "i.json"
    _, clock = _frozen()
    imap = IndexMap(path, clock=clock, journal_limit=3)
    imap.assign("domain", _uuids(10))
    for uuid in _uuids(10, prefix="new"):
        imap.assign("domain", [uuid])
    assert len(_lines(path)) == 10
    imap.assign("domain", ["one-more"])
    assert not _journal(path).exists()


def test_one_big_call_past_the_bound_compacts_instead_of_appending(tmp_path) -> None:
    """A first poll of thousands of domains writes the main file once, not thousands of lines."""
    path = tmp_path / "i.json"
    imap = IndexMap(path, journal_limit=10)
    imap.assign("domain", ["a"])
    imap.assign("domain", _uuids(50))
    assert not _journal(path).exists()
    assert json.loads(path.read_text())["namespaces"]["domain"]["next"] == 52


def test_failed_append_hands_out_nothing(tmp_path, monkeypatch) -> None:
    """An index whose line could not be made durable is not returned, not kept, and never given to anyone."""
    import exporter.indexmap as module

    path = tmp_path / "i.json"
    imap = IndexMap(path)
    imap.assign("domain", ["a"])
    real = module._fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(module, "_fdatasync", failing)
    with pytest.raises(StateError, match=f"cannot write {_journal(path)}: Input/output error"):
        imap.assign("domain", ["b"])
    monkeypatch.setattr(module, "_fdatasync", real)
    assert imap.assign("domain", ["b"]) == {"b": 3}  # 2 may be on disk for b: skipped
    assert not _journal(path).exists()  # after a failed append the next write compacts
    assert IndexMap(path).assign("domain", ["a", "b", "c"]) == {"a": 1, "b": 3, "c": 4}


def _failing(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device")


def test_failed_housekeeping_write_still_returns_indexes(tmp_path, caplog, monkeypatch) -> None:
    """Known UUIDs get their indexes even when an hourly refresh cannot be written; it is retried."""
    import exporter.indexmap as module

    now, clock = _frozen()
    path = tmp_path / "i.json"
    imap = IndexMap(path, clock=clock)
    imap.assign("domain", ["a"])
    content = path.read_bytes()
    now[0] += 2 * 3600
    with monkeypatch.context() as patch, caplog.at_level("WARNING", logger="exporter.indexmap"):
        patch.setattr(module.tempfile, "mkstemp", _failing)
        assert imap.assign("domain", ["a"]) == {"a": 1}
    assert "cannot write" in caplog.text and "No space left" in caplog.text
    assert path.read_bytes() == content and not list(tmp_path.glob(".indexes-*"))
    now[0] += 61
    imap.assign("domain", ["a"])
    assert path.read_bytes() != content


def test_failure_after_the_rename_rolls_back(tmp_path, monkeypatch) -> None:
    """A compaction whose directory fsync fails hands nothing out; a retry gets a fresh index."""
    import exporter.indexmap as module

    path = tmp_path / "i.json"
    imap = IndexMap(path, journal_limit=1)
    imap.assign("domain", ["a"])
    imap.assign("domain", ["b"])  # appended
    with monkeypatch.context() as patch:
        patch.setattr(module, "_fsync_directory", _failing)
        with pytest.raises(StateError, match="cannot write"):
            imap.assign("domain", ["c"])  # past the bound: compaction
    assert imap.assign("domain", ["c"]) == {"c": 4}
    assert IndexMap(path).assign("domain", ["a", "b", "c", "d"]) == {"a": 1, "b": 2, "c": 4, "d": 5}


def test_later_journal_record_wins_for_the_same_uuid(tmp_path) -> None:
    """After a rolled-back write the main file may hold an index the caller never got: the journal's is kept."""
    path = tmp_path / "i.json"
    path.write_text(json.dumps({"version": 1, "namespaces": {"domain": {"next": 2, "indexes": {"u": [1, 5.0]}}}}))
    _journal(path).write_text('{"ns":"domain","uuid":"u","index":2,"seen":6.0}\n')
    assert IndexMap(path).assign("domain", ["u", "v"]) == {"u": 2, "v": 3}


def test_journal_without_main_file(tmp_path) -> None:
    """A journal alone (main file never written, or lost) still yields its indexes."""
    path = tmp_path / "i.json"
    _journal(path).write_text('{"ns":"domain","uuid":"b","index":2,"seen":1.0}\n')
    assert IndexMap(path).assign("domain", ["a", "b"]) == {"b": 2, "a": 3}
