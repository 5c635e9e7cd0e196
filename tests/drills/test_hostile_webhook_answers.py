"""Drill: a webhook target answers with a NUL character (U+0000), which PostgreSQL's text and
jsonb refuse; and a run whose state cannot be written fails without leaking the database's error.

The answer used to break the run on PostgreSQL: the result could not be written, the run ended
FAILED with the SQL error's text in `error` (shown to every member), and the webhook's action
entry stayed RUNNING forever. Now outside text is cleaned of U+0000 before it is stored, a run
that fails unexpectedly says "Internal error (reference ...)" and the server log carries the
reference with the traceback, and every action entry reaches a final state.

Runs in both modes: embedded (SQLite) and distributed (DATABASE_URL set: PostgreSQL).
"""

import logging
import re

import pytest
from django.db import DataError

from automation.actions import webhooks
from automation.core.choices import ActionStatus, ActionType, RunStatus
from automation.core.models import AutomationLog
from automation.runs import plan
from automation.runs.execute import execute_run
from automation.triggers.outbox import emit_event
from tests.factories import AutomationRuleFactory, ProductFactory
from tests.integration.test_webhooks import RecordingServer

pytestmark = pytest.mark.django_db

REFERENCE = re.compile(r"^Internal error \(reference ([0-9a-f]{12})\)\.$")


@pytest.fixture
def nul_server(monkeypatch, settings):
    """A loopback server answering 200 with NULs in its body; the SSRF guard lets exactly it
    through."""
    settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    server = RecordingServer()
    server.respond({"status": 200, "body": b'{"ok":true,"note":"a\x00b"}\x00tail'})
    server.thread.start()
    original = webhooks.check_address

    def check(ip, port):
        if (str(ip), port) != ("127.0.0.1", server.port):
            original(ip, port)

    monkeypatch.setattr(webhooks, "check_address", check)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def webhook_run(organization, url, *more_actions):
    """A PENDING run of a rule calling `url` (then `more_actions`) on a product update."""
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            {
                "action_type": ActionType.CALL_WEBHOOK,
                "parameters": {"url": url, "maxAttempts": 1, "body": {"id": "{{ object.id }}"}},
            },
            *more_actions,
        ],
    )
    product = ProductFactory(organization=organization, name="Lamp")
    (log,) = [
        log
        for log in emit_event(product, rule.trigger_event, {"stock": {"old": 1, "new": 2}})
        if log.rule_id == rule.pk
    ]
    return log


def test_a_nul_in_a_webhook_answer_is_cleaned_before_it_is_stored(organization, nul_server):
    log = webhook_run(organization, nul_server.url())

    execute_run(log.pk)

    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED, log.error
    (entry,) = log.action_logs
    assert entry["status"] == ActionStatus.SUCCEEDED
    assert entry["result"]["body"] == '{"ok":true,"note":"ab"}tail'
    assert len(nul_server.requests) == 1


def test_a_run_that_cannot_be_written_fails_with_a_reference_and_no_action_left_running(
    organization, nul_server, monkeypatch, caplog
):
    """The database refuses the step recording the webhook's result (as PostgreSQL refused a
    NUL): the run ends FAILED with a reference instead of the SQL text, the webhook's entry is
    FAILED (it stayed RUNNING) and the action after it SKIPPED; the log has the reference."""
    update = {"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": {"stock": 7}}}
    log = webhook_run(organization, nul_server.url(), update)
    real_record = plan.Plan._record

    def refused(self, index, started, outcome):
        real_record(self, index, started, outcome)
        raise DataError('invalid byte sequence for encoding "UTF8": 0x00\nCONTEXT: SQL UPDATE')

    monkeypatch.setattr(plan.Plan, "_record", refused)

    with caplog.at_level(logging.ERROR, logger="automation.runs"):
        execute_run(log.pk)

    log.refresh_from_db()
    assert log.status == RunStatus.FAILED
    match = REFERENCE.match(log.error)
    assert match, log.error
    assert "SQL" not in log.error and "0x00" not in log.error
    webhook, later = log.action_logs
    assert webhook["status"] == ActionStatus.FAILED
    assert webhook["error"] == log.error
    assert later["status"] == ActionStatus.SKIPPED
    assert [entry["status"] for entry in log.action_logs if entry["status"] == "RUNNING"] == []
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info, "the server log carries the reference and traceback"


def test_an_action_failing_unexpectedly_shows_a_reference_not_the_exception(
    organization, monkeypatch, caplog
):
    """An action raising something unexpected (here a database error) fails with a reference;
    the exception's text stays in the server log."""
    from automation.actions import records

    rule = AutomationRuleFactory(
        organization=organization,
        actions=[{"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": {"stock": 3}}}],
    )
    product = ProductFactory(organization=organization)
    (log,) = [log for log in emit_event(product, rule.trigger_event, {}) if log.rule_id == rule.pk]

    def broken(self, parameters, ctx, **kwargs):
        raise DataError('null value in column "secret_column" violates not-null constraint')

    monkeypatch.setattr(records.UpdateRecordHandler, "execute", broken)
    with caplog.at_level(logging.ERROR, logger="automation.runs"):
        execute_run(log.pk)

    log.refresh_from_db()
    assert log.status == RunStatus.FAILED
    (entry,) = log.action_logs
    assert entry["status"] == ActionStatus.FAILED
    match = REFERENCE.match(entry["error"])
    assert match, entry["error"]
    assert "secret_column" not in log.error
    assert any(match.group(1) in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_notification_and_a_record_write_of_rendered_text_lose_their_nul(organization):
    """Template output is outside text too (a record value, an earlier result): cleaned before
    a notification or a record action stores it."""
    from accounts.models import Notification
    from tests.factories import MembershipFactory, UserFactory

    user = UserFactory(username="ann")
    MembershipFactory(user=user, organization=organization)
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            {
                "action_type": ActionType.SEND_NOTIFICATION,
                "parameters": {
                    "recipients": {"usernames": ["ann"]},
                    "title": "Hi {{ changes.note.new }}",
                    "body": "{{ changes.note.new }}",
                },
            },
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "{{ changes.note.new }}"}},
            },
        ],
    )
    product = ProductFactory(organization=organization)
    # A change carrying a NUL (as a SQLite record or an earlier result may).
    (log,) = [
        log
        for log in emit_event(product, rule.trigger_event, {"note": {"old": None, "new": "x\x00y"}})
        if log.rule_id == rule.pk
    ]
    assert "\x00" not in str(AutomationLog.objects.get(pk=log.pk).changes)

    execute_run(log.pk)

    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED, log.error
    notification = Notification.objects.get(log_id=log.pk)
    assert (notification.title, notification.body) == ("Hi xy", "xy")
    product.refresh_from_db()
    assert product.description == "xy"
