"""Roles and organization isolation, over HTTP.

An id of another organization must answer NOT_FOUND exactly like an id that does not exist, for
every query and mutation that takes one; a member whose role is too low gets PERMISSION_DENIED.
"""

import pytest

from accounts.choices import Role
from accounts.models import Invitation, Membership
from automation.core.models import AutomationRule
from catalog.models import Product
from tests.factories import (
    AutomationLogFactory,
    AutomationRuleFactory,
    CategoryFactory,
    InvitationFactory,
    NotificationFactory,
    ProductFactory,
)

pytestmark = pytest.mark.django_db

MISSING = "987654321"


@pytest.fixture
def theirs(other_organization, outsider):
    """Records of another organization (and a notification of its admin)."""
    rule = AutomationRuleFactory(organization=other_organization, name="Their rule")
    return {
        "org": str(other_organization.pk),
        "rule": str(rule.pk),
        "log": str(AutomationLogFactory(rule=rule).pk),
        "product": str(ProductFactory(organization=other_organization).pk),
        "category": str(CategoryFactory(organization=other_organization).pk),
        "notification": str(
            NotificationFactory(organization=other_organization, recipient=outsider).pk
        ),
        "username": outsider.username,
        "invitation": str(
            InvitationFactory(organization=other_organization, username="their-invitee").pk
        ),
    }


# (operation, variables builder from an id) for every operation taking an id or organization.
BY_ID = [
    ("query($id: ID!) { rule(id: $id) { id } }", lambda t, i: {"id": i("rule")}),
    ("query($id: ID!) { log(id: $id) { id } }", lambda t, i: {"id": i("log")}),
    ("query($id: ID!) { product(id: $id) { id } }", lambda t, i: {"id": i("product")}),
    ("query($id: ID!) { members(organization: $id) { role } }", lambda t, i: {"id": i("org")}),
    ("query($id: ID!) { products(organization: $id) { id } }", lambda t, i: {"id": i("org")}),
    ("query($id: ID!) { categories(organization: $id) { id } }", lambda t, i: {"id": i("org")}),
    ("query($id: ID!) { rules(organization: $id) { id } }", lambda t, i: {"id": i("org")}),
    ("query($id: ID!) { logs(organization: $id) { totalCount } }", lambda t, i: {"id": i("org")}),
    (
        "query($id: ID!) { logs(filter: {rule: $id}) { totalCount } }",
        lambda t, i: {"id": i("rule")},
    ),
    (
        'mutation($id: ID!) { updateRule(id: $id, input: {name: "mine"}) { id } }',
        lambda t, i: {"id": i("rule")},
    ),
    ("mutation($id: ID!) { deleteRule(id: $id) }", lambda t, i: {"id": i("rule")}),
    (
        'mutation($id: ID!) { runRule(id: $id, objectId: "1") { id } }',
        lambda t, i: {"id": i("rule")},
    ),
    ("mutation($id: ID!) { retryRun(logId: $id) { id } }", lambda t, i: {"id": i("log")}),
    (
        "mutation($id: ID!) { markNotificationRead(id: $id) { id } }",
        lambda t, i: {"id": i("notification")},
    ),
    (
        'mutation($id: ID!) { createRule(input: {organization: $id, name: "x", triggerType: MANUAL}) { id } }',
        lambda t, i: {"id": i("org")},
    ),
    (
        'mutation($id: ID!) { createCategory(organization: $id, name: "x") { id } }',
        lambda t, i: {"id": i("org")},
    ),
    (
        'mutation($id: ID!) { createProduct(input: {organization: $id, name: "x"}) { id } }',
        lambda t, i: {"id": i("org")},
    ),
    (
        'mutation($id: ID!) { updateProduct(id: $id, input: {name: "x"}) { id } }',
        lambda t, i: {"id": i("product")},
    ),
    ("mutation($id: ID!) { deleteProduct(id: $id) }", lambda t, i: {"id": i("product")}),
    (
        'mutation($id: ID!) { addMember(organization: $id, username: "x", role: VIEWER) { id } }',
        lambda t, i: {"id": i("org")},
    ),
    (
        "query($id: ID!) { organizationInvitations(organization: $id) { id } }",
        lambda t, i: {"id": i("org")},
    ),
    ("mutation($id: ID!) { revokeInvitation(id: $id) }", lambda t, i: {"id": i("invitation")}),
    (
        "mutation($id: ID!) { acceptInvitation(id: $id) { id } }",
        lambda t, i: {"id": i("invitation")},
    ),
    ("mutation($id: ID!) { declineInvitation(id: $id) }", lambda t, i: {"id": i("invitation")}),
    (
        "mutation($id: ID!, $u: String!) { setMemberRole(organization: $id, username: $u, role: VIEWER) { role } }",
        lambda t, i: {"id": i("org"), "u": t["username"]},
    ),
    (
        "mutation($id: ID!, $u: String!) { removeMember(organization: $id, username: $u) }",
        lambda t, i: {"id": i("org"), "u": t["username"]},
    ),
]


@pytest.mark.parametrize(
    ("operation", "variables"),
    BY_ID,
    ids=[op.split("{")[1].split("(")[0].strip() + str(n) for n, (op, _v) in enumerate(BY_ID)],
)
def test_another_organizations_id_is_not_found_like_a_missing_one(
    gql, admin, theirs, operation, variables
):
    guessed = gql(operation, variables(theirs, lambda key: theirs[key]), token=admin)
    missing = gql(operation, variables(theirs, lambda key: MISSING), token=admin)
    assert guessed.codes == ["NOT_FOUND"], guessed.body
    assert missing.codes == ["NOT_FOUND"], missing.body
    assert guessed.errors[0]["message"] == missing.errors[0]["message"]
    assert guessed.data == missing.data


