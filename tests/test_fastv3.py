"""The SNMPv3 fast path (exporter.snmp.fastv3) against pysnmp alone, on one in-process agent.

Every request goes to the agent twice, with the v3 fast path on and off: the decrypted PDUs must be the same,
and whatever the fast path must not answer (discovery, unknown users, wrong keys, stale or damaged messages)
must reach pysnmp, which reports and counts it once.
"""

from __future__ import annotations

import itertools
import random
import subprocess
from collections.abc import Callable, Iterator

import pytest

from exporter.config.snmp import AUTH_PROTOCOLS, PRIV_PROTOCOLS, V3User
from exporter.snmp import fastpath, mib_libvirt, mib_lvx, mib_vm, usm
from exporter.snmp.fastv3 import FastV3
from exporter.snmp.view import MibView
from tests.conftest import require_tool
from tests.support import usmclient as c
from tests.support.inproc_agent import InProcessAgent, demo_snapshot
from tests.support.mutate import mutations

ENGINE_ID = bytes.fromhex("80001f8805c0ffee0123456789abcdef")
COMMUNITY = "v3-diff-community"
MONITOR = V3User("monitor", "monitor-auth-key", "monitor-priv-key")
NARROW = V3User("narrow", "narrow-auth-key", "narrow-priv-key", "SHA-384", "AES-192", view="narrow")
NARROW_VIEW = (mib_lvx.LVX_DOMAIN_ENTRY + (2, 3), mib_lvx.LVX_DOMAIN_ENTRY + (5,), mib_vm.VM_ENTRY + (2, 1),
               mib_lvx.LVX_ROOT + (1, 5, 1, 9, 2), mib_libvirt.LIBVIRT_ROOT)
COMBOS = [V3User(f"c-{a}-{p or 'none'}", f"auth-{a}-päss", f"priv-{p}-key" if p else "", a, p or "AES")
          for a, p in itertools.product(AUTH_PROTOCOLS, (*PRIV_PROTOCOLS, ""))]
#: For net-snmp (which takes a passphrase as UTF-8, where pysnmp takes Latin-1: ASCII keys only); SHA-512's 64-octet
#: keys need no extension for AES-256, on which net-snmp and pysnmp differ.
INTEROP = V3User("interop", "interop-auth-key", "interop-priv-key", "SHA-512", "AES-256")
USERS = [MONITOR, NARROW, INTEROP, *COMBOS]
STATS = (1, 3, 6, 1, 6, 3, 15, 1, 1)  # usmStats
UNKNOWN_ENGINE, NOT_IN_WINDOW, UNKNOWN_USER, WRONG_DIGEST, DECRYPTION = (
    STATS + (n, 0) for n in (4, 2, 3, 5, 6))
UNSUPPORTED_LEVEL = STATS + (1, 0)


def _user_table(user: V3User) -> dict[str, object]:
    table: dict[str, object] = {"name": user.name, "auth_key": user.auth_key, "auth_protocol": user.auth_protocol,
                                "view": user.view}
    if user.priv_key:
        table |= {"priv_key": user.priv_key, "priv_protocol": user.priv_protocol}
    return table


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessAgent]:
    snmp = {"engine_id": ENGINE_ID.hex(), "communities": [{"name": COMMUNITY}],
            "users": [_user_table(u) for u in USERS],
            "views": {"narrow": [".".join(map(str, s)) for s in NARROW_VIEW]}}
    agent = InProcessAgent(tmp_path_factory.mktemp("fastv3"), snmp, demo_snapshot())
    yield agent
    agent.close()


@pytest.fixture(scope="module")
def oids(live: InProcessAgent) -> list[tuple[int, ...]]:
    return [oid for oid, _ in live.model.view().items()]


def _keys(user: V3User) -> c.Keys:
    return c.keys_for(user, ENGINE_ID)


def _send(live: InProcessAgent, user: V3User, the_pdu: object, **options: object) -> bytes:
    boots, now = live.engine_clock()
    return c.request(_keys(user), ENGINE_ID, boots, now, the_pdu, **options)  # type: ignore[arg-type]


