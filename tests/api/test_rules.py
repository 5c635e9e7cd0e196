"""Rules over HTTP: full CRUD with a nested tree, validation errors by input path, secrets."""

import datetime

import pytest
import time_machine

from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    RuleAction,
    RuleCondition,
)
from tests.factories import AutomationLogFactory, AutomationRuleFactory, ProductFactory

pytestmark = pytest.mark.django_db

RULE_FIELDS = """
  id name description isActive triggerType model triggerEvent watchedFields allowSelfTrigger
  schedule timezone missedRunPolicy revision deletedAt createdBy { username }
  organization { id }
  conditionLogic
  conditions {
    logic negate
    conditions { field operator value negate order }
    groups {
      logic negate
      conditions { field operator value negate order }
      groups { logic negate conditions { field operator value negate order } groups { logic } }
    }
  }
  actions { actionType parameters order continueOnFailure }
"""

CREATE = f"mutation($input: RuleInput!) {{ createRule(input: $input) {{ {RULE_FIELDS} }} }}"
UPDATE = f"mutation($id: ID!, $input: RuleUpdateInput!) {{ updateRule(id: $id, input: $input) {{ {RULE_FIELDS} }} }}"
READ = f"query($id: ID!) {{ rule(id: $id) {{ {RULE_FIELDS} }} }}"
DELETE = "mutation($id: ID!) { deleteRule(id: $id) }"
LIST = "query($org: ID) { rules(organization: $org) { id name } }"

WEBHOOK = {
    "url": "https://hooks.example.com/automation",
    "method": "POST",
    "headers": {"X-Api-Key": "header-secret"},
    "body": {"product": "{{ object.id }}"},
    "secret": "signing-secret",
}


def nested_conditions():
    """status = ACTIVE AND (stock < 5 OR NOT (name starts with "Old" AND price > 100))."""
    return {
        "logic": "AND",
        "conditions": [{"field": "status", "operator": "EQUALS", "value": "ACTIVE"}],
        "groups": [
            {
                "logic": "OR",
                "conditions": [{"field": "stock", "operator": "LESS_THAN", "value": 5}],
                "groups": [
                    {
                        "logic": "AND",
                        "negate": True,
                        "conditions": [
                            {"field": "name", "operator": "STARTS_WITH", "value": "Old"},
                            {"field": "price", "operator": "GREATER_THAN", "value": "100"},
                        ],
                    }
                ],
            }
        ],
    }


def three_actions():
    return [
        {
            "actionType": "UPDATE_RECORD",
            "parameters": {"fields": {"description": "Activated {{ object.name }}"}},
        },
        {
            "actionType": "SEND_NOTIFICATION",
            "parameters": {
                "recipients": {"roles": ["ADMIN"]},
                "title": "{{ object.name }} is live",
            },
            "continueOnFailure": True,
        },
        {"actionType": "CALL_WEBHOOK", "parameters": WEBHOOK},
    ]


def rule_input(organization, **overrides):
    data = {
        "organization": str(organization.pk),
        "name": "Low stock alert",
        "description": "Tell admins",
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "watchedFields": ["status", "stock"],
        "conditions": nested_conditions(),
        "actions": three_actions(),
    }
    data.update(overrides)
    return data


def row_counts():
    return (
        AutomationRule.objects.count(),
        ConditionGroup.objects.count(),
        RuleCondition.objects.count(),
        RuleAction.objects.count(),
    )


