"""Damaged copies of a datagram, for tests that nothing malformed is ever answered with data."""

from __future__ import annotations

import random
from collections.abc import Iterator


def mutations(good: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """Up to ``count`` copies of ``good``, each with one to three cuts, bit flips, overwritten, inserted or deleted
    bytes (never ``good`` itself, never empty)."""
    for _ in range(count):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            cut = rng.randrange(len(data))
            choice = rng.randrange(5)
            if choice == 0:
                data = data[:cut]
            elif choice == 1:
                data[cut] ^= 1 << rng.randrange(8)
            elif choice == 2:
                data[cut] = rng.randrange(256)
            elif choice == 3:
                data[cut:cut] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            else:
                del data[cut:cut + rng.randint(1, 4)]
            if not data:
                data = bytearray(b"\x30")
        if bytes(data) != good:
            yield bytes(data)
