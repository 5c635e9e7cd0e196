"""Organizations and members: createOrganization, invitations (addMember, invitations,
acceptInvitation, declineInvitation, organizationInvitations, revokeInvitation), setMemberRole,
removeMember, members."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.choices import Role
from accounts.models import Invitation, Membership, Organization
from tests.factories import ApiTokenFactory, InvitationFactory, UserFactory

pytestmark = pytest.mark.django_db

MEMBERS = "query($org: ID!) { members(organization: $org) { user { username } role } }"
ADD = "mutation($org: ID!, $u: String!, $r: Role!) { addMember(organization: $org, username: $u, role: $r) { id } }"
SET = "mutation($org: ID!, $u: String!, $r: Role!) { setMemberRole(organization: $org, username: $u, role: $r) { user { username } role } }"
REMOVE = "mutation($org: ID!, $u: String!) { removeMember(organization: $org, username: $u) }"
INVITATIONS = """{ invitations {
  id organization { id name slug viewerRole } role invitedBy { username } createdAt expiresAt
} }"""
ORG_INVITATIONS = (
    "query($org: ID!) { organizationInvitations(organization: $org) { id username role } }"
)
ACCEPT = "mutation($id: ID!) { acceptInvitation(id: $id) { id slug viewerRole } }"
DECLINE = "mutation($id: ID!) { declineInvitation(id: $id) }"
REVOKE = "mutation($id: ID!) { revokeInvitation(id: $id) }"
MISSING = "987654321"


def member_token(user) -> str:
    """An API token of `user` (who need not be a member of anything)."""
    return ApiTokenFactory(user=user).raw_token


def accept(gql, token) -> dict:
    """Accept the caller's only open invitation; the organization as acceptInvitation returns it."""
    (invitation,) = gql(INVITATIONS, token=token).ok()["invitations"]
    return gql(ACCEPT, {"id": invitation["id"]}, token=token).ok()["acceptInvitation"]


def test_create_organization_makes_the_caller_its_admin(gql, editor):
    org = gql(
        'mutation { createOrganization(name: "Acme", slug: "acme") { id name slug viewerRole } }',
        token=editor,
    ).ok()["createOrganization"]
    assert org["viewerRole"] == "ADMIN"
    assert Membership.objects.get(organization_id=org["id"], user=editor).role == Role.ADMIN
    duplicate = gql(
        'mutation { createOrganization(name: "Other", slug: "acme") { id } }', token=editor
    ).error()
    assert duplicate["extensions"]["code"] == "VALIDATION_ERROR"
    assert "slug" in duplicate["extensions"]["fields"]
    assert Organization.objects.filter(slug="acme").count() == 1


def test_admin_manages_members(gql, admin, organization):
    org = str(organization.pk)
    newbie = member_token(UserFactory(username="newbie"))
    gql(ADD, {"org": org, "u": "newbie", "r": "VIEWER"}, token=admin).ok()
    accept(gql, newbie)
    assert {"user": {"username": "newbie"}, "role": "VIEWER"} in gql(
        MEMBERS, {"org": org}, token=admin
    ).ok()["members"]

    assert gql(SET, {"org": org, "u": "newbie", "r": "EDITOR"}, token=admin).ok()[
        "setMemberRole"
    ] == {
        "user": {"username": "newbie"},
        "role": "EDITOR",
    }
    removed = gql(REMOVE, {"org": org, "u": "newbie"}, token=admin).ok()["removeMember"]
    assert removed == str(UserFactory(username="newbie").pk)
    assert not Membership.objects.filter(
        organization=organization, user__username="newbie"
    ).exists()
    unknown = gql(SET, {"org": org, "u": "ghost", "r": "EDITOR"}, token=admin).error()
    assert unknown["extensions"]["fields"] == {
        "username": ["This user is not a member of the organization."]
    }


def test_the_last_admin_cannot_be_demoted_or_removed(gql, admin, organization):
    org = str(organization.pk)
    demote = gql(SET, {"org": org, "u": admin.username, "r": "EDITOR"}, token=admin).error()
    assert demote["extensions"]["code"] == "CONFLICT"
    remove = gql(REMOVE, {"org": org, "u": admin.username}, token=admin).error()
    assert remove["extensions"]["code"] == "CONFLICT"
    assert Membership.objects.get(organization=organization, user=admin).role == Role.ADMIN

    # With a second admin, stepping down is fine.
    second = member_token(UserFactory(username="second"))
    gql(ADD, {"org": org, "u": "second", "r": "ADMIN"}, token=admin).ok()
    accept(gql, second)
    gql(SET, {"org": org, "u": admin.username, "r": "VIEWER"}, token=admin).ok()
    assert Membership.objects.get(organization=organization, user=admin).role == Role.VIEWER


