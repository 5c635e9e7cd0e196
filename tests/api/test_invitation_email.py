"""addMember e-mails the invited user when e-mail is configured (EMAIL_URL set): by a worker,
after the invitation commits, never failing or slowing the mutation, and telling nobody whether
the username exists. A real worker and SMTP server: tests/e2e/test_email.py."""

import logging

import pytest

from accounts import tasks
from accounts.models import Invitation
from tests.api.test_organizations import ADD
from tests.factories import UserFactory
from tests.smtp import SmtpReceiver

pytestmark = pytest.mark.django_db


class Enqueued(list):
    """Invitation ids whose e-mail task was enqueued."""

    def run_them(self):
        """Execute the tasks as a worker would."""
        for invitation_id in self:
            REAL_TASK.call_local(invitation_id)


REAL_TASK = tasks.send_invitation_email_task


@pytest.fixture
def enqueued(monkeypatch, settings):
    """E-mail configured; the invitation e-mail tasks the requests enqueue, for the test to run
    as a worker would (`enqueued.run_them()`)."""
    settings.EMAIL_CONFIGURED = True
    queued = Enqueued()
    monkeypatch.setattr(tasks, "send_invitation_email_task", queued.append)
    return queued


def invite(gql, admin, organization, username, role="EDITOR"):
    return gql(ADD, {"org": str(organization.pk), "u": username, "r": role}, token=admin)


def test_the_invited_user_is_emailed_by_a_worker_after_the_invitation_commits(
    gql, admin, organization, enqueued, mailoutbox, django_capture_on_commit_callbacks
):
    UserFactory(username="bob", email="bob@example.com")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        invite(gql, admin, organization, "bob").ok()
    assert enqueued == [], "enqueued on commit only"
    for callback in callbacks:
        callback()
    invitation = Invitation.objects.get(username="bob")
    assert enqueued == [invitation.pk]
    assert mailoutbox == [], "nothing is sent within the request"

    enqueued.run_them()

    (message,) = mailoutbox
    assert message.to == ["bob@example.com"]
    assert message.subject == f"{admin.username} invited you to {organization.name}"
    assert f"join {organization.name} as EDITOR" in message.body
    assert f'acceptInvitation(id: "{invitation.pk}")' in message.body
    assert message.extra_headers["Auto-Submitted"] == "auto-generated"


def test_the_answer_is_the_same_whoever_is_invited_and_only_an_account_with_an_address_is_emailed(
    gql, admin, organization, enqueued, mailoutbox, django_capture_on_commit_callbacks
):
    UserFactory(username="bob", email="bob@example.com")
    UserFactory(username="nomail", email="")
    UserFactory(username="gone", email="gone@example.com", is_active=False)
    with django_capture_on_commit_callbacks(execute=True):
        answers = [
            invite(gql, admin, organization, name)
            for name in ("bob", "nomail", "gone", "nobody-by-this-name")
        ]
    assert len({answer.http.content for answer in answers}) == 1
    assert len(enqueued) == 4, "a task for each, whether or not an account exists"

    enqueued.run_them()

    assert [message.to for message in mailoutbox] == [["bob@example.com"]]


def test_the_invitation_reaches_the_user_it_names_ignoring_case(
    gql, admin, organization, enqueued, mailoutbox, django_capture_on_commit_callbacks
):
    UserFactory(username="Carol", email="carol@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        invite(gql, admin, organization, "carol").ok()
    enqueued.run_them()
    assert [message.to for message in mailoutbox] == [["carol@example.com"]]


def test_without_email_url_nothing_is_enqueued(
    gql, admin, organization, enqueued, mailoutbox, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_CONFIGURED = False
    UserFactory(username="bob", email="bob@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        invite(gql, admin, organization, "bob").ok()
    assert enqueued == []
    assert mailoutbox == []


def test_a_refused_invitation_enqueues_nothing(
    gql, admin, organization, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        refused = invite(gql, admin, organization, admin.username)
    assert refused.codes == ["CONFLICT"]
    assert enqueued == []


def test_a_mail_server_that_is_down_fails_nothing_but_the_email(
    gql, admin, organization, enqueued, settings, caplog, django_capture_on_commit_callbacks
):
    down = SmtpReceiver()
    down.settings_for(settings)
    down.close()  # connection refused from now on
    UserFactory(username="bob", email="bob@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        invite(gql, admin, organization, "bob").ok()

    with caplog.at_level(logging.WARNING, logger="accounts.tasks"):
        enqueued.run_them()

    (record,) = [r for r in caplog.records if r.name == "accounts.tasks"]
    assert record.levelno == logging.WARNING
    assert "the e-mail was not sent" in record.getMessage()
    assert "ConnectionRefusedError" in record.getMessage()
    assert Invitation.objects.open().filter(username="bob").exists()


def test_an_enqueue_that_fails_does_not_fail_the_mutation(
    gql, admin, organization, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.EMAIL_CONFIGURED = True

    def store_down(invitation_id):
        raise ConnectionError("the queue's store does not answer")

    monkeypatch.setattr(tasks, "send_invitation_email_task", store_down)
    with django_capture_on_commit_callbacks(execute=True):
        answer = invite(gql, admin, organization, "bob")
    assert answer.ok() == {"addMember": {"id": str(organization.pk)}}
    assert Invitation.objects.filter(username="bob").exists()
