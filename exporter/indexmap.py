"""Stable small-integer indexes for UUIDs, kept in the state directory.

SNMP tables need integer row indexes that stay with a domain (or pool, or
network) across restarts.  :class:`IndexMap` hands out 1, 2, 3, ... in the
order UUIDs are first seen and never gives an index to another UUID while its
files exist: ``next`` only grows, even when an entry is forgotten.  Entries
unseen for ``forget_after_s`` are dropped so that a host with churning domains
does not grow the file forever.

Two files hold the map:

* the main file (``snmp-indexes.json``), a version-1 JSON document, replaced
  atomically (temporary file, fsync, rename, directory fsync);
* a journal next to it (``snmp-indexes.json.journal``), one JSON object per
  line, ``{"ns": ..., "uuid": ..., "index": ..., "seen": ...}``, one line per
  index handed out since the main file was last written.

A new UUID costs one appended line, flushed with fdatasync before
:meth:`IndexMap.assign` returns, so the work per new UUID does not depend on
the size of the map.  The main file is rewritten ("compaction": fold the
journal in, then remove the journal) only

* at load, when a journal exists;
* when entries are forgotten;
* for the last-seen refresh, at most once an hour;
* when the journal would grow past ``max(journal_limit, entries in the main
  file)`` lines, which keeps the amortised cost of compaction per new UUID
  constant however large the map is.

Forgetting needs a pass over every entry, so it runs (with the check for a
due refresh) at most once a minute (``HOUSEKEEPING_S``, on the injected clock)
rather than on every call: a call naming one known UUID is a dictionary
lookup and a store of its last-seen time in memory.  In memory last-seen is
always current, so an entry named in a call is never forgotten by it; on disk
it lags by at most an hour and a minute, which against a 90-day horizon
costs nothing.  Time-based rather than "only on big calls", so that a host
whose only calls are per-event ones still forgets and refreshes.

Crash safety rests on one invariant: every journal line not yet folded into
the main file carries an index at or above the main file's ``next``.  Lines
below it were folded by a compaction that was interrupted between the rename
and the removal of the journal, and are skipped at load.  A last line cut
short by a crash (no newline, not valid JSON) is ignored with a warning: its
``assign`` never returned, so its index was never used.  Anything else wrong
in either file stops start-up with a :class:`StateError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from exporter.errors import ExporterError

log = logging.getLogger(__name__)

MAX_INDEX = 2**31 - 1
FORGET_AFTER_S = 90 * 86400.0
REFRESH_S = 3600.0  # last-seen times reach the disk at most this often (when nothing else is written)
HOUSEKEEPING_S = 60.0  # forgetting and the refresh check run at most this often
JOURNAL_LIMIT = 1000  # compact once the journal would hold more lines than this (or than the map has entries)
JOURNAL_SUFFIX = ".journal"

_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class StateError(ExporterError):
    """The state file cannot be read or written."""


class _Damaged(ValueError):
    """A problem found while reading a state file (turned into StateError)."""


def _fsync_directory(directory: Path) -> None:
    """Make a rename or a file creation in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refused(path: Path, reason: object, *, journal: bool = False) -> StateError:
    # Refuse rather than start afresh: starting afresh would hand existing
    # indexes to other domains behind the managers' backs.
    remedy = ("fix it, or remove it together with the main file (that renumbers every row; removing "
              "the journal alone could give its indexes to other UUIDs)" if journal
              else "fix or remove it (removing it renumbers every row)")
    return StateError(f"{path} is damaged ({reason}); {remedy}")


