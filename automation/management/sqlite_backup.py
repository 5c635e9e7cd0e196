"""Backups of the embedded mode: consistent copies of its SQLite files while the server runs,
and putting them back while it does not.

`backup` copies each database with SQLite's online backup API in one step (`pages=-1`): the
copy is the database as of one moment, the last committed transaction included whether or not
it was checkpointed out of the WAL file yet (a plain `cp` of db.sqlite3 misses what is still in
db.sqlite3-wal, and can catch a page half written). Writers are not stopped meanwhile: in WAL
mode a reader holds its snapshot while they go on.

Two files, two moments: the run logs and rules (db.sqlite3) are copied first, the queue
(huey.sqlite3) right after. A run committed in between is PENDING in neither copy's queue, and the
sweeper enqueues it again (AUTOMATION_SWEEP_PENDING_AFTER_SECONDS); a queued wake-up whose run is
not in the copy finds nothing to do. Nothing is lost or run twice.

`restore` refuses while a server or a worker uses the data directory (the lock they hold,
datadir_lock.py) and, without `force`, when it already holds a database.
"""

import datetime
import json
import os
import sqlite3
from pathlib import Path

from django.conf import settings

import automation
from automation.management import datadir_lock

MANIFEST = "backup.json"
DATABASE = "db.sqlite3"
QUEUE = "huey.sqlite3"


class BackupError(Exception):
    """What the operator must fix; the command shows it."""


def uses_sqlite() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "config.sqlite"


def _files() -> dict[str, Path]:
    """The live files of the data directory, by their name in a backup."""
    return {
        DATABASE: Path(settings.DATABASES["default"]["NAME"]),
        QUEUE: Path(settings.HUEY["filename"]),
    }


def _copy(source: Path, target: Path) -> None:
    """`source` as of one moment into a new file `target` (SQLite's backup API, one step)."""
    with sqlite3.connect(source, timeout=30) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy, pages=-1)
    copy.close()
    origin.close()


def _check(path: Path) -> dict:
    """Open the copy, check it whole, and count what it holds."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        verdict = connection.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"{path} is damaged: {verdict}")
        tables = {
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        counts = {}
        for table, label in (
            ("automation_automationrule", "rules"),
            ("automation_automationlog", "logs"),
        ):
            if table in tables:
                counts[label] = connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        return counts
    finally:
        connection.close()


def backup(destination: Path) -> dict:
    """Copy the data directory's databases into the new directory `destination`; the manifest."""
    if not uses_sqlite():
        raise BackupError(
            "This deployment's database is PostgreSQL: back it up with pg_dump "
            "(README, Backups). `backup` copies the embedded mode's SQLite files."
        )
    if destination.exists() and any(destination.iterdir()):
        raise BackupError(f"{destination} is not empty: give a new directory.")
    destination.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": automation.__version__,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "files": {},
    }
    for name, source in _files().items():
        if not source.exists():
            continue  # a queue never used yet
        target = destination / name
        _copy(source, target)
        manifest["files"][name] = {"bytes": target.stat().st_size, **_check(target)}
    if DATABASE not in manifest["files"]:
        raise BackupError(f"No database at {_files()[DATABASE]}: nothing to back up.")
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def restore(source: Path, *, force: bool = False) -> dict:
    """Put the backup in `source` in place of the data directory's databases; the manifest."""
    if not uses_sqlite():
        raise BackupError(
            "This deployment's database is PostgreSQL: restore it with pg_restore (README, "
            "Backups). `restore` puts back the embedded mode's SQLite files."
        )
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"{source} is not a backup made by `backup` ({MANIFEST}: {exc})."
        ) from None
    try:
        with datadir_lock.exclusive():
            _restore_files(source, manifest, force)
    except BlockingIOError:
        raise BackupError(
            f"A server or worker is using {settings.DATA_DIR} (it holds "
            f"{datadir_lock.LOCK_NAME}): stop every `serve` and `run_huey` of it first."
        ) from None
    return manifest


def _restore_files(source: Path, manifest: dict, force: bool) -> None:
    live = _files()
    # The queue's file is made by every start of Django (Huey creates its tables): only the
    # database says that the directory holds data.
    if live[DATABASE].exists() and not force:
        raise BackupError(
            f"{live[DATABASE]} already exists: restore into a new data directory, or pass "
            "--force to replace its databases (what they hold is lost)."
        )
    for name in manifest["files"]:
        _check(source / name)  # before anything is replaced
    for name, target in live.items():
        copy = source / name
        if not copy.exists():
            continue
        temporary = target.with_name(f"{target.name}.restoring")
        temporary.unlink(missing_ok=True)
        _copy(copy, temporary)
        # The old WAL must go before the new file takes the name: SQLite would replay it into
        # the restored database.
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(temporary, target)