def test_full_crud_of_a_rule_with_nested_groups_and_three_actions(gql, editor, organization):
    created = gql(CREATE, {"input": rule_input(organization)}, token=editor).ok()["createRule"]
    assert created["revision"] == 1
    assert created["createdBy"] == {"username": editor.username}
    assert created["model"] == "catalog.product"
    assert created["triggerEvent"] == "UPDATED"
    assert created["watchedFields"] == ["status", "stock"]
    assert created["schedule"] is None
    assert created["conditionLogic"] == "AND"
    root = created["conditions"]
    assert root["conditions"][0] == {
        "field": "status",
        "operator": "EQUALS",
        "value": "ACTIVE",
        "negate": False,
        "order": 0,
    }
    inner = root["groups"][0]
    assert inner["logic"] == "OR"
    assert inner["conditions"][0]["field"] == "stock"
    innermost = inner["groups"][0]
    assert innermost["negate"] is True
    assert [c["field"] for c in innermost["conditions"]] == ["name", "price"]
    assert [c["order"] for c in innermost["conditions"]] == [0, 1]
    assert [a["actionType"] for a in created["actions"]] == [
        "UPDATE_RECORD",
        "SEND_NOTIFICATION",
        "CALL_WEBHOOK",
    ]
    assert [a["order"] for a in created["actions"]] == [0, 1, 2]
    assert created["actions"][1]["continueOnFailure"] is True
    assert row_counts() == (1, 3, 4, 3)

    rule_id = created["id"]
    read = gql(READ, {"id": rule_id}, token=editor).ok()["rule"]
    assert read == created
    assert gql(LIST, {"org": str(organization.pk)}, token=editor).ok()["rules"] == [
        {"id": rule_id, "name": "Low stock alert"}
    ]

    # Update: plain fields change, the tree is replaced as a whole, the actions are kept.
    updated = gql(
        UPDATE,
        {
            "id": rule_id,
            "input": {
                "name": "Low stock",
                "isActive": False,
                "conditions": {
                    "logic": "OR",
                    "conditions": [
                        {"field": "category__name", "operator": "ICONTAINS", "value": "tools"}
                    ],
                },
            },
        },
        token=editor,
    ).ok()["updateRule"]
    assert updated["name"] == "Low stock"
    assert updated["isActive"] is False
    assert updated["description"] == "Tell admins"  # omitted = unchanged
    assert updated["revision"] == 2
    assert updated["conditionLogic"] == "OR"
    assert updated["conditions"]["groups"] == []
    assert [c["field"] for c in updated["conditions"]["conditions"]] == ["category__name"]
    assert len(updated["actions"]) == 3
    assert row_counts() == (1, 1, 1, 3)

    # Given actions replace the old list too.
    updated = gql(
        UPDATE, {"id": rule_id, "input": {"actions": three_actions()[:1]}}, token=editor
    ).ok()["updateRule"]
    assert updated["revision"] == 3
    assert [a["actionType"] for a in updated["actions"]] == ["UPDATE_RECORD"]
    assert row_counts() == (1, 1, 1, 1)

    # Soft delete: gone from the API, kept for its logs.
    log = AutomationLogFactory(rule=AutomationRule.objects.get(pk=rule_id))
    assert gql(DELETE, {"id": rule_id}, token=editor).ok() == {"deleteRule": rule_id}
    rule = AutomationRule.objects.get(pk=rule_id)
    assert rule.deleted_at is not None
    assert gql(READ, {"id": rule_id}, token=editor).error()["extensions"]["code"] == "NOT_FOUND"
    assert gql(LIST, {"org": str(organization.pk)}, token=editor).ok()["rules"] == []
    assert gql(DELETE, {"id": rule_id}, token=editor).error()["extensions"]["code"] == "NOT_FOUND"
    log_answer = gql(
        "query($id: ID!) { log(id: $id) { rule { id name deletedAt } } }",
        {"id": str(log.pk)},
        token=editor,
    ).ok()["log"]
    assert log_answer["rule"]["id"] == rule_id
    assert log_answer["rule"]["deletedAt"] is not None
    assert AutomationLog.objects.get(pk=log.pk).rule_id == rule.pk

    # The name is free again once the rule is deleted.
    gql(CREATE, {"input": rule_input(organization, name="Low stock")}, token=editor).ok()


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"name": "Taken"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"model": "auth.user"}, "model"),
        ({"model": None}, "model"),
        ({"triggerEvent": None}, "triggerEvent"),
        ({"watchedFields": ["no_such_field"]}, "watchedFields"),
        ({"schedule": "* * * * *"}, "schedule"),
        (
            {
                "triggerType": "SCHEDULE",
                "triggerEvent": None,
                "watchedFields": [],
                "schedule": "61 * * * *",
            },
            "schedule",
        ),
        (
            {
                "triggerType": "SCHEDULE",
                "triggerEvent": None,
                "watchedFields": [],
                "schedule": "0 * * * *",
                "timezone": "Mars/Olympus",
            },
            "timezone",
        ),
        (
            {
                "conditions": {
                    "groups": [
                        {
                            "conditions": [
                                {"field": "status", "operator": "EQUALS", "value": "ACTIVE"},
                                {"field": "category__secret", "operator": "EQUALS", "value": 1},
                            ]
                        }
                    ]
                }
            },
            "conditions.groups.0.conditions.1.field",
        ),
        (
            {"conditions": {"conditions": [{"field": "name", "operator": "REGEX", "value": "("}]}},
            "conditions.conditions.0.value",
        ),
        (
            {
                "conditions": {
                    "conditions": [{"field": "status", "operator": "IN", "value": "ACTIVE"}]
                }
            },
            "conditions.conditions.0.value",
        ),
        (
            {
                "actions": [
                    *three_actions()[:2],
                    {
                        "actionType": "CALL_WEBHOOK",
                        "parameters": {**WEBHOOK, "url": "ftp://files.example.com"},
                    },
                ]
            },
            "actions.2.parameters.url",
        ),
        (
            {
                "actions": [
                    {"actionType": "SEND_NOTIFICATION", "parameters": {"title": "no recipients"}}
                ]
            },
            "actions.0.parameters.recipients",
        ),
        (
            {"actions": [{"actionType": "UPDATE_RECORD", "parameters": [1, 2]}]},
            "actions.0.parameters",
        ),
    ],
)
def test_each_validation_error_has_its_path_and_writes_nothing(
    gql, editor, organization, overrides, path
):
    AutomationRuleFactory(organization=organization, name="Taken")
    before = row_counts()
    answer = gql(CREATE, {"input": rule_input(organization, **overrides)}, token=editor)
    error = answer.error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert path in error["extensions"]["fields"], error["extensions"]["fields"]
    assert all(error["extensions"]["fields"][path])
    assert answer.data is None
    assert row_counts() == before


