"""Tenancy and accounts: tokens, memberships, the acting user, notifications."""

import hashlib
import io
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from accounts import invitations
from accounts.choices import Role
from accounts.current import acting_as, get_current_user
from accounts.middleware import bearer_token
from accounts.models import ApiToken, Invitation, InvitationQuerySet, Membership, Organization
from catalog.models import Category
from tests.factories import (
    ApiTokenFactory,
    InvitationFactory,
    MembershipFactory,
    NotificationFactory,
    OrganizationFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


# --- API tokens ---------------------------------------------------------------------------------


def test_issue_stores_only_the_hash_of_the_raw_token():
    user = UserFactory()

    token, raw = ApiToken.issue(user=user, name="laptop")

    stored = ApiToken.objects.get(pk=token.pk)
    assert raw.startswith(ApiToken.PREFIX)
    assert len(raw) > 40
    assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {stored.token_hash, stored.name}
    assert stored.name == "laptop"
    assert stored.revoked_at is None and stored.last_used_at is None


def test_two_tokens_differ():
    user = UserFactory()

    assert ApiToken.issue(user=user)[1] != ApiToken.issue(user=user)[1]


def test_authenticate_returns_the_owner_and_records_the_use():
    token = ApiTokenFactory()

    assert ApiToken.authenticate(token.raw_token) == token.user

    token.refresh_from_db()
    assert token.last_used_at is not None


def test_authenticate_records_the_use_at_most_once_a_minute():
    token = ApiTokenFactory()
    recent = timezone.now() - timedelta(seconds=10)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=recent)

    ApiToken.authenticate(token.raw_token)

    token.refresh_from_db()
    assert token.last_used_at == recent


@pytest.mark.parametrize(
    "raw",
    ["", "not-a-token", ApiToken.PREFIX + "unknown", ApiToken.PREFIX + "x" * 300],
    ids=["empty", "no-prefix", "unknown", "too-long"],
)
def test_authenticate_refuses_unknown_tokens(raw):
    ApiTokenFactory()

    assert ApiToken.authenticate(raw) is None


def test_revoked_token_authenticates_nobody():
    token = ApiTokenFactory()

    token.revoke()

    assert ApiToken.authenticate(token.raw_token) is None
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert not ApiToken.objects.active().filter(pk=token.pk).exists()


def test_revoke_twice_keeps_the_first_time():
    token = ApiTokenFactory()
    token.revoke()
    first = ApiToken.objects.get(pk=token.pk).revoked_at

    token.revoke()

    assert ApiToken.objects.get(pk=token.pk).revoked_at == first


def test_token_of_an_inactive_user_authenticates_nobody():
    token = ApiTokenFactory()
    token.user.is_active = False
    token.user.save()

    assert ApiToken.authenticate(token.raw_token) is None


def test_token_str_says_whose_and_whether_revoked():
    token = ApiTokenFactory(name="ci")
    assert str(token) == f"ci ({token.user}, active)"
    token.revoke()
    assert str(token) == f"ci ({token.user}, revoked)"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Token abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_header_parsing(header, expected):
    assert bearer_token(header) == expected


# --- create_token / create_organization / create_user commands ---------------------------------


def test_create_token_command_prints_a_token_that_authenticates(capsys):
    user = UserFactory(username="alice")

    call_command("create_token", "alice", "--name", "deploy")

    raw = capsys.readouterr().out.strip()
    assert ApiToken.authenticate(raw) == user
    assert ApiToken.objects.get(user=user).name == "deploy"


def test_create_token_command_refuses_an_unknown_user():
    with pytest.raises(CommandError, match='No user "ghost"'):
        call_command("create_token", "ghost")


def test_create_organization_command_makes_the_user_admin(capsys):
    user = UserFactory(username="bob")

    call_command("create_organization", "acme", "Acme Inc.", "--admin", "bob")

    organization = Organization.objects.get(slug="acme")
    assert organization.name == "Acme Inc."
    assert Membership.objects.get(user=user, organization=organization).role == Role.ADMIN
    assert "Acme Inc." in capsys.readouterr().out


