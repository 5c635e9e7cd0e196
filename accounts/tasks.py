"""Huey's tasks of the accounts app (djhuey's autodiscovery finds them here)."""

import logging

from huey.contrib.djhuey import db_task

logger = logging.getLogger("accounts.tasks")


@db_task()
def send_invitation_email_task(invitation_id: int) -> None:
    """E-mail an invitation (accounts/invitation_email.py). Not retried: a failure is logged
    and the invitation stands, listed by the `invitations` query."""
    from accounts import invitation_email

    try:
        invitation_email.send(invitation_id)
    except Exception as exc:
        logger.warning("invitation %s: the e-mail was not sent: %r", invitation_id, exc)
