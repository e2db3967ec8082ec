"""run_bounded: calls on a few threads, each given up on at its deadline (pure logic, in process).

The calls here block on threading.Events that the test releases, so a "hung"
call is a real blocked thread, and nothing depends on how busy the machine is.
"""

from __future__ import annotations

import threading
import time

import pytest

from exporter.calls import run_bounded


def test_every_item_runs_once_and_results_keep_their_index() -> None:
    """Twenty quick calls on three threads: each result under its own index, no call made twice."""
    seen: list[int] = []
    lock = threading.Lock()

    def square(n: int) -> int:
        with lock:
            seen.append(n)
        return n * n

    outcome = run_bounded(list(range(20)), square, workers=3, call_timeout=30)
    assert outcome.results == {i: i * i for i in range(20)}
    assert sorted(seen) == list(range(20))
    assert not outcome.errors and not outcome.abandoned and not outcome.not_started


def test_errors_are_returned_per_item() -> None:
    """An exception of one call is handed back under its index; the other calls still run."""

    def check(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        return n

    outcome = run_bounded([1, 2, 3], check, workers=2, call_timeout=30)
    assert outcome.results == {0: 1, 2: 3}
    assert isinstance(outcome.errors[1], ValueError)


def test_a_hung_call_is_abandoned_and_the_rest_still_run() -> None:
    """One call that never returns by itself: given up on at its deadline, another thread takes over the
    remaining items, and on_late reports the call once it does return."""
    release = threading.Event()
    late: list[tuple[str, float]] = []
    late_done = threading.Event()

    def work(item: str) -> str:
        if item == "stuck":
            release.wait(60)
        return item.upper()

    def on_late(item: str, seconds: float) -> None:
        late.append((item, seconds))
        late_done.set()

    items = ["stuck", *(f"d{i}" for i in range(10))]
    t0 = time.monotonic()
    outcome = run_bounded(items, work, workers=1, call_timeout=0.3, on_late=on_late)
    took = time.monotonic() - t0
    assert outcome.abandoned == {0}
    assert outcome.results == {i: items[i].upper() for i in range(1, 11)}  # one worker, yet all done
    assert took < 30, took
    assert late == []
    release.set()
    assert late_done.wait(30), "on_late was not called when the abandoned call returned"
    assert late[0][0] == "stuck" and late[0][1] >= 0.3


def test_overall_deadline_leaves_unstarted_items() -> None:
    """At the overall deadline, running calls are abandoned and items not begun are reported as such."""
    release = threading.Event()

    def work(_item: int) -> None:
        release.wait(60)

    try:
        outcome = run_bounded(list(range(5)), work, workers=2, call_timeout=60, deadline=time.monotonic() + 0.3)
    finally:
        release.set()
    assert outcome.abandoned == {0, 1}
    assert outcome.not_started == {2, 3, 4}
    assert not outcome.results


@pytest.mark.parametrize("workers", [1, 4])
def test_no_items_no_threads(workers: int) -> None:
    """Nothing to do returns at once with an empty outcome."""
    before = threading.active_count()
    outcome = run_bounded([], lambda x: x, workers=workers, call_timeout=1)
    assert not outcome.results and threading.active_count() == before
