"""Membership by invitation: an ADMIN invites a username; the user behind it accepts or declines.

Nobody joins an organization without consenting, superusers included. Inviting never looks the
username up among users (only among the organization's members, whom every member sees anyway):
it stores the name as typed, so its answer and its work are the same whether or not such a user
exists (no way to probe for usernames). The invitation reaches whoever signs in with that
username, compared case-insensitively as Django's user creation form compares usernames.

Errors: Django's `ValidationError` keyed by argument name for a malformed username,
`Invitation.DoesNotExist` for an invitation the caller cannot act on (not theirs, expired,
revoked, declined, accepted: one answer for all), `AlreadyMember` when the user is a member,
`TooManyOpenInvitations` when the username holds ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME open
invitations (counted by name, like everything here, so it reveals no account either).
"""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Lower
from django.db.models.lookups import Exact
from django.utils import timezone

from accounts import invitation_email
from accounts.choices import Role
from accounts.models import Invitation, Membership, Organization


class TooManyOpenInvitations(Exception):
    """The username already holds ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME open invitations.

    Counted among invitations by the name they address, never among users, so the refusal is
    the same whether or not an account has that name.
    """

    def __init__(self, limit: int):
        super().__init__(
            f"This username already has {limit} open invitations "
            "(ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME): it can be invited again once it has "
            "accepted or declined some, or they have expired."
        )


class AlreadyMember(Exception):
    """The user is already a member: their role is changed with setMemberRole instead."""

    def __init__(self, message="This user is already a member of the organization."):
        super().__init__(message)


def clean_username(username: str) -> str:
    """The username if it is well formed for the user model (length, characters), else a
    ValidationError on "username". Checks the text only, never whether the user exists."""
    user_model = get_user_model()
    field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    try:
        return field.clean(username, None)
    except ValidationError as exc:
        raise ValidationError({"username": exc.messages}) from None


def _same_username(field: str, username) -> Exact:
    """`field` equals `username` ignoring case, with the database's LOWER() on both sides (the
    unique constraint's own comparison)."""
    return Exact(Lower(field), Lower(username))


def is_member(organization: Organization, username: str) -> bool:
    """Whether a member of the organization has this username (ignoring case)."""
    return (
        Membership.objects.filter(organization=organization)
        .filter(_same_username(f"user__{get_user_model().USERNAME_FIELD}", Value(username)))
        .exists()
    )


def invite(organization: Organization, username: str, role: str, invited_by) -> Invitation:
    """Invite `username` with `role`, or renew the pending invitation of that username (its role,
    expiry and inviter) so there is never more than one.

    AlreadyMember for a current member: the members list shows them to every member anyway.
    """
    username = clean_username(username)
    role = Role(role)
    now = timezone.now()
    try:
        invitation = _invite_once(organization, username, role, now, invited_by)
    except IntegrityError:
        # A concurrent invite of the same username created the row first: renew that one.
        invitation = _invite_once(organization, username, role, now, invited_by)
    invitation_email.schedule(invitation)  # after commit, by a worker, when e-mail is set up
    return invitation


def _invite_once(organization, username, role, now, invited_by) -> Invitation:
    with transaction.atomic():
        if is_member(organization, username):
            raise AlreadyMember()
        invitation = (
            Invitation.objects.pending()
            .filter(organization=organization)
            .filter(_same_username("username", Value(username)))
            .select_for_update()
            .first()
        )
        if invitation is None or invitation.expires_at <= now:
            # A new open invitation for this name (renewing an open one adds none).
            _ensure_room_for_another(username, now)
        invitation = invitation or Invitation(
            organization=organization, username=username, created_at=now
        )
        invitation.role = role
        invitation.expires_at = now + timedelta(days=settings.ACCOUNTS_INVITATION_DAYS)
        invitation.invited_by = invited_by
        invitation.save()
        return invitation


def _ensure_room_for_another(username: str, now) -> None:
    """TooManyOpenInvitations when `username` holds the most open invitations it may.

    Without a cap anyone able to create organizations could bury a user's invitations under
    theirs. Invitations to one name are serialized first (PostgreSQL: a transaction lock on the
    name; SQLite's write transactions are serialized already), so two organizations inviting
    at once cannot both take the last place.
    """
    limit = settings.ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME
    connection = transaction.get_connection(router.db_for_write(Invitation))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('invitation:' || LOWER(%s), 0))",
                [username],
            )
    held = Invitation.objects.open(now).filter(_same_username("username", Value(username))).count()
    if held >= limit:
        raise TooManyOpenInvitations(limit)


def invitations_for(user) -> QuerySet:
    """The open invitations addressed to `user`, newest first.

    An invitation whose username matches two users case-insensitively (possible for users made
    outside Django's user form) goes to the one it names exactly, and to nobody when neither.
    """
    username_field = get_user_model().USERNAME_FIELD
    username = user.get_username()
    namesakes = (
        get_user_model()
        .objects.filter(_same_username(username_field, OuterRef("username")))
        .exclude(pk=user.pk)
    )
    return (
        Invitation.objects.open()
        .filter(_same_username("username", Value(username)))
        .filter(Q(username=username) | ~Exists(namesakes))
    )


def accept(user, invitation_id: int) -> Membership:
    """Make `user` a member with the invitation's role and close the invitation.

    Invitation.DoesNotExist unless it is one of `user`'s open invitations; AlreadyMember (and
    the invitation stays open, to decline) when the user joined by another way meanwhile.
    """
    with transaction.atomic():
        invitation = invitations_for(user).get(pk=invitation_id)
        # The conditional UPDATE decides a race with a revoke, a decline or a second accept.
        if not _close(invitation, accepted_at=timezone.now(), accepted_by=user):
            raise Invitation.DoesNotExist()
        try:
            with transaction.atomic():
                return Membership.objects.create(
                    user=user, organization_id=invitation.organization_id, role=invitation.role
                )
        except IntegrityError:
            raise AlreadyMember("You are already a member of this organization.") from None


def decline(user, invitation_id: int) -> Invitation:
    """Close one of `user`'s open invitations without joining. Invitation.DoesNotExist otherwise."""
    invitation = invitations_for(user).get(pk=invitation_id)
    if not _close(invitation, declined_at=timezone.now()):
        raise Invitation.DoesNotExist()
    return invitation


def revoke(invitation: Invitation) -> Invitation:
    """Withdraw an open invitation (an ADMIN's act; the caller checked the role)."""
    if not _close(invitation, revoked_at=timezone.now()):
        raise Invitation.DoesNotExist()
    return invitation


def _close(invitation: Invitation, **changes) -> bool:
    """Set the closing fields if the invitation is still open; False when something else
    (expiry, another request) closed it first."""
    return bool(Invitation.objects.open().filter(pk=invitation.pk).update(**changes))
