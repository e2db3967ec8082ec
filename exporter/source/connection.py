"""The libvirt connection: open and close, keepalive, event callbacks, lifecycle actions, lanes, errors.

libvirt's exceptions are turned into :mod:`exporter.errors` exceptions here
(:func:`convert`).  Events, keepalive and the close callback arrive on
libvirt's default event loop, which runs in a daemon thread started by
:func:`start_event_loop`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import libvirt

from exporter.config.values import redact_uri
from exporter.errors import ConnectionLost, DomainGone, SourceError, Unsupported
from exporter.snapshot import DomainEvent, Host

log = logging.getLogger("exporter.source")  # one logger for the whole boundary, as when it was one module

T = TypeVar("T")

#: virDomainJobOperation of incoming and outgoing migrations.
MIGRATION_IN, MIGRATION_OUT = 4, 5
#: The exporter's names for libvirt's lifecycle event codes.
EVENT_NAMES: Mapping[int, str] = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

_CONNECTION_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
    }
)
_UNSUPPORTED_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    }
)

# libvirt prints every error to stderr unless a handler is installed; ours are
# raised as exceptions and logged where they are handled.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_event_loop_lock = threading.Lock()
_event_loop_started = False


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread.

    Needed for events, keepalive and the close callback.  Idempotent; must
    run before the first connection that wants events is opened.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except libvirt.libvirtError as exc:  # pragma: no cover - defensive
                    log.warning("libvirt event loop iteration failed: %s", exc)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


# -- errors ----------------------------------------------------------------------


def convert(exc: libvirt.libvirtError, conn: libvirt.virConnect | None = None) -> SourceError:
    """The project's exception for a libvirt error; ``conn``, if given, is asked whether it is still alive."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainGone(message, code=code)
    if code in _UNSUPPORTED_CODES:
        return Unsupported(message, code=code)
    lost = code in _CONNECTION_CODES or exc.get_error_domain() == libvirt.VIR_FROM_RPC
    if conn is not None and not lost:
        try:
            lost = not conn.isAlive()
        except libvirt.libvirtError:
            lost = True
    if lost:
        return ConnectionLost(message, code=code)
    return SourceError(message, code=code)


def as_source_error(err: BaseException, conn: libvirt.virConnect | None) -> SourceError:
    if isinstance(err, libvirt.libvirtError):
        return convert(err, conn)
    return err if isinstance(err, SourceError) else SourceError(f"{type(err).__name__}: {err}")


def count_failure(
    exc: libvirt.libvirtError, conn: libvirt.virConnect | None, group: str, errors: Counter[str], *,
    unsupported_ok: bool = False,
) -> SourceError:
    """Convert a failed call: raise if the connection is gone, else count it under ``group``."""
    err = convert(exc, conn)
    if isinstance(err, ConnectionLost):
        raise err from None
    if not (unsupported_ok and isinstance(err, Unsupported)):
        errors[group] += 1
    return err


def _open(uri: str, read_only: bool) -> libvirt.virConnect:
    try:
        return libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ConnectionLost(exc.get_error_message() or str(exc), code=exc.get_error_code()) from None


# -- lanes -------------------------------------------------------------------------


class Lane:
    """A connection of its own for calls that may hang (stats, host groups, actions), with its domain handles."""

    def __init__(self, conn: libvirt.virConnect, *, shared: bool = False) -> None:
        self.conn: libvirt.virConnect | None = conn
        self.shared = shared  # the main connection itself: never closed here
        self._handles: dict[str, Any] = {}

    def domain(self, uuid: str) -> Any:
        dom = self._handles.get(uuid)
        if dom is None:
            assert self.conn is not None
            dom = self._handles[uuid] = self.conn.lookupByUUIDString(uuid)
        return dom

    def forget_except(self, uuids: set[str]) -> None:
        for uuid in set(self._handles) - uuids:
            del self._handles[uuid]

    def close(self) -> None:
        conn, self.conn = self.conn, None
        self._handles.clear()
        if conn is not None and not self.shared:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass


# -- the connection ------------------------------------------------------------------


