"""SNMPv2c traps and informs without pysnmp: BER-encoded here, sent on a UDP endpoint per target.

pysnmp sends one notification per ``send_notification`` call, through its
whole message-processing stack; one at a time, that bounded a target to a
handful of notifications a second.  A v2c notification is simple enough to
encode directly (the values are encoded as the fast path encodes GET
answers: :func:`exporter.snmp.fastpath.value_tlv`), and an inform's
acknowledgement is a Response-PDU carrying the same request-id.

:class:`V2cSender` is one target's sender.  Traps go out in queue order as
fast as the queue gives them, up to :data:`TRAP_RATE` a second after a burst
of :data:`TRAP_BURST`: a trap is never acknowledged, so traps sent faster
than the receiver reads them are lost in its socket buffer, unseen.

Informs are pipelined: up to ``window`` of them are outstanding at once (sent
in queue order), each matched to its Response-PDU by request-id, community
and sender address, and retransmitted (same request-id) when unanswered
after ``timeout`` seconds, ``retransmits`` times: one round, as one pysnmp
send was.  A round unanswered is a retry and puts the target in a failing
state: the other outstanding informs are parked, and only the oldest one
gets new rounds, after a backoff that doubles up to ``backoff_max``; the
first acknowledgement ends that state and every parked inform is sent again
at once, oldest first.  Anything else that arrives (malformed, another
community, a request-id not outstanding, another sender) is counted in
``ignored`` and logged at debug level.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from exporter.snmp.fastpath import (
    Malformed,
    oid_content,
    read_integer,
    read_message,
    read_tlv,
    signed,
    tlv,
    unsigned,
    value_tlv,
)
from exporter.snmp.syntax import NotificationDef

log = logging.getLogger(__name__)

SNMP_TRAP_OID = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
SYS_UP_TIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
VERSION_V2C = 1
INFORM_PDU, TRAP_PDU, RESPONSE_PDU = 0xA6, 0xA7, 0xA2
#: Informs outstanding at once per target (a receiver's socket buffer holds far more than this many).
WINDOW = 32
_SEQUENCE, _INTEGER, _OCTETS, _OID, _TIMETICKS = 0x30, 0x02, 0x04, 0x06, 0x43
#: Traps per second per target at most, after a burst of TRAP_BURST: a trap is never acknowledged, so a
#: receiver slower than we are loses what overflows its socket buffer (snmptrapd's default buffer holds about
#: 300 small datagrams; it logs about 4000 a second on a small machine).
TRAP_RATE, TRAP_BURST = 2000.0, 100
_PACING_STEP_S = 0.005  # the shortest pause when paced: tokens for a few traps at once
_MAX_REQUEST_ID = 2**31 - 1
_YIELD_EVERY = 64  # traps sent between two yields to the event loop
# The first two varbinds' names and the PDU's error-status and error-index (both 0), encoded once.
_UPTIME_NAME = tlv(_OID, oid_content(SYS_UP_TIME))
_TRAP_OID_NAME = tlv(_OID, oid_content(SNMP_TRAP_OID))
_NO_ERROR = b"\x02\x01\x00\x02\x01\x00"


# -- encoding -----------------------------------------------------------------


def encode_varbinds(notification: NotificationDef, now: float = 0.0) -> bytes:
    """The notification's own varbinds (all but sysUpTime.0 and snmpTrapOID.0), each a SEQUENCE."""
    return b"".join(tlv(_SEQUENCE, tlv(_OID, oid_content(oid)) + value_tlv(*value, now))
                    for oid, value in notification.var_binds)


def encode_message(community: bytes, pdu_type: int, request_id: int, uptime_ticks: int,
                   trap_oid: tuple[int, ...], varbinds: bytes) -> bytes:
    """A whole SNMPv2c message: sysUpTime.0 and snmpTrapOID.0 first, then ``varbinds`` (encoded)."""
    binds = (tlv(_SEQUENCE, _UPTIME_NAME + tlv(_TIMETICKS, unsigned(uptime_ticks % 2**32)))
             + tlv(_SEQUENCE, _TRAP_OID_NAME + tlv(_OID, oid_content(trap_oid)))
             + varbinds)
    pdu = tlv(pdu_type, tlv(_INTEGER, signed(request_id)) + _NO_ERROR + tlv(_SEQUENCE, binds))
    return tlv(_SEQUENCE, b"\x02\x01\x01" + tlv(_OCTETS, community) + pdu)


def encode_notification(community: bytes, pdu_type: int, request_id: int, uptime_ticks: int,
                        notification: NotificationDef) -> bytes:
    """SNMPv2-Trap-PDU (:data:`TRAP_PDU`) or InformRequest-PDU (:data:`INFORM_PDU`) message."""
    return encode_message(community, pdu_type, request_id, uptime_ticks, notification.trap_oid,
                          encode_varbinds(notification))


# -- decoding a Response --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    community: bytes
    request_id: int
    error_status: int
    error_index: int


