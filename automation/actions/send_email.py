"""SEND_EMAIL: an e-mail to addresses and to members of the organization (actions/mail.py
sends it)."""

import logging

from accounts.choices import Role
from automation.actions import mail
from automation.actions.base import (
    ActionError,
    ActionHandler,
    add_message,
    count_bytes,
    has_error,
    parameters_schema_of,
    render_parameter,
    template_errors,
)
from automation.actions.notify import active_members, non_member_errors
from automation.actions.templates import has_placeholder
from automation.core.choices import ActionType

logger = logging.getLogger("automation.actions.send_email")


class SendEmailHandler(ActionHandler):
    action_type = ActionType.SEND_EMAIL
    writes_database = False
    parameters_schema = parameters_schema_of(
        {
            "to": {
                "description": "E-mail addresses, or templates that render to one "
                '("{{ object.email }}").',
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 1000},
                "uniqueItems": True,
                "maxItems": mail.MAX_RECIPIENTS,
            },
            "usernames": {
                "description": "Members of the rule's organization; e-mailed at their address.",
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "uniqueItems": True,
                "maxItems": mail.MAX_RECIPIENTS,
            },
            "roles": {
                "description": "Every active member holding one of these roles.",
                "type": "array",
                "items": {"enum": list(Role.values)},
                "uniqueItems": True,
            },
            "subject": {"type": "string", "minLength": 1, "maxLength": 1000},
            "body": {"type": "string"},
        },
        ["subject"],
        "E-mail addresses and members of the rule's organization (one e-mail each, plain "
        f"text, at most {mail.MAX_RECIPIENTS}).",
    )

    schema_messages = {
        "to": f"A list of at most {mail.MAX_RECIPIENTS} different addresses.",
        "usernames": f"A list of at most {mail.MAX_RECIPIENTS} different usernames.",
    }

    def check(self, parameters, rule, errors, scope):
        to, usernames = parameters.get("to", []), parameters.get("usernames", [])
        # A recipient list with a schema error is left out of `parameters` (base.validate): its
        # own error says what is wrong, so "name one" would only repeat it.
        lists_sound = not any(has_error(errors, name) for name in ("to", "usernames", "roles"))
        if lists_sound and not to and not usernames and not parameters.get("roles"):
            add_message(errors, "to", "Name at least one address, username or role.")
        if len(to) + len(usernames) > mail.MAX_RECIPIENTS:
            add_message(
                errors,
                "to",
                f"{len(to) + len(usernames)} addresses and usernames; an action sends at most "
                f"{mail.MAX_RECIPIENTS} e-mails.",
            )
        for index, address in enumerate(to):
            if has_placeholder(address):
                template_errors(address, f"to.{index}", errors, scope)
            elif problem := mail.address_error(address):
                add_message(errors, f"to.{index}", problem)
        for path, message in non_member_errors(rule, usernames, "usernames"):
            add_message(errors, path, message)
        subject = parameters.get("subject")
        if subject is not None:
            if any(char in subject for char in "\r\n"):
                add_message(errors, "subject", "An e-mail subject is one line: no line breaks.")
            template_errors(subject, "subject", errors, scope)
        template_errors(parameters.get("body", ""), "body", errors, scope)

    def _prepare(self, parameters, ctx):
        """(recipients, skipped, subject, body), rendered and checked: ActionError otherwise."""
        subject = mail.subject_line(
            render_parameter(parameters["subject"], ctx, "subject", as_text=True)
        )
        body = mail.check_body(
            render_parameter(parameters.get("body", ""), ctx, "body", as_text=True)
        )
        recipients = []
        for index, template in enumerate(parameters.get("to", [])):
            address = render_parameter(template, ctx, f"to.{index}")
            if problem := mail.address_error(address):
                raise ActionError(f"to.{index}: {problem}")
            recipients.append(mail.Recipient(address, address))
        users, missing = active_members(
            ctx.organization_id, parameters.get("usernames", []), parameters.get("roles", [])
        )
        members, skipped = mail.member_recipients(users)
        skipped = [{"username": name, "reason": "not an active member"} for name in missing] + (
            skipped
        )
        recipients = mail.unique(recipients + members)
        if not recipients:
            raise ActionError(
                "No recipient: no address, and none of the usernames and roles names an active "
                "member with an e-mail address.",
                result={"sent": 0, "recipients": [], "skipped": skipped},
            )
        mail.check_count(recipients)
        return recipients, skipped, subject, body

    def execute(self, parameters, ctx, *, on_attempt=None):
        recipients, skipped, subject, body = self._prepare(parameters, ctx)
        try:
            result = mail.deliver(ctx, recipients, subject, body)
        except ActionError as exc:
            exc.result = {**(exc.result or {}), "skipped": skipped}
            count_bytes(ctx, exc.result)
            raise
        result["skipped"] = skipped
        count_bytes(ctx, result)
        return result

    def dry_run(self, parameters, ctx):
        recipients, skipped, subject, body = self._prepare(parameters, ctx)
        return {
            "would": "email",
            "recipients": [recipient.shown for recipient in recipients],
            "skipped": skipped,
            "subject": subject,
            "body": body,
        }
