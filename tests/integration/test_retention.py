"""Retention: expired logs go, in batches; in-progress logs and logs kept logs point to stay."""

import datetime

import pytest
from django.core.management import call_command
from django.utils import timezone

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.runs.retention import purge_logs
from tests.factories import AutomationLogFactory, AutomationRuleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def rule(organization):
    return AutomationRuleFactory(organization=organization)


def log_aged(rule, status, days, **kwargs):
    log = AutomationLogFactory(rule=rule, status=status, **kwargs)
    AutomationLog.objects.filter(pk=log.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=days)
    )
    return log


def remaining():
    return set(AutomationLog.objects.values_list("pk", flat=True))


def test_each_status_has_its_own_age_and_live_runs_are_never_purged(rule):
    gone = [
        log_aged(rule, RunStatus.SKIPPED, 8),
        log_aged(rule, RunStatus.SUCCEEDED, 31),
        log_aged(rule, RunStatus.PARTIAL, 91),
        log_aged(rule, RunStatus.FAILED, 91),
    ]
    kept = [
        log_aged(rule, RunStatus.SKIPPED, 6),
        log_aged(rule, RunStatus.SUCCEEDED, 29),
        log_aged(rule, RunStatus.FAILED, 89),
        log_aged(rule, RunStatus.PENDING, 400),
        log_aged(rule, RunStatus.RUNNING, 400),
    ]
    assert purge_logs() == {"SKIPPED": 1, "SUCCEEDED": 1, "PARTIAL": 1, "FAILED": 1}
    assert remaining() == {log.pk for log in kept}
    assert not AutomationLog.objects.filter(pk__in=[log.pk for log in gone]).exists()


def test_ages_come_from_the_setting(rule, settings):
    settings.AUTOMATION_LOG_RETENTION_DAYS = {"SUCCEEDED": 2}
    old = log_aged(rule, RunStatus.SUCCEEDED, 3)
    log_aged(rule, RunStatus.SKIPPED, 300)  # no age given: kept
    purge_logs()
    assert old.pk not in remaining() and len(remaining()) == 1


def test_logs_that_kept_logs_point_to_are_kept_transitively(rule):
    # root <- child (parent/root) <- retry of the child, which is recent and kept.
    root = log_aged(rule, RunStatus.SUCCEEDED, 60)
    child = log_aged(rule, RunStatus.FAILED, 100, parent_log=root, root_log=root)
    retry = log_aged(rule, RunStatus.SUCCEEDED, 1, retry_of=child)
    # A whole expired chain goes: leaves first, then what they pointed to.
    old_root = log_aged(rule, RunStatus.SUCCEEDED, 60)
    old_child = log_aged(rule, RunStatus.SKIPPED, 60, parent_log=old_root, root_log=old_root)
    old_retry = log_aged(rule, RunStatus.SUCCEEDED, 45, retry_of=old_child)

    assert purge_logs(dry_run=True) == {"SUCCEEDED": 2, "SKIPPED": 1}
    assert len(remaining()) == 6  # a dry run deletes nothing

    assert purge_logs(batch_size=1) == {"SUCCEEDED": 2, "SKIPPED": 1}
    assert remaining() == {root.pk, child.pk, retry.pk}
    assert not AutomationLog.objects.filter(
        pk__in=[old_root.pk, old_child.pk, old_retry.pk]
    ).exists()
    child.refresh_from_db()
    assert child.parent_log_id == root.pk and child.root_log_id == root.pk


def test_purge_logs_command_and_dry_run(rule, capsys):
    log_aged(rule, RunStatus.SKIPPED, 30)
    log_aged(rule, RunStatus.SKIPPED, 30)
    call_command("purge_logs", "--dry-run")
    assert "Would delete 2 log(s) (SKIPPED 2)." in capsys.readouterr().out
    assert len(remaining()) == 2
    call_command("purge_logs", "--batch-size", "1")
    assert "Deleted 2 log(s) (SKIPPED 2)." in capsys.readouterr().out
    assert remaining() == set()


# --- Work that does not grow with the table (issue 24) ------------------------------------------


def test_the_walk_reads_each_expired_log_once_and_goes_on_where_its_last_batch_ended(
    rule, monkeypatch
):
    """Kept logs (a kept log points to them) and deleted ones are not read again by later
    batches: the former purge started each batch at the lowest id and walked past them all."""
    from automation.core import keyset

    kept_roots = []
    for _ in range(4):
        root = log_aged(rule, RunStatus.SUCCEEDED, 40)
        log_aged(rule, RunStatus.SUCCEEDED, 1, retry_of=root)  # recent: kept, keeps its root
        kept_roots.append(root)
    gone = [log_aged(rule, status, 50) for status in (RunStatus.SKIPPED, RunStatus.SUCCEEDED) * 3]
    read, walk = [], keyset.newest

    def reading(*args, **kwargs):
        rows = walk(*args, **kwargs)
        read.extend(row.pk for row in rows)
        return rows

    monkeypatch.setattr(keyset, "newest", reading)
    assert purge_logs(batch_size=2) == {"SKIPPED": 3, "SUCCEEDED": 3}
    expired = {log.pk for log in kept_roots + gone}
    assert sorted(read) == sorted(expired)  # each once, over 5 batches
    assert remaining() >= {log.pk for log in kept_roots}


def test_a_log_older_than_the_log_that_points_to_it_goes_in_the_same_purge(rule):
    """The walk goes newest first because a log points only to older ones; one that points to
    a newer log (written by hand, say) holds it until the end, when it is looked at again."""
    newer = log_aged(rule, RunStatus.SUCCEEDED, 40)
    older = log_aged(rule, RunStatus.SKIPPED, 60, parent_log=newer, root_log=newer)
    assert purge_logs(dry_run=True, batch_size=1) == {"SUCCEEDED": 1, "SKIPPED": 1}
    assert purge_logs(batch_size=1) == {"SUCCEEDED": 1, "SKIPPED": 1}
    assert not remaining() & {newer.pk, older.pk}


def test_the_journal_is_purged_in_windows_without_looking_for_the_oldest_again(
    organization, settings
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from automation.core.system_models import StreamEvent, StreamHead
    from automation.live import journal

    settings.AUTOMATION_STREAM_RETENTION_HOURS = 24
    old = timezone.now() - datetime.timedelta(hours=30)
    StreamEvent.objects.bulk_create(
        StreamEvent(
            organization_id=organization.pk,
            position=position,
            kind=StreamEvent.LOG,
            log_id=1,
            rule_id=1,
            created_at=old if position <= 40 else timezone.now(),
            message="{}",
        )
        for position in range(1, 51)
    )
    StreamHead.objects.create(organization_id=organization.pk, position=50)
    assert journal.purge(dry_run=True) == 40
    with CaptureQueriesContext(connection) as captured:
        assert journal.purge(batch_size=3) == 40
    statements = [query["sql"] for query in captured.captured_queries]
    reads = [sql for sql in statements if sql.startswith("SELECT") and "streamevent" in sql]
    deletes = [sql for sql in statements if sql.startswith("DELETE")]
    assert len(deletes) == 14  # windows of 3 positions, 1..40
    assert len(reads) == 2  # the oldest position and the first one kept, once
    assert journal.oldest(organization.pk) == 40
