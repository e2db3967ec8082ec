"""Blocking calls on a few daemon threads, each given up on after a deadline.

libvirt cannot cancel a call: one that waits on a hung QEMU monitor (a
stopped process, a dead NFS server) returns only when the monitor does.
:func:`run_bounded` therefore never waits for such a call past its
deadline: it reports the item as abandoned, hands the rest of the work to a
fresh thread, and tells ``on_late`` when the abandoned call finally returns.
The caller keeps the item out of new calls until then, so that no second
call ever queues behind the first one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
R = TypeVar("R")


@dataclass
class Outcome(Generic[R]):
    """What became of each item: a result, an exception, or given up on (``abandoned``)."""

    results: dict[int, R] = field(default_factory=dict)
    errors: dict[int, BaseException] = field(default_factory=dict)
    abandoned: set[int] = field(default_factory=set)
    not_started: set[int] = field(default_factory=set)  # the overall deadline came first


def run_bounded(
    items: Sequence[Item],
    fn: Callable[[Item], R],
    *,
    workers: int,
    call_timeout: float,
    deadline: float | None = None,
    on_late: Callable[[Item, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    name: str = "libvirt-call",
) -> Outcome[R]:
    """Run ``fn`` over ``items`` on up to ``workers`` threads at once.

    A call still running ``call_timeout`` seconds after it began is
    abandoned: its item goes into ``Outcome.abandoned`` and a new thread
    takes over the remaining items.  When the abandoned call returns,
    ``on_late(item, seconds it took)`` runs in its thread.  At ``deadline``
    (a ``clock`` time) everything still running is abandoned and items not
    yet begun are left in ``not_started``.
    """
    outcome: Outcome[R] = Outcome()
    if not items:
        return outcome
    cond = threading.Condition()
    pending: deque[int] = deque(range(len(items)))
    running: dict[int, tuple[int, float]] = {}  # worker number -> (item index, start)
    retired: set[int] = set()
    next_worker = 0

    def work(number: int) -> None:
        while True:
            with cond:
                if number in retired or not pending:
                    running.pop(number, None)
                    cond.notify_all()
                    return
                index = pending.popleft()
                started = clock()
                running[number] = (index, started)
                cond.notify_all()  # the supervisor times this call from now
            try:
                value: R | None = fn(items[index])
                error: BaseException | None = None
            except BaseException as exc:  # handed to the caller in Outcome.errors
                value, error = None, exc
            with cond:
                if number in retired:  # given up on while it ran
                    late = True
                else:
                    late = False
                    running.pop(number, None)
                    if error is None:
                        outcome.results[index] = value  # type: ignore[assignment]
                    else:
                        outcome.errors[index] = error
                    cond.notify_all()
            if late:
                if on_late is not None:
                    on_late(items[index], clock() - started)
                return

    def spawn() -> None:
        nonlocal next_worker
        number, next_worker = next_worker, next_worker + 1
        running[number] = (-1, clock())  # placeholder until it takes an item
        threading.Thread(target=work, args=(number,), name=name, daemon=True).start()

    with cond:
        for _ in range(min(workers, len(items))):
            spawn()
        while True:
            now = clock()
            if deadline is not None and now >= deadline:
                for number, (index, _) in list(running.items()):
                    retired.add(number)
                    if index >= 0:
                        outcome.abandoned.add(index)
                running.clear()
                outcome.not_started.update(pending)
                pending.clear()
                break
            wake = deadline
            for number, (index, started) in list(running.items()):
                if index < 0:
                    continue
                expires = started + call_timeout
                if now >= expires:
                    retired.add(number)
                    del running[number]
                    outcome.abandoned.add(index)
                    if pending:
                        spawn()
                elif wake is None or expires < wake:
                    wake = expires
            if not running and not pending:
                break
            cond.wait(None if wake is None else max(0.0, wake - now))
    return outcome
