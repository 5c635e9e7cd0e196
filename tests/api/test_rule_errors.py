"""Errors, all at once (issue 23): one save reports every mistake of a rule in one VALIDATION_ERROR,
each at its input path, and the messages say what was meant: close names for field paths and
models, the cron field that is wrong, the choices of a bad choice, the id for a foreign key given
a name, the role PERMISSION_DENIED needs."""

import pytest

from accounts.choices import Role
from tests.api.test_rules import row_counts
from tests.factories import CategoryFactory

pytestmark = pytest.mark.django_db

CREATE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"


def rule_input(organization, **overrides):
    return {
        "organization": str(organization.pk),
        "name": "Low stock",
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "watchedFields": ["stock"],
        "conditions": {"conditions": [{"field": "stock", "operator": "LESS_THAN", "value": 5}]},
        "actions": [
            {
                "actionType": "UPDATE_RECORD",
                "parameters": {"fields": {"description": "Low: {{ object.stock }}"}},
            }
        ],
        **overrides,
    }


def fields_of(answer) -> dict:
    error = answer.error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR", error
    return error["extensions"]["fields"]


# Mistakes that used to come in rounds: an action's parameters with a schema error were not
# checked any further (its templates, fields and URL waited for the next save), and a condition
# whose operator the trigger refuses did not have its value checked.
MISTAKES = {
    "timezone": "Mars/Base",
    "watchedFields": ["stok"],
    "conditions": {
        "conditions": [
            {"field": "stok", "operator": "LESS_THAN", "value": 5},
            {"field": "stock", "operator": "CHANGED_FROM", "value": "five"},
            {"field": "category", "operator": "EQUALS", "value": "Garden"},
        ]
    },
    "actions": [
        {
            "actionType": "UPDATE_RECORD",
            "parameters": {
                "fields": {"stok": 1, "status": "SOLD_OUT", "description": "{{ object.nam }}"},
                "extra": 1,
            },
        },
        {
            "actionType": "SEND_NOTIFICATION",
            "parameters": {
                "recipients": {"roles": ["BOSS"]},
                "title": "{{ object.nam }}",
                "body": 5,
            },
        },
        {
            "actionType": "CALL_WEBHOOK",
            "parameters": {"url": "ftp://hooks.example.com", "method": "FETCH"},
        },
    ],
}

EVERY_MISTAKE = {
    "timezone": ['"Mars/Base" is not an IANA time zone (e.g. "Europe/Paris").'],
    "watchedFields": ["Only UPDATED rules watch fields."],
    "conditions.conditions.0.field": [
        '"stok" is not a readable field of catalog.product. Did you mean "stock"?'
    ],
    "conditions.conditions.1.operator": [
        "CHANGED_FROM does not apply to a CREATED rule: a new record's fields always change from "
        "null. Use IS_NOT_NULL, or CHANGED_TO or EQUALS for the new value."
    ],
    "conditions.conditions.1.value": ["'five' cannot be compared with stock (IntegerField)."],
    "conditions.conditions.2.value": [
        "'Garden' is not an id: category refers to a catalog.category by its id, so compare it "
        'with the id (a number), or compare "category__name" with the name.'
    ],
    "actions.0.parameters.extra": ["Unknown parameter."],
    "actions.0.parameters.fields.stok": [
        '"stok" is not a writable field of catalog.product. Did you mean "stock"?'
    ],
    "actions.0.parameters.fields.status": [
        '"SOLD_OUT" is not a choice of status (DRAFT, ACTIVE, DISCONTINUED).'
    ],
    "actions.0.parameters.fields.description": [
        "Template variable 'object.nam' does not resolve: catalog.product has no readable field "
        "'nam'. Did you mean 'name'?"
    ],
    "actions.1.parameters.recipients.roles.0": ['"BOSS" is not one of ADMIN, EDITOR, VIEWER.'],
    "actions.1.parameters.body": ["Expected text, not a number."],
    "actions.1.parameters.title": [
        "Template variable 'object.nam' does not resolve: catalog.product has no readable field "
        "'nam'. Did you mean 'name'?"
    ],
    "actions.2.parameters.method": ['"FETCH" is not one of GET, POST, PUT, PATCH, DELETE.'],
    "actions.2.parameters.url": [
        "Invalid URL 'ftp://hooks.example.com': only http and https URLs can be called."
    ],
}

FIXED = {
    "timezone": "Europe/Paris",
    "watchedFields": [],
    "conditions": {
        "conditions": [
            {"field": "stock", "operator": "LESS_THAN", "value": 5},
            {"field": "stock", "operator": "CHANGED_TO", "value": 5},
            {"field": "category__name", "operator": "EQUALS", "value": "Garden"},
        ]
    },
    "actions": [
        {
            "actionType": "UPDATE_RECORD",
            "parameters": {
                "fields": {"stock": 1, "status": "DRAFT", "description": "{{ object.name }}"}
            },
        },
        {
            "actionType": "SEND_NOTIFICATION",
            "parameters": {
                "recipients": {"roles": ["ADMIN"]},
                "title": "{{ object.name }}",
                "body": "5",
            },
        },
        {
            "actionType": "CALL_WEBHOOK",
            "parameters": {"url": "https://hooks.example.com", "method": "POST"},
        },
    ],
}