def stock_leaf(value=1):
    return {"field": "stock", "operator": "EQUALS", "value": value}


def groups_of(leaves_per_group: list[int]) -> dict:
    """A top-level OR group holding one subgroup per entry, each with that many leaves."""
    return {
        "logic": "OR",
        "groups": [
            {"conditions": [stock_leaf(n) for n in range(count)]} for count in leaves_per_group
        ],
    }


def chain_of_groups(levels: int) -> dict:
    tree = {"conditions": [stock_leaf()]}
    for _ in range(levels):
        tree = {"logic": "OR", "groups": [tree]}
    return tree


@pytest.mark.parametrize(
    ("conditions", "path", "setting"),
    [
        (
            groups_of([1] * 100),
            "conditions",
            "AUTOMATION_CONDITIONS_MAX_GROUPS",
        ),  # 101 with the top
        (groups_of([100, 101]), "conditions", "AUTOMATION_CONDITIONS_MAX_LEAVES"),  # 201 in all
        (chain_of_groups(11), "conditions" + ".groups.0" * 11, "AUTOMATION_CONDITIONS_MAX_DEPTH"),
    ],
    ids=["groups", "leaves", "depth"],
)
def test_a_condition_tree_over_a_bound_is_refused_naming_it(
    gql, editor, organization, conditions, path, setting
):
    before = row_counts()
    answer = gql(CREATE, {"input": rule_input(organization, conditions=conditions)}, token=editor)
    error = answer.error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert setting in " ".join(error["extensions"]["fields"][path]), error["extensions"]["fields"]
    assert row_counts() == before


