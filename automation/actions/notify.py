"""SEND_NOTIFICATION: a notification to members of the organization, stored and published."""

import logging

from django.db import models

from accounts.choices import Role
from accounts.models import Membership, Notification
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
        },
        ["recipients", "title"],
        "Notify members of the rule's organization (a Notification each, streamed live).",
    )

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
        organization_id = getattr(rule, "organization_id", None)
        if usernames and organization_id is not None:
            members = set(
                Membership.objects.filter(
                    organization_id=organization_id, user__username__in=usernames
                ).values_list("user__username", flat=True)
            )
            for index, username in enumerate(usernames):
                if username not in members:
                    add_message(
                        errors,
                        f"recipients.usernames.{index}",
                        f'"{username}" is not a member of this organization.',
                    )

    def _prepare(self, parameters, ctx):
        title = render_parameter(parameters["title"], ctx, "title", as_text=True)
        body = render_parameter(parameters.get("body", ""), ctx, "body", as_text=True)
        if len(title) > TITLE_MAX_LENGTH:
            title = title[: TITLE_MAX_LENGTH - 1] + "…"
        users, skipped = self._recipients(parameters["recipients"], ctx.organization_id)
        if not users:
            raise ActionError(
                "No recipient: none of the usernames and roles names an active member of this "
                "organization.",
                result={"notification_ids": [], "recipients": [], "skipped": skipped},
            )
        return title, body, users, skipped

    @staticmethod
    def _recipients(recipients: dict, organization_id) -> tuple[list, list[str]]:
        """Active members named by username or role (sorted), and usernames that are not."""
        usernames = recipients.get("usernames", [])
        roles = recipients.get("roles", [])
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

    def execute(self, parameters, ctx, *, on_attempt=None):
        title, body, users, skipped = self._prepare(parameters, ctx)
        spend_bytes(ctx, len(users) * budget.stored_size(title, body))
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
        return {
            "notification_ids": ids,
            "recipients": [user.username for user in users],
            "skipped": skipped,
        }

    def dry_run(self, parameters, ctx):
        title, body, users, skipped = self._prepare(parameters, ctx)
        return {
            "would": "notify",
            "recipients": [user.username for user in users],
            "skipped": skipped,
            "title": title,
            "body": body,
        }
