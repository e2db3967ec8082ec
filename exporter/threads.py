"""Blocking libvirt calls off the asyncio event loop."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_daemon_thread(fn: Callable[..., T], *args: object, name: str = "libvirt-call") -> asyncio.Future[T]:
    """Run ``fn(*args)`` in a new daemon thread; the result arrives as a future on the running loop.

    A daemon thread, not an executor: a call stuck in a hung libvirtd must not
    keep the process from exiting on SIGTERM.  The poller never starts a poll
    while one runs, and control runs one action per domain at a time, so
    threads do not pile up.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # delivered to the awaiting coroutine
            outcome = functools.partial(future.set_exception, exc)
        else:
            outcome = functools.partial(future.set_result, result)
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:
            pass  # the loop is gone: the process is exiting

    threading.Thread(target=work, name=name, daemon=True).start()
    return future
