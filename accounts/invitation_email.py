"""The e-mail that tells an invited user about their invitation, when e-mail is configured
(EMAIL_URL set: EMAIL_CONFIGURED).

It is sent by a Huey worker (accounts/tasks.py), enqueued once the invitation has committed,
never within the request: addMember's answer, and the time it takes, must stay the same whether
or not the username has an account and an address (inviting must not tell who exists), and a
mail server that is down or slow must not fail or slow the invitation. A failure is a WARNING
in the log, nothing more: the invitation stands, and the `invitations` query lists it.

Inviting the same username again renews the invitation and sends the e-mail again; the
invitation limits (accounts/ratelimit.py and ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME) bound how
many one person can be sent.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.db import transaction

from accounts.models import Invitation

logger = logging.getLogger("accounts.invitation_email")

SUBJECT_MAX_LENGTH = 200


def schedule(invitation: Invitation) -> None:
    """E-mail the invited user once the current transaction commits (when e-mail is
    configured). An enqueue that fails (the queue's store down) is logged, never raised: the
    invitation is already committed."""
    if not settings.EMAIL_CONFIGURED:
        return
    from accounts.tasks import send_invitation_email_task

    invitation_id = invitation.pk
    transaction.on_commit(lambda: send_invitation_email_task(invitation_id), robust=True)


def send(invitation_id: int) -> bool:
    """Send the e-mail of an open invitation to the user it reaches; False when there is
    nobody to send it to (no such user, no address, the invitation closed meanwhile). A mail
    server's failure raises."""
    invitation = (
        Invitation.objects.open()
        .select_related("organization", "invited_by")
        .filter(pk=invitation_id)
        .first()
    )
    if invitation is None:
        return False
    user = invited_user(invitation)
    if user is None or not user.email:
        return False
    inviter = invitation.invited_by.get_username() if invitation.invited_by else "An admin"
    organization = one_line(invitation.organization.name)
    subject = one_line(f"{inviter} invited you to {organization}")[:SUBJECT_MAX_LENGTH]
    body = (
        f"{inviter} invited you to join {organization} as {invitation.role}.\n\n"
        "Sign in and answer it: the `invitations` query lists it, "
        f'acceptInvitation(id: "{invitation.pk}") joins and '
        f'declineInvitation(id: "{invitation.pk}") declines. '
        f"It stays open until {invitation.expires_at:%Y-%m-%d %H:%M} UTC.\n"
    )
    message = EmailMessage(
        subject,
        body,
        settings.DEFAULT_FROM_EMAIL,
        [user.email],
        headers={"Auto-Submitted": "auto-generated"},
    )
    message.send()
    return True


def invited_user(invitation: Invitation):
    """The active user the invitation reaches, as accounts.invitations.invitations_for decides:
    the one named exactly, else the only one named so ignoring case; None otherwise."""
    user_model = get_user_model()
    field = user_model.USERNAME_FIELD
    namesakes = list(user_model.objects.filter(**{f"{field}__iexact": invitation.username}))
    exact = [user for user in namesakes if user.get_username() == invitation.username]
    user = exact[0] if exact else namesakes[0] if len(namesakes) == 1 else None
    return user if user is not None and user.is_active else None


def one_line(text: str) -> str:
    """A name typed by someone else, made safe for a header: one line."""
    return " ".join(text.split())