def test_a_condition_tree_at_every_bound_is_accepted(gql, editor, organization):
    # The top-level group, a chain of 10 levels below it and 89 more groups: 100 groups.
    at_the_bounds = groups_of([1] * 89)
    at_the_bounds["groups"].append(chain_of_groups(9))
    # 89 + 1 leaves in the subgroups, 110 in the top-level group: 200 in all.
    at_the_bounds["conditions"] = [stock_leaf(n) for n in range(110)]
    rule = gql(
        CREATE, {"input": rule_input(organization, conditions=at_the_bounds)}, token=editor
    ).ok()["createRule"]
    stored = AutomationRule.objects.get(pk=rule["id"])
    assert stored.condition_groups.count() == 100
    assert stored.conditions.count() == 200


def test_update_validation_error_changes_nothing(gql, editor, organization):
    created = gql(CREATE, {"input": rule_input(organization)}, token=editor).ok()["createRule"]
    before = row_counts()
    answer = gql(
        UPDATE,
        {
            "id": created["id"],
            "input": {
                "name": "Renamed",
                "conditions": {"conditions": [{"field": "nope", "operator": "EQUALS", "value": 1}]},
                "actions": [
                    {"actionType": "CALL_WEBHOOK", "parameters": {**WEBHOOK, "timeoutSeconds": -1}}
                ],
            },
        },
        token=editor,
    )
    fields = answer.error()["extensions"]["fields"]
    assert "conditions.conditions.0.field" in fields
    assert "actions.0.parameters.timeoutSeconds" in fields
    assert row_counts() == before
    assert gql(READ, {"id": created["id"]}, token=editor).ok()["rule"] == created


def test_changing_the_model_revalidates_the_kept_conditions(gql, editor, organization):
    created = gql(CREATE, {"input": rule_input(organization, actions=[])}, token=editor).ok()[
        "createRule"
    ]
    fields = gql(
        UPDATE,
        {"id": created["id"], "input": {"model": "catalog.category", "watchedFields": []}},
        token=editor,
    ).error()["extensions"]["fields"]
    # "status" is not a field of a category: the kept condition is reported under its path.
    assert "conditions.conditions.0.field" in fields


def echoed_actions(rule) -> list[dict]:
    """The actions as a client sends them back after reading them (secrets masked)."""
    return [
        {
            "actionType": a["actionType"],
            "parameters": a["parameters"],
            "continueOnFailure": a["continueOnFailure"],
        }
        for a in rule["actions"]
    ]