def test_create_organization_command_refuses_a_taken_or_bad_slug():
    UserFactory(username="bob")
    OrganizationFactory(slug="acme")

    with pytest.raises(CommandError, match="already exists"):
        call_command("create_organization", "acme", "Other", "--admin", "bob")
    with pytest.raises(CommandError, match="slug"):
        call_command("create_organization", "not a slug!", "Other", "--admin", "bob")
    assert Organization.objects.filter(name="Other").count() == 0


class Terminal(io.StringIO):
    """Standard input that says it is a terminal (getpass itself is patched)."""

    def isatty(self):
        return True


def test_create_user_command_reads_the_password_from_stdin_and_makes_no_staff(capsys):
    call_command(
        "create_user",
        "bob",
        "--email",
        "bob@example.com",
        "--password-stdin",
        stdin=io.StringIO("bob-pass-w0rd-long\n"),
    )

    user = get_user_model().objects.get(username="bob")
    assert user.check_password("bob-pass-w0rd-long")
    assert user.email == "bob@example.com"
    assert user.is_active and not user.is_staff and not user.is_superuser
    assert not Membership.objects.filter(user=user).exists()
    assert 'Created user "bob"' in capsys.readouterr().out


def test_create_user_command_asks_the_password_twice_at_a_terminal(monkeypatch):
    answers = iter(["carol-pass-w0rd-long", "carol-pass-w0rd-long"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))

    call_command("create_user", "carol", stdin=Terminal())

    assert get_user_model().objects.get(username="carol").check_password("carol-pass-w0rd-long")


@pytest.mark.parametrize(
    ("arguments", "stdin", "typed", "message"),
    [
        (["--password-stdin"], io.StringIO("short\n"), [], "too short"),
        (["--password-stdin"], io.StringIO(""), [], "holds no password"),
        ([], io.StringIO("ignored\n"), [], "use --password-stdin"),
        ([], Terminal(), ["dave-pass-w0rd-1", "dave-pass-w0rd-2"], "differ"),
    ],
    ids=["weak", "empty-stdin", "no-terminal", "mismatch"],
)
def test_create_user_command_refuses_bad_passwords_and_creates_nobody(
    monkeypatch, arguments, stdin, typed, message
):
    answers = iter(typed)
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))

    with pytest.raises(CommandError, match=message):
        call_command("create_user", "dave", *arguments, stdin=stdin)
    assert not get_user_model().objects.filter(username="dave").exists()


def test_create_user_command_refuses_a_taken_or_bad_username():
    UserFactory(username="erin")

    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "erin", "--password-stdin", stdin=io.StringIO("x" * 12))
    with pytest.raises(CommandError, match="username"):
        call_command("create_user", "not ok!", "--password-stdin", stdin=io.StringIO("x" * 12))
    assert get_user_model().objects.count() == 1


# --- Organizations and memberships --------------------------------------------------------------


def test_organization_slug_is_unique():
    OrganizationFactory(slug="acme")

    with pytest.raises(ValidationError) as excinfo:
        Organization(slug="acme", name="Again").full_clean()
    assert "slug" in excinfo.value.message_dict


def test_membership_defaults_to_viewer_and_is_unique_per_user_and_org():
    membership = Membership.objects.create(user=UserFactory(), organization=OrganizationFactory())
    assert membership.role == Role.VIEWER
    assert str(membership) == f"{membership.user} in {membership.organization} (VIEWER)"

    duplicate = Membership(user=membership.user, organization=membership.organization)
    with pytest.raises(ValidationError, match="already a member of the organization"):
        duplicate.full_clean()
    with pytest.raises(IntegrityError):
        duplicate.save()


def test_same_user_may_belong_to_two_organizations():
    user = UserFactory()
    MembershipFactory(user=user)
    MembershipFactory(user=user, role=Role.ADMIN)

    assert user.memberships.count() == 2


# --- Invitations ---------------------------------------------------------------------------------


