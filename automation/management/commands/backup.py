"""`manage.py backup PATH`: a consistent copy of the embedded mode's databases, server running
or not (automation/management/sqlite_backup.py). PostgreSQL: pg_dump (README, Backups)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

import automation
from automation.management.sqlite_backup import BackupError, backup


class Command(BaseCommand):
    help = (
        "Copy the embedded mode's SQLite databases (db.sqlite3, huey.sqlite3) into the new "
        "directory PATH, consistently, while the server runs."
    )

    def get_version(self):
        return automation.__version__

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="A new (or empty) directory for the copy.")

    def handle(self, *args, path, **options):
        try:
            manifest = backup(path)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        for name, described in manifest["files"].items():
            counts = ", ".join(
                f"{count} {what}" for what, count in described.items() if what != "bytes"
            )
            self.stdout.write(
                f"{path / name}: {described['bytes']} bytes{', ' + counts if counts else ''}"
            )
        self.stdout.write(f"Backup of automation {manifest['version']} written to {path}.")