def test_secrets_are_masked_and_survive_an_update_that_echoes_the_mask(gql, editor, organization):
    created = gql(CREATE, {"input": rule_input(organization)}, token=editor).ok()["createRule"]
    shown = created["actions"][2]["parameters"]
    assert shown["secret"] == "********"
    assert shown["headers"] == {"X-Api-Key": "********"}
    assert shown["url"] == WEBHOOK["url"]
    read = gql(READ, {"id": created["id"]}, token=editor).ok()["rule"]
    assert read["actions"][2]["parameters"]["secret"] == "********"

    # The client edits the body and the timeout, and sends the rest back as it read it (masked).
    echoed = echoed_actions(read)
    echoed[2]["parameters"] = {
        **echoed[2]["parameters"],
        "body": {"id": "{{ object.id }}"},
        "timeoutSeconds": 5,
    }
    updated = gql(UPDATE, {"id": created["id"], "input": {"actions": echoed}}, token=editor).ok()
    assert updated["updateRule"]["actions"][2]["parameters"]["secret"] == "********"
    stored = AutomationRule.objects.get(pk=created["id"]).actions.get(order=2).parameters
    assert stored == {**WEBHOOK, "body": {"id": "{{ object.id }}"}, "timeoutSeconds": 5}

    # A new value replaces the secret.
    echoed[2]["parameters"] = {**echoed[2]["parameters"], "secret": "rotated"}
    gql(UPDATE, {"id": created["id"], "input": {"actions": echoed}}, token=editor).ok()
    assert (
        AutomationRule.objects.get(pk=created["id"]).actions.get(order=2).parameters["secret"]
        == "rotated"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"url": "https://attacker.example.net/collect"}, "The url changed"),
        ({"method": "PUT"}, "The method changed"),
        ({"url": "https://hooks.example.com/v2", "method": "GET"}, "The url and method changed"),
    ],
)
def test_a_masked_secret_is_not_kept_for_a_new_destination(
    gql, editor, organization, change, reason
):
    """An EDITOR who points the webhook elsewhere must type its secrets again: the masks would
    otherwise send the stored signing key and header values to the new destination."""
    created = gql(CREATE, {"input": rule_input(organization)}, token=editor).ok()["createRule"]
    echoed = echoed_actions(created)
    echoed[2]["parameters"] = {**echoed[2]["parameters"], **change}
    before = row_counts()

    error = gql(UPDATE, {"id": created["id"], "input": {"actions": echoed}}, token=editor).error()

    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    fields = error["extensions"]["fields"]
    assert set(fields) == {"actions.2.parameters.secret", "actions.2.parameters.headers.X-Api-Key"}
    for messages in fields.values():
        assert messages == [f"{reason}: send this secret again."]
    assert row_counts() == before
    assert gql(READ, {"id": created["id"]}, token=editor).ok()["rule"] == created
    stored = AutomationRule.objects.get(pk=created["id"]).actions.get(order=2).parameters
    assert stored == WEBHOOK

    # With the secrets sent again, the change goes through.
    echoed[2]["parameters"].update(secret="new-key", headers={"X-Api-Key": "new-header"})
    gql(UPDATE, {"id": created["id"], "input": {"actions": echoed}}, token=editor).ok()
    stored = AutomationRule.objects.get(pk=created["id"]).actions.get(order=2).parameters
    assert stored == {
        **WEBHOOK,
        **change,
        "secret": "new-key",
        "headers": {"X-Api-Key": "new-header"},
    }


def test_a_masked_secret_moved_to_another_position_is_not_kept(gql, editor, organization):
    """The mask is matched by position: a webhook moved to where another action type was gets
    no stored secret, and the mask is refused."""
    created = gql(CREATE, {"input": rule_input(organization)}, token=editor).ok()["createRule"]
    echoed = echoed_actions(created)
    echoed.insert(0, echoed.pop(2))
    fields = gql(UPDATE, {"id": created["id"], "input": {"actions": echoed}}, token=editor).error()[
        "extensions"
    ]["fields"]
    assert set(fields) == {"actions.0.parameters.secret", "actions.0.parameters.headers.X-Api-Key"}
    assert all("send it again" in messages[0] for messages in fields.values()), fields
    stored = AutomationRule.objects.get(pk=created["id"]).actions.get(order=2).parameters
    assert stored == WEBHOOK


def test_rules_sorted_by_name_with_offset_and_limit(gql, editor, organization):
    for name in ["b", "c", "a", "d"]:
        AutomationRuleFactory(organization=organization, name=name)
    query = "query($o: Int, $l: Int) { rules(offset: $o, limit: $l) { name } }"
    assert [r["name"] for r in gql(query, {"o": 1, "l": 2}, token=editor).ok()["rules"]] == [
        "b",
        "c",
    ]
    error = gql(query, {"o": 0, "l": 201}, token=editor).error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert "limit" in error["extensions"]["fields"]