def test_invite_stores_the_username_as_typed_and_adds_nobody(settings):
    settings.ACCOUNTS_INVITATION_DAYS = 3
    organization, admin = OrganizationFactory(), UserFactory()
    UserFactory(username="bob")

    with time_machine.travel("2026-03-01 12:00:00", tick=False):
        known = invitations.invite(organization, "Bob", Role.EDITOR, invited_by=admin)
        unknown = invitations.invite(organization, "ghost", Role.EDITOR, invited_by=admin)

    for invitation, username in ((known, "Bob"), (unknown, "ghost")):
        invitation.refresh_from_db()
        assert invitation.username == username
        assert (invitation.role, invitation.invited_by) == (Role.EDITOR, admin)
        assert invitation.expires_at - invitation.created_at == timedelta(days=3)
    assert not Membership.objects.exists()


def test_reinviting_renews_the_pending_invitation_whatever_the_case():
    organization, first_admin, second_admin = OrganizationFactory(), UserFactory(), UserFactory()
    first = invitations.invite(organization, "bob", Role.VIEWER, invited_by=first_admin)
    with time_machine.travel(first.expires_at + timedelta(days=1)):  # expired, still pending
        again = invitations.invite(organization, "BOB", Role.ADMIN, invited_by=second_admin)

    again.refresh_from_db()
    assert again.pk == first.pk and again.username == "bob"
    assert (again.role, again.invited_by) == (Role.ADMIN, second_admin)
    assert again.expires_at > first.expires_at
    assert Invitation.objects.count() == 1
    # Another organization's invitation of the same name is a separate one.
    invitations.invite(OrganizationFactory(), "bob", Role.VIEWER, invited_by=first_admin)
    assert Invitation.objects.count() == 2


def test_an_invite_racing_another_for_the_same_username_still_succeeds(monkeypatch):
    """Two first invitations at once: both read "none pending", one insert hits the unique
    constraint. That request tries again and renews the row instead of failing."""
    organization = OrganizationFactory()
    read = InvitationQuerySet.select_for_update
    raced = []

    def read_before_the_other_insert(queryset, *args, **kwargs):
        if not raced:
            raced.append(True)
            InvitationFactory(organization=organization, username="kim")  # the other request
            return queryset.none()
        return read(queryset, *args, **kwargs)

    monkeypatch.setattr(InvitationQuerySet, "select_for_update", read_before_the_other_insert)

    invitation = invitations.invite(organization, "KIM", Role.EDITOR, invited_by=None)

    assert raced and list(Invitation.objects.pending()) == [invitation]
    assert invitation.role == Role.EDITOR


def test_the_database_keeps_one_pending_invitation_per_username_and_organization():
    invitation = InvitationFactory(username="bob")

    with pytest.raises(IntegrityError), transaction.atomic():
        InvitationFactory(organization=invitation.organization, username="BOB")
    Invitation.objects.filter(pk=invitation.pk).update(declined_at=timezone.now())
    InvitationFactory(organization=invitation.organization, username="BOB")

    assert Invitation.objects.pending().count() == 1


@pytest.mark.parametrize(
    "username", ["", "two words", "x" * 151, "nul\x00byte", "new\nline"], ids=repr
)
def test_malformed_usernames_are_refused_without_looking_anybody_up(
    username, django_assert_num_queries
):
    organization, admin = OrganizationFactory(), UserFactory()

    with django_assert_num_queries(0), pytest.raises(ValidationError) as excinfo:
        invitations.invite(organization, username, Role.VIEWER, invited_by=admin)

    assert list(excinfo.value.message_dict) == ["username"]
    assert not Invitation.objects.exists()


def test_inviting_a_member_raises_already_member_ignoring_case():
    membership = MembershipFactory(user=UserFactory(username="Carol"))

    with pytest.raises(invitations.AlreadyMember):
        invitations.invite(membership.organization, "cAROL", Role.ADMIN, invited_by=None)
    assert not Invitation.objects.exists()


def test_an_invitation_reaches_its_username_ignoring_case():
    dave, other = UserFactory(username="Dave"), UserFactory(username="eve")
    invitation = InvitationFactory(username="dave")

    assert list(invitations.invitations_for(dave)) == [invitation]
    assert list(invitations.invitations_for(other)) == []


def test_a_username_two_users_share_ignoring_case_goes_to_the_exact_one_or_nobody():
    """Django's user form refuses such pairs, but createsuperuser or code can make them: an
    invitation must not reach a namesake it was not meant for."""
    lower, upper = UserFactory(username="frank"), UserFactory(username="Frank")
    exact = InvitationFactory(username="Frank")
    ambiguous = InvitationFactory(username="FRANK")

    assert list(invitations.invitations_for(upper)) == [exact]
    assert list(invitations.invitations_for(lower)) == []
    assert ambiguous not in invitations.invitations_for(upper)


