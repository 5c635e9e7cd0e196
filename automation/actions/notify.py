"""SEND_NOTIFICATION: a notification to members of the organization, stored and published;
with "email": true, also e-mailed to them (actions/mail.py)."""

import contextlib
import logging

from django.db import models, transaction

from accounts.choices import Role
from accounts.models import Membership, Notification
from automation.actions import mail
from automation.actions.base import (
    ActionError,
    ActionHandler,
    add_message,
    parameters_schema_of,
    render_parameter,
    spend_bytes,
    template_errors,
)
from automation.core.choices import ActionType
from automation.fanout import budget
from automation.live.events import publish_notification

logger = logging.getLogger("automation.actions.notify")


TITLE_MAX_LENGTH = Notification._meta.get_field("title").max_length


class SendNotificationHandler(ActionHandler):
    action_type = ActionType.SEND_NOTIFICATION
    parameters_schema = parameters_schema_of(
        {
            "recipients": {
                "description": "Members of the rule's organization, by username and/or by role.",
                "type": "object",
                "properties": {
                    "usernames": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "uniqueItems": True,
                    },
                    "roles": {
                        "type": "array",
                        "items": {"enum": list(Role.values)},
                        "uniqueItems": True,
                    },
                },
                "additionalProperties": False,
            },
            "title": {"type": "string", "minLength": 1, "maxLength": TITLE_MAX_LENGTH},
            "body": {"type": "string"},
            "email": {
                "description": "Also e-mail each recipient (the title as subject, the body as "
                "text) at their address.",
                "type": "boolean",
                "default": False,
            },
        },
        ["recipients", "title"],
        "Notify members of the rule's organization (a Notification each, streamed live; "
        "e-mailed too with email: true).",
    )

    def reaches_outside(self, parameters) -> bool:
        return isinstance(parameters, dict) and parameters.get("email") is True

    def check(self, parameters, rule, errors, scope):
        if "title" in parameters:
            template_errors(parameters["title"], "title", errors, scope)
        template_errors(parameters.get("body", ""), "body", errors, scope)
        if "recipients" in parameters:
            self._check_recipients(parameters["recipients"], rule, errors)

    @staticmethod
    def _check_recipients(recipients, rule, errors) -> None:
        usernames = recipients.get("usernames", [])
        if not usernames and not recipients.get("roles"):
            add_message(errors, "recipients", "Name at least one username or role.")
        for path, message in non_member_errors(rule, usernames, "recipients.usernames"):
            add_message(errors, path, message)

    def _prepare(self, parameters, ctx):
        title = render_parameter(parameters["title"], ctx, "title", as_text=True)
        body = render_parameter(parameters.get("body", ""), ctx, "body", as_text=True)
        if len(title) > TITLE_MAX_LENGTH:
            title = title[: TITLE_MAX_LENGTH - 1] + "…"
        recipients = parameters["recipients"]
        users, skipped = active_members(
            ctx.organization_id, recipients.get("usernames", []), recipients.get("roles", [])
        )
        if not users:
            raise ActionError(
                "No recipient: none of the usernames and roles names an active member of this "
                "organization.",
                result={"notification_ids": [], "recipients": [], "skipped": skipped},
            )
        return title, body, users, skipped

    def execute(self, parameters, ctx, *, on_attempt=None):
        title, body, users, skipped = self._prepare(parameters, ctx)
        emailing = self.reaches_outside(parameters)
        if emailing:  # checked and counted before anything is stored: a refusal stores nothing
            subject, text = mail.subject_line(title), mail.check_body(body)
            recipients, without_address = mail.member_recipients(users)
            mail.admit(ctx, recipients)
        spend_bytes(ctx, len(users) * budget.stored_size(title, body))
        # The run opened no transaction for an e-mailing action (it reaches outside): the
        # notifications commit together, before the e-mails go out. Otherwise the run's
        # transaction holds them.
        with transaction.atomic() if emailing else contextlib.nullcontext():
            ids = []
            for user in users:
                notification = Notification.objects.create(
                    organization_id=ctx.organization_id,
                    recipient=user,
                    title=title,
                    body=body,
                    log_id=ctx.log_id,
                )
                publish_notification(notification)
                ids.append(notification.pk)
        result = {
            "notification_ids": ids,
            "recipients": [user.username for user in users],
            "skipped": skipped,
        }
        if emailing:
            email = {"sent": 0, "recipients": [], "skipped": without_address}
            try:
                if recipients:
                    email.update(mail.send(ctx, recipients, subject, text))
            except ActionError as exc:
                email.update(exc.result or {})
                exc.result = {**result, "email": email}
                raise
            result["email"] = email
        return result

    def dry_run(self, parameters, ctx):
        title, body, users, skipped = self._prepare(parameters, ctx)
        result = {
            "would": "notify",
            "recipients": [user.username for user in users],
            "skipped": skipped,
            "title": title,
            "body": body,
        }
        if self.reaches_outside(parameters):
            mail.subject_line(title)
            mail.check_body(body)
            recipients, without_address = mail.member_recipients(users)
            mail.check_count(recipients)
            result["email"] = {
                "recipients": [recipient.shown for recipient in recipients],
                "skipped": without_address,
            }
        return result


def active_members(organization_id, usernames, roles) -> tuple[list, list[str]]:
    """Active members named by username or role (sorted by username), and the usernames that
    name none."""
    # Through Membership rows of this organization only: a role held elsewhere never counts.
    memberships = (
        Membership.objects.filter(organization_id=organization_id, user__is_active=True)
        .filter(models.Q(user__username__in=usernames) | models.Q(role__in=roles))
        .select_related("user")
        .order_by("user__username")
    )
    users = [membership.user for membership in memberships]
    found = {user.username for user in users}
    return users, [name for name in usernames if name not in found]


def non_member_errors(rule, usernames, path: str) -> list[tuple[str, str]]:
    """(path, message) for each username that names no member of the rule's organization
    (checked when the rule is saved; one who leaves later is skipped by the runs)."""
    organization_id = getattr(rule, "organization_id", None)
    if not usernames or organization_id is None:
        return []
    members = set(
        Membership.objects.filter(
            organization_id=organization_id, user__username__in=usernames
        ).values_list("user__username", flat=True)
    )
    return [
        (f"{path}.{index}", f'"{username}" is not a member of this organization.')
        for index, username in enumerate(usernames)
        if username not in members
    ]
