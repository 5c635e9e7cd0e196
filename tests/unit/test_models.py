"""The engine's and the catalog's models: creation, defaults, __str__, validation, constraints."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import override_settings
from django.utils import timezone

from automation.core.choices import (
    ActionType,
    ConditionLogic,
    MissedRunPolicy,
    Operator,
    RunStatus,
    TriggerEvent,
    TriggerType,
)
from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    RuleAction,
    RuleCondition,
)
from automation.rules.condition_trees import check_condition, full_clean
from catalog.choices import ProductStatus
from catalog.models import Category, Product
from tests.factories import (
    AutomationLogFactory,
    AutomationRuleFactory,
    CategoryFactory,
    OrganizationFactory,
    ProductFactory,
    RuleActionFactory,
    RuleConditionFactory,
    content_type_of,
)

pytestmark = pytest.mark.django_db


def messages_of(excinfo, field):
    return excinfo.value.message_dict.get(field, [])


def build_rule(**fields) -> AutomationRule:
    """An unsaved rule: an EVENT UPDATED rule on catalog.product unless told otherwise."""
    values = {
        "organization": fields.pop("organization", None) or OrganizationFactory(),
        "name": "Rule",
        "trigger_type": TriggerType.EVENT,
        "trigger_event": TriggerEvent.UPDATED,
        "content_type": content_type_of("catalog.product"),
    }
    values.update(fields)
    return AutomationRule(**values)


def schedule_rule(**fields) -> AutomationRule:
    values = {
        "trigger_type": TriggerType.SCHEDULE,
        "trigger_event": None,
        "content_type": None,
        "schedule": "0 9 * * 1-5",
    }
    values.update(fields)
    return build_rule(**values)


# --- Creation, defaults, __str__ ----------------------------------------------------------------


def test_rule_defaults():
    rule = build_rule(name="Restock")
    rule.save()
    rule.refresh_from_db()

    assert rule.is_active is True
    assert rule.description == ""
    assert rule.watched_fields == []
    assert rule.allow_self_trigger is False
    assert rule.schedule == ""
    assert rule.timezone == "UTC"
    assert rule.missed_run_policy == MissedRunPolicy.LATEST
    assert rule.revision == 1
    assert rule.deleted_at is None and rule.next_run_at is None and rule.last_run_at is None
    assert rule.created_at is not None and rule.updated_at is not None
    assert rule.model == "catalog.product"
    assert str(rule) == "Restock"


def test_rule_querysets_hide_deleted_and_inactive_rules():
    organization = OrganizationFactory()
    live = AutomationRuleFactory(organization=organization)
    inactive = AutomationRuleFactory(organization=organization, is_active=False)
    deleted = AutomationRuleFactory(organization=organization, deleted_at=timezone.now())

    assert set(AutomationRule.objects.alive()) == {live, inactive}
    assert set(AutomationRule.objects.live()) == {live}
    assert deleted not in AutomationRule.objects.alive()


def test_condition_group_defaults_and_str():
    rule = AutomationRuleFactory(name="R")
    root = rule.root_group
    child = ConditionGroup.objects.create(rule=rule, parent=root, logic="OR", negate=True, order=2)

    assert root.logic == ConditionLogic.AND and root.negate is False and root.order == 0
    assert str(root) == "AND (root of R)"
    assert str(child) == "NOT OR (group 2 of R)"


def test_condition_action_and_log_str():
    condition = RuleConditionFactory(field_name="stock", operator=Operator.LESS_THAN, value=5)
    negated = RuleConditionFactory(field_name="name", operator=Operator.EQUALS, value="x")
    negated.negate = True
    action = RuleActionFactory(rule__name="R", order=3, action_type=ActionType.DELETE_RECORD)
    log = AutomationLogFactory(rule__name="R")

    assert str(condition) == "stock LESS_THAN 5"
    assert str(negated) == "NOT name EQUALS 'x'"
    assert str(action) == "3: DELETE_RECORD (R)"
    assert str(log) == f"Run {log.pk} of R (PENDING)"


def test_action_defaults():
    action = RuleAction.objects.create(
        rule=AutomationRuleFactory(), action_type=ActionType.SEND_NOTIFICATION
    )

    assert action.parameters == {}
    assert action.order == 0
    assert action.continue_on_failure is False


def test_log_defaults_and_derived_values():
    log = AutomationLogFactory()
    log.refresh_from_db()

    assert log.status == RunStatus.PENDING
    assert log.seq == 0 and log.depth == 0 and log.rule_revision == 1
    assert log.dry_run is False and log.conditions_met is None
    assert log.condition_trace == [] and log.context == {} and log.action_logs == []
    assert log.changes is None and log.error == ""
    assert log.parent_log is None and log.root_log is None and log.retry_of is None
    assert log.object_type == "catalog.product"
    assert log.duration_ms is None

    log.started_at = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    log.finished_at = datetime(2026, 1, 1, 12, 0, 1, 250_000, tzinfo=UTC)
    assert log.duration_ms == pytest.approx(1250)


def test_catalog_defaults_and_str():
    category = CategoryFactory(name="Tools")
    product = Product.objects.create(organization=category.organization, name="Hammer")

    assert str(category) == "Tools"
    assert str(product) == "Hammer"
    assert product.status == ProductStatus.DRAFT
    assert product.price == Decimal("0") and product.stock == 0
    assert product.description == "" and product.category is None
    assert Category._meta.verbose_name_plural == "categories"


def test_product_category_must_belong_to_the_same_organization():
    product = ProductFactory.build(
        organization=OrganizationFactory(), category=CategoryFactory(), name="Hammer"
    )

    with pytest.raises(ValidationError) as excinfo:
        product.full_clean()
    assert messages_of(excinfo, "category") == ["The category belongs to another organization."]


def test_product_price_cannot_be_negative():
    product = ProductFactory.build(organization=OrganizationFactory(), category=None, price="-1")

    with pytest.raises(ValidationError) as excinfo:
        product.full_clean()
    assert "price" in excinfo.value.message_dict


# --- AutomationRule: the name is unique per organization among live rules -----------------------


def test_rule_name_is_unique_per_organization():
    existing = AutomationRuleFactory(name="Restock")
    duplicate = build_rule(organization=existing.organization, name="Restock")

    with pytest.raises(ValidationError) as excinfo:
        duplicate.full_clean()
    assert "A rule with this name already exists in the organization." in excinfo.value.messages
    with pytest.raises(IntegrityError), transaction.atomic():
        duplicate.save()


def test_rule_name_may_repeat_in_another_organization():
    AutomationRuleFactory(name="Restock")

    build_rule(name="Restock").full_clean()


def test_a_deleted_rules_name_can_be_reused():
    deleted = AutomationRuleFactory(name="Restock", deleted_at=timezone.now())
    again = build_rule(organization=deleted.organization, name="Restock")

    again.full_clean()
    again.save()

    assert AutomationRule.objects.filter(name="Restock").count() == 2


# --- AutomationRule: schedules ----------------------------------------------------------------


def test_schedule_rule_with_valid_cron_and_timezone_is_valid():
    schedule_rule(timezone="Europe/Paris").full_clean()


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "A schedule (5-field cron expression) is required."),
        ("0 9 * * 1-5 2026", "is not a 5-field cron expression"),
        ("* * *", "is not a 5-field cron expression"),
        ("61 * * * *", "is not a valid cron expression"),
        ("0 9 * * funday", "is not a valid cron expression"),
    ],
)
def test_schedule_rule_needs_a_valid_five_field_cron(schedule, message):
    with pytest.raises(ValidationError) as excinfo:
        schedule_rule(schedule=schedule).full_clean()
    assert any(message in text for text in messages_of(excinfo, "schedule"))


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd"])
def test_rule_needs_an_iana_timezone(zone):
    with pytest.raises(ValidationError) as excinfo:
        schedule_rule(timezone=zone).full_clean()
    assert messages_of(excinfo, "timezone")


def test_timezone_message_names_the_bad_value():
    with pytest.raises(ValidationError) as excinfo:
        schedule_rule(timezone="Mars/Olympus_Mons").full_clean()
    assert messages_of(excinfo, "timezone") == [
        '"Mars/Olympus_Mons" is not an IANA time zone (e.g. "Europe/Paris").'
    ]


def test_only_schedule_rules_have_a_schedule():
    with pytest.raises(ValidationError) as excinfo:
        build_rule(schedule="0 * * * *").full_clean()
    assert messages_of(excinfo, "schedule") == ["Only SCHEDULE rules have a schedule."]


# --- AutomationRule: events and models ----------------------------------------------------------


def test_event_rule_needs_a_model():
    with pytest.raises(ValidationError) as excinfo:
        build_rule(content_type=None).full_clean()
    assert messages_of(excinfo, "content_type") == ["An EVENT rule needs a model."]


def test_event_rule_needs_an_event():
    with pytest.raises(ValidationError) as excinfo:
        build_rule(trigger_event=None).full_clean()
    assert messages_of(excinfo, "trigger_event") == [
        "An EVENT rule needs an event (CREATED, UPDATED, DELETED)."
    ]


def test_only_event_rules_have_an_event():
    rule = build_rule(trigger_type=TriggerType.MANUAL, trigger_event=TriggerEvent.CREATED)

    with pytest.raises(ValidationError) as excinfo:
        rule.full_clean()
    assert messages_of(excinfo, "trigger_event") == ["Only EVENT rules have a trigger event."]


def test_manual_rule_without_event_is_valid():
    build_rule(trigger_type=TriggerType.MANUAL, trigger_event=None).full_clean()


def test_rule_model_must_be_automatable():
    with pytest.raises(ValidationError) as excinfo:
        build_rule(content_type=content_type_of("auth.user")).full_clean()
    assert messages_of(excinfo, "content_type") == ['"auth.user" is not an automatable model.']


@override_settings(AUTOMATION_MODELS={"catalog.category": {"fields": ["id", "name"]}})
def test_registry_is_the_automation_models_setting():
    with pytest.raises(ValidationError) as excinfo:
        build_rule().full_clean()
    assert messages_of(excinfo, "content_type") == [
        '"catalog.product" is not an automatable model.'
    ]


# --- AutomationRule: watched fields -------------------------------------------------------------


def test_updated_rule_may_watch_its_models_readable_fields():
    build_rule(watched_fields=["status", "price", "category"]).full_clean()


@pytest.mark.parametrize(
    ("watched", "message"),
    [
        (["organization"], '"organization" is not a readable field of catalog.product.'),
        (["created_by"], '"created_by" is not a readable field of catalog.product.'),
        (["nope"], '"nope" is not a readable field of catalog.product.'),
        (["category__name"], '"category__name": only the model\'s own fields can be watched.'),
        ("status", "Watched fields must be a list of field names."),
        ([1], "Watched fields must be a list of field names."),
    ],
)
def test_watched_fields_must_be_own_readable_fields(watched, message):
    with pytest.raises(ValidationError) as excinfo:
        build_rule(watched_fields=watched).full_clean()
    assert messages_of(excinfo, "watched_fields") == [message]


@pytest.mark.parametrize("event", [TriggerEvent.CREATED, TriggerEvent.DELETED])
def test_only_updated_rules_watch_fields(event):
    with pytest.raises(ValidationError) as excinfo:
        build_rule(trigger_event=event, watched_fields=["status"]).full_clean()
    assert messages_of(excinfo, "watched_fields") == ["Only UPDATED rules watch fields."]


# --- RuleCondition ------------------------------------------------------------------------------


def build_condition(rule=None, **fields) -> RuleCondition:
    rule = rule or AutomationRuleFactory()
    values = {"field_name": "status", "operator": Operator.EQUALS, "value": "ACTIVE"}
    values.update(fields)
    return RuleCondition(rule=rule, group=rule.root_group, **values)


def validate(condition):
    """What saving a rule checks of a condition: its fields and the evaluator's own check."""
    full_clean(condition, check_condition)


