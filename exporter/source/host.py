"""The host groups of a poll: node figures, storage pools and networks, each with a deadline."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

import exporter.source.parse as parse
from exporter.calls import run_bounded
from exporter.errors import Unsupported
from exporter.snapshot import Host, Network, StoragePool
from exporter.source.connection import Connection, count_failure

log = logging.getLogger("exporter.source")  # one logger for the whole boundary

T = TypeVar("T")


class HostGroups:
    """Reads node, pools and networks on lanes; a group past its deadline is left out until its call returns."""

    def __init__(self, link: Connection, lock: threading.Lock, call_timeout: float) -> None:
        self._link = link
        self._lock = lock  # the source's lock
        self._call_timeout = call_timeout
        self._unsupported: set[str] = set()  # host calls the driver lacks
        self.stuck: set[str] = set()  # groups whose call was given up on and is still running (under the lock)

    def read(
        self, wanted: frozenset[str], errors: Counter[str]
    ) -> tuple[Host, tuple[StoragePool, ...], tuple[Network, ...]]:
        """Node, pools and networks, each on a thread of its own with a deadline; a stuck group is left out."""
        readers: dict[str, Callable[[libvirt.virConnect, Counter[str]], Any]] = {
            "node": lambda c, own: self._node(c, wanted, own),
            "pool": lambda c, own: self._pools(c, own),
            "network": lambda c, own: self._networks(c, own),
        }
        with self._lock:
            busy = set(self.stuck)
        names = [g for g in readers if g in wanted and g not in busy]

        def read(group: str) -> tuple[Any, Counter[str]]:
            own: Counter[str] = Counter()
            return self._link.on_lane(lambda lane: readers[group](lane.conn, own)), own

        def returned(group: str, seconds: float) -> None:
            with self._lock:
                self.stuck.discard(group)
            log.warning("the %s call of %s returned after %.1fs; asked again from the next poll", group,
                        self._link.shown_uri, seconds)

        outcome = run_bounded(names, read, workers=len(names), call_timeout=self._call_timeout,
                              on_late=returned, name="libvirt-host")
        found: dict[str, Any] = {}
        for index, group in enumerate(names):
            if index in outcome.results:
                value, own = outcome.results[index]
                errors.update(own)
                found[group] = value
            elif index in outcome.errors:
                raise outcome.errors[index]  # only ConnectionLost leaves the readers
            else:
                with self._lock:
                    self.stuck.add(group)
                log.warning("the %s call of %s has not answered within %gs; %s left out until it returns",
                            group, self._link.shown_uri, self._call_timeout,
                            "host figures" if group == "node" else group + "s")
        return found.get("node", self._link.static), found.get("pool", ()), found.get("network", ())

    def _node(self, conn: libvirt.virConnect, wanted: frozenset[str], errors: Counter[str]) -> Host:
        if "node" not in wanted:
            return self._link.static
        info = self._call(conn.getInfo, "getInfo", errors)
        cpu = self._call(lambda: conn.getCPUStats(-1), "getCPUStats", errors)
        mem = self._call(lambda: conn.getMemoryStats(-1), "getMemoryStats", errors)
        total, free = parse.node_memory(info, mem)
        if free is None:
            free_bytes = self._call(conn.getFreeMemory, "getFreeMemory", errors)
            free = int(free_bytes) if free_bytes is not None else None
        return parse.node_host(self._link.static, info, cpu, total, free)

    def _call(self, fn: Callable[[], T], name: str, errors: Counter[str]) -> T | None:
        if name in self._unsupported:
            return None
        try:
            return fn()
        except libvirt.libvirtError as exc:
            err = count_failure(exc, self._link.conn, "node", errors, unsupported_ok=True)
            if isinstance(err, Unsupported):
                log.info("%s is not supported by %s; not asked again on this connection", name,
                         self._link.shown_uri)
                self._unsupported.add(name)
            return None

    def _pools(self, conn: libvirt.virConnect, errors: Counter[str]) -> tuple[StoragePool, ...]:
        def build(pool: Any) -> StoragePool:
            state, capacity, allocation, available = pool.info()
            running = state == libvirt.VIR_STORAGE_POOL_RUNNING
            return StoragePool(
                name=pool.name(), uuid=pool.UUIDString(), state=state, autostart=bool(pool.autostart()),
                capacity_bytes=capacity if running else None,
                allocation_bytes=allocation if running else None,
                available_bytes=available if running else None,
            )

        return self._gather(conn.listAllStoragePools, build, "pool", errors)

    def _networks(self, conn: libvirt.virConnect, errors: Counter[str]) -> tuple[Network, ...]:
        def build(net: Any) -> Network:
            try:
                bridge = net.bridgeName() or ""
            except libvirt.libvirtError:
                bridge = ""  # networks without a bridge (macvtap, hostdev)
            return Network(name=net.name(), uuid=net.UUIDString(), active=bool(net.isActive()),
                           autostart=bool(net.autostart()), bridge=bridge)

        return self._gather(conn.listAllNetworks, build, "network", errors)

    def _gather(
        self, list_all: Callable[[int], list[Any]], build: Callable[[Any], T], group: str, errors: Counter[str]
    ) -> tuple[T, ...]:
        """List host objects (pools, networks) and build each; failures are counted under ``group``."""
        try:
            objects = list_all(0)
        except libvirt.libvirtError as exc:
            count_failure(exc, self._link.conn, group, errors, unsupported_ok=True)
            return ()
        result = []
        for obj in objects:
            try:
                result.append(build(obj))
            except libvirt.libvirtError as exc:
                count_failure(exc, self._link.conn, group, errors)
        return tuple(sorted(result, key=lambda o: o.name))  # type: ignore[attr-defined]
