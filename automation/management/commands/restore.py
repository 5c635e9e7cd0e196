"""`manage.py restore PATH [--force]`: put back a `backup`, every server and worker of the data
directory stopped (automation/management/sqlite_backup.py). PostgreSQL: pg_restore."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

import automation
from automation.management.sqlite_backup import BackupError, restore


class Command(BaseCommand):
    help = (
        "Restore a backup made by `manage.py backup` into AUTOMATION_DATA_DIR. Stop the server "
        "and workers first; --force replaces databases already there."
    )
    # The checks may open the database about to be replaced.
    requires_system_checks = []

    def get_version(self):
        return automation.__version__

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="The directory `backup` wrote.")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Replace the databases the data directory already holds (they are lost).",
        )

    def handle(self, *args, path, force, **options):
        try:
            manifest = restore(path, force=force)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Restored the backup of automation {manifest['version']} made at "
            f"{manifest['created_at']} into {settings.DATA_DIR}. Start the server: it applies "
            "the migrations a newer version needs."
        )