def test_one_save_reports_every_mistake_and_fixing_them_leaves_none(gql, editor, organization):
    before = row_counts()
    answer = gql(
        CREATE,
        {"input": rule_input(organization, triggerEvent="CREATED", **MISTAKES)},
        token=editor,
    )
    assert fields_of(answer) == EVERY_MISTAKE
    assert row_counts() == before
    # Fixing exactly what was reported is enough: no second round of errors.
    gql(
        CREATE, {"input": rule_input(organization, triggerEvent="CREATED", **FIXED)}, token=editor
    ).ok()


def test_an_unknown_model_is_named_once_with_the_model_meant(gql, editor, organization):
    answer = gql(CREATE, {"input": rule_input(organization, model="catalog.prodct")}, token=editor)
    # Its conditions and actions are not also told "this rule has no model".
    assert fields_of(answer) == {
        "model": ['"catalog.prodct" is not an automatable model. Did you mean "catalog.product"?']
    }


def test_a_field_the_model_has_but_rules_may_not_read_gets_no_guess(gql, editor, organization):
    conditions = {"conditions": [{"field": "created_by", "operator": "IS_NULL"}]}
    answer = gql(CREATE, {"input": rule_input(organization, conditions=conditions)}, token=editor)
    assert fields_of(answer) == {
        "conditions.conditions.0.field": [
            '"created_by" is not a readable field of catalog.product.'
        ]
    }


@pytest.mark.parametrize(
    ("schedule", "messages"),
    [
        (
            "61 * * * *",
            [
                '"61 * * * *" is not a valid cron expression: its minute field takes 0-59 (or a '
                'list "1,15", a range "1-5", a step "*/10"), not "61".'
            ],
        ),
        (
            "0 25 * JANUARY *",
            [
                '"0 25 * JANUARY *" is not a valid cron expression: its hour field takes 0-23 (or '
                'a list "1,15", a range "1-5", a step "*/10"), not "25".',
                '"0 25 * JANUARY *" is not a valid cron expression: its month field takes 1-12 or '
                'JAN-DEC (or a list "1,15", a range "1-5", a step "*/10"), not "JANUARY".',
            ],
        ),
        (
            "0 9 * * funday",
            [
                '"0 9 * * funday" is not a valid cron expression: its day of the week field takes '
                '0-6 (0 and 7 are Sunday) or SUN-SAT (or a list "1,15", a range "1-5", a step '
                '"*/10"), not "funday".'
            ],
        ),
    ],
)
def test_a_bad_cron_says_which_of_its_fields_is_wrong(
    gql, editor, organization, schedule, messages
):
    schedule_rule = rule_input(
        organization,
        triggerType="SCHEDULE",
        model=None,
        triggerEvent=None,
        watchedFields=[],
        conditions=None,
        actions=[],
        schedule=schedule,
    )
    answer = gql(CREATE, {"input": schedule_rule}, token=editor)
    assert fields_of(answer) == {"schedule": messages}


def test_a_foreign_key_given_a_name_asks_for_the_id_in_actions_too(gql, editor, organization):
    CategoryFactory(organization=organization, name="Garden")
    actions = [
        {"actionType": "UPDATE_RECORD", "parameters": {"fields": {"category": "Garden"}}},
        {
            "actionType": "DELETE_RECORD",
            "parameters": {
                "target": {"model": "catalog.product", "lookup": {"category": "Garden"}}
            },
        },
    ]
    answer = gql(CREATE, {"input": rule_input(organization, actions=actions)}, token=editor)
    message = "'Garden' is not an id: category takes the id of a catalog.category (a number), not its name."
    assert fields_of(answer) == {
        "actions.0.parameters.fields.category": [message],
        "actions.1.parameters.target.lookup.category": [message],
    }


def test_a_dry_run_record_with_a_name_for_a_foreign_key_asks_for_the_id(gql, editor, organization):
    rule = gql(CREATE, {"input": rule_input(organization, actions=[])}, token=editor).ok()
    answer = gql(
        """mutation($id: ID!, $record: JSON) {
          runRule(id: $id, dryRun: true, record: $record) { id }
        }""",
        {"id": rule["createRule"]["id"], "record": {"category": "Garden", "stock": 1}},
        token=editor,
    )
    assert fields_of(answer) == {
        "record.category": [
            "'Garden' is not an id: category refers to a catalog.category by its id, so compare "
            'it with the id (a number), or compare "category__name" with the name.'
        ]
    }


@pytest.mark.parametrize(
    ("role", "query", "needed"),
    [
        (Role.VIEWER, "createRule", "EDITOR or ADMIN"),
        (Role.EDITOR, "addMember", "ADMIN"),
    ],
)
def test_permission_denied_says_which_role_is_needed(
    gql, organization, make_member, role, query, needed
):
    member = make_member(organization, role)
    documents = {
        "createRule": (CREATE, {"input": rule_input(organization)}),
        "addMember": (
            'mutation($org: ID!) { addMember(organization: $org, username: "bob", role: VIEWER) '
            "{ id } }",
            {"org": str(organization.pk)},
        ),
    }
    document, variables = documents[query]
    error = gql(document, variables, token=member).error()
    assert error["message"] == (
        f"This needs the {needed} role in this organization; yours is {role}."
    )
    assert error["extensions"] == {
        "code": "PERMISSION_DENIED",
        "requiredRole": needed.split(" or ")[0],
        "role": str(role),
    }