@pytest.mark.parametrize(
    "path", ["status", "price", "category", "category__name", "category__products__name"]
)
def test_condition_paths_through_allowed_hops_are_valid(path):
    # IS_NOT_NULL: any field takes it ("ACTIVE" would be refused as a price, see test_rules).
    validate(build_condition(field_name=path, operator=Operator.IS_NOT_NULL, value=None))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("organization__name", '"organization" is not a readable field of catalog.product.'),
        ("created_by__password", '"created_by" is not a readable field of catalog.product.'),
        ("category__organization__name", '"organization" is not a readable field of '),
        ("category__created_by", '"created_by" is not a readable field of catalog.category.'),
        ("name__length", '"name" of catalog.product is not a relation and cannot be followed.'),
        ("category__products", '"products" is a list of records'),
        ("", "A field path is required."),
    ],
)
def test_condition_paths_outside_allowed_hops_are_refused(path, message):
    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(field_name=path))
    assert any(text.startswith(message) for text in messages_of(excinfo, "field_name")), (
        messages_of(excinfo, "field_name")
    )


@override_settings(
    AUTOMATION_MODELS={
        "catalog.product": {"fields": ["name", "category"]},
    }
)
def test_a_hop_into_a_model_that_is_not_automatable_is_refused():
    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(field_name="category__name"))
    assert messages_of(excinfo, "field_name") == [
        '"category" of catalog.product leads to a model automation may not read.'
    ]


