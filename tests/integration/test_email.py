"""SEND_EMAIL and SEND_NOTIFICATION with "email": true, through real runs.

The e-mail backend is Django's locmem one (pytest-django's `mailoutbox`), or a real SMTP server
on loopback (tests/smtp.py) where what SMTP does matters: refusals, a server that never answers.
"""

import datetime
import json

import pytest
import time_machine

from accounts.choices import Role
from accounts.models import Notification
from automation.core.choices import ActionStatus, ActionType, RunStatus
from automation.core.models import AutomationLog
from automation.runs.execute import execute_run
from automation.runs.manual import run_rule
from automation.triggers.outbox import emit_event
from tests.factories import (
    AutomationRuleFactory,
    MembershipFactory,
    OrganizationFactory,
    ProductFactory,
    UserFactory,
)
from tests.smtp import SmtpReceiver

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 12, 2, 9, 15, 30, tzinfo=datetime.UTC)


@pytest.fixture
def members(organization):
    """alice (ADMIN), bob (EDITOR), carol (VIEWER, no address); dave, an ADMIN elsewhere."""

    def member(username, role, email=None, organization=organization):
        user = UserFactory(username=username, **({} if email is None else {"email": email}))
        MembershipFactory(user=user, organization=organization, role=role)
        return user

    return {
        "alice": member("alice", Role.ADMIN),
        "bob": member("bob", Role.EDITOR),
        "carol": member("carol", Role.VIEWER, email=""),
        "dave": member("dave", Role.ADMIN, organization=OrganizationFactory()),
    }


@pytest.fixture
def product(organization):
    return ProductFactory(organization=organization, name="Lamp", stock=3)


def email_action(**parameters):
    return {"action_type": ActionType.SEND_EMAIL, "parameters": parameters}


def run_of(rule, product) -> AutomationLog:
    """A PENDING run of `rule` on `product`, executed as a worker would."""
    (log,) = [
        log
        for log in emit_event(product, "UPDATED", {"stock": {"old": 9, "new": product.stock}})
        if log.rule_id == rule.pk
    ]
    execute_run(log.pk)
    log.refresh_from_db()
    return log


def test_one_email_per_recipient_to_addresses_roles_and_usernames(
    organization, members, product, mailoutbox
):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            email_action(
                to=["ops@example.com"],
                roles=["ADMIN"],
                usernames=["bob", "carol"],
                subject="{{ object.name }} is low",
                body="Stock went from {{ changes.stock.old }} to {{ changes.stock.new }}.",
            )
        ],
    )

    log = run_of(rule, product)

    assert log.status == RunStatus.SUCCEEDED, log.error
    assert sorted(message.to for message in mailoutbox) == [
        ["alice@example.com"],
        ["bob@example.com"],
        ["ops@example.com"],
    ], "one message each: nobody sees another's address; dave is of another organization"
    for message in mailoutbox:
        assert message.subject == "Lamp is low"
        assert message.body == "Stock went from 9 to 3."
        assert message.from_email == "automation@localhost"
        assert message.extra_headers["Auto-Submitted"] == "auto-generated"
        assert message.extra_headers["Message-ID"].startswith(f"<{log.run_uuid}-0.")
    assert len({message.extra_headers["Message-ID"] for message in mailoutbox}) == 3
    result = log.action_logs[0]["result"]
    assert result == {
        "sent": 3,
        "recipients": ["ops@example.com", "alice", "bob"],
        "skipped": [{"username": "carol", "reason": "no valid e-mail address"}],
    }
    assert "alice@example.com" not in json.dumps(log.action_logs), "members' addresses unshown"


def test_a_username_no_longer_a_member_is_skipped(organization, members, product, mailoutbox):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[email_action(usernames=["alice", "bob"], subject="Hello")],
    )
    members["bob"].memberships.all().delete()
    log = run_of(rule, product)
    assert [message.to for message in mailoutbox] == [["alice@example.com"]]
    assert log.action_logs[0]["result"]["skipped"] == [
        {"username": "bob", "reason": "not an active member"}
    ]