class IndexMap:
    """UUID -> index per namespace ("domain", "pool", "network"), persisted."""

    def __init__(
        self,
        path: Path | None,
        *,
        forget_after_s: float = FORGET_AFTER_S,
        clock: Callable[[], float] = time.time,
        journal_limit: int = JOURNAL_LIMIT,
    ) -> None:
        self._path = path
        self._journal = path.with_name(path.name + JOURNAL_SUFFIX) if path is not None else None
        self._forget_after_s = forget_after_s
        self._clock = clock
        self._journal_limit = max(1, journal_limit)
        self._lock = threading.Lock()
        # namespace -> {"next": int, "indexes": {uuid: [index, last_seen]}}
        self._data: dict[str, dict[str, Any]] = {}
        self._entries = 0  # entries over every namespace
        self._compacted_entries = 0  # entries in the main file as last written (or read)
        self._journal_lines = 0  # lines appended since the journal was last removed
        self._must_compact = False  # the journal may not be appended to (torn tail, failed write)
        self._forgotten = False  # entries dropped in memory but still in the main file
        self._refreshed = False  # last-seen times newer in memory than on disk
        self._housekept_at = -math.inf
        self._compacted_at = -math.inf
        if path is not None:
            self._load(path)

    # -- loading --------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            text = None
            self._must_compact = True  # the first write creates the main file, the journal comes after it
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None
        if text is not None:
            try:
                self._data = self._parse_main(text.decode("utf-8"))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise _refused(path, exc) from None
        self._entries = self._compacted_entries = sum(len(table["indexes"]) for table in self._data.values())
        # When last-seen times last reached the disk, near enough, on the same
        # clock: so a process restarting every few minutes still refreshes hourly.
        self._compacted_at = max((seen for table in self._data.values() for _, seen in table["indexes"].values()),
                                 default=-math.inf)
        assert self._journal is not None
        try:
            raw = self._journal.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError(f"cannot read {self._journal}: {exc.strerror}") from None
        try:
            folded = self._fold_journal(raw)
        except _Damaged as exc:
            raise _refused(self._journal, exc, journal=True) from None
        log.info("folded %d new index(es) from %s into %s", folded, self._journal, path)
        # Fold it into the main file now, so that the next append starts a
        # fresh journal (never one ending in a torn line).
        self._must_compact = True
        try:
            self._compact(self._clock())
        except StateError as exc:
            log.warning("%s; will retry before the next index is handed out", exc)

    @staticmethod
    def _parse_main(text: str) -> dict[str, dict[str, Any]]:
        raw = json.loads(text)
        if raw.get("version") != 1:
            raise ValueError("unknown version")
        data: dict[str, dict[str, Any]] = {}
        for namespace, table in raw["namespaces"].items():
            indexes = {str(u): [int(i), float(seen)] for u, (i, seen) in table["indexes"].items()}
            nxt = int(table["next"])
            if any(not 0 < i < nxt for i, _ in indexes.values()):
                raise ValueError(f"an index in {namespace!r} is out of range")
            if len({i for i, _ in indexes.values()}) != len(indexes):
                raise ValueError(f"two UUIDs share an index in {namespace!r}")
            data[str(namespace)] = {"next": nxt, "indexes": indexes}
        return data

    def _fold_journal(self, raw: bytes) -> int:
        """Apply the journal's records to the loaded main file; the number of new entries."""
        lines = raw.split(b"\n")
        tail = lines.pop()  # after the last newline: b"" unless the last append was cut short
        records: list[tuple[int, dict[str, Any]]] = []
        for number, line in enumerate(lines, 1):
            try:
                records.append((number, json.loads(line)))
            except ValueError:  # UnicodeDecodeError is a ValueError too
                raise _Damaged(f"line {number} is not valid JSON") from None
        if tail:
            try:
                records.append((len(lines) + 1, json.loads(tail)))  # complete but for its newline: keep it
            except ValueError:
                log.warning("%s: ignoring its last line, cut short by a crash while an index was being "
                            "handed out (that index was never used)", self._journal)
        main_next = {namespace: table["next"] for namespace, table in self._data.items()}
        holders = {namespace: {i: u for u, (i, _) in table["indexes"].items()}
                   for namespace, table in self._data.items()}
        folded = 0
        for number, record in records:
            namespace, uuid, index, seen = self._check_record(number, record)
            table = self._data.setdefault(namespace, {"next": 1, "indexes": {}})
            taken = holders.setdefault(namespace, {})
            if taken.get(index, uuid) != uuid:
                raise _Damaged(f"line {number}: {namespace} index {index} is already {taken[index]}'s")
            if index < main_next.get(namespace, 1):
                continue  # already in the main file: a compaction stopped before removing the journal
            earlier = table["indexes"].get(uuid)
            if earlier is not None:
                # Only after a failed write whose index was rolled back (never
                # handed out): the later record is the one the caller got.
                log.info("%s line %d: %s %s moves from index %d to %d",
                         self._journal, number, namespace, uuid, earlier[0], index)
            else:
                folded += 1
            table["indexes"][uuid] = [index, seen]
            taken[index] = uuid
            table["next"] = max(table["next"], index + 1)
        self._entries += folded
        return folded

    @staticmethod
    def _check_record(number: int, record: object) -> tuple[str, str, int, float]:
        if not isinstance(record, dict) or set(record) != {"ns", "uuid", "index", "seen"}:
            raise _Damaged(f"line {number} is not an index record")
        namespace, uuid, index, seen = record["ns"], record["uuid"], record["index"], record["seen"]
        if not isinstance(namespace, str) or not isinstance(uuid, str):
            raise _Damaged(f"line {number}: ns and uuid must be strings")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 < index <= MAX_INDEX:
            raise _Damaged(f"line {number}: index must be an integer from 1 to {MAX_INDEX}")
        if isinstance(seen, bool) or not isinstance(seen, (int, float)) or not math.isfinite(seen):
            raise _Damaged(f"line {number}: seen must be a number")
        return namespace, uuid, index, float(seen)

    # -- writing --------------------------------------------------------------

    def _compact(self, now: float) -> None:
        """Rewrite the main file from memory, atomically, then drop the journal."""
        if self._path is None or self._journal is None:
            return
        payload = {"version": 1, "namespaces": self._data}
        directory = self._path.parent
        tmp: str | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".indexes-", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
            tmp = None
            # The rename must be on disk before the journal disappears, or a
            # crash could lose both the journal and the indexes it held.
            _fsync_directory(directory)
            self._journal.unlink(missing_ok=True)
        except OSError as exc:
            raise StateError(f"cannot write {self._path}: {exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self._journal_lines = 0
        self._compacted_entries = self._entries
        self._must_compact = False
        self._forgotten = False
        self._refreshed = False
        self._compacted_at = now

    def _append(self, records: list[dict[str, Any]]) -> None:
        """Append one line per record to the journal and make it durable."""
        if self._journal is None:
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode("utf-8")
        directory = self._journal.parent
        starting = self._journal_lines == 0
        try:
            if starting:
                directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                _fdatasync(fd)
            finally:
                os.close(fd)
            if starting:
                _fsync_directory(directory)  # the journal's own name must survive a crash too
        except OSError as exc:
            self._must_compact = True  # part of a line may be in the file: never append after it
            raise StateError(f"cannot write {self._journal}: {exc.strerror or exc}") from None
        self._journal_lines += len(records)

    # -- housekeeping ---------------------------------------------------------

    def _forget_stale(self, now: float) -> None:
        for table in self._data.values():
            indexes: dict[str, list[Any]] = table["indexes"]
            stale = [u for u, (_, seen) in indexes.items() if now - seen > self._forget_after_s]
            for uuid in stale:
                del indexes[uuid]
            if stale:
                self._entries -= len(stale)
                self._forgotten = True

    @staticmethod
    def _within(since: float, now: float, span: float) -> bool:
        """``now`` is less than ``span`` after ``since`` (a clock that went back counts as elapsed)."""
        return since <= now < since + span

    # -- the API --------------------------------------------------------------

    def assign(self, namespace: str, uuids: Iterable[str]) -> Mapping[str, int]:
        """Indexes for ``uuids``, giving new ones to UUIDs not seen before.

        Costs O(len(uuids)), plus, at most once a minute, a pass over the map
        to forget stale entries.  Nothing is written unless something new was
        handed out, forgotten, or (hourly) refreshed, so a steady host causes
        no writes between refreshes.
        """
        with self._lock:
            now = self._clock()  # under the lock, so that passes see time move forward
            table = self._data.setdefault(namespace, {"next": 1, "indexes": {}})
            indexes: dict[str, list[Any]] = table["indexes"]
            result: dict[str, int] = {}
            new: list[dict[str, Any]] = []
            for uuid in uuids:
                entry = indexes.get(uuid)
                if entry is None:
                    if table["next"] > MAX_INDEX:
                        for record in new:
                            del indexes[record["uuid"]]
                        raise StateError(f"no {namespace} indexes left in {self._path}")
                    entry = indexes[uuid] = [table["next"], now]
                    table["next"] += 1
                    new.append({"ns": namespace, "uuid": uuid, "index": entry[0], "seen": now})
                elif entry[1] != now:
                    entry[1] = now
                    self._refreshed = True
                result[uuid] = entry[0]
            self._entries += len(new)

            housekeeping = False
            if not self._within(self._housekept_at, now, HOUSEKEEPING_S):
                self._housekept_at = now
                self._forget_stale(now)
                housekeeping = self._forgotten or (
                    self._refreshed and not self._within(self._compacted_at, now, REFRESH_S))
            if not new and not housekeeping:
                return result
            over_limit = self._journal_lines + len(new) > max(self._journal_limit, self._compacted_entries)
            try:
                if housekeeping or over_limit or self._must_compact:
                    self._compact(now)
                else:
                    self._append(new)
            except StateError as exc:
                if new:
                    # Not on disk, so not handed out: the UUIDs get fresh
                    # indexes on the next call (``next`` stays where it is).
                    self._roll_back(indexes, new)
                    raise
                # Only housekeeping failed; every index returned is on disk.
                log.warning("%s; retrying within a minute", exc)
            return result

    def _roll_back(self, indexes: dict[str, list[Any]], new: list[dict[str, Any]]) -> None:
        for record in new:
            del indexes[record["uuid"]]
        self._entries -= len(new)
