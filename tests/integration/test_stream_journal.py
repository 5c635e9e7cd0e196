"""The run stream's journal: every run and action event is written in the transaction that
published it, numbered per organization in commit order with no gap, and purged by age.

Transactions really commit here (transaction=True): the journal is written by the database
backend's before-commit hook (config/db.py).
"""

import datetime
import threading

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from automation.core.models import AutomationLog
from automation.core.system_models import StreamEvent, StreamHead
from automation.live import events as live
from automation.live import journal
from automation.runs.execute import execute_run
from automation.runs.retention import purge_logs
from automation.triggers.outbox import emit_event
from tests.factories import AutomationLogFactory, AutomationRuleFactory, ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)


def update_description():
    return {"action_type": "UPDATE_RECORD", "parameters": {"fields": {"description": "seen"}}}


def journal_of(organization):
    return list(
        StreamEvent.objects.filter(organization_id=organization.pk)
        .order_by("position")
        .values_list("position", "kind", "log_id")
    )


def test_a_run_journals_each_event_in_order_with_positions_from_one(organization):
    rule = AutomationRuleFactory(organization=organization, actions=[update_description()])
    product = ProductFactory(organization=organization, status="ACTIVE")
    with transaction.atomic():
        (log,) = emit_event(product, "UPDATED", {})
    execute_run(log.pk)

    events = journal_of(organization)
    # PENDING; RUNNING (claimed, conditions met and the plan: one transaction, one event); the
    # action RUNNING and SUCCEEDED; SUCCEEDED.
    assert [kind for _, kind, _ in events] == ["L", "L", "A", "A", "L"]
    assert [position for position, _, _ in events] == [1, 2, 3, 4, 5]
    assert {log_id for _, _, log_id in events} == {log.pk}
    assert StreamHead.objects.get(organization_id=organization.pk).position == 5
    messages = journal.read(organization.pk, 0, 5)
    assert [m["position"] for m in messages] == [1, 2, 3, 4, 5]
    assert [m["log"]["seq"] for m in messages if m["type"] == journal.LOG_MESSAGE] == [0, 2, 5]
    assert messages[-1]["log"]["status"] == "SUCCEEDED"
    assert messages[-1]["log"]["rule"]["id"] == messages[2]["rule_id"] == rule.pk
    # A run's context and changes are read from its log, not copied into every event.
    assert "context" not in messages[0]["log"] and "changes" not in messages[0]["log"]


def test_a_status_change_in_the_same_transaction_is_an_event_of_its_own(organization):
    """Only changes that keep the run's status are one event: a run whose conditions are not
    met is claimed (RUNNING) and ends SKIPPED in one transaction, and both are published."""
    AutomationRuleFactory(
        organization=organization,
        conditions=[{"field_name": "status", "operator": "EQUALS", "value": "ARCHIVED"}],
        actions=[update_description()],
    )
    product = ProductFactory(organization=organization, status="ACTIVE")
    with transaction.atomic():
        (log,) = emit_event(product, "UPDATED", {})
    execute_run(log.pk)

    messages = journal.read(organization.pk, 0, 3)
    assert [(m["log"]["status"], m["log"]["seq"]) for m in messages] == [
        ("PENDING", 0),
        ("RUNNING", 1),
        ("SKIPPED", 2),
    ]
    assert journal.head(organization.pk) == 3


def test_a_dry_runs_events_are_journaled_in_the_order_of_its_changes(organization):
    """A dry run is worked out outside any transaction and its events are held, then handed to
    the transaction that writes its log: its one RUNNING event, its action's events and its
    outcome keep their order."""
    from automation.runs.manual import run_rule

    rule = AutomationRuleFactory(
        organization=organization, manual_rule=True, actions=[update_description()]
    )
    product = ProductFactory(organization=organization, status="ACTIVE")
    log = run_rule(rule, object_id=product.pk, dry_run=True)

    messages = journal.read(organization.pk, 0, journal.head(organization.pk))
    shown = [
        (m["log"]["status"], m["log"]["seq"])
        if m["type"] == journal.LOG_MESSAGE
        else (f"action {m['action']['status']}", m["seq"])
        for m in messages
    ]
    assert shown == [
        ("PENDING", 0),
        ("RUNNING", 2),
        ("action RUNNING", 3),
        ("action SUCCEEDED", 4),
        ("SUCCEEDED", 5),
    ]
    assert {m.get("log", {}).get("id", m.get("log_id")) for m in messages} == {log.pk}


def test_positions_are_per_organization(organization, other_organization):
    for org in (organization, other_organization, organization):
        log = AutomationLogFactory(rule=AutomationRuleFactory(organization=org))
        with transaction.atomic():
            live.publish_log(log)
    assert [p for p, _, _ in journal_of(organization)] == [1, 2]
    assert [p for p, _, _ in journal_of(other_organization)] == [1]


def test_a_rolled_back_transaction_leaves_no_event_and_no_gap(organization):
    log = AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    with pytest.raises(RuntimeError), transaction.atomic():
        live.publish_log(log)
        raise RuntimeError("rolled back")
    with transaction.atomic():
        live.publish_log(log)
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint rolled back
            live.publish_log(log)
            raise RuntimeError("rolled back")
        live.publish_action(log, {"order": 0, "status": "PENDING"})
    assert [(p, kind) for p, kind, _ in journal_of(organization)] == [(1, "L"), (2, "A")]


def test_the_live_message_carries_the_position_it_was_journaled_with(organization, monkeypatch):
    sent = []
    monkeypatch.setattr(live, "_send", sent.extend)
    log = AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    with transaction.atomic():
        live.publish_log(log)
        live.publish_log(log)
        assert sent == []  # nothing leaves before the commit
    assert [message["position"] for _, message in sent] == [1, 2]
    assert {group for group, _ in sent} == {live.organization_group(organization.pk)}