def test_a_templated_address_is_rendered_and_checked(organization, product, mailoutbox):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            email_action(to=["{{ object.name }}@example.com", "{{ object.name }}"], subject="x")
        ],
    )
    product.name = "lamp"
    log = run_of(rule, product)
    assert log.status == RunStatus.FAILED
    assert log.action_logs[0]["error"] == 'to.1: "lamp" is not a valid e-mail address.'
    assert mailoutbox == [], "nothing sent when one address is wrong"


def test_a_line_break_rendered_into_the_subject_fails_and_sends_nothing(
    organization, members, product, mailoutbox
):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[email_action(usernames=["alice"], subject="{{ object.name }} is low")],
    )
    product.name = "Lamp\nBcc: everyone@example.com"
    log = run_of(rule, product)
    assert log.status == RunStatus.FAILED
    assert log.action_logs[0]["error"] == (
        "subject: contains a line break once rendered; an e-mail subject is one line."
    )
    assert mailoutbox == []


def test_a_long_subject_is_cut_and_a_long_body_refused(organization, members, product, mailoutbox):
    long_subject = AutomationRuleFactory(
        organization=organization,
        actions=[email_action(usernames=["alice"], subject="{{ object.description }}")],
    )
    product.description = "x" * 300
    log = run_of(long_subject, product)
    assert log.status == RunStatus.SUCCEEDED
    assert mailoutbox[0].subject == "x" * 249 + "…"

    long_body = AutomationRuleFactory(
        organization=organization,
        actions=[
            email_action(
                usernames=["alice"], subject="s", body="z" * 40_000 + "{{ object.description }}"
            )
        ],
    )
    product.description = "y" * 40_000
    log = run_of(long_body, product)
    assert log.status == RunStatus.FAILED
    assert log.action_logs[0]["error"] == (
        "body: renders to 80000 bytes; an e-mail body has at most 65536."
    )
    assert len(mailoutbox) == 1


def test_more_recipients_than_an_action_may_send_to_sends_nothing(
    organization, product, mailoutbox
):
    for number in range(51):
        MembershipFactory(organization=organization, role=Role.ADMIN, user__username=f"a{number}")
    rule = AutomationRuleFactory(
        organization=organization, actions=[email_action(roles=["ADMIN"], subject="All hands")]
    )
    log = run_of(rule, product)
    assert log.status == RunStatus.FAILED
    assert log.action_logs[0]["error"] == (
        "51 recipients; an action sends at most 50 e-mails. Nothing was sent."
    )
    assert mailoutbox == []


def test_no_recipient_fails_the_action(organization, members, product, mailoutbox):
    rule = AutomationRuleFactory(
        organization=organization, actions=[email_action(usernames=["carol"], subject="x")]
    )
    log = run_of(rule, product)
    assert log.status == RunStatus.FAILED
    assert log.action_logs[0]["error"].startswith("No recipient:")
    assert log.action_logs[0]["result"]["skipped"] == [
        {"username": "carol", "reason": "no valid e-mail address"}
    ]


def test_an_organization_sends_at_most_its_emails_a_minute(
    organization, other_organization, product, mailoutbox, settings
):
    settings.AUTOMATION_MAX_EMAILS_PER_MINUTE = 3
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[email_action(to=["a@example.com", "b@example.com"], subject="x")],
    )
    other = AutomationRuleFactory(
        organization=other_organization,
        actions=[email_action(to=["a@example.com", "b@example.com"], subject="x")],
    )
    with time_machine.travel(NOW, tick=False):
        first = run_of(rule, product)
        second = run_of(rule, product)
        elsewhere = run_of(other, ProductFactory(organization=other_organization))
    assert first.status == RunStatus.SUCCEEDED
    assert second.status == RunStatus.FAILED
    assert second.action_logs[0]["error"] == (
        "E-mail budget of the organization reached (3 e-mails in the minute from 09:15 UTC, "
        "AUTOMATION_MAX_EMAILS_PER_MINUTE); nothing sent. It resets at 09:16:00 UTC."
    )
    assert elsewhere.status == RunStatus.SUCCEEDED, "another organization has its own"
    assert len(mailoutbox) == 4
    with time_machine.travel(NOW + datetime.timedelta(minutes=1), tick=False):
        assert run_of(rule, product).status == RunStatus.SUCCEEDED


