"""Build the simulated ALP library (``libalp43.so``) with the system C compiler, on first use.

Why built at run time rather than shipped: the library must match the machine's C ABI (ALP4lib calls
it through untyped ctypes, so ``long``/``unsigned long`` sizes matter) and we do not ship binaries.
The build is cheap (well under a second), cached, and safe when several processes (pytest-xdist
workers, a GUI and a CLI run) ask at once:

* the output folder is ``$SPECKLAB_CACHE/alp_sim`` when that variable is set, else
  ``devices/alp_sim/build/`` (gitignored);
* the library is rebuilt when missing, when the C source is newer than it, or when the source's
  SHA-256 (kept in a stamp file next to it) changed, so a checkout that keeps old mtimes still
  rebuilds;
* builders serialise on an ``flock`` lock file and compile to a temporary name that is then
  atomically renamed, so a process that already loaded the library keeps its mapped copy and no one
  ever loads a half-written file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from devices.base import DeviceError

SOURCE = Path(__file__).with_name("alp_sim.c")
#: The file name ALP4lib 1.1 loads on Linux for ``version="4.3"`` (``libDir + "libalp43.so"``).
LIBRARY_NAME = "libalp43.so"
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fPIC", "-shared", "-pthread", "-fvisibility=hidden"]


class AlpSimBuildError(DeviceError):
    """The C compiler is missing or failed on ``alp_sim.c``."""


def build_dir() -> Path:
    """Folder the library is built into (``$SPECKLAB_CACHE/alp_sim`` or ``devices/alp_sim/build``)."""
    cache = os.environ.get("SPECKLAB_CACHE")
    return Path(cache).expanduser() / "alp_sim" if cache else Path(__file__).with_name("build")


def _source_digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()


def _is_current(library: Path, stamp: Path, digest: str) -> bool:
    if not library.exists() or not stamp.exists():
        return False
    if SOURCE.stat().st_mtime > library.stat().st_mtime:
        return False
    return stamp.read_text().strip() == digest


def _compiler() -> list[str]:
    configured = os.environ.get("CC")
    if configured:
        return shlex.split(configured)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    raise AlpSimBuildError("simulated ALP library: no C compiler found (install gcc or set CC)")


def build_library(force: bool = False) -> Path:
    """Return the folder holding an up-to-date ``libalp43.so``, compiling it if needed.

    ``force=True`` rebuilds even when current (the new file replaces the old one atomically).
    Raises :class:`AlpSimBuildError` with the compiler output when the build fails.
    """
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / LIBRARY_NAME
    stamp = folder / (LIBRARY_NAME + ".sha256")
    digest = _source_digest()
    if not force and _is_current(library, stamp, digest):
        return folder
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Another process may have finished the same build while we waited for the lock.
        if not force and _is_current(library, stamp, digest):
            return folder
        fd, tmp_name = tempfile.mkstemp(prefix=LIBRARY_NAME + ".", suffix=".tmp", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            command = [*_compiler(), *CFLAGS, "-o", str(tmp), str(SOURCE)]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise AlpSimBuildError(f"simulated ALP library: cannot run {command[0]}: {exc}") from exc
            if result.returncode != 0:
                raise AlpSimBuildError(
                    f"simulated ALP library: {' '.join(command)} failed ({result.returncode}):\n"
                    f"{result.stderr}"
                )
            os.replace(tmp, library)
            stamp_tmp = stamp.with_suffix(".tmp")
            stamp_tmp.write_text(digest + "\n")
            os.replace(stamp_tmp, stamp)
        finally:
            tmp.unlink(missing_ok=True)
    return folder