def decode_response(data: bytes) -> Response:
    """The header of an SNMPv2c Response-PDU message; raises :class:`Malformed` for anything else."""
    end = len(data)
    community, _, pos = read_message(data, (RESPONSE_PDU,))
    request_id, pos = read_integer(data, pos, end)
    error_status, pos = read_integer(data, pos, end)
    error_index, pos = read_integer(data, pos, end)
    tag, _, stop = read_tlv(data, pos, end)
    if tag != _SEQUENCE or stop != end:
        raise Malformed("bad varbind list")
    return Response(community, request_id, error_status, error_index)


# -- sending --------------------------------------------------------------------


class _Outstanding:
    """An inform sent and not acknowledged yet."""

    __slots__ = ("attempts", "datagram", "request_id", "timer")

    def __init__(self, request_id: int, datagram: bytes) -> None:
        self.request_id = request_id
        self.datagram = datagram
        self.attempts = 1
        self.timer: asyncio.TimerHandle | None = None


class V2cSender(asyncio.DatagramProtocol):
    """One SNMPv2c target: encodes, sends, and (informs) keeps the window of outstanding ones.

    The owner gets the outcomes through callbacks: ``on_sent`` once per
    notification delivered (a trap handed to the kernel, an inform
    acknowledged); ``on_retry`` once per round of an inform unanswered (its
    send and ``retransmits`` retransmissions, ``timeout`` apart: what one
    pysnmp send did), after which it is retried with backoff; ``on_failed``
    with the reason when a notification is given up (it could not be encoded,
    or the receiver answered with an error status).  ``retransmitted`` counts
    every datagram sent again.
    """

    def __init__(self, name: str, community: bytes, inform: bool, uptime_ticks: Callable[[], int],
                 on_sent: Callable[[], None], on_retry: Callable[[], None], on_failed: Callable[[str], None], *,
                 window: int = WINDOW, timeout: float = 1.0, retransmits: int = 2, backoff_first: float = 1.0,
                 backoff_max: float = 10.0, trap_rate: float | None = TRAP_RATE, trap_burst: int = TRAP_BURST) -> None:
        self.name = name
        self._community = community
        self._inform = inform
        self._pdu_type = INFORM_PDU if inform else TRAP_PDU
        self._uptime_ticks = uptime_ticks
        self._on_sent, self._on_retry, self._on_failed = on_sent, on_retry, on_failed
        self._window = max(1, window) if inform else 1
        self._timeout = timeout
        self._retransmits = retransmits
        self._backoff_max = backoff_max
        self._trap_rate = trap_rate if trap_rate is None or trap_rate > 0 else None
        self._trap_burst = max(1, trap_burst)
        self._backoff_first = backoff_first
        self._backoff = backoff_first
        self._failing = False
        self._probe_timer: asyncio.TimerHandle | None = None
        self._probing: _Outstanding | None = None
        self._next_id = random.randrange(1, _MAX_REQUEST_ID)
        self._outstanding: dict[int, _Outstanding] = {}  # oldest first
        self._held = 0  # taken from the queue, waiting for room in the window
        self._room = asyncio.Event()  # the window has room and the target is not failing
        self._room.set()
        self._writable = asyncio.Event()  # the transport's buffer is below its high-water mark
        self._writable.set()
        self._transport: asyncio.DatagramTransport | None = None
        self._address: tuple[str, int] | tuple[str, int, int, int] | None = None
        self._peer: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None = None
        self.ignored = 0  # datagrams that were not an answer to an outstanding inform
        self.retransmitted = 0  # datagrams sent again (a retry is a whole round of them unanswered)

    @property
    def pending(self) -> int:
        """Notifications taken from the queue and not delivered yet (informs outstanding, or held)."""
        return len(self._outstanding) + self._held

    async def open(self, host: str, port: int) -> None:
        """A UDP endpoint of our own, IPv6 if the address is (it has a colon), else IPv4."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        address = infos[0][4]
        self._address = address  # type: ignore[assignment]
        self._peer = (ipaddress.ip_address(str(address[0]).split("%")[0]), int(address[1]))
        local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
        await loop.create_datagram_endpoint(lambda: self, local_addr=local, family=family)

    def close(self) -> None:
        for entry in self._outstanding.values():
            if entry.timer is not None:
                entry.timer.cancel()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        if self._transport is not None:
            self._transport.close()

    async def run(self, queue: asyncio.Queue[NotificationDef]) -> None:
        """The target's worker: takes notifications in queue order and sends them, forever."""
        loop = asyncio.get_running_loop()
        sent_in_a_row = 0
        tokens, refilled = float(self._trap_burst), loop.time()
        while True:
            notification = await queue.get()
            self._held = 1
            try:
                await self._room.wait()
                await self._writable.wait()
                if self._trap_rate is not None and not self._inform:
                    now = loop.time()
                    tokens = min(float(self._trap_burst), tokens + (now - refilled) * self._trap_rate)
                    refilled = now
                    if tokens < 1.0:  # wait for a few tokens at once rather than one timer per trap
                        await asyncio.sleep(max((1.0 - tokens) / self._trap_rate, _PACING_STEP_S))
                        sent_in_a_row = 0
                        now = loop.time()
                        tokens = min(float(self._trap_burst), tokens + (now - refilled) * self._trap_rate)
                        refilled = now
                    tokens -= 1.0
            finally:
                self._held = 0
            self._send_new(notification)
            sent_in_a_row += 1
            if sent_in_a_row >= _YIELD_EVERY:  # a long queue must not hold up the event loop
                sent_in_a_row = 0
                await asyncio.sleep(0)

    # -- sending and retransmitting --

    def _send_new(self, notification: NotificationDef) -> None:
        assert self._transport is not None
        request_id = self._next_id
        self._next_id = request_id % _MAX_REQUEST_ID + 1
        try:
            datagram = encode_notification(self._community, self._pdu_type, request_id, self._uptime_ticks(),
                                           notification)
        except Exception as exc:  # a value that cannot be encoded: nothing to retry
            self._on_failed(f"cannot encode it: {type(exc).__name__}: {exc}")
            return
        self._transport.sendto(datagram, self._address)
        if not self._inform:
            self._on_sent()
            return
        entry = _Outstanding(request_id, datagram)
        self._outstanding[request_id] = entry
        entry.timer = asyncio.get_running_loop().call_later(self._timeout, self._expired, entry)
        if len(self._outstanding) >= self._window:
            self._room.clear()

    def _resend(self, entry: _Outstanding) -> None:
        assert self._transport is not None
        self._transport.sendto(entry.datagram, self._address)
        self.retransmitted += 1
        entry.timer = asyncio.get_running_loop().call_later(self._timeout, self._expired, entry)

    def _expired(self, entry: _Outstanding) -> None:
        entry.timer = None
        if entry.request_id not in self._outstanding or (self._failing and entry is not self._probing):
            return  # answered meanwhile, or parked: while failing, the probe speaks for every outstanding inform
        if entry.attempts <= self._retransmits:
            entry.attempts += 1
            self._resend(entry)
            return
        # A whole round (the first send and its retransmissions) unanswered: a retry, then the backoff.
        self._on_retry()
        if not self._failing:
            self._failing = True
            self._room.clear()
            log.error("inform to %s not acknowledged (no response within %gs); retrying with backoff", self.name,
                      self._timeout * entry.attempts)
            for other in self._outstanding.values():
                if other.timer is not None:
                    other.timer.cancel()
                    other.timer = None
        self._probing = None
        delay, self._backoff = self._backoff, min(self._backoff * 2, self._backoff_max)
        self._probe_timer = asyncio.get_running_loop().call_later(delay, self._probe)

    def _probe(self) -> None:
        """While failing: a new round for the oldest outstanding inform (its send and retransmissions)."""
        self._probe_timer = None
        if not self._failing or not self._outstanding:
            return
        head = next(iter(self._outstanding.values()))
        head.attempts = 1
        self._probing = head
        self._resend(head)

    def _recovered(self) -> None:
        self._failing = False
        self._probing = None
        self._backoff = self._backoff_first
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        log.warning("notifications to %s are delivered again", self.name)
        for entry in self._outstanding.values():  # parked ones, oldest first, each in a new round
            if entry.timer is not None:
                entry.timer.cancel()
            entry.attempts = 1
            self._resend(entry)

    # -- the endpoint --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # selector transports do not subclass it

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            self._answer(data, addr)
        except Exception:  # whatever came in, the sender keeps going
            self.ignored += 1
            log.debug("datagram from %s for %s not handled", addr, self.name, exc_info=True)

    def _answer(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self._from_target(addr):
            self._ignore(addr, "not from the target")
            return
        try:
            response = decode_response(data)
        except Malformed as exc:
            self._ignore(addr, str(exc))
            return
        if response.community != self._community:
            self._ignore(addr, "another community")
            return
        entry = self._outstanding.pop(response.request_id, None)
        if entry is None:
            self._ignore(addr, f"request-id {response.request_id} not outstanding")
            return
        if entry.timer is not None:
            entry.timer.cancel()
        if response.error_status:
            self._on_failed(f"the receiver answered error-status {response.error_status} "
                            f"(index {response.error_index})")
        else:
            self._on_sent()
        if self._failing:  # any answer shows the receiver is back
            self._recovered()
        if len(self._outstanding) < self._window and not self._failing:
            self._room.set()

    def _from_target(self, addr: tuple[str | int, ...]) -> bool:
        try:
            host = ipaddress.ip_address(str(addr[0]).split("%")[0])
        except ValueError:
            return False
        return self._peer is not None and (host, int(addr[1])) == self._peer

    def _ignore(self, addr: tuple[str | int, ...], why: str) -> None:
        self.ignored += 1
        log.debug("ignored a datagram from %s for %s: %s", addr, self.name, why)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error for %s: %s", self.name, exc)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()
