"""Tenancy and accounts: tokens, memberships, the acting user, notifications."""

import hashlib
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from accounts.choices import Role
from accounts.current import acting_as, get_current_user
from accounts.middleware import bearer_token
from accounts.models import ApiToken, Membership, Organization
from catalog.models import Category
from tests.factories import (
    ApiTokenFactory,
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


# --- create_token / create_organization commands -----------------------------------------------


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