@pytest.mark.parametrize("operator", [Operator.CHANGED, Operator.CHANGED_FROM, Operator.CHANGED_TO])
def test_change_operators_apply_to_event_rules(operator):
    validate(
        build_condition(operator=operator, value=None if operator == Operator.CHANGED else "DRAFT")
    )


@pytest.mark.parametrize("operator", [Operator.CHANGED, Operator.CHANGED_FROM, Operator.CHANGED_TO])
def test_change_operators_are_refused_on_other_rules(operator):
    rule = AutomationRuleFactory(manual_rule=True)

    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(rule, operator=operator, value="DRAFT"))
    assert messages_of(excinfo, "operator") == [f"{operator} applies to EVENT rules only."]


def test_condition_on_a_rule_without_a_model_is_refused():
    rule = AutomationRuleFactory(schedule_rule=True)

    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(rule))
    assert messages_of(excinfo, "field_name") == [
        "This rule has no model, so it has no fields to test."
    ]


def test_regex_within_the_limit_is_valid():
    validate(build_condition(field_name="name", operator=Operator.REGEX, value=r"^Ham+er$"))


@override_settings(AUTOMATION_REGEX_MAX_LENGTH=20)
def test_regex_longer_than_the_limit_is_refused():
    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(field_name="name", operator=Operator.REGEX, value="a" * 21))
    assert messages_of(excinfo, "value") == ["The regular expression is longer than 20 characters."]