def test_members_are_readable_by_viewers_but_managed_by_admins_only(
    gql, viewer, editor, organization
):
    org = str(organization.pk)
    usernames = {
        m["user"]["username"] for m in gql(MEMBERS, {"org": org}, token=viewer).ok()["members"]
    }
    assert usernames == {viewer.username, editor.username}
    for token in (viewer, editor):
        assert gql(SET, {"org": org, "u": viewer.username, "r": "ADMIN"}, token=token).codes == [
            "PERMISSION_DENIED"
        ]
        assert gql(REMOVE, {"org": org, "u": viewer.username}, token=token).codes == [
            "PERMISSION_DENIED"
        ]
    assert Membership.objects.get(organization=organization, user=viewer).role == Role.VIEWER


# --- Invitations ---------------------------------------------------------------------------------


def test_add_member_answers_the_same_whether_or_not_the_username_exists(gql, admin, organization):
    UserFactory(username="known")
    UserFactory(username="root", is_superuser=True, is_staff=True)
    answers = [
        gql(ADD, {"org": str(organization.pk), "u": username, "r": "EDITOR"}, token=admin)
        for username in ("known", "nobody-by-this-name", "root")
    ]

    assert answers[0].data == {"addMember": {"id": str(organization.pk)}}
    assert answers[0].http.content == answers[1].http.content == answers[2].http.content
    assert Membership.objects.filter(organization=organization).count() == 1  # the admin
    assert set(Invitation.objects.values_list("username", flat=True)) == {
        "known",
        "nobody-by-this-name",
        "root",
    }


def test_malformed_usernames_are_refused_before_any_lookup(gql, admin, organization):
    for username in ("", "two words", "x" * 151):
        error = gql(
            ADD, {"org": str(organization.pk), "u": username, "r": "EDITOR"}, token=admin
        ).error()
        assert error["extensions"]["code"] == "VALIDATION_ERROR"
        assert list(error["extensions"]["fields"]) == ["username"]
    assert not Invitation.objects.exists()


def test_the_invited_user_sees_the_invitation_and_joins_by_accepting(gql, admin, organization):
    bob = member_token(UserFactory(username="Bob"))
    gql(ADD, {"org": str(organization.pk), "u": "bob", "r": "EDITOR"}, token=admin).ok()

    (invitation,) = gql(INVITATIONS, token=bob).ok()["invitations"]
    assert invitation["organization"] == {
        "id": str(organization.pk),
        "name": organization.name,
        "slug": organization.slug,
        "viewerRole": None,
    }
    assert invitation["role"] == "EDITOR"
    assert invitation["invitedBy"] == {"username": admin.username}
    assert not Membership.objects.filter(user__username="Bob").exists()

    joined = gql(ACCEPT, {"id": invitation["id"]}, token=bob).ok()["acceptInvitation"]
    assert joined == {"id": str(organization.pk), "slug": organization.slug, "viewerRole": "EDITOR"}
    assert Membership.objects.get(user__username="Bob", organization=organization).role == "EDITOR"
    assert gql(INVITATIONS, token=bob).ok()["invitations"] == []
    assert gql(ACCEPT, {"id": invitation["id"]}, token=bob).codes == ["NOT_FOUND"]


def test_reinviting_renews_the_open_invitation(gql, admin, organization):
    bob = member_token(UserFactory(username="bob"))
    org = str(organization.pk)
    gql(ADD, {"org": org, "u": "bob", "r": "VIEWER"}, token=admin).ok()
    with time_machine.travel(timezone.now() + timedelta(days=20)):
        gql(ADD, {"org": org, "u": "BOB", "r": "ADMIN"}, token=admin).ok()
        (invitation,) = gql(INVITATIONS, token=bob).ok()["invitations"]
        assert invitation["role"] == "ADMIN"
        assert accept(gql, bob)["viewerRole"] == "ADMIN"
    assert Invitation.objects.count() == 1


def test_nobody_else_can_accept_or_decline_an_invitation(
    gql, admin, editor, organization, outsider
):
    gql(ADD, {"org": str(organization.pk), "u": "carol", "r": "ADMIN"}, token=admin).ok()
    invitation = str(Invitation.objects.get(username="carol").pk)
    intruder = member_token(UserFactory(username="mallory"))

    for token in (intruder, outsider, editor, admin):
        for operation in (ACCEPT, DECLINE):
            guessed = gql(operation, {"id": invitation}, token=token)
            missing = gql(operation, {"id": MISSING}, token=token)
            assert guessed.codes == ["NOT_FOUND"], guessed.body
            assert guessed.http.content == missing.http.content
        assert gql(INVITATIONS, token=token).ok()["invitations"] == []
    assert Invitation.objects.open().filter(pk=invitation).exists()
    assert not Membership.objects.filter(user__username="mallory").exists()


