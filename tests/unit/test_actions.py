"""The action registry and the database actions (records, notifications), against the database."""

import json
from decimal import Decimal

import pytest
from django.db.models.signals import post_delete, post_save

from accounts.choices import Role
from accounts.models import Membership, Notification
from automation.actions import notify
from automation.actions.base import MASK, ActionError
from automation.actions.handlers import (
    get_handler,
    mask_parameters,
    merge_masked_secrets,
    parameter_errors,
    registered_handlers,
)
from automation.core.choices import ActionType, TriggerType
from automation.core.context import RunContext
from automation.core.snapshots import snapshot
from catalog.models import Category, Product
from tests.factories import (
    AutomationLogFactory,
    AutomationRuleFactory,
    CategoryFactory,
    ProductFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def rule(organization):
    return AutomationRuleFactory(organization=organization)


@pytest.fixture
def product(organization):
    return ProductFactory(organization=organization, name="Lamp", price="10.00", stock=5)


def context_for(rule, record=None, **extra):
    return RunContext(
        organization_id=rule.organization_id,
        rule_id=rule.pk,
        rule_name=rule.name,
        trigger=rule.trigger_type,
        event=rule.trigger_event,
        model="catalog.product" if record is not None else None,
        object_id=str(record.pk) if record is not None else None,
        object=snapshot(record) if record is not None else None,
        **extra,
    )


# --- The registry -------------------------------------------------------------------------------


def test_every_action_type_has_a_handler_with_a_schema():
    handlers = registered_handlers()
    assert [handler.action_type for handler in handlers] == list(ActionType.values)
    for handler in handlers:
        assert handler.parameters_schema["type"] == "object"
        assert get_handler(handler.action_type) is handler
    writers = {h.action_type for h in handlers if h.writes_database}
    assert writers == set(ActionType.values) - {ActionType.CALL_WEBHOOK, ActionType.SEND_EMAIL}
    outside = {h.action_type for h in handlers if h.reaches_outside({})}
    assert outside == {ActionType.CALL_WEBHOOK, ActionType.SEND_EMAIL}
    notify = get_handler(ActionType.SEND_NOTIFICATION)
    assert notify.reaches_outside({"email": True}), "an e-mailing notification reaches outside"


def test_unknown_action_type():
    with pytest.raises(LookupError):
        get_handler("LAUNCH_ROCKET")
    assert parameter_errors("LAUNCH_ROCKET", {}, None) == {
        "": ['Unknown action type "LAUNCH_ROCKET".']
    }


def test_schema_errors_name_the_parameter_path(rule):
    errors = parameter_errors(ActionType.CALL_WEBHOOK, {"method": "TRACE", "extra": 1}, rule)
    assert set(errors) == {"url", "method", "extra"}
    assert errors["url"] == ["This parameter is required."]
    assert parameter_errors(ActionType.UPDATE_RECORD, "not an object", rule).keys() == {""}


# --- Save-time validation of record actions -------------------------------------------------------


def test_update_validation_accepts_the_contract_examples(rule):
    assert (
        parameter_errors(
            ActionType.UPDATE_RECORD,
            {"fields": {"description": "Activated {{ object.name }}"}},
            rule,
        )
        == {}
    )
    lookup_target = {"model": "catalog.product", "lookup": {"id": "{{ object.id }}"}}
    assert (
        parameter_errors(
            ActionType.UPDATE_RECORD, {"target": lookup_target, "fields": {"stock": 0}}, rule
        )
        == {}
    )
    assert (
        parameter_errors(
            ActionType.CREATE_RECORD, {"model": "catalog.category", "fields": {"name": "x"}}, rule
        )
        == {}
    )
    assert parameter_errors(ActionType.DELETE_RECORD, {}, rule) == {}


def test_update_validation_refuses_non_writable_and_unknown_fields(rule):
    errors = parameter_errors(
        ActionType.UPDATE_RECORD,
        {"fields": {"organization": "2", "created_by": "1", "nope": 1, "name": "{{ secrets.x }}"}},
        rule,
    )
    assert set(errors) == {"fields.organization", "fields.created_by", "fields.nope", "fields.name"}
    assert "not a writable field of catalog.product" in errors["fields.organization"][0]
    assert "Unknown template variable 'secrets.x'" in errors["fields.name"][0]


def test_a_literal_foreign_key_of_another_organization_is_refused_at_save_time(
    rule, other_organization
):
    own = CategoryFactory(organization=rule.organization)
    foreign = CategoryFactory(organization=other_organization)
    for action_type, extra in (
        (ActionType.UPDATE_RECORD, {}),
        (ActionType.CREATE_RECORD, {"model": "catalog.product"}),
    ):
        fields = {"name": "x", "category": foreign.pk}
        errors = parameter_errors(action_type, {**extra, "fields": fields}, rule)
        assert errors == {
            "fields.category": [f"no catalog.category with id {foreign.pk} in this organization."]
        }, action_type
        fields = {"name": "x", "category": own.pk}
        assert parameter_errors(action_type, {**extra, "fields": fields}, rule) == {}
    # An id from a placeholder is only known at run time (and checked then).
    templated = {"fields": {"category": "{{ object.category }}"}}
    assert parameter_errors(ActionType.UPDATE_RECORD, templated, rule) == {}


# Literal values a run would refuse: (fields, the field refused).
UNWRITABLE_LITERALS = [
    ({"stock": "lots"}, "stock"),
    ({"stock": "5.5"}, "stock"),
    # Django's IntegerField would store these as 2 and 1; conditions refuse them too.
    ({"stock": 2.5}, "stock"),
    ({"stock": True}, "stock"),
    ({"status": "SOLD_OUT"}, "status"),
    ({"price": "cheap"}, "price"),
    ({"price": "-1"}, "price"),
    ({"price": "9.999"}, "price"),
    ({"name": ""}, "name"),
    ({"name": None}, "name"),
    ({"name": "x" * 201}, "name"),
]


@pytest.mark.parametrize(("fields", "name"), UNWRITABLE_LITERALS)
def test_a_literal_value_is_refused_at_save_with_the_message_a_run_would_fail_with(
    rule, product, fields, name
):
    (message,) = parameter_errors(ActionType.UPDATE_RECORD, {"fields": fields}, rule)[
        f"fields.{name}"
    ]
    with pytest.raises(ActionError) as raised:
        get_handler(ActionType.UPDATE_RECORD).execute(
            {"fields": fields}, context_for(rule, product)
        )
    assert f"fields.{name}: {message}" in str(raised.value)
    create = {"model": "catalog.product", "fields": {"name": "x", **fields}}
    assert parameter_errors(ActionType.CREATE_RECORD, create, rule) == {f"fields.{name}": [message]}


def test_legitimate_literal_values_and_templates_are_accepted(rule):
    fields = {
        "stock": "5",
        "price": 9.99,
        "status": "ACTIVE",
        "name": "Lamp",
        "description": "",
        "category": None,
    }
    assert parameter_errors(ActionType.UPDATE_RECORD, {"fields": fields}, rule) == {}
    assert parameter_errors(ActionType.UPDATE_RECORD, {"fields": {"price": "12.50"}}, rule) == {}
    assert parameter_errors(ActionType.UPDATE_RECORD, {"fields": {"stock": 7.0}}, rule) == {}
    # What a placeholder gives is checked when the run renders it.
    templated = {"stock": "{{ object.stock }}", "price": "{{ changes.price.old }}"}
    assert parameter_errors(ActionType.UPDATE_RECORD, {"fields": templated}, rule) == {}


def test_placeholders_are_checked_against_the_rules_model_and_the_actions_position(rule):
    misspelled = {"fields": {"description": "{{ object.nam }}"}}
    assert parameter_errors(ActionType.UPDATE_RECORD, misspelled, rule) == {
        "fields.description": [
            "Template variable 'object.nam' does not resolve: catalog.product has no readable "
            "field 'nam'. Did you mean 'name'?"
        ]
    }
    chained = {"fields": {"description": "{{ results.1.id }}"}}
    assert parameter_errors(ActionType.UPDATE_RECORD, chained, rule, order=2) == {}
    assert (
        "results.0 to results.0"
        in (
            parameter_errors(ActionType.UPDATE_RECORD, chained, rule, order=1)[
                "fields.description"
            ][0]
        )
    )
    # Without the rule (or the position), only what does not depend on them is checked.
    create = {"model": "catalog.category", "fields": {"name": "{{ object.nam }}"}}
    assert parameter_errors(ActionType.CREATE_RECORD, create, rule=None) == {}
    assert parameter_errors(ActionType.UPDATE_RECORD, chained, rule) == {}


def test_validation_refuses_models_that_are_not_automatable(rule):
    errors = parameter_errors(
        ActionType.CREATE_RECORD, {"model": "auth.user", "fields": {"username": "x"}}, rule
    )
    assert list(errors) == ["model"]
    errors = parameter_errors(
        ActionType.DELETE_RECORD,
        {"target": {"model": "accounts.membership", "lookup": {"id": 1}}},
        rule,
    )
    assert list(errors) == ["target.model"]


def test_lookup_validation_only_over_readable_local_fields(rule):
    target = {"model": "catalog.product", "lookup": {"category__name": "x", "organization": 1}}
    errors = parameter_errors(ActionType.DELETE_RECORD, {"target": target}, rule)
    assert set(errors) == {"target.lookup.category__name", "target.lookup.organization"}


def test_trigger_target_needs_a_rule_with_a_model(organization):
    schedule_rule = AutomationRuleFactory(organization=organization, schedule_rule=True)
    assert schedule_rule.trigger_type == TriggerType.SCHEDULE
    errors = parameter_errors(ActionType.UPDATE_RECORD, {"fields": {"name": "x"}}, schedule_rule)
    assert list(errors) == ["target"]


def test_the_action_check_prefixes_parameter_paths(rule):
    from django.core.exceptions import ValidationError

    from automation.core.models import RuleAction
    from automation.rules.services import check_action

    action = RuleAction(
        rule=rule, action_type=ActionType.UPDATE_RECORD, parameters={"fields": {"nope": 1}}
    )
    with pytest.raises(ValidationError) as raised:
        check_action(action)
    assert "parameters.fields.nope" in raised.value.message_dict


# --- UPDATE_RECORD ------------------------------------------------------------------------------


def test_update_the_triggering_record_with_coerced_values_and_signals(rule, product):
    saved = []

    def receiver(sender, instance, **kwargs):
        saved.append(instance.pk)

    post_save.connect(receiver, sender=Product)
    try:
        result = get_handler(ActionType.UPDATE_RECORD).execute(
            {
                "fields": {
                    "description": "Activated {{ object.name }}",
                    "price": "12.50",
                    "status": "DISCONTINUED",
                }
            },
            context_for(rule, product),
        )
    finally:
        post_save.disconnect(receiver, sender=Product)
    product.refresh_from_db()
    assert product.description == "Activated Lamp"
    assert product.price == Decimal("12.50")
    assert product.status == "DISCONTINUED"
    assert saved == [product.pk]
    assert result["model"] == "catalog.product"
    assert result["id"] == product.pk
    assert result["updated"] == ["description", "price", "status"]
    assert result["record"]["price"] == "12.50"


def test_update_by_lookup_with_a_templated_id(rule, product):
    other = ProductFactory(organization=rule.organization, name="Desk")
    params = {
        "target": {"model": "catalog.product", "lookup": {"id": "{{ object.id }}"}},
        "fields": {"stock": "{{ object.stock }}"},
    }
    ctx = context_for(rule, other)
    ctx.object = {**ctx.object, "id": product.pk, "stock": 99}
    get_handler(ActionType.UPDATE_RECORD).execute(params, ctx)
    product.refresh_from_db()
    other.refresh_from_db()
    assert product.stock == 99
    assert other.stock == 5


def test_a_lookup_never_reaches_another_organization(rule, other_organization):
    foreign = ProductFactory(organization=other_organization, stock=5)
    params = {
        "target": {"model": "catalog.product", "lookup": {"id": str(foreign.pk)}},
        "fields": {"stock": 0},
    }
    with pytest.raises(ActionError, match="No record matched"):
        get_handler(ActionType.UPDATE_RECORD).execute(params, context_for(rule))
    foreign.refresh_from_db()
    assert foreign.stock == 5


def test_a_lookup_matching_several_records_fails(rule):
    ProductFactory.create_batch(2, organization=rule.organization, stock=3)
    params = {
        "target": {"model": "catalog.product", "lookup": {"stock": 3}},
        "fields": {"stock": 0},
    }
    with pytest.raises(ActionError, match="More than one record"):
        get_handler(ActionType.UPDATE_RECORD).execute(params, context_for(rule))
    assert Product.objects.filter(stock=0).count() == 0


def test_a_decimal_written_as_a_json_number_keeps_its_short_form(rule, product):
    """The contract's decimals travel as numbers too: 9.99 is 9.99, not the float's expansion
    (9.9900000000000002131...), which the field's 2 decimal places refused."""
    fields = {"price": 9.99}
    assert parameter_errors(ActionType.UPDATE_RECORD, {"fields": fields}, rule) == {}
    get_handler(ActionType.UPDATE_RECORD).execute({"fields": fields}, context_for(rule, product))
    product.refresh_from_db()
    assert product.price == Decimal("9.99")


def test_a_bad_choice_value_fails_through_the_models_validation(rule, product):
    with pytest.raises(ActionError) as raised:
        get_handler(ActionType.UPDATE_RECORD).execute(
            {"fields": {"status": "Discontinued"}}, context_for(rule, product)
        )
    assert str(raised.value) == (
        'Invalid catalog.product: fields.status: "Discontinued" is not a choice of status '
        "(DRAFT, ACTIVE, DISCONTINUED)."
    )
    product.refresh_from_db()
    assert product.status == "DRAFT"


def test_a_negative_price_fails_with_the_field_named(rule, product):
    with pytest.raises(ActionError, match="fields.price"):
        get_handler(ActionType.UPDATE_RECORD).execute(
            {"fields": {"price": "-1"}}, context_for(rule, product)
        )


def test_a_foreign_key_is_written_by_id_of_the_same_organization(rule, product, other_organization):
    own = CategoryFactory(organization=rule.organization)
    get_handler(ActionType.UPDATE_RECORD).execute(
        {"fields": {"category": str(own.pk)}}, context_for(rule, product)
    )
    product.refresh_from_db()
    assert product.category_id == own.pk

    foreign = CategoryFactory(organization=other_organization)
    with pytest.raises(
        ActionError, match=f"fields.category: no catalog.category with id {foreign.pk}"
    ):
        get_handler(ActionType.UPDATE_RECORD).execute(
            {"fields": {"category": foreign.pk}}, context_for(rule, product)
        )
    product.refresh_from_db()
    assert product.category_id == own.pk


def test_update_trigger_without_a_record_fails(rule):
    with pytest.raises(ActionError, match="no triggering record"):
        get_handler(ActionType.UPDATE_RECORD).execute({"fields": {"stock": 1}}, context_for(rule))


def test_update_with_a_missing_template_variable_fails_and_writes_nothing(rule, product):
    with pytest.raises(ActionError, match="'object.nme'"):
        get_handler(ActionType.UPDATE_RECORD).execute(
            {"fields": {"name": "{{ object.nme }}"}}, context_for(rule, product)
        )
    product.refresh_from_db()
    assert product.name == "Lamp"


def test_update_dry_run_validates_but_writes_nothing(rule, product):
    handler = get_handler(ActionType.UPDATE_RECORD)
    described = handler.dry_run(
        {"fields": {"stock": "{{ object.stock }}0"}}, context_for(rule, product)
    )
    assert described == {
        "would": "update",
        "model": "catalog.product",
        "id": product.pk,
        "fields": {"stock": "50"},
    }
    product.refresh_from_db()
    assert product.stock == 5
    with pytest.raises(ActionError, match="fields.status"):
        handler.dry_run({"fields": {"status": "BOGUS"}}, context_for(rule, product))


# --- CREATE_RECORD ------------------------------------------------------------------------------


def test_create_in_the_rules_organization_and_chain_its_id(rule, product):
    create = get_handler(ActionType.CREATE_RECORD)
    ctx = context_for(rule, product)
    result = create.execute(
        {"model": "catalog.category", "fields": {"name": "For {{ object.name }}"}}, ctx
    )
    category = Category.objects.get(pk=result["id"])
    assert category.organization_id == rule.organization_id
    assert category.name == "For Lamp"
    assert result == {"model": "catalog.category", "id": category.pk, "record": snapshot(category)}

    ctx.results[0] = result
    get_handler(ActionType.UPDATE_RECORD).execute(
        {"fields": {"category": "{{ results.0.id }}"}}, ctx
    )
    product.refresh_from_db()
    assert product.category_id == category.pk


def test_create_with_invalid_values_fails_and_creates_nothing(rule):
    before = Category.objects.count()
    with pytest.raises(ActionError, match="fields.name"):
        get_handler(ActionType.CREATE_RECORD).execute(
            {"model": "catalog.category", "fields": {"name": ""}}, context_for(rule)
        )
    with pytest.raises(ActionError, match="single value"):
        get_handler(ActionType.CREATE_RECORD).execute(
            {"model": "catalog.category", "fields": {"name": {"nested": 1}}}, context_for(rule)
        )
    assert Category.objects.count() == before


def test_create_dry_run_creates_nothing(rule):
    before = Category.objects.count()
    described = get_handler(ActionType.CREATE_RECORD).dry_run(
        {"model": "catalog.category", "fields": {"name": "x"}}, context_for(rule)
    )
    assert described == {
        "would": "create",
        "model": "catalog.category",
        "id": None,
        "fields": {"name": "x"},
    }
    assert Category.objects.count() == before


# --- DELETE_RECORD ------------------------------------------------------------------------------


def test_delete_the_triggering_record_fires_signals(rule, product):
    deleted = []

    def receiver(sender, instance, **kwargs):
        deleted.append(instance.pk)

    post_delete.connect(receiver, sender=Product)
    try:
        result = get_handler(ActionType.DELETE_RECORD).execute({}, context_for(rule, product))
    finally:
        post_delete.disconnect(receiver, sender=Product)
    assert result == {"model": "catalog.product", "id": product.pk, "deleted": True}
    assert deleted == [product.pk]
    assert not Product.objects.filter(pk=product.pk).exists()


def test_delete_of_another_organizations_record_finds_nothing(rule, other_organization):
    foreign = CategoryFactory(organization=other_organization)
    params = {"target": {"model": "catalog.category", "lookup": {"id": foreign.pk}}}
    with pytest.raises(ActionError, match="No record matched"):
        get_handler(ActionType.DELETE_RECORD).execute(params, context_for(rule))
    assert Category.objects.filter(pk=foreign.pk).exists()


def test_delete_dry_run_keeps_the_record(rule, product):
    described = get_handler(ActionType.DELETE_RECORD).dry_run({}, context_for(rule, product))
    assert described == {"would": "delete", "model": "catalog.product", "id": product.pk}
    assert Product.objects.filter(pk=product.pk).exists()


# --- SEND_NOTIFICATION --------------------------------------------------------------------------


@pytest.fixture
def team(organization, other_organization, make_member):
    return {
        "alice": make_member(organization, Role.ADMIN, username="alice"),
        "bob": make_member(organization, Role.EDITOR, username="bob"),
        "carol": make_member(organization, Role.VIEWER, username="carol"),
        # An ADMIN elsewhere, and a plain member here: a role held in another org never counts.
        "mallory": make_member(other_organization, Role.ADMIN, username="mallory"),
    }


def test_notify_by_username_and_by_role(rule, product, team, monkeypatch):
    published = []
    monkeypatch.setattr(notify, "publish_notification", published.append)
    Membership.objects.create(
        user=team["mallory"], organization=rule.organization, role=Role.VIEWER
    )
    log = AutomationLogFactory(rule=rule)
    ctx = context_for(rule, product, log_id=log.pk)
    params = {
        "recipients": {"usernames": ["carol"], "roles": ["ADMIN"]},
        "title": "{{ object.name }} is low",
        "body": "Stock {{ object.stock }}",
    }
    result = get_handler(ActionType.SEND_NOTIFICATION).execute(params, ctx)
    assert result["recipients"] == ["alice", "carol"]
    assert result["skipped"] == []
    notifications = list(
        Notification.objects.filter(pk__in=result["notification_ids"]).order_by(
            "recipient__username"
        )
    )
    assert [n.recipient.username for n in notifications] == ["alice", "carol"]
    for notification in notifications:
        assert notification.organization_id == rule.organization_id
        assert notification.title == "Lamp is low"
        assert notification.body == "Stock 5"
        assert notification.log_id == log.pk
    assert sorted(n.pk for n in published) == sorted(result["notification_ids"])


def test_notify_skips_non_members_at_run_time_and_fails_when_nobody_is_left(
    rule, team, monkeypatch
):
    monkeypatch.setattr(notify, "publish_notification", lambda notification: None)
    handler = get_handler(ActionType.SEND_NOTIFICATION)
    result = handler.execute(
        {"recipients": {"usernames": ["bob", "mallory"]}, "title": "Hi"}, context_for(rule)
    )
    assert result["recipients"] == ["bob"]
    assert result["skipped"] == ["mallory"]
    assert not Notification.objects.filter(recipient=team["mallory"]).exists()

    with pytest.raises(ActionError, match="No recipient") as raised:
        handler.execute(
            {"recipients": {"usernames": ["mallory"]}, "title": "Hi"}, context_for(rule)
        )
    assert raised.value.result["skipped"] == ["mallory"]


def test_notify_validation(rule, team):
    errors = parameter_errors(
        ActionType.SEND_NOTIFICATION,
        {
            "recipients": {"usernames": ["bob", "mallory"], "roles": []},
            "title": "{{ object.nme }} {{ oops }}",
        },
        rule,
    )
    assert set(errors) == {"recipients.usernames.1", "title"}
    # Both placeholders are wrong: a field the model lacks, and a variable no run has.
    nme, oops = errors["title"]
    assert "catalog.product has no readable field 'nme'. Did you mean 'name'?" in nme
    assert "Unknown template variable 'oops'" in oops
    assert parameter_errors(
        ActionType.SEND_NOTIFICATION, {"recipients": {}, "title": "x"}, rule
    ) == {"recipients": ["Name at least one username or role."]}
    assert "recipients.roles.0" in parameter_errors(
        ActionType.SEND_NOTIFICATION, {"recipients": {"roles": ["OWNER"]}, "title": "x"}, rule
    )


def test_what_templates_render_is_limited_per_parameter_and_per_run(rule, team, settings):
    settings.AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES = 1000
    settings.AUTOMATION_TEMPLATE_MAX_RUN_BYTES = 2000
    handler = get_handler(ActionType.SEND_NOTIFICATION)
    ctx = context_for(rule, results={0: {"text": "y" * 300}})

    def notify(repeats):
        body = "{{ results.0.text }}" * repeats
        return handler.dry_run(
            {"recipients": {"roles": ["EDITOR"]}, "title": "t", "body": body}, ctx
        )

    assert notify(3)["body"] == "y" * 900
    with pytest.raises(ActionError) as raised:
        notify(4)
    assert str(raised.value) == (
        "body: the template renders more than 1000 bytes (AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES); "
        "do placeholders repeat earlier results?"
    )
    assert notify(3)["body"] == "y" * 900  # 1,800 bytes rendered by this run so far
    with pytest.raises(ActionError) as raised:
        notify(1)
    assert str(raised.value) == (
        "body: this run's templates render more than 2000 bytes in all "
        "(AUTOMATION_TEMPLATE_MAX_RUN_BYTES); do placeholders repeat earlier results?"
    )


def test_notify_dry_run_creates_nothing(rule, product, team):
    described = get_handler(ActionType.SEND_NOTIFICATION).dry_run(
        {"recipients": {"roles": ["EDITOR"]}, "title": "T {{ object.id }}", "body": "B"},
        context_for(rule, product),
    )
    assert described == {
        "would": "notify",
        "recipients": ["bob"],
        "skipped": [],
        "title": f"T {product.pk}",
        "body": "B",
    }
    assert Notification.objects.count() == 0


# --- Secrets ------------------------------------------------------------------------------------


def test_secrets_are_masked_and_kept_on_update():
    stored = {
        "url": "https://h.example/x",
        "secret": "s3cret",
        "headers": {"Authorization": "Bearer t", "X.Tag": "v"},
    }
    masked = mask_parameters(ActionType.CALL_WEBHOOK, stored)
    assert masked == {
        "url": "https://h.example/x",
        "secret": MASK,
        "headers": {"Authorization": MASK, "X.Tag": MASK},
    }
    assert stored["secret"] == "s3cret"  # a copy

    echoed = {
        **masked,
        "method": "POST",  # the default, spelled out: the same destination
        "headers": {"Authorization": MASK, "X-New": "n"},
    }
    merged, unkept = merge_masked_secrets(
        ActionType.CALL_WEBHOOK, echoed, ActionType.CALL_WEBHOOK, stored
    )
    assert unkept == {}
    assert merged == {
        "url": "https://h.example/x",
        "method": "POST",
        "secret": "s3cret",
        "headers": {"Authorization": "Bearer t", "X-New": "n"},
    }
    # A mask with nothing to keep stays, and validation refuses it.
    fresh, unkept = merge_masked_secrets(
        ActionType.CALL_WEBHOOK,
        {"url": "https://h.example", "secret": MASK},
        ActionType.CALL_WEBHOOK,
        {},
    )
    assert fresh["secret"] == MASK and unkept == {}
    assert "secret" in parameter_errors(ActionType.CALL_WEBHOOK, fresh, None)
    # Actions without secrets pass through unchanged.
    params = {"fields": {"name": MASK}}
    assert mask_parameters(ActionType.UPDATE_RECORD, params) == params


@pytest.mark.parametrize(
    ("change", "action_type", "reason"),
    [
        ({"url": "https://elsewhere.example/x"}, ActionType.CALL_WEBHOOK, "url"),
        ({"url": "https://h.example/{{ object.id }}"}, ActionType.CALL_WEBHOOK, "url"),
        ({"method": "PATCH"}, ActionType.CALL_WEBHOOK, "method"),
        ({}, ActionType.UPDATE_RECORD, "action type"),
    ],
)
def test_masked_secrets_are_not_kept_for_another_destination(change, action_type, reason):
    """A secret stays with the destination it was given for: each mask is dropped and reported."""
    stored = {"url": "https://h.example/x", "secret": "s3cret", "headers": {"X-Key": "k3y"}}
    echoed = {**mask_parameters(ActionType.CALL_WEBHOOK, stored), **change}
    merged, unkept = merge_masked_secrets(ActionType.CALL_WEBHOOK, echoed, action_type, stored)
    message = [f"The {reason} changed: send this secret again."]
    assert unkept == {"secret": message, "headers.X-Key": message}
    assert "s3cret" not in json.dumps(merged) and "k3y" not in json.dumps(merged)
    assert MASK not in json.dumps(merged)