def test_regex_default_limit_is_500_characters():
    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(field_name="name", operator=Operator.REGEX, value="a" * 501))
    assert messages_of(excinfo, "value") == [
        "The regular expression is longer than 500 characters."
    ]


@pytest.mark.parametrize("value", ["(unclosed", 42])
def test_invalid_regex_is_refused(value):
    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(field_name="name", operator=Operator.REGEX, value=value))
    assert messages_of(excinfo, "value")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("(?=Ham)mer", "invalid perl operator: (?="),
        ("(?<!x)y", "invalid perl operator: (?<!"),
        (r"(a)\1", "invalid escape sequence: \\1"),
    ],
    ids=["lookahead", "lookbehind", "backreference"],
)
def test_regex_syntax_re2_lacks_is_refused_with_the_reason(value, message):
    """REGEX runs on RE2: what needs backtracking is refused at save, saying so."""
    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(field_name="name", operator=Operator.REGEX, value=value))
    (text,) = messages_of(excinfo, "value")
    assert message in text
    assert "RE2 syntax" in text and "lookahead" in text


def test_regex_whose_program_is_too_large_is_refused():
    """21 characters, 1.2 million instructions: over the default memory bound."""
    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(field_name="name", operator=Operator.REGEX, value=r"\pL{1000}"))
    (text,) = messages_of(excinfo, "value")
    assert text.startswith("The regular expression is too large")
    assert "AUTOMATION_REGEX_MAX_MEMORY" in text


@pytest.mark.parametrize("operator", [Operator.IN, Operator.NOT_IN])
def test_list_operators_need_a_list(operator):
    validate(build_condition(operator=operator, value=["ACTIVE", "DRAFT"]))
    with pytest.raises(ValidationError) as excinfo:
        validate(build_condition(operator=operator, value="ACTIVE"))
    assert messages_of(excinfo, "value") == [f"{operator} needs a list of values."]


# --- Constraints ------------------------------------------------------------------------------


def test_a_rule_has_one_root_group():
    rule = AutomationRuleFactory()
    second_root = ConditionGroup(rule=rule, parent=None)

    with pytest.raises(ValidationError) as excinfo:
        second_root.full_clean()
    assert "A rule has exactly one root condition group." in excinfo.value.messages
    with pytest.raises(IntegrityError), transaction.atomic():
        second_root.save()


def test_a_rule_may_have_many_nested_groups():
    rule = AutomationRuleFactory()
    for order in range(3):
        ConditionGroup(rule=rule, parent=rule.root_group, order=order).full_clean()
        ConditionGroup.objects.create(rule=rule, parent=rule.root_group, order=order)

    assert rule.condition_groups.count() == 4


def test_one_run_per_rule_and_schedule_slot():
    rule = AutomationRuleFactory(schedule_rule=True)
    slot = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    AutomationLogFactory(rule=rule, scheduled_for=slot)

    with pytest.raises(IntegrityError), transaction.atomic():
        AutomationLogFactory(rule=rule, scheduled_for=slot)

    AutomationLogFactory(rule=rule, scheduled_for=slot.replace(hour=10))
    AutomationLogFactory(rule=rule, scheduled_for=None)
    AutomationLogFactory(rule=rule, scheduled_for=None)
    AutomationLogFactory(rule=AutomationRuleFactory(schedule_rule=True), scheduled_for=slot)
    assert AutomationLog.objects.filter(scheduled_for=slot).count() == 2


def test_rule_logs_protect_the_rule_from_hard_delete():
    log = AutomationLogFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        AutomationRule.objects.filter(pk=log.rule_id).delete()
