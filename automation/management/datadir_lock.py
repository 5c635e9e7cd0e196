"""Who is using the embedded mode's data directory: `serve` and `run_huey` hold a shared lock on
DATA_DIR/server.lock while they run, and `restore` takes it exclusively, so it refuses to replace
the files under a running process.

An advisory lock (flock) rather than a pid file: the kernel drops it when its process ends,
however it ends (a killed server leaves no stale pid behind). It guards processes of this
machine, on a local disk; the data directory is not for sharing between machines anyway.
"""

import contextlib
import fcntl
from pathlib import Path

from django.conf import settings

LOCK_NAME = "server.lock"


def lock_path() -> Path:
    return Path(settings.DATA_DIR) / LOCK_NAME


def hold_shared():
    """Hold a shared lock for the life of the process; returns the open file keeping it."""
    handle = open(lock_path(), "a+")  # noqa: SIM115 - open for as long as the process runs
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


@contextlib.contextmanager
def exclusive(path: Path | None = None):
    """Hold the lock alone while the block runs; BlockingIOError at once when a server or a
    worker holds it."""
    path = path or lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
