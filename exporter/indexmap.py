"""Stable small-integer indexes for UUIDs, kept in the state directory.

SNMP tables need integer row indexes that stay with a domain (or pool, or
network) across restarts.  :class:`IndexMap` hands out 1, 2, 3, ... in the
order UUIDs are first seen, writes the mapping to a JSON file, and never
gives an index to another UUID while that file exists: ``next`` only grows,
even when an entry is forgotten.  Entries unseen for ``forget_after_s`` are
dropped so that a host with churning domains does not grow the file forever.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from exporter.errors import ExporterError

log = logging.getLogger(__name__)

MAX_INDEX = 2**31 - 1
FORGET_AFTER_S = 90 * 86400.0


class StateError(ExporterError):
    """The state file cannot be read or written."""


class IndexMap:
    """UUID -> index per namespace ("domain", "pool", "network"), persisted."""

    def __init__(
        self,
        path: Path | None,
        *,
        forget_after_s: float = FORGET_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._forget_after_s = forget_after_s
        self._clock = clock
        self._lock = threading.Lock()
        # namespace -> {"next": int, "indexes": {uuid: [index, last_seen]}}
        self._data: dict[str, dict] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None
        try:
            raw = json.loads(text)
            if raw.get("version") != 1:
                raise ValueError("unknown version")
            data = {}
            for namespace, table in raw["namespaces"].items():
                indexes = {str(u): [int(i), float(seen)] for u, (i, seen) in table["indexes"].items()}
                nxt = int(table["next"])
                if any(not 0 < i < nxt for i, _ in indexes.values()):
                    raise ValueError(f"an index in {namespace!r} is out of range")
                if len({i for i, _ in indexes.values()}) != len(indexes):
                    raise ValueError(f"two UUIDs share an index in {namespace!r}")
                data[str(namespace)] = {"next": nxt, "indexes": indexes}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Refuse rather than start afresh: starting afresh would hand
            # existing indexes to other domains behind the managers' backs.
            raise StateError(
                f"{path} is damaged ({exc}); fix or remove it (removing it renumbers every row)"
            ) from None
        self._data = data

    def _save(self) -> None:
        if self._path is None:
            return
        payload = {"version": 1, "namespaces": self._data}
        directory = self._path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".indexes-", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            raise StateError(f"cannot write {self._path}: {exc.strerror}") from None

    def assign(self, namespace: str, uuids: Iterable[str]) -> Mapping[str, int]:
        """Indexes for ``uuids``, giving new ones to UUIDs not seen before.

        The file is written only when something new was handed out or
        forgotten, so a steady host causes no writes.
        """
        now = self._clock()
        with self._lock:
            table = self._data.setdefault(namespace, {"next": 1, "indexes": {}})
            indexes: dict[str, list] = table["indexes"]
            changed = False
            result: dict[str, int] = {}
            for uuid in uuids:
                entry = indexes.get(uuid)
                if entry is None:
                    if table["next"] > MAX_INDEX:
                        raise StateError(f"no {namespace} indexes left in {self._path}")
                    entry = indexes[uuid] = [table["next"], now]
                    table["next"] += 1
                    changed = True
                elif now - entry[1] > 3600:  # refresh last-seen at most hourly: no write every poll
                    entry[1] = now
                    changed = True
                result[uuid] = entry[0]
            stale = [u for u, (_, seen) in indexes.items() if now - seen > self._forget_after_s]
            for uuid in stale:
                del indexes[uuid]
                changed = True
            if changed:
                self._save()
            return result
