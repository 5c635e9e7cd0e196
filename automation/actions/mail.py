"""E-mail from actions (SEND_EMAIL, SEND_NOTIFICATION with "email": true), through Django's
e-mail framework: the backend EMAIL_URL names (config/settings.py; the console by default).

Rules of every e-mail sent here:
- one message per recipient, so no recipient sees another's address (members' addresses are
  never shown: logs name a member by username);
- at most MAX_RECIPIENTS per action, and AUTOMATION_MAX_EMAILS_PER_MINUTE per organization
  (automation/fanout/budget.py): over either, nothing is sent;
- no line break in a subject or an address (header injection): refused, never cleaned;
- a stable Message-ID per run, action and recipient, so a resumed run's e-mails carry the
  same ids as the first attempt's (mail systems that deduplicate on it show one), and
  `Auto-Submitted: auto-generated` (RFC 3834), so that auto-responders do not answer;
- a backend failure (SMTP refusal, timeout after EMAIL_TIMEOUT, connection error) fails the
  action with the reason and lists who got the e-mail before it. Not retried: a retry would
  send the e-mails that did go out again.
"""

import hashlib
import logging
import smtplib
from dataclasses import dataclass

from django.conf import settings
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from automation.actions.base import ActionError
from automation.fanout import budget

logger = logging.getLogger("automation.actions.mail")

MAX_RECIPIENTS = 50
SUBJECT_MAX_LENGTH = 250  # characters, after rendering; cut beyond (as a notification's title)
BODY_MAX_BYTES = 64 * 1024  # after rendering, UTF-8; refused beyond
ADDRESS_MAX_LENGTH = 254  # RFC 5321's path limit, less the brackets


@dataclass(frozen=True)
class Recipient:
    address: str
    shown: str  # what logs and results show: the member's username, or the address given


def address_error(value) -> str | None:
    """Why `value` is not an e-mail address we send to, or None."""
    if not isinstance(value, str):
        return f"{value!r} is not an e-mail address."
    if any(char in value for char in "\r\n\0"):
        return "An e-mail address cannot contain line breaks."
    if len(value) > ADDRESS_MAX_LENGTH:
        return f"An e-mail address has at most {ADDRESS_MAX_LENGTH} characters."
    try:
        validate_email(value)
    except ValidationError:
        return f'"{value}" is not a valid e-mail address.'
    return None


def subject_line(subject: str) -> str:
    """The rendered subject as sent: one line, cut at SUBJECT_MAX_LENGTH. A line break (from
    a placeholder's value) fails the action: it could add headers."""
    if any(char in subject for char in "\r\n"):
        raise ActionError(
            "subject: contains a line break once rendered; an e-mail subject is one line."
        )
    if len(subject) > SUBJECT_MAX_LENGTH:
        subject = subject[: SUBJECT_MAX_LENGTH - 1] + "…"
    return subject


def check_body(body: str) -> str:
    size = len(body.encode())
    if size > BODY_MAX_BYTES:
        raise ActionError(
            f"body: renders to {size} bytes; an e-mail body has at most {BODY_MAX_BYTES}."
        )
    return body


def member_recipients(users) -> tuple[list[Recipient], list[dict]]:
    """Members as recipients, and those skipped for want of an address."""
    recipients, skipped = [], []
    for user in users:
        address = (user.email or "").strip()
        if not address or address_error(address):
            skipped.append({"username": user.username, "reason": "no valid e-mail address"})
        else:
            recipients.append(Recipient(address, user.username))
    return recipients, skipped


def unique(recipients: list[Recipient]) -> list[Recipient]:
    """One recipient per address (compared ignoring case), the first kept."""
    seen, kept = set(), []
    for recipient in recipients:
        if recipient.address.lower() not in seen:
            seen.add(recipient.address.lower())
            kept.append(recipient)
    return kept


def check_count(recipients: list[Recipient]) -> None:
    if len(recipients) > MAX_RECIPIENTS:
        raise ActionError(
            f"{len(recipients)} recipients; an action sends at most {MAX_RECIPIENTS} e-mails. "
            "Nothing was sent."
        )


def deliver(ctx, recipients: list[Recipient], subject: str, body: str) -> dict:
    """admit(), then send()."""
    admit(ctx, recipients)
    return send(ctx, recipients, subject, body)


def admit(ctx, recipients: list[Recipient]) -> None:
    """Count the e-mails against the organization's minute; ActionError (nothing may be sent)
    over it, or over MAX_RECIPIENTS."""
    check_count(recipients)
    refusal = budget.admit_emails(ctx.organization_id, len(recipients))
    if refusal:
        raise ActionError(refusal, result={"sent": 0, "recipients": []})


def send(ctx, recipients: list[Recipient], subject: str, body: str) -> dict:
    """Send one e-mail per recipient (admitted already); {"sent", "recipients"} of what went
    out, or ActionError with it when the backend fails."""
    sent: list[str] = []
    refused: list[str] = []
    connection = mail.get_connection(fail_silently=False)
    try:
        connection.open()
        for recipient in recipients:
            message = mail.EmailMessage(
                subject,
                body,
                settings.DEFAULT_FROM_EMAIL,
                [recipient.address],
                headers={
                    "Message-ID": _message_id(ctx, recipient),
                    "Auto-Submitted": "auto-generated",
                },
                connection=connection,
            )
            try:
                message.send()
            except smtplib.SMTPRecipientsRefused:
                # This address only (the connection goes on): the others still get theirs.
                refused.append(recipient.shown)
                continue
            sent.append(recipient.shown)
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        # OSError: refused, unreachable, timed out (EMAIL_TIMEOUT), TLS; ValueError: a header
        # Django refuses. The reason names no credential (smtplib's messages do not).
        logger.warning("e-mail of run %s failed after %s sent: %r", ctx.log_id, len(sent), exc)
        done = len(sent) + len(refused)
        not_sent = refused + [recipient.shown for recipient in recipients[done:]]
        raise ActionError(
            f"E-mail failed after {len(sent)} of {len(recipients)} sent: {_reason(exc)}",
            result={"sent": len(sent), "recipients": sent, "not_sent": not_sent},
        ) from None
    finally:
        try:
            connection.close()
        except Exception:  # a connection the failure left broken: nothing more to say
            logger.debug("closing the e-mail connection failed", exc_info=True)
    result = {"sent": len(sent), "recipients": sent}
    if refused:
        raise ActionError(
            f"The mail server refused {len(refused)} of {len(recipients)} recipients: "
            + ", ".join(refused),
            result={**result, "not_sent": refused},
        )
    return result


def _message_id(ctx, recipient: Recipient) -> str:
    """<run key-action order.recipient@domain>: the same for a resumed run's e-mail."""
    digest = hashlib.sha256(recipient.address.lower().encode()).hexdigest()[:16]
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip("<> ") or "localhost"
    return f"<{ctx.outside_key()}.{digest}@{domain}>"


def _reason(exc: Exception) -> str:
    if _timed_out(exc):
        return f"the mail server did not answer within {settings.EMAIL_TIMEOUT:g} s (EMAIL_TIMEOUT)"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        return f"the mail server answered {exc.smtp_code} {text}".strip()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _timed_out(exc: BaseException | None) -> bool:
    """A timeout, or an error raised while handling one (smtplib reports a reply that timed
    out as SMTPServerDisconnected)."""
    while exc is not None:
        if isinstance(exc, TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
