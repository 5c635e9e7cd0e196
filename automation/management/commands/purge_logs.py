"""`manage.py purge_logs [--dry-run]`: delete run logs past their retention age now, and the run
stream's events past AUTOMATION_STREAM_RETENTION_HOURS.

The same work as the hourly periodic task (automation.runs.retention explains what is kept).
"""

from django.core.management.base import BaseCommand, CommandError

from automation.runs.retention import BATCH_SIZE, purge


class Command(BaseCommand):
    help = (
        "Delete run logs older than their status's retention age "
        "(settings.AUTOMATION_LOG_RETENTION_DAYS), keeping logs that kept logs point to, and "
        "run stream events older than AUTOMATION_STREAM_RETENTION_HOURS."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Only report what would be deleted."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=BATCH_SIZE,
            help=f"Logs deleted per transaction ({BATCH_SIZE}).",
        )

    def handle(self, *args, dry_run, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        counts, events = purge(dry_run=dry_run, batch_size=batch_size)
        verb = "Would delete" if dry_run else "Deleted"
        total = sum(counts.values())
        detail = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
        self.stdout.write(f"{verb} {total} log(s)" + (f" ({detail})." if detail else "."))
        self.stdout.write(f"{verb} {events} stream event(s).")