def _both(live: InProcessAgent, datagram: bytes, keys: c.Keys, *, fast: bool) -> tuple[c.Reply, c.Reply]:
    """(the reply with the v3 fast path on, the one from pysnmp alone); ``fast``: the first must come from the
    fast path (or must not)."""
    before = live.answered
    first = c.reply(live.ask(datagram), keys)
    assert live.answered == before + (1 if fast else 0), "answered by the wrong path"
    with live.pysnmp_only():
        second = c.reply(live.ask(datagram), keys)
    assert live.answered == before + (1 if fast else 0)
    return first, second


def _agree(ours: c.Reply, theirs: c.Reply, bulk: bool) -> None:
    """The same PDU; for a GETBULK, two differences RFC 3416 4.2.3 allows: the fast path stops once every
    repeater is at the end of the view (pysnmp repeats endOfMibView to max-repetitions), and it is not bound by
    pysnmp's cap of 64 varbinds (it fills the message; see test_bulk_beyond_pysnmps_64_varbinds...)."""
    if not bulk or ours.pdu == theirs.pdu:
        assert ours.pdu == theirs.pdu
        return
    assert ours.pdu[:4] == theirs.pdu[:4]
    a, b = ours.varbinds, theirs.varbinds
    n = min(len(a), len(b))
    assert a[:n] == b[:n]
    assert len(a) > 64 == len(b) or (len(b) > len(a) and all(value == b"\x82\x00" for _, value in b[n:]))


def _same(live: InProcessAgent, user: V3User, the_pdu: object) -> c.Reply:
    ours, theirs = _both(live, _send(live, user, the_pdu), _keys(user), fast=True)
    _agree(ours, theirs, the_pdu.tagSet == c.v2c.GetBulkRequestPDU.tagSet)  # type: ignore[attr-defined]
    assert ours.kind == "response" and ours.flags == (0x03 if user.priv_key else 0x01)
    assert (ours.engine_id, ours.user, ours.context_engine, ours.context_name) == (
        ENGINE_ID, user.name.encode("latin-1"), ENGINE_ID, b"")
    boots, now = live.engine_clock()
    assert ours.boots == theirs.boots == boots and abs(ours.time - now) <= 1
    return ours


def test_keys_are_pysnmps_for_every_protocol() -> None:
    for user in USERS:
        ours = usm.user_keys(user, ENGINE_ID, ())
        theirs = _keys(user)
        assert ours is not None and ours.priv == theirs.priv, user.name
        assert ours.mac(b"some message") == theirs.mac(b"some message"), user.name


def test_the_fast_paths_clock_is_pysnmps(live: InProcessAgent) -> None:
    clock = usm.pysnmp_clock(live.engine)
    for shift in (0, 1000, -1000):
        live.shift_engine_time(shift)
        before, theirs, after = clock(), live.engine_clock(), clock()
        assert before <= theirs <= after and after[1] - before[1] <= 1


