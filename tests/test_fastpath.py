"""The SNMPv2c fast path, byte for byte against pyasn1's BER and against a plain walk of the view."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import rfc1902
from pysnmp.proto.api import v2c

from exporter.poller import snapshot_of
from exporter.snapshot import ALL_GROUPS
from exporter.snmp import fastpath, mib, mib_libvirt, mib_lvx, mib_system, mib_vm
from exporter.snmp.syntax import C64, G32, INT, OID, STR, TICKS, U32
from exporter.snmp.view import MibView
from exporter.source import Source
from tests.conftest import ROOT
from tests.support.mutate import mutations
from tests.support.usmclient import pdu as make_pdu

COMMUNITY = b"fast-community"
EVERYTHING = ((1, 3, 6, 1),)


@pytest.fixture(scope="module")
def view() -> MibView:
    source = Source(f"test://{ROOT}/examples/demo-host.xml")
    source.open()
    try:
        snap = snapshot_of(source.poll(ALL_GROUPS), time.time(), 0.1)
    finally:
        source.close()
    indexes = mib.Indexes({d.uuid: n for n, d in enumerate(snap.domains, start=1)},
                          {p.uuid: n for n, p in enumerate(snap.pools, start=1)},
                          {x.uuid: n for n, x in enumerate(snap.networks, start=1)})
    return mib.build_view(snap, indexes, mib_system.SystemInfo("c", "l", time.time() - 5, connected_at=time.time()))


def _fast(view: MibView, subtrees: fastpath.Subtrees = EVERYTHING) -> fastpath.FastPath:
    return fastpath.FastPath({COMMUNITY: subtrees}, lambda: view, time.time)


def _request(pdu_type: str, names: list[tuple[int, ...]], non_repeaters: int = 0, repetitions: int = 10,
             community: bytes = COMMUNITY) -> bytes:
    pdu = make_pdu(pdu_type, names, non_repeaters, repetitions, request_id=123456789)
    msg = v2c.Message()
    v2c.apiMessage.set_defaults(msg)
    v2c.apiMessage.set_community(msg, community)
    v2c.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


def _response(data: bytes | None) -> tuple[int, list[tuple[tuple[int, ...], object]]]:
    assert data is not None
    msg, rest = decoder.decode(data, asn1Spec=v2c.Message())
    assert rest == b""
    assert v2c.apiMessage.get_community(msg) == COMMUNITY
    pdu = v2c.apiMessage.get_pdu(msg)
    assert int(v2c.apiPDU.get_request_id(pdu)) == 123456789
    return int(v2c.apiPDU.get_error_status(pdu)), [(tuple(n), v) for n, v in v2c.apiPDU.get_varbinds(pdu)]


def _visible(view: MibView, subtrees: fastpath.Subtrees) -> Iterator[tuple[int, ...]]:
    for oid, _ in view.items():
        if any(oid[:len(s)] == s for s in subtrees):
            yield oid


def test_value_encodings_match_pyasn1() -> None:
    rng = random.Random(7)
    ints = [0, 1, -1, 127, 128, -128, -129, 255, 256, 2**31 - 1, -(2**31)] + [rng.randint(-2**31, 2**31 - 1)
                                                                                for _ in range(200)]
    for value in ints:
        ours = fastpath.value_tlv(INT, value)
        decoded, rest = decoder.decode(ours, asn1Spec=rfc1902.Integer32())
        assert int(decoded) == value and rest == b"", value
        if value >= 0:  # pyasn1 pads some negatives with a redundant 0xff; ours are minimal (DER)
            assert ours == encoder.encode(rfc1902.Integer32(value)), value
        else:
            assert len(ours) <= len(encoder.encode(rfc1902.Integer32(value))), value
    for value in [0, 1, 127, 128, 255, 256, 2**32 - 1] + [rng.randint(0, 2**32 - 1) for _ in range(200)]:
        assert fastpath.value_tlv(G32, value) == encoder.encode(rfc1902.Gauge32(value)), value
        assert fastpath.value_tlv(U32, value) == encoder.encode(rfc1902.Unsigned32(value)), value
        assert fastpath.value_tlv(TICKS, value) == encoder.encode(rfc1902.TimeTicks(value)), value
    for value in [0, 2**63, 2**64 - 1] + [rng.randint(0, 2**64 - 1) for _ in range(200)]:
        assert fastpath.value_tlv(C64, value) == encoder.encode(rfc1902.Counter64(value)), value
    for text in ["", "a", "x" * 200, "é-ünïcode", "y" * 300]:
        assert fastpath.value_tlv(STR, text) == encoder.encode(rfc1902.OctetString(text.encode()))
    for oid in [(0, 0), (1, 3, 6, 1, 4, 1, 8072, 9999, 9999), (2, 999, 3), (1, 3, 2**32 - 1, 16384, 128, 127)]:
        assert fastpath.value_tlv(OID, oid) == encoder.encode(rfc1902.ObjectIdentifier(oid)), oid
    # saturation as on the pysnmp path
    assert fastpath.value_tlv(G32, 2**40) == encoder.encode(rfc1902.Gauge32(2**32 - 1))
    assert fastpath.value_tlv(C64, -5) == encoder.encode(rfc1902.Counter64(0))


def test_get_next_and_bulk_answer_like_the_view(view: MibView) -> None:
    fast = _fast(view)
    oids = list(_visible(view, EVERYTHING))
    assert len(oids) == len(view) > 300
    # GETNEXT from every instance gives the next one
    for before, after in zip([(1, 3)] + oids, oids + [None], strict=False):
        status, binds = _response(fast.answer(_request("next", [before])))
        assert status == 0
        if after is None:
            assert binds[0][0] == before and binds[0][1].tagSet == v2c.EndOfMibView.tagSet
        else:
            assert binds[0][0] == after
            syntax, raw = view.get(after)
            if not callable(raw):
                assert encoder.encode(binds[0][1]) == fastpath.value_tlv(syntax, raw)
    # GET of served, unserved-instance and unknown objects
    status, binds = _response(fast.answer(_request("get", [oids[10], mib_lvx.LVX_ROOT + (1, 2, 1, 13, 999),
                                                           mib_lvx.LVX_ROOT + (77, 0)])))
    assert status == 0 and binds[0][0] == oids[10]
    assert binds[1][1].tagSet == v2c.NoSuchInstance.tagSet and binds[2][1].tagSet == v2c.NoSuchObject.tagSet
    # GETBULK: one non-repeater, two repeaters, to the end of the view
    status, binds = _response(fast.answer(_request("bulk", [(1, 3), oids[-3], oids[0]], 1, 5)))
    assert status == 0 and binds[0][0] == oids[0]
    repeated = binds[1:]
    assert [n for n, _ in repeated[0::2]] == oids[-2:] + [oids[-1]] * 3  # ends, then stays at the end
    assert all(v.tagSet == v2c.EndOfMibView.tagSet for _, v in repeated[4::2])
    assert [n for n, _ in repeated[1::2]] == oids[1:6]


def test_a_whole_bulk_walk_fits_the_message_limit(view: MibView) -> None:
    fast = _fast(view)
    seen: list[tuple[int, ...]] = []
    cursor: tuple[int, ...] = (1, 3)
    while True:
        reply = fast.answer(_request("bulk", [cursor], 0, 100000))
        assert reply is not None and len(reply) <= fastpath.MAX_MESSAGE
        _, binds = _response(reply)
        fresh = [n for n, v in binds if v.tagSet != v2c.EndOfMibView.tagSet]
        seen += fresh
        if len(fresh) < len(binds) or not fresh:
            break
        cursor = fresh[-1]
    assert seen == list(_visible(view, EVERYTHING))


@pytest.mark.parametrize("subtrees", [
    ((1, 3, 6, 1, 2, 1, 1),),
    (mib_lvx.LVX_DOMAIN_ENTRY + (2, 3), mib_lvx.LVX_DOMAIN_ENTRY + (5,), mib_vm.VM_ENTRY + (2, 1)),  # single instances
    (mib_lvx.LVX_ROOT + (1, 5, 1, 9, 2), mib_libvirt.LIBVIRT_ROOT),  # part of a column, another MIB
    ((1, 3, 6, 1, 4, 1, 99999),),  # nothing
])
def test_views_decided_per_column_match_per_instance_checks(view: MibView, subtrees: fastpath.Subtrees) -> None:
    fast = _fast(view, subtrees)
    expected = list(_visible(view, subtrees))
    walked: list[tuple[int, ...]] = []
    cursor: tuple[int, ...] = (0, 0)
    while True:
        _, binds = _response(fast.answer(_request("next", [cursor])))
        name, value = binds[0]
        if value.tagSet == v2c.EndOfMibView.tagSet:
            break
        walked.append(name)
        cursor = name
    assert walked == expected
    hidden = next(oid for oid, _ in view.items() if oid not in expected)
    _, binds = _response(fast.answer(_request("get", [hidden])))
    assert binds[0][1].tagSet == v2c.NoSuchObject.tagSet


def test_everything_else_is_left_to_pysnmp(view: MibView) -> None:
    fast = _fast(view)
    good = _request("get", [(1, 3, 6, 1, 2, 1, 1, 1, 0)])
    assert fast.answer(good) is not None
    assert fast.answer(_request("get", [(1, 3)], community=b"other")) is None  # pysnmp counts bad communities
    v1 = bytearray(good)
    v1[4] = 0  # version 0: SNMPv1
    assert fast.answer(bytes(v1)) is None
    set_request = bytearray(good)
    set_request[good.index(b"\xa0")] = 0xA3
    assert fast.answer(bytes(set_request)) is None
    for data in mutations(good, random.Random(11), 3000):  # cut, flipped, extended copies never raise
        reply = fast.answer(data)
        if reply is not None:
            decoder.decode(reply, asn1Spec=v2c.Message())  # anything answered is a well-formed message
