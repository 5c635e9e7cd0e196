"""Listing rules (or invitations) costs the same number of SQL queries for 1 as for 50 (no N+1)."""

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from automation.core.choices import ActionType, ConditionLogic, Operator
from automation.core.models import ConditionGroup, RuleCondition
from tests.factories import AutomationRuleFactory, InvitationFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    """A token's last use is recorded at most once a minute (one more query): the warm-up request
    records it, and with the clock running a slow machine could be a minute further on by the
    counted request. The clock stands still, so both counts see the same recorded use."""
    with time_machine.travel(timezone.now(), tick=False) as clock:
        yield clock


LIST_EVERYTHING = """{
  rules(limit: 200) {
    id name model schedule conditionLogic createdBy { username } updatedBy { username }
    organization { id name viewerRole }
    conditions {
      logic negate conditions { field operator value }
      groups { logic conditions { field value } groups { logic conditions { field value } } }
    }
    actions { actionType parameters order continueOnFailure }
  }
}"""


def make_rules(organization, user, count, start=0):
    for index in range(start, start + count):
        rule = AutomationRuleFactory(
            organization=organization,
            name=f"Rule {index:03}",
            created_by=user,
            conditions=[{"field_name": "status", "operator": Operator.EQUALS, "value": "ACTIVE"}],
            actions=[
                {
                    "action_type": ActionType.UPDATE_RECORD,
                    "parameters": {"fields": {"description": "x"}},
                },
                {
                    "action_type": ActionType.CALL_WEBHOOK,
                    "parameters": {"url": "https://example.com/h", "secret": "s"},
                },
            ],
        )
        inner = ConditionGroup.objects.create(
            rule=rule, parent=rule.root_group, logic=ConditionLogic.OR
        )
        innermost = ConditionGroup.objects.create(rule=rule, parent=inner, negate=True)
        RuleCondition.objects.create(
            rule=rule, group=inner, field_name="stock", operator=Operator.LESS_THAN, value=5
        )
        RuleCondition.objects.create(
            rule=rule,
            group=innermost,
            field_name="category__name",
            operator=Operator.EQUALS,
            value="x",
        )


def count_queries(gql, token):
    with CaptureQueriesContext(connection) as captured:
        data = gql(LIST_EVERYTHING, token=token).ok()
    return len(captured.captured_queries), data["rules"]


def test_listing_1_or_50_rules_with_their_tree_costs_the_same_queries(
    gql, editor, organization, other_organization
):
    make_rules(organization, editor, 1)
    gql("{ me { id } }", token=editor).ok()  # the token's last use is recorded once a minute
    one_count, one = count_queries(gql, editor)
    assert len(one) == 1
    assert (
        one[0]["conditions"]["groups"][0]["groups"][0]["conditions"][0]["field"] == "category__name"
    )

    make_rules(organization, editor, 49, start=1)
    fifty_count, fifty = count_queries(gql, editor)
    assert len(fifty) == 50
    assert all(len(rule["actions"]) == 2 for rule in fifty)
    assert all(rule["actions"][1]["parameters"]["secret"] == "********" for rule in fifty)
    assert all(rule["createdBy"] == {"username": editor.username} for rule in fifty)
    assert fifty_count == one_count, f"1 rule: {one_count} queries, 50 rules: {fifty_count}"
    # Bounded, not only constant: token, memberships, rules (users and organization joined), then
    # one prefetch each for groups, conditions and actions.
    assert one_count <= 6


LIST_INVITATIONS = """{ invitations {
  id role createdAt expiresAt organization { id name slug viewerRole } invitedBy { username }
} }"""


def test_listing_1_or_50_invitations_costs_the_same_queries(gql, editor):
    def count():
        with CaptureQueriesContext(connection) as captured:
            invitations = gql(LIST_INVITATIONS, token=editor).ok()["invitations"]
        return len(captured.captured_queries), invitations

    InvitationFactory(username=editor.username, invited_by=UserFactory())
    gql("{ me { id } }", token=editor).ok()  # the token's last use is recorded once a minute
    one_count, one = count()
    for _ in range(49):
        InvitationFactory(username=editor.username, invited_by=UserFactory())
    fifty_count, fifty = count()

    assert (len(one), len(fifty)) == (1, 50)
    assert all(item["organization"]["viewerRole"] is None for item in fifty)
    assert fifty_count == one_count <= 3, (one_count, fifty_count)
