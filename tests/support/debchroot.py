"""The fresh Debian 12 chroot that tests/test_deb.py installs the package into, made by mmdebstrap from
Debian's archive.  `make test` makes it before the suite runs (``python -m tests.support.debchroot DEB``), so
the test itself downloads nothing; it is kept in build-deb/ as a tarball named by a digest of what it holds."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
#: What the checks run in the chroot besides the package's own dependencies.
CHROOT_TOOLS = ("systemd", "snmp", "man-db")


def field(deb: Path, name: str) -> str:
    """A field of the package's control data."""
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def packages(deb: Path) -> list[str]:
    """The package's dependencies (the first of each alternative) and the tools the checks run."""
    names = []
    for clause in field(deb, "Depends").split(","):
        first = clause.split("|")[0].strip()
        names.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return sorted(set(names) | set(CHROOT_TOOLS))


def tarball(deb: Path) -> Path:
    """Where the chroot of ``deb``'s dependencies is kept."""
    key = hashlib.sha256("\n".join([*packages(deb), *MIRRORS]).encode()).hexdigest()[:16]
    return deb.parent / f"chroot-bookworm-{key}.tar"


def make(deb: Path) -> Path:
    """The chroot's tarball, made by mmdebstrap unless it exists; raises RuntimeError saying why it failed."""
    found = tarball(deb)
    if found.exists():
        return found
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise RuntimeError("mmdebstrap not found (Debian package mmdebstrap)")
    partial = found.with_name(f"{found.stem}.partial{os.getpid()}.tar")
    made = subprocess.run([mmdebstrap, "--quiet", "--mode=root", "--variant=minbase", "--format=tar",
                           f"--include={','.join(packages(deb))}", "bookworm", str(partial), *MIRRORS],
                          capture_output=True, text=True, timeout=1200)
    if made.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap could not make a Debian 12 chroot (is deb.debian.org reachable?): "
                           f"{made.stderr[-2000:]}")
    partial.replace(found)
    return found


if __name__ == "__main__":
    try:
        print(make(Path(sys.argv[1])))
    except RuntimeError as exc:
        sys.exit(f"error: {exc}")