def test_other_organizations_records_never_show_in_lists(gql, admin, organization, theirs):
    mine = AutomationRuleFactory(organization=organization, name="Mine")
    AutomationLogFactory(rule=mine)
    data = gql(
        "{ organizations { id } rules { name } logs { totalCount edges { node { rule { name } } } }"
        " notifications { id } }",
        token=admin,
    ).ok()
    assert data["organizations"] == [{"id": str(organization.pk)}]
    assert data["rules"] == [{"name": "Mine"}]
    assert data["logs"]["totalCount"] == 1
    assert data["logs"]["edges"][0]["node"]["rule"]["name"] == "Mine"
    assert data["notifications"] == []
    assert AutomationRule.objects.get(pk=theirs["rule"]).name == "Their rule"


def test_nothing_of_theirs_changed(gql, admin, theirs):
    for operation, variables in BY_ID:
        gql(operation, variables(theirs, lambda key: theirs[key]), token=admin)
    rule = AutomationRule.objects.get(pk=theirs["rule"])
    assert rule.name == "Their rule" and rule.deleted_at is None
    assert Product.objects.filter(pk=theirs["product"]).exists()
    assert Membership.objects.filter(user__username=theirs["username"], role=Role.ADMIN).exists()
    assert Invitation.objects.open().filter(pk=theirs["invitation"]).exists()
    assert not Invitation.objects.exclude(pk=theirs["invitation"]).exists()


# --- Roles ----------------------------------------------------------------------------------------

CREATE_RULE = """mutation($org: ID!) {
  createRule(input: {organization: $org, name: "By role", triggerType: MANUAL}) { id }
}"""


def _operations(organization, rule, log, member, invitation):
    """name -> (operation, variables), for each kind of access."""
    return {
        "read_rules": (
            "query($id: ID!) { rule(id: $id) { id } rules { id } }",
            {"id": str(rule.pk)},
        ),
        "read_logs": (
            "query($id: ID!) { log(id: $id) { id } logs { totalCount } }",
            {"id": str(log.pk)},
        ),
        "read_members": (
            "query($org: ID!) { members(organization: $org) { role } }",
            {"org": str(organization.pk)},
        ),
        "create_rule": (CREATE_RULE, {"org": str(organization.pk)}),
        "update_rule": (
            'mutation($id: ID!) { updateRule(id: $id, input: {description: "changed"}) { revision } }',
            {"id": str(rule.pk)},
        ),
        "run_rule": (
            "mutation($id: ID!) { runRule(id: $id, dryRun: true) { id } }",
            {"id": str(rule.pk)},
        ),
        "create_category": (
            'mutation($org: ID!) { createCategory(organization: $org, name: "c") { id } }',
            {"org": str(organization.pk)},
        ),
        "add_member": (
            "mutation($org: ID!, $u: String!) { addMember(organization: $org, username: $u, role: VIEWER) { id } }",
            {"org": str(organization.pk), "u": member.username},
        ),
        "list_invitations": (
            "query($org: ID!) { organizationInvitations(organization: $org) { id } }",
            {"org": str(organization.pk)},
        ),
        "revoke_invitation": (
            "mutation($id: ID!) { revokeInvitation(id: $id) }",
            {"id": str(invitation.pk)},
        ),
    }


ALLOWED = {
    Role.VIEWER: {"read_rules", "read_logs", "read_members"},
    Role.EDITOR: {
        "read_rules",
        "read_logs",
        "read_members",
        "create_rule",
        "update_rule",
        "run_rule",
        "create_category",
    },
    Role.ADMIN: {
        "read_rules",
        "read_logs",
        "read_members",
        "create_rule",
        "update_rule",
        "run_rule",
        "create_category",
        "add_member",
        "list_invitations",
        "revoke_invitation",
    },
}


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR, Role.ADMIN])
def test_each_roles_allowed_and_refused_operations(gql, organization, make_member, role):
    user = make_member(organization, role)
    rule = AutomationRuleFactory(organization=organization, manual_rule=True, content_type=None)
    log = AutomationLogFactory(rule=rule)
    newcomer = make_member(
        organization.__class__.objects.create(name="Elsewhere", slug="elsewhere"), Role.VIEWER
    )
    invitation = InvitationFactory(organization=organization)
    operations = _operations(organization, rule, log, newcomer, invitation)
    for name, (operation, variables) in operations.items():
        answer = gql(operation, variables, token=user)
        if name in ALLOWED[role]:
            assert not answer.errors, (role, name, answer.errors)
        else:
            assert answer.codes == ["PERMISSION_DENIED"], (role, name, answer.body)
    # Refused writes wrote nothing.
    rule.refresh_from_db()
    expected_revision = 2 if "update_rule" in ALLOWED[role] else 1
    assert rule.revision == expected_revision
    # An ADMIN's addMember invites; nobody joins without accepting.
    assert not Membership.objects.filter(user=newcomer, organization=organization).exists()
    assert Invitation.objects.filter(username=newcomer.username).exists() == (role == Role.ADMIN)
    assert Invitation.objects.open().filter(pk=invitation.pk).exists() == (role != Role.ADMIN)
