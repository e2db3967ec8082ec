"""The one child-process life cycle the test daemons share: start, wait until ready, read the log, stop.

A subclass builds its command line and calls :meth:`Daemon._spawn`, then :meth:`Daemon._wait_started` with
its own readiness check.  :meth:`Daemon.stop` sends a signal (SIGTERM by default), waits ``stop_timeout``
seconds, then kills; it is safe to call twice, and the ``with`` statement calls it on the way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, ClassVar, Self, TypeVar

from tests.support.wait import wait_until

T = TypeVar("T")


class Daemon:
    """A child process with a log file (its stdout and stderr, or one it writes itself)."""

    #: How messages name the process.
    what: ClassVar[str] = "process"
    #: Seconds given to the stop signal before SIGKILL.
    stop_timeout: ClassVar[float] = 10.0
    #: Characters of the log that :meth:`output` returns (None: all of it).
    tail_chars: ClassVar[int | None] = 3000
    #: Run in a session (and process group) of its own and signal the whole group (``make`` and its children).
    own_group: ClassVar[bool] = False

    def __init__(self, log: Path | None = None) -> None:
        """``log``: the file :meth:`output` reads (the process's own log, or where :meth:`_spawn` sends its
        output)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_path = log
        self._log_file: IO[bytes] | None = None

    def _spawn(self, argv: Sequence[str], *, capture: bool = False, append: bool = False,
               env: Mapping[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv``; with ``capture``, its stdout and stderr go to the log file (truncated, or appended
        to with ``append``), otherwise nowhere.  Stdin is /dev/null."""
        out: IO[bytes] | int = subprocess.DEVNULL
        if capture:
            assert self._log_path is not None, "capture needs a log file"
            self._close_log()
            self._log_file = open(self._log_path, "ab" if append else "wb")
            out = self._log_file
        self.proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=self.own_group)
        return self.proc

    def _wait_started(self, ready: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
        """``ready()``'s first truthy value.  If the process exits first or ``timeout`` passes, it is stopped
        and an AssertionError says why, with the log's tail."""
        proc = self.proc
        assert proc is not None, f"{self.what} was not started"

        def check() -> T:
            if proc.poll() is not None:
                raise AssertionError(f"{self.what} exited with {proc.returncode}")
            return ready()

        try:
            return wait_until(check, timeout, what, every)
        except AssertionError as exc:
            self.stop()  # not left running behind a failed test
            raise AssertionError(f"{exc}; {self.what}'s log: {self.output()}") from None

    def output(self) -> str:
        """The end of the log (:attr:`tail_chars`), or "" when there is none yet."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace")
        return text if self.tail_chars is None else text[-self.tail_chars:]

    def send_signal(self, sig: int) -> None:
        """``sig`` to the process (to its whole group with :attr:`own_group`), if it is still running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.own_group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal, wait up to :attr:`stop_timeout` seconds, then SIGKILL; closes the log.  The exit status
        (None if never started)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.send_signal(sig)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                proc.wait()
        self._close_log()
        return None if proc is None else proc.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
