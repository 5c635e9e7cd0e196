"""The factories build valid object graphs: everything they make passes full_clean()."""

import pytest

from automation.core.choices import ActionType, ConditionLogic, Operator, TriggerType
from tests.factories import (
    ApiTokenFactory,
    AutomationLogFactory,
    AutomationRuleFactory,
    ConditionGroupFactory,
    InvitationFactory,
    MembershipFactory,
    NotificationFactory,
    ProductFactory,
    RuleActionFactory,
    RuleConditionFactory,
)

pytestmark = pytest.mark.django_db


def assert_valid(*instances):
    for instance in instances:
        instance.full_clean()


def test_rule_factory_builds_a_rule_with_its_conditions_and_actions():
    rule = AutomationRuleFactory(
        root_logic=ConditionLogic.OR,
        conditions=[
            {"field_name": "status", "operator": Operator.CHANGED_TO, "value": "ACTIVE"},
            {"field_name": "category__name", "operator": Operator.EQUALS, "value": "Tools"},
        ],
        actions=[
            {"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": {"stock": 1}}},
            {"action_type": ActionType.SEND_NOTIFICATION, "parameters": {"title": "Hi"}},
        ],
    )

    root = rule.root_group
    assert root.logic == ConditionLogic.OR and root.parent is None
    conditions = list(rule.conditions.all())
    assert [c.field_name for c in conditions] == ["status", "category__name"]
    assert all(c.group == root for c in conditions)
    assert [a.order for a in rule.actions.all()] == [0, 1]
    assert_valid(rule, root, *conditions)


def test_rule_factory_traits_build_valid_schedule_and_manual_rules():
    schedule = AutomationRuleFactory(schedule_rule=True)
    manual = AutomationRuleFactory(manual_rule=True)

    assert schedule.trigger_type == TriggerType.SCHEDULE and schedule.schedule
    assert manual.trigger_type == TriggerType.MANUAL
    assert schedule.root_group is not None and manual.root_group is not None
    assert_valid(schedule, manual)


def test_group_condition_and_action_factories_attach_to_one_rule():
    group = ConditionGroupFactory()
    condition = RuleConditionFactory(rule=group.rule, group=group)
    action = RuleActionFactory(rule=group.rule)

    assert group.parent == group.rule.root_group
    assert condition.rule == action.rule == group.rule
    assert_valid(group, condition)


def test_product_factory_keeps_its_category_in_the_same_organization():
    product = ProductFactory()

    assert product.category.organization == product.organization
    assert_valid(product, product.category)


def test_log_factory_copies_the_rule():
    log = AutomationLogFactory()

    assert log.organization == log.rule.organization
    assert log.trigger == log.rule.trigger_type
    assert log.rule_revision == log.rule.revision
    assert_valid(log)


def test_account_factories_build_valid_records():
    membership = MembershipFactory()
    token = ApiTokenFactory()
    notification = NotificationFactory()
    invitation = InvitationFactory()

    assert membership.user.check_password("pass-w0rd-long")
    assert token.raw_token.startswith("are_")
    assert invitation.expires_at > invitation.created_at
    assert_valid(membership, notification, invitation)