def test_accept_makes_a_member_with_the_role_and_closes_the_invitation():
    grace = UserFactory(username="grace")
    invitation = InvitationFactory(username="grace", role=Role.EDITOR)

    membership = invitations.accept(grace, invitation.pk)

    assert (membership.user, membership.organization_id, membership.role) == (
        grace,
        invitation.organization_id,
        Role.EDITOR,
    )
    invitation.refresh_from_db()
    assert invitation.accepted_by == grace and invitation.accepted_at is not None
    with pytest.raises(Invitation.DoesNotExist):
        invitations.accept(grace, invitation.pk)


def test_closed_expired_or_someone_elses_invitations_cannot_be_accepted_or_declined():
    heidi = UserFactory(username="heidi")
    now = timezone.now()
    refused = [
        InvitationFactory(username="somebody-else"),
        InvitationFactory(username="heidi", revoked_at=now),
        InvitationFactory(username="heidi", declined_at=now),
        InvitationFactory(username="heidi", accepted_at=now),
        InvitationFactory(username="heidi", expires_at=now - timedelta(seconds=1)),
    ]
    for invitation in refused:
        with pytest.raises(Invitation.DoesNotExist):
            invitations.accept(heidi, invitation.pk)
        with pytest.raises(Invitation.DoesNotExist):
            invitations.decline(heidi, invitation.pk)
    assert not heidi.memberships.exists()


def test_an_invitation_closed_meanwhile_is_not_accepted(monkeypatch):
    """A revoke that commits between accept's read and its write wins: no membership."""
    ivan = UserFactory(username="ivan")
    invitation = InvitationFactory(username="ivan")
    read = invitations.invitations_for

    def read_then_revoke(user):
        found = list(read(user))
        Invitation.objects.filter(pk=invitation.pk).update(revoked_at=timezone.now())
        return Invitation.objects.filter(pk__in=[row.pk for row in found])

    monkeypatch.setattr(invitations, "invitations_for", read_then_revoke)

    with pytest.raises(Invitation.DoesNotExist):
        invitations.accept(ivan, invitation.pk)
    assert not ivan.memberships.exists()


def test_invitation_str_names_whom_where_and_the_role():
    invitation = InvitationFactory(username="judy", role=Role.ADMIN)

    assert str(invitation) == f"judy to {invitation.organization} (ADMIN)"


# --- The acting user and Auditable ---------------------------------------------------------------


def test_auditable_records_who_created_and_who_updated():
    creator, editor = UserFactory(), UserFactory()
    organization = OrganizationFactory()

    with acting_as(creator):
        category = Category.objects.create(organization=organization, name="Tools")
    with acting_as(editor):
        category.name = "Hand tools"
        category.save(update_fields=["name"])

    category.refresh_from_db()
    assert category.created_by == creator
    assert category.updated_by == editor


def test_nobody_acting_leaves_audit_fields_empty():
    with acting_as(AnonymousUser()):
        category = Category.objects.create(organization=OrganizationFactory(), name="Tools")

    assert category.created_by is None and category.updated_by is None
    assert get_current_user() is None


def test_acting_as_a_lazy_user_does_not_load_it_on_sync_async_hops():
    """request.user is lazy; asgiref inspects context variables on every sync/async hop.

    Loading the user there happens inside the event loop and fails under ASGI, so the acting
    user must stay unloaded until somebody asks for it.
    """
    user = UserFactory()
    loads = []

    def load():
        loads.append(1)
        return user

    async def hop():
        return await sync_to_async(lambda: "back in sync code")()

    with acting_as(SimpleLazyObject(load)):
        assert async_to_sync(hop)() == "back in sync code"
        assert loads == []
        assert get_current_user() == user


def test_notification_defaults_and_str():
    notification = NotificationFactory(title="Stock low")

    assert notification.read_at is None
    assert notification.log is None
    assert str(notification) == f"Stock low -> {notification.recipient}"