def test_rules_filters(gql, editor, organization):
    AutomationRuleFactory(organization=organization, name="on", is_active=True)
    AutomationRuleFactory(organization=organization, name="off", is_active=False)
    AutomationRuleFactory(organization=organization, name="cron", schedule_rule=True)
    query = "query($a: Boolean, $t: TriggerType) { rules(isActive: $a, triggerType: $t) { name } }"
    assert [r["name"] for r in gql(query, {"a": False}, token=editor).ok()["rules"]] == ["off"]
    assert [r["name"] for r in gql(query, {"t": "SCHEDULE"}, token=editor).ok()["rules"]] == [
        "cron"
    ]


# --- Save-time validation of values, operators and templates ---------------------------------------

NO_VALUE = object()


def only_leaf(field, operator, value=NO_VALUE):
    leaf = {"field": field, "operator": operator}
    if value is not NO_VALUE:
        leaf["value"] = value
    return {"conditions": [leaf]}


def only_action(action_type, parameters):
    return [{"actionType": action_type, "parameters": parameters}]


CREATED_RULE = {"triggerEvent": "CREATED", "watchedFields": []}
DELETED_RULE = {"triggerEvent": "DELETED", "watchedFields": []}

# (overrides of rule_input, the one error path, the start of its one message): each case of
# issue 12's list, which used to be saved and then SKIPPED as "Conditions not met." at run time.
REFUSED_AT_SAVE = [
    (
        {"conditions": only_leaf("stock", "LESS_THAN", "five")},
        "conditions.conditions.0.value",
        "'five' cannot be compared with stock (IntegerField).",
    ),
    (
        {"conditions": only_leaf("status", "EQUALS", "SOLD_OUT")},
        "conditions.conditions.0.value",
        '"SOLD_OUT" is not a choice of status (DRAFT, ACTIVE, DISCONTINUED).',
    ),
    (
        {"conditions": only_leaf("stock", "CONTAINS", 5)},
        "conditions.conditions.0.operator",
        "CONTAINS applies to text fields; stock is IntegerField.",
    ),
    (
        {"conditions": only_leaf("stock", "LESS_THAN")},
        "conditions.conditions.0.value",
        "LESS_THAN needs a value.",
    ),
    (
        {"conditions": only_leaf("created_at", "GREATER_THAN", "yesterday")},
        "conditions.conditions.0.value",
        "'yesterday' cannot be compared with created_at (DateTimeField). A date-time value is "
        'ISO 8601 ("2026-01-31T09:00:00Z") or relative to the evaluation: "now", or a signed',
    ),
    (
        {"conditions": only_leaf("price", "CHANGED_TO", "cheap")},
        "conditions.conditions.0.value",
        "'cheap' cannot be compared with price (DecimalField).",
    ),
    (
        {"conditions": only_leaf("status", "CHANGED", "ACTIVE")},
        "conditions.conditions.0.value",
        "CHANGED takes no value: leave it out (or null).",
    ),
    (
        {"conditions": only_leaf("description", "IS_NULL", "")},
        "conditions.conditions.0.value",
        "IS_NULL takes no value: leave it out (or null).",
    ),
    (
        {**CREATED_RULE, "conditions": only_leaf("status", "CHANGED")},
        "conditions.conditions.0.operator",
        "CHANGED is true of every field set on a CREATED rule (on CREATED every set field counts "
        "as changed from null): use IS_NOT_NULL.",
    ),
    (
        {"actions": only_action("UPDATE_RECORD", {"fields": {"stock": "lots"}})},
        "actions.0.parameters.fields.stock",
        "“lots” value must be an integer.",
    ),
    (
        {"actions": only_action("UPDATE_RECORD", {"fields": {"status": "SOLD_OUT"}})},
        "actions.0.parameters.fields.status",
        '"SOLD_OUT" is not a choice of status (DRAFT, ACTIVE, DISCONTINUED).',
    ),
    (
        {"actions": only_action("UPDATE_RECORD", {"fields": {"description": "{{ object.nam }}"}})},
        "actions.0.parameters.fields.description",
        "Template variable 'object.nam' does not resolve: catalog.product has no readable field "
        "'nam'. Did you mean 'name'?",
    ),
    # Beyond the list: the same checks in other places.
    (
        {"conditions": {"groups": [only_leaf("category__products__stock", "GREATER_THAN", "a")]}},
        "conditions.groups.0.conditions.0.value",
        "'a' cannot be compared with stock (IntegerField).",
    ),
    (
        {"conditions": only_leaf("created_at", "LESS_THAN", "-P7X")},
        "conditions.conditions.0.value",
        "created_at: '-P7X' is not a relative date: use \"now\", or a signed ISO 8601 duration",
    ),
    (
        {"conditions": only_leaf("created_at", "LESS_THAN", "-P9999Y")},
        "conditions.conditions.0.value",
        "created_at: '-P9999Y' reaches outside the calendar (years 1 to 9999).",
    ),
    (
        {**CREATED_RULE, "conditions": only_leaf("status", "CHANGED_FROM", "DRAFT")},
        "conditions.conditions.0.operator",
        "CHANGED_FROM does not apply to a CREATED rule",
    ),
    (
        {**DELETED_RULE, "conditions": only_leaf("status", "CHANGED_TO", "ACTIVE")},
        "conditions.conditions.0.operator",
        "CHANGED_TO does not apply to a DELETED rule: a deleted record has no changes.",
    ),
    (
        {
            "actions": [
                *three_actions()[:1],
                {
                    "actionType": "SEND_NOTIFICATION",
                    "parameters": {"recipients": {"roles": ["ADMIN"]}, "title": "{{ results.1 }}"},
                },
            ]
        },
        "actions.1.parameters.title",
        "Template variable 'results.1' does not resolve: 'results.N' is the result of an earlier "
        "action (here results.0 to results.0).",
    ),
    (
        {
            "triggerType": "SCHEDULE",
            "model": None,
            "triggerEvent": None,
            "watchedFields": [],
            "schedule": "0 * * * *",
            "conditions": None,
            "actions": only_action(
                "SEND_NOTIFICATION",
                {"recipients": {"roles": ["ADMIN"]}, "title": "{{ object.name }}"},
            ),
        },
        "actions.0.parameters.title",
        "This rule has no model, so its runs have no record: 'object.name' does not resolve.",
    ),
    (
        {
            "actions": only_action(
                "DELETE_RECORD", {"target": {"model": "catalog.product", "lookup": {"id": "x"}}}
            )
        },
        "actions.0.parameters.target.lookup.id",
        "“x” value must be an integer.",
    ),
]


