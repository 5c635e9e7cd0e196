"""Organizations and members: createOrganization, addMember, setMemberRole, removeMember, members."""

import pytest

from accounts.choices import Role
from accounts.models import Membership, Organization
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

MEMBERS = "query($org: ID!) { members(organization: $org) { user { username } role } }"
ADD = "mutation($org: ID!, $u: String!, $r: Role!) { addMember(organization: $org, username: $u, role: $r) { id } }"
SET = "mutation($org: ID!, $u: String!, $r: Role!) { setMemberRole(organization: $org, username: $u, role: $r) { user { username } role } }"
REMOVE = "mutation($org: ID!, $u: String!) { removeMember(organization: $org, username: $u) }"


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
    UserFactory(username="newbie")
    gql(ADD, {"org": org, "u": "newbie", "r": "VIEWER"}, token=admin).ok()
    assert {"user": {"username": "newbie"}, "role": "VIEWER"} in gql(
        MEMBERS, {"org": org}, token=admin
    ).ok()["members"]

    again = gql(ADD, {"org": org, "u": "newbie", "r": "EDITOR"}, token=admin).error()
    assert again["extensions"] == {
        "code": "VALIDATION_ERROR",
        "fields": {"username": ["This user is already a member."]},
    }
    unknown = gql(ADD, {"org": org, "u": "ghost", "r": "EDITOR"}, token=admin).error()
    assert unknown["extensions"]["fields"] == {"username": ["No such user."]}

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


def test_the_last_admin_cannot_be_demoted_or_removed(gql, admin, organization):
    org = str(organization.pk)
    demote = gql(SET, {"org": org, "u": admin.username, "r": "EDITOR"}, token=admin).error()
    assert demote["extensions"]["code"] == "CONFLICT"
    remove = gql(REMOVE, {"org": org, "u": admin.username}, token=admin).error()
    assert remove["extensions"]["code"] == "CONFLICT"
    assert Membership.objects.get(organization=organization, user=admin).role == Role.ADMIN

    # With a second admin, stepping down is fine.
    UserFactory(username="second")
    gql(ADD, {"org": org, "u": "second", "r": "ADMIN"}, token=admin).ok()
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