def _requests(oids: list[tuple[int, ...]]) -> list[tuple[str, list[tuple[int, ...]], int, int]]:
    """(kind, names, non-repeaters, max-repetitions): across tables, to the end, out of the MIB, out of view."""
    boundary = next(i for i in range(1, len(oids)) if oids[i][:-1] != oids[i - 1][:-1] and len(oids[i]) > 12)
    lvx_missing = mib_lvx.LVX_ROOT + (1, 2, 1, 13, 999)
    return [
        ("get", [oids[0], oids[len(oids) // 2], lvx_missing, mib_lvx.LVX_ROOT + (77, 0), (1, 3, 6, 1, 2, 1, 99, 0)], 0,
         0),
        ("get", [], 0, 0), ("get", [(1, 3)], 0, 0),
        ("next", [(1, 3)], 0, 0), ("next", [(0, 0)], 0, 0), ("next", [oids[-1]], 0, 0), ("next", [(2, 999)], 0, 0),
        ("next", [oids[boundary - 1], oids[boundary], lvx_missing, oids[-2]], 0, 0),
        ("bulk", [(1, 3)], 0, 10), ("bulk", [(1, 3), oids[-3], oids[0]], 1, 5),
        ("bulk", [oids[boundary - 2], oids[boundary - 1], oids[-4]], 2, 3), ("bulk", [oids[boundary - 3]], 0, 64),
        ("bulk", [oids[5], oids[9]], 5, 7), ("bulk", [oids[-2], (1, 3)], 0, 30), ("bulk", [oids[-1]], 1, 0),
        ("bulk", [oids[3], oids[40]], 0, 32),
    ]


def test_answers_equal_pysnmps(live: InProcessAgent, oids: list[tuple[int, ...]]) -> None:
    for n, (kind, names, a, b) in enumerate(_requests(oids)):
        _same(live, MONITOR, c.pdu(kind, names, a, b, request_id=1000 + n))


def test_restricted_view_equals_pysnmps(live: InProcessAgent, oids: list[tuple[int, ...]]) -> None:
    for kind, names, a, b in _requests(oids):
        _same(live, NARROW, c.pdu(kind, names, a, b))
    seen, cursor = [], (0, 0)
    while True:  # a whole GETNEXT walk of the narrow view
        (name, value), = _same(live, NARROW, c.pdu("next", [cursor])).varbinds
        if value == b"\x82\x00":
            break
        seen.append(name)
        cursor = name
    assert seen and all(any(o[:len(s)] == s for s in NARROW_VIEW) for o in seen)


@pytest.mark.parametrize("user", COMBOS, ids=lambda u: u.name)
def test_every_protocol_combination(live: InProcessAgent, oids: list[tuple[int, ...]], user: V3User) -> None:
    _same(live, user, c.pdu("get", [oids[1], oids[-1]]))
    _same(live, user, c.pdu("bulk", [oids[20], (1, 3)], 1, 20))


def test_bulk_beyond_pysnmps_64_varbinds_extends_its_answer(live: InProcessAgent) -> None:
    """pysnmp caps a GETBULK at 64 varbinds; the fast path fills the message, with the same first ones."""
    ours, theirs = _both(live, _send(live, MONITOR, c.pdu("bulk", [(1, 3), (1, 3, 6, 1, 4)], 0, 100)),
                         _keys(MONITOR), fast=True)
    assert len(theirs.varbinds) == 64 and len(ours.varbinds) == 200
    assert ours.varbinds[:64] == theirs.varbinds and ours.pdu[:4] == theirs.pdu[:4]


def test_a_bulk_with_nothing_to_return_gets_an_empty_response(live: InProcessAgent) -> None:
    """pysnmp 7.1 answers nothing at all here (its GETBULK responder raises on an empty result): RFC 3416 4.2.3
    wants a Response, which the fast path sends, as for v2c."""
    for names, repetitions in (([(1, 3)], 0), ([], 10)):
        before = live.answered
        got = c.reply(live.ask(_send(live, MONITOR, c.pdu("bulk", names, 0, repetitions))), _keys(MONITOR))
        assert (got.kind, got.status, got.index, got.varbinds) == ("response", 0, 0, [])
        assert live.answered == before + 1


NO_KEYS = c.Keys(b"", "sha256", 0, b"", b"")  # for replies that cannot be authenticated: noAuthNoPriv reports


def _wrong(live: InProcessAgent, datagram: bytes, counter: tuple[int, ...] | None, keys: c.Keys = NO_KEYS) -> None:
    """Left to pysnmp: the same reply both ways, its counter (if a report) counted once per message."""
    ours, theirs = _both(live, datagram, keys, fast=False)
    if counter is None:
        assert ours.pdu == theirs.pdu and ours.kind == "response"
        return
    assert ours.kind == theirs.kind == "report"
    ((oid1, value1),), ((oid2, value2),) = ours.varbinds, theirs.varbinds
    assert oid1 == oid2 == counter
    assert int.from_bytes(value2[2:], "big") == int.from_bytes(value1[2:], "big") + 1


def test_everything_unusual_goes_to_pysnmp(live: InProcessAgent, oids: list[tuple[int, ...]]) -> None:
    get = c.pdu("get", [oids[0]])
    keys = _keys(MONITOR)
    boots, now = live.engine_clock()
    wrong_auth = c.keys_for(V3User("monitor", "not-the-auth-key", "monitor-priv-key"), ENGINE_ID)
    wrong_priv = c.keys_for(V3User("monitor", "monitor-auth-key", "not-the-priv-key"), ENGINE_ID)
    stranger = c.keys_for(V3User("stranger", "stranger-auth", "stranger-priv"), ENGINE_ID)
    _wrong(live, c.request(keys, b"", 0, 0, get, flags=0x04, context_engine=b""), UNKNOWN_ENGINE)  # discovery
    _wrong(live, c.request(stranger, ENGINE_ID, boots, now, get), UNKNOWN_USER)
    _wrong(live, c.request(keys, bytes(16), boots, now, get), UNKNOWN_USER)  # another engine: no such user there
    _wrong(live, c.request(wrong_auth, ENGINE_ID, boots, now, get), WRONG_DIGEST, keys)
    _wrong(live, c.request(keys, ENGINE_ID, boots, now + 151, get), NOT_IN_WINDOW, keys)
    _wrong(live, c.request(keys, ENGINE_ID, boots, now + 400, get), NOT_IN_WINDOW, keys)
    _wrong(live, c.request(keys, ENGINE_ID, boots + 1, now, get), NOT_IN_WINDOW, keys)
    _wrong(live, c.request(keys, ENGINE_ID, boots - 1, now, get), NOT_IN_WINDOW, keys)
    _wrong(live, c.request(keys, ENGINE_ID, boots, now, get, flags=0x05), UNSUPPORTED_LEVEL, keys)  # authNoPriv
    _wrong(live, c.request(wrong_priv, ENGINE_ID, boots, now, get), DECRYPTION, keys)  # MAC right, garbage inside
    _wrong(live, c.request(keys, ENGINE_ID, boots, now, get, cipher=lambda d: d[:-3]), DECRYPTION, keys)
    _wrong(live, c.request(keys, ENGINE_ID, boots, now, get, cipher=lambda d: bytes((d[0] ^ 0x55,)) + d[1:]),
           DECRYPTION, keys)
    _wrong(live, c.request(keys, ENGINE_ID, boots, now, get, cipher=lambda d: d[:5] + bytes((d[5] ^ 1,)) + d[6:],
                           mac_keys=wrong_auth), WRONG_DIGEST, keys)  # damaged in transit: the MAC fails
    # a SET (pysnmp answers it: this user may not write); other contexts, which pysnmp drops, are in
    # test_damaged_messages_are_never_answered
    _wrong(live, c.request(keys, ENGINE_ID, boots, now, c.pdu("set", [oids[0]])), None, keys)


def test_a_replayed_message_outside_the_time_window_gets_a_report(live: InProcessAgent,
                                                                   oids: list[tuple[int, ...]]) -> None:
    captured = _send(live, MONITOR, c.pdu("get", [oids[0]]))
    assert c.reply(live.ask(captured), _keys(MONITOR)).kind == "response"
    live.shift_engine_time(200)
    try:
        before = live.answered
        replayed = c.reply(live.ask(captured), _keys(MONITOR))
        assert replayed.kind == "report" and replayed.varbinds[0][0] == NOT_IN_WINDOW
        assert live.answered == before
        assert abs(replayed.time - live.engine_clock()[1]) <= 1  # pysnmp reports the shifted time
        _same(live, MONITOR, c.pdu("get", [oids[0]]))  # a fresh request uses the shifted time on both paths
    finally:
        live.shift_engine_time(-200)


def test_responses_fit_the_managers_msg_max_size(live: InProcessAgent, oids: list[tuple[int, ...]]) -> None:
    for size in (484, 1000, 1472, 8000):
        data = live.ask(_send(live, MONITOR, c.pdu("bulk", [(1, 3)], 0, 2000), max_size=size))
        assert size - 140 < len(data) <= size, size
        assert c.reply(data, _keys(MONITOR)).status == 0
        data = live.ask(_send(live, MONITOR, c.pdu("get", oids[:60] * (size // 400)), max_size=size))
        tbig = c.reply(data, _keys(MONITOR))
        assert len(data) <= size and (tbig.status, tbig.index, tbig.varbinds) == (1, 0, [])  # tooBig


# -- robustness: the fast path alone, then the agent ------------------------------------------------------------


def _standalone(view: MibView, clock: Callable[[], tuple[int, int]]) -> FastV3:
    keys = usm.user_keys(MONITOR, ENGINE_ID, ((1, 3, 6, 1),))
    assert keys is not None
    return FastV3(ENGINE_ID, [keys], fastpath.FastPath({}, lambda: view, lambda: 0.0), clock)


def test_damaged_messages_are_never_answered(live: InProcessAgent) -> None:
    view = live.model.view()
    fast = _standalone(view, lambda: (1, 1000))
    keys = _keys(MONITOR)
    good = c.request(keys, ENGINE_ID, 1, 1000, c.pdu("bulk", [(1, 3)], 0, 5))
    assert c.reply(fast(good) or b"", keys).kind == "response"
    rng = random.Random(17)
    for data in mutations(good, rng, 4000):
        assert fast(data) is None, data.hex()
    # keyed damage: wrong keys, stale, another level, the ciphertext cut or altered under a valid MAC
    bad = [c.request(c.keys_for(V3User("monitor", "wrong-auth-key", "monitor-priv-key"), ENGINE_ID), ENGINE_ID, 1,
                     1000, c.pdu("get", [(1, 3)])),
           c.request(c.keys_for(V3User("monitor", "monitor-auth-key", "wrong-priv-key"), ENGINE_ID), ENGINE_ID, 1,
                     1000, c.pdu("get", [(1, 3)])),
           c.request(keys, ENGINE_ID, 1, 849, c.pdu("get", [(1, 3)])),
           c.request(keys, ENGINE_ID, 2, 1000, c.pdu("get", [(1, 3)])),
           c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]), flags=0x05),
           c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]), flags=0x03),  # not reportable
           c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]), salt=b"short"),
           c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]), context_name=b"other"),
           c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]), context_engine=bytes(16)),
           c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]), context_engine=b""),
           c.request(keys, ENGINE_ID, 1, 1000, c.pdu("set", [(1, 3)]))]
    for cut in range(1, 40):
        bad.append(c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]), cipher=lambda d, n=cut: d[:-n]))
        bad.append(c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]),
                             cipher=lambda d, n=cut: d[:n - 1] + bytes((d[n - 1] ^ 0x80,)) + d[n:])
                   if cut < 8 else c.request(keys, ENGINE_ID, 1, 1000, c.pdu("get", [(1, 3)]),
                                             plain=lambda d, n=cut: d + bytes(n)))
    for data in bad:
        assert fast(data) is None
    for data in mutations(bad[-1], rng, 500):  # mutations of a keyed but faulty message
        assert fast(data) is None