def test_events_published_outside_a_transaction_are_journaled_at_once(organization):
    log = AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    live.publish_log(log)  # autocommit: Django runs the on-commit callback at once
    assert [p for p, _, _ in journal_of(organization)] == [1]


def test_a_later_commit_gets_a_later_position_whatever_the_order_of_publication(organization):
    """Positions follow commit order, not publication order: A publishes first but commits
    last. While A holds its counter (between its journal insert and its commit), B waits, so
    B's event cannot be numbered before A's commits: whoever sees B's position can read A's."""
    log = AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    a_published, b_may_commit, a_journaled, a_may_commit = (threading.Event() for _ in range(4))
    order = []
    real = journal.before_commit

    def pausing(db, publications):
        real(db, publications)
        if threading.current_thread().name == "A":
            a_journaled.set()
            assert a_may_commit.wait(10)

    def writer_a():
        try:
            with transaction.atomic():
                live.publish_log(log)
                a_published.set()
                assert b_may_commit.wait(10)
            order.append("A")
        finally:
            connection.close()

    def writer_b():
        try:
            assert a_published.wait(10)
            b_may_commit.set()
            assert a_journaled.wait(10)
            threading.Timer(0.5, a_may_commit.set).start()  # B is waiting on A meanwhile
            with transaction.atomic():
                live.publish_action(log, {"order": 0, "status": "PENDING"})
            order.append("B")
        finally:
            connection.close()

    live._Publication.before_commit = staticmethod(pausing)
    try:
        threads = [threading.Thread(target=writer_a, name="A"), threading.Thread(target=writer_b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        live._Publication.before_commit = staticmethod(real)
    # Both committed. Not in which order their threads got on afterwards: once A's commit lets B
    # go on, B's thread may append before A's does. The positions are what commit order gave.
    assert sorted(order) == ["A", "B"]
    assert [(p, kind) for p, kind, _ in journal_of(organization)] == [(1, "L"), (2, "A")]


def test_positions_follow_commit_order_not_publication_order(organization):
    """B publishes first, A commits first: A gets the lower position. (With numbers taken when
    published, as a sequence gives them, a reader seeing A's could miss B's, committed later.)
    Only PostgreSQL lets A commit while B is open; SQLite takes the write lock at BEGIN."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time")
    log = AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    b_published, a_committed = threading.Event(), threading.Event()
    order = []

    def writer_b():
        try:
            with transaction.atomic():
                live.publish_log(log)
                b_published.set()
                assert a_committed.wait(10)
            order.append("B")
        finally:
            connection.close()

    def writer_a():
        try:
            assert b_published.wait(10)
            with transaction.atomic():
                live.publish_action(log, {"order": 0, "status": "PENDING"})
            order.append("A")
            a_committed.set()
        finally:
            connection.close()

    threads = [threading.Thread(target=writer_b), threading.Thread(target=writer_a)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert order == ["A", "B"]
    assert [(p, kind) for p, kind, _ in journal_of(organization)] == [(1, "A"), (2, "L")]


def test_read_refuses_a_range_retention_cut(organization):
    log = AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    for _ in range(3):
        with transaction.atomic():
            live.publish_log(log)
    StreamEvent.objects.filter(organization_id=organization.pk, position=1).delete()
    with pytest.raises(journal.Purged) as purged:
        journal.read(organization.pk, 0, 3)
    assert purged.value.oldest == 1
    assert [m["position"] for m in journal.read(organization.pk, 1, 3)] == [2, 3]


def test_cursors_round_trip_and_refuse_garbage():
    cursor = journal.encode(12, 3456)
    assert journal.decode(cursor) == (12, 3456)
    for garbage in ["", "x", "abc!", journal.encode(1, 2) + "A", "czE6MTI6LTE", "x" * 65]:
        with pytest.raises(journal.InvalidCursor):
            journal.decode(garbage)


def aged(hours):
    return timezone.now() - datetime.timedelta(hours=hours)


def test_retention_purges_events_past_their_age_oldest_first(organization, settings, capsys):
    settings.AUTOMATION_STREAM_RETENTION_HOURS = 24
    log = AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    for _ in range(3):
        with transaction.atomic():
            live.publish_log(log)
    StreamEvent.objects.filter(position__lte=2).update(created_at=aged(25))
    call_command("purge_logs", "--dry-run")
    assert "Would delete 2 stream event(s)." in capsys.readouterr().out
    assert journal.oldest(organization.pk) == 0
    call_command("purge_logs")
    assert "Deleted 2 stream event(s)." in capsys.readouterr().out
    assert [p for p, _, _ in journal_of(organization)] == [3]
    assert journal.oldest(organization.pk) == 2  # one may still resume after position 2
    StreamEvent.objects.update(created_at=aged(25))
    call_command("purge_logs")
    assert journal_of(organization) == [] and journal.oldest(organization.pk) == 3


def test_a_log_is_kept_while_the_journal_has_its_events(organization, settings):
    settings.AUTOMATION_STREAM_RETENTION_HOURS = 1000  # longer than the log's own retention
    log = AutomationLogFactory(
        rule=AutomationRuleFactory(organization=organization), status="SUCCEEDED"
    )
    with transaction.atomic():
        live.publish_log(log)
    AutomationLog.objects.filter(pk=log.pk).update(created_at=aged(24 * 40))
    assert purge_logs() == {}
    StreamEvent.objects.update(created_at=aged(1001))
    assert purge_logs() == {"SUCCEEDED": 1}
    assert not AutomationLog.objects.filter(pk=log.pk).exists()
