"""Sample values written as prometheus_client writes them (its ``floatToGoString``), a whole column at a time.

prometheus_client writes ``repr(float(value))``, except that a positive value of seven or more digits
before the point is written in exponent form (``1.099511627776e+12``, as Go does), and infinities and NaN
as ``+Inf``, ``-Inf`` and ``NaN``.  :func:`go_float` is that rule for one value; :func:`go_floats` gives the
same text for a column, with the common cases (an integer, a float below a million) taken without a call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import compress, repeat
from operator import is_
from typing import Any

_SMALL = 1_000_000  # below it (in magnitude) repr is the Go form
_EXACT = 2**53  # an integer below it is exactly a float: its digits are repr's
#: The exponent suffix of a positive integer of N digits (7 to 16) in Go form.
_EXPONENT = {digits: f"e+{digits - 1:02d}" for digits in range(7, 17)}


def go_float(value: float | int) -> str:
    """One value, as prometheus_client writes it."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go writes an exponent sooner than Python does
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def go_floats(values: Iterable[float | int]) -> list[str]:
    """Each value as :func:`go_float` writes it."""
    out: list[str] = []
    append = out.append
    for v in values:
        kind = v.__class__
        if kind is int:
            if -_EXACT < v < _SMALL:
                append(f"{v}.0")
            elif _SMALL <= v < _EXACT:  # its digits, less trailing zeros, and an exponent
                digits = f"{v}"
                lead = digits.rstrip("0")
                if len(lead) > 1:
                    append(f"{lead[0]}.{lead[1:]}{_EXPONENT[len(digits)]}")
                else:
                    append(f"{lead}{_EXPONENT[len(digits)]}")
            else:
                append(go_float(v))
        elif kind is float and -_SMALL < v < _SMALL:  # False for NaN
            append(repr(v))
        else:
            append(go_float(v))
    return out


class Numbers:
    """:func:`go_floats` with the texts of the last rendering's values kept for the next one: a value that
    has not changed since (a state, a size, a count at zero) is looked up, not written again.

    Only values of the last rendering are kept, at most ``limit`` of them, so the memo's memory is bounded
    whatever the host's size; and only those of columns (families) whose values mostly came again last
    time, so that counters, new at every poll, do not take the room.  Every ``probe_every`` renderings
    each column is tried again.  Zero is never kept: -0.0 equals 0 as a key but is written ``-0.0``.
    """

    def __init__(self, limit: int = 20_000, probe_every: int = 16) -> None:
        self._limit = limit
        self._probe_every = probe_every
        self._renderings = 0
        self._last: dict[float | int, str] = {}
        self._now: dict[float | int, str] = {}
        self._repeats: dict[str, bool] = {}  # per column: whether its values mostly came again last time

    def texts(self, column: str, values: list[Any]) -> list[str]:
        """Each value of ``column`` as :func:`go_float` writes it."""
        texts: list[str | None] = list(map(self._last.get, values))
        missing: list[int] = []
        if None in texts:
            missing = list(compress(range(len(texts)), map(is_, texts, repeat(None))))
            for i, text in zip(missing, go_floats([values[i] for i in missing]), strict=True):
                texts[i] = text
        if self._last:
            repeats = self._repeats.get(column)
            self._repeats[column] = len(missing) * 2 <= len(values)
        else:
            repeats = None
        if repeats is not False and len(self._now) + len(values) <= self._limit:
            self._now.update(zip(values, texts, strict=True))  # type: ignore[arg-type]  # no None left
        return texts  # type: ignore[return-value]

    def done(self) -> None:
        """The rendering is over: keep its values' texts for the next one, and only those."""
        self._now.pop(0, None)
        self._last, self._now = self._now, {}
        self._renderings += 1
        if self._renderings % self._probe_every == 0:
            self._repeats.clear()