def test_the_agent_survives_a_flood_of_damaged_messages(live: InProcessAgent, oids: list[tuple[int, ...]]) -> None:
    before = live.answered
    mutated = list(mutations(_send(live, MONITOR, c.pdu("bulk", [(1, 3)], 0, 5), msg_id=5), random.Random(5), 400))
    for batch in range(0, len(mutated), 50):  # in batches, each followed by a request: no socket buffer overflows
        for data in mutated[batch:batch + 50]:
            live.send_only(data)
        reply = c.reply(live.ask(_send(live, MONITOR, c.pdu("get", [oids[0]]), msg_id=900 + batch)), _keys(MONITOR))
        assert reply.kind == "response" and reply.varbinds[0][0] == oids[0]
    assert live.answered == before + len(range(0, len(mutated), 50))


# -- interop: net-snmp ----------------------------------------------------------------------------------------


def _walk(live: InProcessAgent, *args: str) -> str:
    tool = require_tool("snmpbulkwalk", "snmp")
    done = subprocess.run([tool, "-m", "", "-On", "-Cr50", "-t", "10", "-r", "1", *args, f"127.0.0.1:{live.port}",
                           "1.3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Timeout" not in done.stderr, done.stderr
    return done.stdout


@pytest.mark.parametrize("user", [MONITOR, INTEROP], ids=lambda u: u.name)
def test_net_snmp_v3_walks_equal_the_v2c_walk(live: InProcessAgent, user: V3User) -> None:
    v2c = _walk(live, "-v2c", "-c", COMMUNITY)
    before = live.answered
    v3 = _walk(live, "-v3", "-l", "authPriv", "-u", user.name, "-a", user.auth_protocol, "-A", user.auth_key,
               "-x", user.priv_protocol, "-X", user.priv_key)
    assert v3 == v2c and v2c.count("\n") > 300
    assert live.answered - before >= v2c.count("\n") // 50  # the walk's requests took the fast path