def test_expired_revoked_declined_or_used_invitations_cannot_be_accepted(gql, organization):
    dave = UserFactory(username="dave")
    token = member_token(dave)
    expired = InvitationFactory(organization=organization, username="dave")
    with time_machine.travel(expired.expires_at + timedelta(seconds=1)):
        assert gql(INVITATIONS, token=token).ok()["invitations"] == []
        assert gql(ACCEPT, {"id": str(expired.pk)}, token=token).codes == ["NOT_FOUND"]
    closed = [
        InvitationFactory(username="dave", revoked_at=timezone.now()),
        InvitationFactory(username="dave", declined_at=timezone.now()),
        InvitationFactory(username="dave", accepted_at=timezone.now()),
    ]
    for invitation in closed:
        assert gql(ACCEPT, {"id": str(invitation.pk)}, token=token).codes == ["NOT_FOUND"]
    assert not dave.memberships.exists()


def test_a_declined_invitation_is_closed(gql, organization):
    token = member_token(UserFactory(username="erin"))
    invitation = InvitationFactory(organization=organization, username="erin")

    declined = gql(DECLINE, {"id": str(invitation.pk)}, token=token).ok()["declineInvitation"]

    assert declined == str(invitation.pk)
    assert gql(INVITATIONS, token=token).ok()["invitations"] == []
    assert gql(ACCEPT, {"id": str(invitation.pk)}, token=token).codes == ["NOT_FOUND"]
    assert Invitation.objects.get(pk=invitation.pk).declined_at is not None


def test_a_superuser_joins_only_by_accepting(gql, admin, organization):
    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    token = member_token(root)
    gql(ADD, {"org": str(organization.pk), "u": "root", "r": "VIEWER"}, token=admin).ok()

    assert gql(MEMBERS, {"org": str(organization.pk)}, token=token).codes == ["NOT_FOUND"]
    assert not root.memberships.exists()
    assert accept(gql, token)["viewerRole"] == "VIEWER"


def test_inviting_a_member_is_a_conflict(gql, admin, editor, organization):
    error = gql(
        ADD,
        {"org": str(organization.pk), "u": editor.username.upper(), "r": "ADMIN"},
        token=admin,
    ).error()

    assert error["extensions"]["code"] == "CONFLICT"
    assert not Invitation.objects.exists()
    assert Membership.objects.get(user=editor).role == Role.EDITOR


def test_admins_list_and_revoke_open_invitations(gql, admin, organization):
    org = str(organization.pk)
    frank = member_token(UserFactory(username="frank"))
    for username in ("frank", "grace"):
        gql(ADD, {"org": org, "u": username, "r": "VIEWER"}, token=admin).ok()
    InvitationFactory(username="elsewhere")  # another organization's

    listed = gql(ORG_INVITATIONS, {"org": org}, token=admin).ok()["organizationInvitations"]
    assert sorted(item["username"] for item in listed) == ["frank", "grace"]
    franks = next(item["id"] for item in listed if item["username"] == "frank")

    assert gql(REVOKE, {"id": franks}, token=admin).ok()["revokeInvitation"] == franks
    assert gql(INVITATIONS, token=frank).ok()["invitations"] == []
    assert gql(ACCEPT, {"id": franks}, token=frank).codes == ["NOT_FOUND"]
    assert gql(REVOKE, {"id": franks}, token=admin).codes == ["NOT_FOUND"]
    assert [
        item["username"]
        for item in gql(ORG_INVITATIONS, {"org": org}, token=admin).ok()["organizationInvitations"]
    ] == ["grace"]


def test_editors_and_viewers_cannot_invite_list_or_revoke(gql, editor, viewer, organization):
    org = str(organization.pk)
    invitation = str(InvitationFactory(organization=organization, username="heidi").pk)
    for token in (editor, viewer):
        attempts = [
            gql(ADD, {"org": org, "u": "ivan", "r": "ADMIN"}, token=token),
            gql(ORG_INVITATIONS, {"org": org}, token=token),
            gql(REVOKE, {"id": invitation}, token=token),
        ]
        assert [answer.codes for answer in attempts] == [["PERMISSION_DENIED"]] * 3
    assert list(Invitation.objects.open().values_list("username", flat=True)) == ["heidi"]


def test_accepting_after_joining_another_way_is_a_conflict(gql, admin, organization):
    judy = UserFactory(username="judy")
    token = member_token(judy)
    invitation = InvitationFactory(organization=organization, username="judy", role=Role.ADMIN)
    Membership.objects.create(user=judy, organization=organization, role=Role.VIEWER)

    assert gql(ACCEPT, {"id": str(invitation.pk)}, token=token).codes == ["CONFLICT"]
    assert Membership.objects.get(user=judy, organization=organization).role == Role.VIEWER
    assert Invitation.objects.open().filter(pk=invitation.pk).exists()