def test_a_dry_run_sends_nothing_and_shows_no_members_address(
    organization, members, product, mailoutbox
):
    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        actions=[
            email_action(
                to=["ops@example.com"], usernames=["alice"], subject="{{ object.name }}", body="b"
            )
        ],
    )
    log = run_rule(rule, user=members["alice"], object_id=str(product.pk), dry_run=True)
    assert log.status == RunStatus.SUCCEEDED
    assert log.action_logs[0]["result"] == {
        "would": "email",
        "recipients": ["ops@example.com", "alice"],
        "skipped": [],
        "subject": "Lamp",
        "body": "b",
    }
    assert mailoutbox == []


# --- Through a real SMTP server -------------------------------------------------------------------


@pytest.fixture
def smtp(settings):
    receiver = SmtpReceiver(refuse={"nobody@example.com"})
    receiver.settings_for(settings)
    yield receiver
    receiver.close()


def test_the_smtp_server_receives_one_message_per_recipient(organization, members, product, smtp):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            email_action(
                to=["ops@example.com"], usernames=["alice"], subject="Über {{ object.name }}"
            )
        ],
    )
    log = run_of(rule, product)
    assert log.status == RunStatus.SUCCEEDED, log.error
    received = {tuple(item.rcpt_tos): item.message for item in smtp.messages}
    assert set(received) == {("ops@example.com",), ("alice@example.com",)}
    message = received[("alice@example.com",)]
    assert message["From"] == "automation@localhost"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Über Lamp"
    assert message["Message-ID"].strip().startswith(f"<{log.run_uuid}-0.")
    assert message["Auto-Submitted"] == "auto-generated"


def test_a_refused_recipient_fails_the_action_once_the_others_have_theirs(
    organization, members, product, smtp
):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            email_action(
                to=["ops@example.com", "nobody@example.com"], usernames=["alice"], subject="x"
            )
        ],
    )
    log = run_of(rule, product)
    assert log.status == RunStatus.FAILED
    entry = log.action_logs[0]
    assert entry["status"] == ActionStatus.FAILED
    assert entry["error"] == "The mail server refused 1 of 3 recipients: nobody@example.com"
    assert entry["result"] == {
        "sent": 2,
        "recipients": ["ops@example.com", "alice"],
        "not_sent": ["nobody@example.com"],
        "skipped": [],
    }
    assert sorted(item.rcpt_tos for item in smtp.messages) == [
        ["alice@example.com"],
        ["ops@example.com"],
    ]


def test_a_mail_server_that_never_answers_fails_the_action_after_email_timeout(
    organization, members, product, settings
):
    silent = SmtpReceiver(silent=True)
    try:
        silent.settings_for(settings)
        settings.EMAIL_TIMEOUT = 0.5
        rule = AutomationRuleFactory(
            organization=organization, actions=[email_action(usernames=["alice"], subject="x")]
        )
        log = run_of(rule, product)
    finally:
        silent.close()
    assert log.status == RunStatus.FAILED
    assert log.action_logs[0]["error"] == (
        "E-mail failed after 0 of 1 sent: the mail server did not answer within 0.5 s "
        "(EMAIL_TIMEOUT)"
    )


# --- SEND_NOTIFICATION with "email": true ----------------------------------------------------------


def notify_action(**parameters):
    return {
        "action_type": ActionType.SEND_NOTIFICATION,
        "parameters": {
            "recipients": {"roles": ["ADMIN", "VIEWER"]},
            "title": "{{ object.name }} is low",
            "body": "{{ object.stock }} left.",
            **parameters,
        },
    }