class Connection:
    """The main connection (events, state, control) and a pool of lanes beside it."""

    def __init__(self, uri: str, *, read_only: bool, keepalive: tuple[int, int], lock: threading.Lock) -> None:
        self.uri = uri
        self.shown_uri = redact_uri(uri)  # for the log: no user, password or secret-bearing query value
        self.read_only = read_only
        self._keepalive = keepalive
        self._lock = lock  # the source's lock, which also guards the lanes
        self.conn: libvirt.virConnect | None = None
        self.static = Host(uri=uri)  # what does not change while connected, asked once in open()
        self.host_cpus = 0
        self._callbacks: list[int] = []
        self._lanes: list[Lane] = []  # idle lanes; one in use is held by its call
        self._shared_lane: Lane | None = None  # the test driver's lanes: the main connection

    def open(self, on_close: Callable[[str], None] | None = None) -> None:
        """Open the connection; raises :class:`SourceError` on failure."""
        conn = self.conn = _open(self.uri, self.read_only)
        try:
            conn.setKeepAlive(*self._keepalive)
        except libvirt.libvirtError as exc:
            log.debug("keepalive not available on %s: %s", self.shown_uri, exc.get_error_message())
        if on_close is not None:
            reasons = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}

            def closed(_conn: Any, reason: int, _opaque: Any) -> None:
                on_close(reasons.get(reason, f"reason {reason}"))

            try:
                conn.registerCloseCallback(closed, None)
            except libvirt.libvirtError as exc:
                log.debug("close callback not available: %s", exc.get_error_message())
        self.static = Host(
            hostname=self.call_or(conn.getHostname, ""),
            driver=self.call_or(conn.getType, ""),
            hypervisor_version=self.call_or(conn.getVersion, 0),
            libvirt_version=self.call_or(conn.getLibVersion, 0),
            uri=self.call_or(conn.getURI, self.uri),
        )
        self.host_cpus = self.call_or(lambda: int(conn.getInfo()[2]), 0)  # 0 unknown: no pinning figures

    def close(self) -> None:
        conn, self.conn = self.conn, None
        with self._lock:
            lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.close()
        callbacks, self._callbacks = self._callbacks, []
        if conn is None:
            return
        for callback_id in callbacks:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass  # the connection is already dead
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    @property
    def connected(self) -> bool:
        conn = self.conn
        if conn is None:
            return False
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def require(self) -> libvirt.virConnect:
        if self.conn is None:
            raise ConnectionLost("not connected")
        return self.conn

    def call_or(self, fn: Callable[[], T], default: T) -> T:
        """``fn()``, or ``default`` if it fails; raises :class:`ConnectionLost` if the connection is gone."""
        try:
            return fn()
        except libvirt.libvirtError as exc:
            err = convert(exc, self.conn)
            if isinstance(err, ConnectionLost):
                raise err from None
            return default

    # -- lanes: connections for calls that may hang --------------------------------

    def _take_lane(self) -> Lane:
        if self.static.driver == "TEST":
            # The test driver cannot hang, and every connection to a node file gets a private copy of the
            # host: its lanes all share the main connection, so they see the host that events describe.
            shared = self._shared_lane
            if shared is None or shared.conn is not self.conn:
                shared = self._shared_lane = Lane(self.require(), shared=True)
            return shared
        with self._lock:
            if self._lanes:
                return self._lanes.pop()
        return Lane(_open(self.uri, self.read_only))  # read-write only when control is on, like the main one

    def _give_lane(self, lane: Lane) -> None:
        """Back to the pool once its call has returned (closed if the source was closed meanwhile)."""
        if lane.shared:
            return
        with self._lock:
            if self.conn is not None:
                self._lanes.append(lane)
                return
        lane.close()

    def on_lane(self, fn: Callable[[Lane], T]) -> T:
        """Run ``fn`` on a lane of its own; the lane returns to the pool when ``fn`` does, however late."""
        lane = self._take_lane()
        try:
            return fn(lane)
        except ConnectionLost:
            lane.close()  # a dead connection is not reused
            raise
        except libvirt.libvirtError as exc:
            err = convert(exc, lane.conn)
            if isinstance(err, ConnectionLost):
                lane.close()
                raise err from None
            raise
        finally:
            if lane.conn is not None:
                self._give_lane(lane)

    def forget_handles_except(self, uuids: set[str]) -> None:
        """Idle lanes drop the domain handles of domains not in ``uuids`` (the caller holds the lock)."""
        for lane in self._lanes:
            lane.forget_except(uuids)

    # -- events and actions ----------------------------------------------------------

    def watch(self, on_event: Callable[[DomainEvent], None],
              on_job: Callable[[str, str, Mapping[str, Any] | None], None] | None = None) -> None:
        """Deliver lifecycle, device and I/O error events (in libvirt's event thread), and to ``on_job`` (uuid, name,
        statistics) a domain's migration iterations (None) and completed jobs (their statistics)."""
        conn = self.require()

        def lifecycle(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            kind = EVENT_NAMES.get(event, f"event{event}")
            on_event(DomainEvent(uuid=dom.UUIDString(), name=dom.name(), kind=kind, detail=detail))
            if event == libvirt.VIR_DOMAIN_EVENT_STARTED and detail == libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED:
                on_event(DomainEvent(uuid=dom.UUIDString(), name=dom.name(), kind="migration_started",
                                     detail=MIGRATION_IN))

        def io_error(_conn: Any, dom: Any, path: str, alias: str, action: int, reason: str, _opaque: Any) -> None:
            # Only an error that paused the guest (its error policy): 'report' and 'ignore' may fire by the hundred.
            if action == libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE:
                on_event(DomainEvent(uuid=dom.UUIDString(), name=dom.name(), kind="io_error",
                                     detail=2 if reason == "enospc" else 1, device=alias or path))

        def device(_conn: Any, dom: Any, _alias: str, _opaque: Any) -> None:
            on_event(DomainEvent(uuid=dom.UUIDString(), name=dom.name(), kind="device", detail=0))

        def tunable(_conn: Any, dom: Any, params: Mapping[str, Any], _opaque: Any) -> None:
            # A disk's I/O limits or a vCPU's pinning changed (virsh blkdeviotune, vcpupin): the definition is
            # read again, as for a device.
            if any(key.startswith(("blkdeviotune.", "cputune.vcpupin")) for key in params):
                on_event(DomainEvent(uuid=dom.UUIDString(), name=dom.name(), kind="device", detail=0))

        try:
            self._callbacks.append(
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
            )
        except libvirt.libvirtError as exc:
            raise convert(exc, conn) from None
        def iteration(_conn: Any, dom: Any, _iteration: int, _opaque: Any) -> None:
            if on_job is not None:
                on_job(dom.UUIDString(), dom.name(), None)

        def completed(_conn: Any, dom: Any, params: Mapping[str, Any], _opaque: Any) -> None:
            if on_job is not None:
                on_job(dom.UUIDString(), dom.name(), params)

        for event_id, callback in ((libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, device),
                                   (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, device),
                                   (libvirt.VIR_DOMAIN_EVENT_ID_TUNABLE, tunable),
                                   (libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, iteration),
                                   (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, completed),
                                   (libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, io_error)):
            try:
                self._callbacks.append(conn.domainEventRegisterAny(None, event_id, callback, None))
            except libvirt.libvirtError as exc:
                log.debug("domain event %d not available: %s", event_id, exc.get_error_message())

    def act(self, uuid: str, verb: str) -> None:
        """Carry out one lifecycle action on a domain, on a lane (see :meth:`exporter.source.Source.act`)."""
        self.require()
        self.on_lane(lambda lane: _act(lane, uuid, verb))


def _act(lane: Lane, uuid: str, verb: str) -> None:
    assert lane.conn is not None
    try:
        dom = lane.conn.lookupByUUIDString(uuid)
        if verb == "start":
            dom.create()  # restores a managed-save image when there is one
        elif verb == "start_paused":
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        elif verb == "suspend":
            dom.suspend()
        elif verb == "resume":
            dom.resume()
        elif verb == "wakeup":
            dom.pMWakeup(0)
        elif verb == "shutdown":
            dom.shutdown()
        elif verb == "destroy":
            dom.destroy()
        elif verb == "reboot":
            dom.reboot(0)
        elif verb == "reset":
            dom.reset(0)
        elif verb == "managed_save":
            dom.managedSave(0)
        else:
            raise ValueError(f"unknown action {verb!r}")
    except libvirt.libvirtError as exc:
        raise convert(exc, lane.conn) from None