@pytest.mark.parametrize(("overrides", "path", "message"), REFUSED_AT_SAVE)
def test_a_value_no_run_could_use_is_refused_at_save_with_its_path(
    gql, editor, organization, overrides, path, message
):
    before = row_counts()
    answer = gql(CREATE, {"input": rule_input(organization, **overrides)}, token=editor)
    error = answer.error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    fields = error["extensions"]["fields"]
    assert list(fields) == [path], fields
    (reported,) = fields[path]
    assert reported.startswith(message), reported
    assert answer.data is None
    assert row_counts() == before


def test_legitimate_values_operators_and_templates_are_accepted(gql, editor, organization):
    conditions = {
        "conditions": [
            {"field": "stock", "operator": "LESS_THAN", "value": "5"},
            {"field": "status", "operator": "IN", "value": ["ACTIVE", "DRAFT"]},
            {"field": "price", "operator": "GREATER_THAN", "value": "9.99"},
            {"field": "price", "operator": "LESS_THAN", "value": 100.5},
            {"field": "created_at", "operator": "GREATER_THAN", "value": "2026-01-31T09:00:00Z"},
            {"field": "created_at", "operator": "LESS_THAN", "value": "-P7D"},
            {"field": "updated_at", "operator": "GREATER_THAN_OR_EQUAL", "value": "-PT2H30M"},
            {"field": "updated_at", "operator": "LESS_THAN_OR_EQUAL", "value": "now"},
            {"field": "category__name", "operator": "ICONTAINS", "value": "tools"},
            {"field": "status", "operator": "CHANGED_TO", "value": "ACTIVE"},
            {"field": "description", "operator": "IS_NOT_NULL"},
        ]
    }
    actions = [
        {
            "actionType": "UPDATE_RECORD",
            "parameters": {
                "fields": {
                    "stock": "5",
                    "price": 9.99,
                    "status": "ACTIVE",
                    "description": "{{ changes.status.old }} -> {{ object.name }}",
                }
            },
        },
        {
            "actionType": "SEND_NOTIFICATION",
            "parameters": {
                "recipients": {"roles": ["ADMIN"]},
                "title": "{{ rule.name }}: {{ results.0.id }} at {{ now }} ({{ event }})",
            },
        },
    ]
    created = gql(
        CREATE,
        {"input": rule_input(organization, conditions=conditions, actions=actions)},
        token=editor,
    ).ok()["createRule"]
    stored = created["conditions"]["conditions"]
    assert [leaf["value"] for leaf in stored][5:8] == ["-P7D", "-PT2H30M", "now"]
    # CHANGED_TO stays allowed on CREATED rules: every field set counts as changed from null.
    on_created = {
        **CREATED_RULE,
        "name": "On created",
        "conditions": only_leaf("status", "CHANGED_TO", "ACTIVE"),
    }
    gql(CREATE, {"input": rule_input(organization, **on_created)}, token=editor).ok()