def test_a_notification_may_also_email_its_recipients(organization, members, product, mailoutbox):
    rule = AutomationRuleFactory(organization=organization, actions=[notify_action(email=True)])
    log = run_of(rule, product)
    assert log.status == RunStatus.SUCCEEDED, log.error
    assert [message.to for message in mailoutbox] == [["alice@example.com"]]
    assert (mailoutbox[0].subject, mailoutbox[0].body) == ("Lamp is low", "3 left.")
    result = log.action_logs[0]["result"]
    assert result["recipients"] == ["alice", "carol"]
    assert result["email"] == {
        "sent": 1,
        "recipients": ["alice"],
        "skipped": [{"username": "carol", "reason": "no valid e-mail address"}],
    }
    assert Notification.objects.filter(log=log).count() == 2


def test_without_email_a_notification_sends_none(organization, members, product, mailoutbox):
    rule = AutomationRuleFactory(organization=organization, actions=[notify_action()])
    log = run_of(rule, product)
    assert log.status == RunStatus.SUCCEEDED
    assert mailoutbox == []
    assert "email" not in log.action_logs[0]["result"]


def test_a_notification_whose_email_fails_keeps_its_notifications_and_fails(
    organization, members, product, settings
):
    down = SmtpReceiver()
    down.settings_for(settings)
    down.close()  # nothing listens there any more: connection refused
    rule = AutomationRuleFactory(organization=organization, actions=[notify_action(email=True)])
    log = run_of(rule, product)
    assert log.status == RunStatus.FAILED
    entry = log.action_logs[0]
    assert entry["error"].startswith("E-mail failed after 0 of 1 sent: ConnectionRefusedError")
    assert entry["result"]["notification_ids"] == list(
        Notification.objects.filter(log=log).order_by("pk").values_list("pk", flat=True)
    )
    assert entry["result"]["email"]["sent"] == 0
    assert entry["result"]["email"]["not_sent"] == ["alice"]


def test_runs_that_email_are_not_executed_in_a_batch(organization, members, monkeypatch):
    """Their e-mails go out after the claim's transaction, never inside a batch's."""
    from automation.runs import execute

    notify = AutomationRuleFactory(organization=organization, actions=[notify_action(email=True)])
    plain = AutomationRuleFactory(organization=organization, actions=[notify_action()])
    definitions = {
        rule.pk: type("Definition", (), {"actions": tuple(rule.actions.all())})
        for rule in (notify, plain)
    }
    prepared = {
        rule_id: type("Prepared", (), {"definition": definition})
        for rule_id, definition in definitions.items()
    }
    assert execute._database_only(prepared[plain.pk]) is True
    assert execute._database_only(prepared[notify.pk]) is False


def test_a_dry_run_of_an_emailing_notification_says_who_would_get_an_email(
    organization, members, product, mailoutbox
):
    rule = AutomationRuleFactory(
        organization=organization, manual_rule=True, actions=[notify_action(email=True)]
    )
    log = run_rule(rule, user=members["alice"], object_id=str(product.pk), dry_run=True)
    assert log.action_logs[0]["result"]["email"] == {
        "recipients": ["alice"],
        "skipped": [{"username": "carol", "reason": "no valid e-mail address"}],
    }
    assert mailoutbox == []
    assert not Notification.objects.exists()


def test_an_emailing_notification_over_the_email_budget_stores_nothing(
    organization, members, product, mailoutbox, settings
):
    settings.AUTOMATION_MAX_EMAILS_PER_MINUTE = 0
    rule = AutomationRuleFactory(organization=organization, actions=[notify_action(email=True)])
    with time_machine.travel(NOW, tick=False):
        log = run_of(rule, product)
    assert log.status == RunStatus.FAILED
    assert log.action_logs[0]["error"].startswith("E-mail budget of the organization reached")
    assert not Notification.objects.exists()
    assert mailoutbox == []
