"""AgentX (RFC 2741): serve our subtrees through the host's snmpd as a subagent.

The encodings are :mod:`exporter.snmp.agentx_pdu`.  :class:`Subagent` is
the session: it opens, registers our three subtrees, answers
Get/GetNext/GetBulk from the same snapshot view as the standalone agent,
maps TestSet/CommitSet/UndoSet/CleanupSet onto the control code, sends
notifications as Notify PDUs (queued and retried by the Notifier, like any
target), pings the master and reconnects (and registers again) when snmpd
restarts.

No handler calls libvirt: reads come from the view, and a commit answers
within ``COMMIT_REPLY_S`` (an action still running then is reported by
lvxDomainLastActionResult, as for the standalone agent).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exporter import __version__
from exporter.config.snmp import parse_agentx_address
from exporter.snmp.agentx_pdu import (
    CLEANUPSET,
    CLOSE,
    CLOSE_SHUTDOWN,
    COMMITSET,
    END_OF_MIB_VIEW,
    GEN_ERR,
    GET,
    GETBULK,
    GETNEXT,
    HEADER,
    NOTIFY,
    OBJECT_IDENTIFIER,
    PARSE_ERROR,
    PING,
    PROCESSING_ERROR,
    RESPONSE,
    TESTSET,
    TIME_TICKS,
    UNDOSET,
    Oid,
    ParseError,
    Pdu,
    VarBind,
    build,
    decode_getbulk,
    decode_header,
    decode_ranges,
    decode_response,
    decode_varbinds,
    encode_varbind,
    open_pdu,
    register_pdu,
    response_pdu,
    split_pdu,
)
from exporter.snmp.view import bulk_rounds

log = logging.getLogger(__name__)


@dataclass
class _SetTransaction:
    plan: Any = None
    committed: bool = False


class Handlers:
    """What the session asks of the rest of the exporter (the SNMP agent implements it)."""

    def uptime_ticks(self) -> int:
        raise NotImplementedError

    def get(self, oid: Oid) -> VarBind:
        raise NotImplementedError

    def next(self, start: Oid, include: bool, end: Oid) -> VarBind:
        raise NotImplementedError

    def test_set(self, varbinds: list[VarBind]) -> tuple[int, int, Any]:
        """(error, 1-based index, plan)."""
        raise NotImplementedError

    async def commit_set(self, plan: Any) -> tuple[int, int]:
        raise NotImplementedError

    async def undo_set(self, plan: Any) -> tuple[int, int]:
        raise NotImplementedError


class Subagent:
    """One AgentX session to the master, kept open (reconnecting) until :meth:`stop`."""

    def __init__(self, address: str, subtrees: Sequence[Oid], handlers: Handlers, *, ident: Oid,
                 retry_s: float = 1.0, ping_s: float = 10.0, request_timeout_s: float = 5.0) -> None:
        self._address = parse_agentx_address(address)
        self.address = address
        self._subtrees = tuple(subtrees)
        self._handlers = handlers
        self._ident = ident
        self._retry_s = retry_s
        self._ping_s = ping_s
        self._request_timeout_s = request_timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._session_id = 0
        self._packet_id = 0
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._sets: dict[tuple[int, int], _SetTransaction] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.sessions = 0  # sessions opened so far (1 + reconnects)
        self._lost_logged = False

    # -- lifecycle

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        writer = self._writer
        if writer is not None and self._session_id:
            try:  # a clean Close, so that snmpd drops our registrations at once
                writer.write(build(CLOSE, struct.pack("!B3x", CLOSE_SHUTDOWN), self._session_id,
                                   packet_id=self._next_packet()))
                await asyncio.wait_for(writer.drain(), 1)
            except (OSError, TimeoutError):
                pass
        self._close()

    def _close(self) -> None:
        self.connected.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("AgentX session closed"))
        self._pending.clear()
        self._sets.clear()
        self._session_id = 0

    def _next_packet(self) -> int:
        self._packet_id = (self._packet_id + 1) % 2**32
        return self._packet_id

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, where, port = self._address
        if kind == "unix":
            return await asyncio.open_unix_connection(where)
        return await asyncio.open_connection(where, port)

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.wait_for(self._connect(), self._request_timeout_s)
            except (OSError, TimeoutError) as exc:
                if not self._lost_logged:
                    log.error("cannot reach the AgentX master at %s (%s); retrying every %gs", self.address,
                              exc, self._retry_s)
                    self._lost_logged = True
                await asyncio.sleep(self._retry_s)
                continue
            self._writer = writer
            reader_task = asyncio.ensure_future(self._read(reader))
            try:
                await self._open_and_register()
                self.sessions += 1
                self.connected.set()
                if self._lost_logged or self.sessions > 1:
                    log.warning("AgentX session to %s open again; subtrees registered", self.address)
                else:
                    log.info("AgentX session %d open to %s; registered %d subtrees", self._session_id,
                             self.address, len(self._subtrees))
                self._lost_logged = False
                while not reader_task.done():
                    done, _ = await asyncio.wait({reader_task}, timeout=self._ping_s)
                    if not done:
                        await self._request(build(PING, b"", self._session_id, packet_id=self._next_packet()))
                reader_task.result()  # why the reading stopped (end of stream, a broken PDU, a Close)
            except asyncio.CancelledError:
                reader_task.cancel()
                raise
            except asyncio.IncompleteReadError:
                if not self._lost_logged:
                    log.error("AgentX session to %s lost (the master closed the connection); reconnecting",
                              self.address)
                    self._lost_logged = True
            except (OSError, TimeoutError, ConnectionError, ParseError, RuntimeError) as exc:
                if not self._lost_logged:
                    log.error("AgentX session to %s lost (%s); reconnecting", self.address, exc or type(exc).__name__)
                    self._lost_logged = True
            reader_task.cancel()
            self._close()
            await asyncio.sleep(self._retry_s)

    async def _open_and_register(self) -> None:
        response = await self._request(open_pdu(self._next_packet(), 0, self._ident,
                                                f"libvirt-exporter {__version__}"))
        _, error, _, _ = decode_response(response)
        if error:
            raise RuntimeError(f"the master refused the session (error {error})")
        self._session_id = response.header.session_id
        for subtree in self._subtrees:
            response = await self._request(register_pdu(self._session_id, self._next_packet(), subtree))
            _, error, _, _ = decode_response(response)
            if error:
                raise RuntimeError(f"the master refused to register {'.'.join(map(str, subtree))} (error {error})")

    async def _request(self, data: bytes) -> Pdu:
        """Send a PDU of ours and wait for the master's Response to it."""
        writer = self._writer
        if writer is None:
            raise ConnectionError("not connected")
        packet_id = struct.unpack_from("!I", data, 12)[0]
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[packet_id] = future
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(future, self._request_timeout_s)
        finally:
            self._pending.pop(packet_id, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            raw = await reader.readexactly(HEADER)
            header = decode_header(raw)
            payload = await reader.readexactly(header.payload_length)
            pdu = split_pdu(header, payload)
            if header.type == RESPONSE:
                future = self._pending.get(header.packet_id)
                if future is not None and not future.done():
                    future.set_result(pdu)
                continue
            reply = await self._answer(pdu)
            if reply is not None and self._writer is not None:
                self._writer.write(reply)

    # -- requests from the master

    async def _answer(self, pdu: Pdu) -> bytes | None:
        h = pdu.header
        handlers = self._handlers
        try:
            if h.type == GET:
                binds = [handlers.get(start) for start, _, _ in decode_ranges(pdu.payload, 0, pdu.big)]
                return response_pdu(h, handlers.uptime_ticks(), varbinds=binds)
            if h.type == GETNEXT:
                binds = [handlers.next(s, inc, e) for s, inc, e in decode_ranges(pdu.payload, 0, pdu.big)]
                return response_pdu(h, handlers.uptime_ticks(), varbinds=binds)
            if h.type == GETBULK:
                return response_pdu(h, handlers.uptime_ticks(), varbinds=self._bulk(pdu))
            if h.type == TESTSET:
                error, index, plan = handlers.test_set(decode_varbinds(pdu.payload, 0, pdu.big))
                if not error:
                    self._sets[(h.session_id, h.transaction_id)] = _SetTransaction(plan)
                return response_pdu(h, handlers.uptime_ticks(), error, index)
            if h.type == COMMITSET:
                txn = self._sets.get((h.session_id, h.transaction_id))
                if txn is None:
                    return response_pdu(h, handlers.uptime_ticks(), GEN_ERR, 0)
                error, index = await handlers.commit_set(txn.plan)
                txn.committed = not error
                return response_pdu(h, handlers.uptime_ticks(), error, index)
            if h.type == UNDOSET:
                txn = self._sets.get((h.session_id, h.transaction_id))
                error, index = (0, 0)
                if txn is not None and txn.committed:
                    error, index = await handlers.undo_set(txn.plan)
                return response_pdu(h, handlers.uptime_ticks(), error, index)
            if h.type == CLEANUPSET:  # no response, by the RFC
                self._sets.pop((h.session_id, h.transaction_id), None)
                return None
            if h.type == PING:
                return response_pdu(h, handlers.uptime_ticks())
            if h.type == CLOSE:
                raise ConnectionError("the master closed the session")
            return response_pdu(h, handlers.uptime_ticks(), PROCESSING_ERROR, 0)
        except ParseError:
            return response_pdu(h, handlers.uptime_ticks(), PARSE_ERROR, 0)
        except ConnectionError:
            raise
        except Exception:
            log.exception("AgentX request (type %d) failed", h.type)
            return response_pdu(h, handlers.uptime_ticks(), GEN_ERR if h.type >= TESTSET else PROCESSING_ERROR, 0)

    def _bulk(self, pdu: Pdu) -> list[VarBind]:
        non_repeaters, repetitions, ranges = decode_getbulk(pdu)
        handlers = self._handlers
        result = [handlers.next(s, inc, e) for s, inc, e in ranges[:non_repeaters]]

        def step(search: tuple[Oid, bool, Oid]) -> tuple[tuple[Oid, bool, Oid] | None, VarBind]:
            vb = handlers.next(*search)
            return (None if vb.type == END_OF_MIB_VIEW else (vb.name, False, search[2])), vb

        for row in bulk_rounds(ranges[non_repeaters:], repetitions, step):
            result.extend(row)
        return result

    # -- notifications

    async def send_notification(self, trap_oid: Oid, varbinds: Sequence[VarBind]) -> str | None:
        """A Notify PDU to the master: None once it accepted it, else what went wrong (the caller retries)."""
        if not self.connected.is_set():
            return "no AgentX session"
        binds = [VarBind(TIME_TICKS, (1, 3, 6, 1, 2, 1, 1, 3, 0), self._handlers.uptime_ticks() % 2**32),
                 VarBind(OBJECT_IDENTIFIER, (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0), trap_oid), *varbinds]
        try:
            response = await self._request(build(NOTIFY, b"".join(encode_varbind(v) for v in binds),
                                                 self._session_id, packet_id=self._next_packet()))
        except (OSError, TimeoutError, ConnectionError) as exc:
            return f"{type(exc).__name__}: {exc}"
        error = decode_response(response)[1]
        return f"the master refused it (error {error})" if error else None