def test_kept_conditions_are_checked_against_a_changed_trigger_event(gql, editor, organization):
    created = gql(
        CREATE,
        {"input": rule_input(organization, conditions=only_leaf("status", "CHANGED"))},
        token=editor,
    ).ok()["createRule"]
    before = row_counts()
    error = gql(UPDATE, {"id": created["id"], "input": DELETED_RULE}, token=editor).error()
    assert error["extensions"]["fields"] == {
        "conditions.conditions.0.operator": [
            "CHANGED does not apply to a DELETED rule: a deleted record has no changes."
        ]
    }
    assert row_counts() == before
    assert gql(READ, {"id": created["id"]}, token=editor).ok()["rule"] == created


DRY_RUN = """mutation($id: ID!, $obj: ID) {
  runRule(id: $id, objectId: $obj, dryRun: true) {
    status conditionsMet error conditionTrace { expected resolvedExpected passed error }
  }
}"""


def test_a_relative_date_is_resolved_when_the_rule_runs(gql, editor, organization):
    rule = gql(
        CREATE,
        {
            "input": rule_input(
                organization,
                triggerType="MANUAL",
                triggerEvent=None,
                watchedFields=[],
                conditions=only_leaf("created_at", "LESS_THAN", "-P7D"),
                actions=[],
            )
        },
        token=editor,
    ).ok()["createRule"]
    product = ProductFactory(organization=organization)
    variables = {"id": rule["id"], "obj": str(product.pk)}
    with time_machine.travel(product.created_at + datetime.timedelta(days=6), tick=False):
        young = gql(DRY_RUN, variables, token=editor).ok()["runRule"]
    assert (young["status"], young["conditionsMet"]) == ("SKIPPED", False)
    assert young["error"] == "Conditions not met."
    evaluated_at = product.created_at + datetime.timedelta(days=8)
    with time_machine.travel(evaluated_at, tick=False):
        old = gql(DRY_RUN, variables, token=editor).ok()["runRule"]
    assert (old["status"], old["conditionsMet"]) == ("SUCCEEDED", True)
    (entry,) = old["conditionTrace"]
    assert entry["expected"] == "-P7D"
    week_before = evaluated_at - datetime.timedelta(days=7)
    assert entry["resolvedExpected"] == week_before.astimezone(datetime.UTC).isoformat()
