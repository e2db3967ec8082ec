"""SET planning in process: no agent, no socket, no libvirt; plain varbinds in, steps or SetError out.

The planner (exporter/snmp/setreq.py) sees the same plain varbinds whichever
way a SET came; the two edges that make them (pysnmp's values for the
standalone agent, AgentX varbinds for the bridge) are checked at the end.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from pathlib import Path

import pytest
from pysnmp.proto import rfc1902
from pysnmp.smi import error as smi_error

from exporter.config import resolve
from exporter.control import Controller
from exporter.snapshot import (
    STATE_PAUSED,
    STATE_PMSUSPENDED,
    STATE_RUNNING,
    STATE_SHUTOFF,
    Domain,
    Host,
    Snapshot,
)
from exporter.snmp import agentx_bridge, agentx_pdu, mib, setreq, setresponder
from exporter.snmp.model import SnmpModel
from exporter.snmp.setreq import SetBind, SetError, Syntax

RUN = Domain("run", "00000000-0000-4000-8000-000000000001", 1, STATE_RUNNING, active=True)
PAUSED = Domain("paused", "00000000-0000-4000-8000-000000000002", 2, STATE_PAUSED, active=True)
OFF = Domain("off", "00000000-0000-4000-8000-000000000003", -1, STATE_SHUTOFF)
PMS = Domain("pms", "00000000-0000-4000-8000-000000000004", 4, STATE_PMSUSPENDED, active=True)
STUCK = Domain("stuck", "00000000-0000-4000-8000-000000000005", 5, STATE_RUNNING, active=True, timed_out=True)
SNAP = Snapshot(up=True, taken_at=1.0, host=Host(driver="TEST"), domains=(OFF, PAUSED, PMS, RUN, STUCK))
ROWS = {n: d.uuid for n, d in enumerate(SNAP.domains, start=1)}  # lvxDomainIndex -> UUID
ROW = {uuid: n for n, uuid in ROWS.items()}
SPIN_LOCK = mib.BY_NAME["lvxActionSpinLock"].oid + (0,)
UNKNOWN_UUID = "00000000-0000-4000-8000-000000000bad"


class _Controller(Controller):
    """A controller that runs nothing; ``busy`` names the domains with an action still running."""

    def __init__(self, busy: frozenset[str] = frozenset()) -> None:
        super().__init__(lambda: None, timeout_s=1.0, reply_within_s=1.0)
        self._running = busy

    def busy(self, uuid: str) -> bool:
        return uuid in self._running


def lvx(column: str, dom: Domain | int, value: object, syntax: Syntax = Syntax.INTEGER) -> SetBind:
    """A varbind of our domain table (a row number instead of a domain: a row no domain has)."""
    row = dom if isinstance(dom, int) else ROW[dom.uuid]
    return SetBind(mib.BY_NAME[column].oid + (row,), syntax, value)


def guest(column: str, dom: Domain | str, value: object) -> SetBind:
    """A varbind of libvirt-snmp's guest table, indexed by the UUID's 16 bytes."""
    uuid = dom if isinstance(dom, str) else dom.uuid
    return SetBind(mib.BY_NAME[column].oid + tuple(uuidlib.UUID(uuid).bytes), Syntax.INTEGER, value)


def plan(*binds: SetBind, spin_lock: int = 0, controller: Controller | None = None) -> setreq.Plan:
    return setreq.plan(binds, SNAP, ROWS, controller if controller is not None else _Controller(), spin_lock)


def refused(*binds: SetBind, spin_lock: int = 0, controller: Controller | None = None) -> tuple[str, int]:
    """(status, 0-based index) of a SET that must be refused."""
    with pytest.raises(SetError) as caught:
        plan(*binds, spin_lock=spin_lock, controller=controller)
    return caught.value.status, caught.value.index


def verbs(p: setreq.Plan) -> list[tuple[str, str]]:
    return [(s.name, s.verb) for s in p.steps]


# -- valid SETs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dom", "wanted", "verb"), [
    (RUN, 2, "suspend"), (RUN, 3, "shutdown"), (RUN, 4, "destroy"),
    (PAUSED, 1, "resume"), (PAUSED, 3, "shutdown"), (PAUSED, 4, "destroy"),
    (PMS, 1, "wakeup"), (PMS, 4, "destroy"),
    (OFF, 1, "start"), (OFF, 2, "start_paused"),
])
def test_admin_state_picks_the_verb_that_reaches_it(dom: Domain, wanted: int, verb: str) -> None:
    assert verbs(plan(lvx("lvxDomainAdminState", dom, wanted))) == [(dom.name, verb)]


@pytest.mark.parametrize(("dom", "wanted"), [(RUN, 1), (PAUSED, 2), (PMS, 2), (OFF, 3), (OFF, 4)])
def test_admin_state_already_reached_is_a_success_with_nothing_to_do(dom: Domain, wanted: int) -> None:
    p = plan(lvx("lvxDomainAdminState", dom, wanted))
    assert p.steps == [] and p.targets == [dom.name] and "already" in p.actions[0]


def test_actions_and_several_domains_in_one_request() -> None:
    p = plan(lvx("lvxDomainAction", RUN, 2), lvx("lvxDomainAction", PAUSED, 3), lvx("lvxDomainAction", OFF, 1),
             lvx("lvxDomainAdminState", PMS, 1))
    assert verbs(p) == [("run", "reboot"), ("paused", "reset"), ("pms", "wakeup")]
    assert p.step_varbind == [0, 1, 3]  # lvxDomainAction none(1) has no step
    assert p.targets == ["run", "paused", "off", "pms"] and p.actions == ["reboot", "reset", "none", "wakeup"]
    assert verbs(plan(lvx("lvxDomainAction", PAUSED, 4))) == [("paused", "managed_save")]


def test_a_domain_that_does_not_answer_may_only_be_powered_off(caplog: pytest.LogCaptureFixture) -> None:
    assert verbs(plan(lvx("lvxDomainAdminState", STUCK, 4))) == [("stuck", "destroy")]
    assert verbs(plan(guest("libvirtGuestRowStatus", STUCK, 6))) == [("stuck", "destroy")]
    with caplog.at_level(logging.WARNING, logger="exporter.snmp.setreq"):
        assert refused(lvx("lvxDomainAdminState", RUN, 2), lvx("lvxDomainAdminState", STUCK, 2)) == \
            ("resourceUnavailable", 1)
    assert "domain stuck is not answering" in caplog.text


# -- the spin lock (lvxActionSpinLock, TestAndIncr) ------------------------------------------------------------


def test_spin_lock_with_its_current_value_guards_the_request() -> None:
    p = plan(SetBind(SPIN_LOCK, Syntax.INTEGER, 7), lvx("lvxDomainAdminState", RUN, 2), spin_lock=7)
    assert p.spin_lock and verbs(p) == [("run", "suspend")] and p.step_varbind == [1]
    assert p.targets == ["run"]  # the spin lock is no target of the audit line
    alone = plan(SetBind(SPIN_LOCK, Syntax.INTEGER, 0))
    assert alone.spin_lock and alone.steps == [] and alone.targets == []


def test_spin_lock_refusals() -> None:
    assert refused(SetBind(SPIN_LOCK, Syntax.INTEGER, 6), spin_lock=7) == ("inconsistentValue", 0)  # stale
    assert refused(lvx("lvxDomainAdminState", RUN, 2), SetBind(SPIN_LOCK, Syntax.INTEGER, 8), spin_lock=7) == \
        ("inconsistentValue", 1)
    twice = (SetBind(SPIN_LOCK, Syntax.INTEGER, 7), SetBind(SPIN_LOCK, Syntax.INTEGER, 7))
    assert refused(*twice, spin_lock=7) == ("inconsistentValue", 1)  # one increment per request
    assert refused(SetBind(SPIN_LOCK, Syntax.INTEGER, -1)) == ("wrongValue", 0)
    assert refused(SetBind(SPIN_LOCK, Syntax.INTEGER, 2**31)) == ("wrongValue", 0)
    assert refused(SetBind(SPIN_LOCK[:-1] + (1,), Syntax.INTEGER, 0)) == ("noCreation", 0)  # a scalar has .0 only
    assert refused(SetBind(SPIN_LOCK, Syntax.GAUGE32, 0)) == ("wrongType", 0)


# -- libvirt-snmp's guest table ---------------------------------------------------------------------------------


def test_create_and_go_starts_a_defined_domain() -> None:
    p = plan(guest("libvirtGuestRowStatus", OFF, 4))
    assert verbs(p) == [("off", "start")] and p.actions == ["start"] and p.step_varbind == [0]
    assert refused(guest("libvirtGuestRowStatus", RUN, 4)) == ("inconsistentValue", 0)  # already active
    # with a State in the same request, the State is checked against the shut-off row (libvirt-snmp's order)
    assert refused(guest("libvirtGuestRowStatus", OFF, 4), guest("libvirtGuestState", OFF, 1)) == \
        ("inconsistentValue", 1)


def test_row_status_destroy_active_and_the_rest() -> None:
    assert verbs(plan(guest("libvirtGuestRowStatus", RUN, 6))) == [("run", "destroy")]
    assert refused(guest("libvirtGuestRowStatus", OFF, 6)) == ("inconsistentValue", 0)
    active = plan(guest("libvirtGuestRowStatus", RUN, 1))
    assert active.steps == [] and active.actions == ["active (already)"]
    for value in (0, 2, 3, 5, 7):  # notInService, notReady, createAndWait and out of range
        assert refused(guest("libvirtGuestRowStatus", OFF, value)) == ("wrongValue", 0), value


def test_guest_state_transitions() -> None:
    assert verbs(plan(guest("libvirtGuestState", RUN, 3))) == [("run", "suspend")]
    assert verbs(plan(guest("libvirtGuestState", RUN, 4))) == [("run", "shutdown")]
    assert verbs(plan(guest("libvirtGuestState", PAUSED, 1))) == [("paused", "resume")]
    for dom, wanted in ((RUN, 1), (PAUSED, 3), (PMS, 1), (OFF, 1)):
        assert refused(guest("libvirtGuestState", dom, wanted)) == ("inconsistentValue", 0), (dom.name, wanted)
    assert refused(guest("libvirtGuestState", RUN, 7)) == ("wrongValue", 0)


def test_guest_rows_that_do_not_exist_are_inconsistent_names() -> None:
    assert refused(guest("libvirtGuestRowStatus", UNKNOWN_UUID, 4)) == ("inconsistentName", 0)
    short = SetBind(mib.BY_NAME["libvirtGuestRowStatus"].oid + (1, 2, 3), Syntax.INTEGER, 4)
    assert refused(lvx("lvxDomainAdminState", RUN, 1), short) == ("inconsistentName", 1)


# -- each error status, with its index ------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [s for s in Syntax if s is not Syntax.INTEGER])
def test_anything_but_an_integer_is_the_wrong_type(syntax: Syntax) -> None:
    value = {Syntax.OCTET_STRING: b"paused", Syntax.OBJECT_IDENTIFIER: (1, 3), Syntax.NULL: None}.get(syntax, 2)
    assert refused(lvx("lvxDomainAdminState", RUN, 1), lvx("lvxDomainAdminState", PAUSED, value, syntax)) == \
        ("wrongType", 1)


def test_not_writable() -> None:
    read_only = SetBind(mib.BY_NAME["lvxDomainName"].oid + (ROW[RUN.uuid],), Syntax.OCTET_STRING, b"x")
    assert refused(lvx("lvxDomainAdminState", RUN, 2), read_only) == ("notWritable", 1)
    assert refused(SetBind((1, 3, 6, 1, 4, 1, 99999, 1, 0), Syntax.INTEGER, 1)) == ("notWritable", 0)  # not ours
    assert refused(SetBind((1, 3, 6, 1, 2, 1, 1, 1, 0), Syntax.OCTET_STRING, b"x")) == ("notWritable", 0)  # sysDescr
    # control off: nothing is writable, before anything else is looked at
    with pytest.raises(SetError) as off:
        setreq.plan([lvx("lvxDomainAdminState", RUN, 2)], SNAP, ROWS, None, 0)
    assert (off.value.status, off.value.index) == ("notWritable", 0)


def test_no_creation_for_rows_no_domain_has() -> None:
    assert refused(lvx("lvxDomainAdminState", RUN, 2), lvx("lvxDomainAdminState", 99, 2)) == ("noCreation", 1)
    assert refused(lvx("lvxDomainAction", 99, 2)) == ("noCreation", 0)
    too_long = SetBind(mib.BY_NAME["lvxDomainAdminState"].oid + (ROW[RUN.uuid], 0), Syntax.INTEGER, 2)
    assert refused(too_long) == ("noCreation", 0)


def test_wrong_values() -> None:
    assert refused(lvx("lvxDomainAdminState", RUN, 0)) == ("wrongValue", 0)
    assert refused(lvx("lvxDomainAdminState", RUN, 5)) == ("wrongValue", 0)
    assert refused(lvx("lvxDomainAction", RUN, 1), lvx("lvxDomainAction", PAUSED, 5)) == ("wrongValue", 1)


def test_inconsistent_values() -> None:
    assert refused(lvx("lvxDomainAdminState", PMS, 3)) == ("inconsistentValue", 0)  # no graceful shutdown from it
    assert refused(lvx("lvxDomainAction", OFF, 2)) == ("inconsistentValue", 0)  # reboot an inactive domain
    assert refused(lvx("lvxDomainAction", PMS, 2)) == ("inconsistentValue", 0)  # reboot needs running or paused
    # one action per domain per request; a no-op beside an action is allowed
    assert refused(lvx("lvxDomainAdminState", RUN, 2), lvx("lvxDomainAction", RUN, 2)) == ("inconsistentValue", 1)
    assert refused(lvx("lvxDomainAdminState", RUN, 2), guest("libvirtGuestState", RUN, 4)) == \
        ("inconsistentValue", 1)
    assert verbs(plan(lvx("lvxDomainAdminState", RUN, 1), lvx("lvxDomainAction", RUN, 2))) == [("run", "reboot")]


def test_resource_unavailable_while_an_action_runs() -> None:
    busy = _Controller(frozenset({RUN.uuid}))
    assert refused(lvx("lvxDomainAdminState", PAUSED, 1), lvx("lvxDomainAdminState", RUN, 2), controller=busy) == \
        ("resourceUnavailable", 1)
    assert plan(lvx("lvxDomainAdminState", RUN, 1), controller=busy).steps == []  # nothing to run: no wait


def test_the_first_refused_varbind_is_the_one_reported() -> None:
    binds = (lvx("lvxDomainAdminState", RUN, 2), lvx("lvxDomainAdminState", 99, 2),
             lvx("lvxDomainAdminState", PAUSED, "x", Syntax.OCTET_STRING))
    assert refused(*binds) == ("noCreation", 1)


def test_set_error_carries_status_and_index() -> None:
    error = SetError("wrongType", 2)
    assert (error.status, error.index, error.error_index, error.name) == ("wrongType", 2, 3, "WrongTypeError")
    assert SetError("inconsistentName", 0).name == "InconsistentNameError"
    assert str(error) == "wrongType at varbind 3"


def test_describe_names_the_domains_of_a_refused_set() -> None:
    oids = [SPIN_LOCK, lvx("lvxDomainAdminState", RUN, 2).oid, guest("libvirtGuestState", PAUSED, 1).oid,
            lvx("lvxDomainAdminState", 99, 2).oid, (1, 3, 6, 1, 4, 1, 99999, 1)]
    assert setreq.describe(oids, SNAP, ROWS) == "run,paused,lvxDomainAdminState.99,1.3.6.1.4.1.99999.1"
    assert setreq.describe([SPIN_LOCK], SNAP, ROWS) == "-"


# -- the model: audit and previous state --------------------------------------------------------------------


def _model(tmp_path: Path, control: bool = True) -> SnmpModel:
    config = resolve({}, {}, {"control": {"enabled": control}, "state": {"directory": str(tmp_path / "state")}})
    model = SnmpModel(config.snmp, Path(config.state_directory), lambda: SNAP,
                      controller=_Controller() if config.control.enabled else None)
    model.view()  # indexes for the snapshot's domains, in name order
    return model


def test_model_audits_a_refused_set_and_remembers_states_for_notifications(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _model(tmp_path)
    rows = {uuid: n for n, uuid in model.domain_index().items()}
    admin = mib.BY_NAME["lvxDomainAdminState"].oid
    with caplog.at_level(logging.INFO, logger="exporter.audit"):
        with pytest.raises(SetError):
            model.plan_set([SetBind(admin + (rows[RUN.uuid],), Syntax.OCTET_STRING, b"paused")], "tester", "here")
        p = model.plan_set([SetBind(admin + (rows[RUN.uuid],), Syntax.INTEGER, 2)], "tester", "here")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "exporter.audit"]
    assert "principal=tester" in line and "domain=run" in line and "result=refused: WrongTypeError" in line
    assert verbs(p) == [("run", "suspend")] and model.state_before_action == {RUN.uuid: STATE_RUNNING}


def test_model_without_control_refuses_every_set(tmp_path: Path) -> None:
    model = _model(tmp_path, control=False)
    with pytest.raises(SetError) as off:
        model.plan_set([SetBind(SPIN_LOCK, Syntax.INTEGER, 0)], "tester", "here")
    assert off.value.status == "notWritable"


# -- the edges: pysnmp values and AgentX varbinds as plain varbinds --------------------------------------------


@pytest.mark.parametrize(("value", "syntax", "plain"), [
    (rfc1902.Integer32(-3), Syntax.INTEGER, -3), (rfc1902.Integer(2), Syntax.INTEGER, 2),
    (rfc1902.Unsigned32(2), Syntax.GAUGE32, 2), (rfc1902.Gauge32(2), Syntax.GAUGE32, 2),
    (rfc1902.Counter32(2), Syntax.COUNTER32, 2), (rfc1902.Counter64(2), Syntax.COUNTER64, 2),
    (rfc1902.TimeTicks(2), Syntax.TIME_TICKS, 2), (rfc1902.OctetString(b"ab"), Syntax.OCTET_STRING, b"ab"),
    (rfc1902.IpAddress("127.0.0.1"), Syntax.IP_ADDRESS, b"\x7f\0\0\x01"), (rfc1902.Opaque(b"x"), Syntax.OPAQUE, b"x"),
    (rfc1902.ObjectIdentifier((1, 3, 6)), Syntax.OBJECT_IDENTIFIER, (1, 3, 6)),
    (rfc1902.Bits(b"\x80"), Syntax.OCTET_STRING, b"\x80"),
])
def test_pysnmp_values_become_plain_varbinds(value: object, syntax: Syntax, plain: object) -> None:
    bind = setresponder.set_bind(rfc1902.ObjectName(SPIN_LOCK), value)
    assert bind == SetBind(SPIN_LOCK, syntax, plain)
    assert all(type(n) is int for n in bind.oid)


def test_set_errors_become_the_pysnmp_errors_of_their_status() -> None:
    for status, cls in (("wrongType", smi_error.WrongTypeError), ("notWritable", smi_error.NotWritableError),
                        ("noCreation", smi_error.NoCreationError), ("wrongValue", smi_error.WrongValueError),
                        ("inconsistentValue", smi_error.InconsistentValueError),
                        ("inconsistentName", smi_error.InconsistentNameError),
                        ("resourceUnavailable", smi_error.ResourceUnavailableError)):
        error = setresponder.smi_error_of(SetError(status, 2), rfc1902.ObjectName(SPIN_LOCK))
        assert type(error) is cls and error["idx"] == 2, status
        assert type(error).__name__ == SetError(status, 2).name  # the audit line words it as before


def test_agentx_varbinds_become_plain_varbinds() -> None:
    cases = [(agentx_pdu.INTEGER, -1, Syntax.INTEGER), (agentx_pdu.OCTET_STRING, b"x", Syntax.OCTET_STRING),
             (agentx_pdu.GAUGE32, 2, Syntax.GAUGE32), (agentx_pdu.COUNTER64, 2, Syntax.COUNTER64),
             (agentx_pdu.OPAQUE, b"x", Syntax.OPAQUE), (agentx_pdu.OBJECT_IDENTIFIER, (1, 3), Syntax.OBJECT_IDENTIFIER)]
    for wire_type, value, syntax in cases:
        assert agentx_bridge.set_bind(agentx_pdu.VarBind(wire_type, SPIN_LOCK, value)) == \
            SetBind(SPIN_LOCK, syntax, value)
    assert agentx_bridge.set_bind(agentx_pdu.VarBind(agentx_pdu.NULL, SPIN_LOCK)) == SetBind(SPIN_LOCK, Syntax.NULL)


def test_agentx_test_set_answers_with_the_status_and_its_one_based_index(tmp_path: Path) -> None:
    model = _model(tmp_path)
    bridge = agentx_bridge.Bridge(model, "/agentx")
    admin = mib.BY_NAME["lvxDomainAdminState"].oid + (max(model.domain_index()) + 1,)  # a row no domain has
    error, index, p = bridge.test_set([agentx_pdu.VarBind(agentx_pdu.INTEGER, SPIN_LOCK, 0),
                                       agentx_pdu.VarBind(agentx_pdu.INTEGER, admin, 2)])
    assert (error, index, p) == (agentx_pdu.ERROR_CODES["noCreation"], 2, None)
    error, index, p = bridge.test_set([agentx_pdu.VarBind(agentx_pdu.OCTET_STRING, SPIN_LOCK, b"0")])
    assert (error, index, p) == (agentx_pdu.ERROR_CODES["wrongType"], 1, None)
    error, index, p = bridge.test_set([agentx_pdu.VarBind(agentx_pdu.INTEGER, SPIN_LOCK, 0)])
    assert (error, index) == (0, 0) and isinstance(p, setreq.Plan) and p.spin_lock
