"""Template functions over HTTP: what a rule's placeholders compute in a dry run, what is
refused at save with its input path (a placeholder's kind against the field it fills, filters
and their arguments), and what fails the action at run time."""

import zoneinfo

import pytest

from automation.core.models import AutomationRule
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

CREATE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
DRY_RUN = """mutation($id: ID!, $obj: ID) {
  runRule(id: $id, objectId: $obj, dryRun: true) {
    status error actionLogs { status result error }
  }
}"""


def rule_input(organization, actions, **fields):
    return {
        "organization": str(organization.pk),
        "name": "Templates",
        "triggerType": "MANUAL",
        "model": "catalog.product",
        "timezone": "Europe/Paris",
        "actions": actions,
        **fields,
    }


def update(fields):
    return {"actionType": "UPDATE_RECORD", "parameters": {"fields": fields}}


def test_typed_values_fill_typed_fields(gql, editor, organization):
    rule = gql(
        CREATE,
        {
            "input": rule_input(
                organization,
                [
                    update(
                        {
                            "stock": "{{ object.stock + 5 }}",
                            "price": "{{ object.price * 1.1 | round(2) }}",
                            "name": "{{ object.name | upper }}",
                            "description": "{{ object.description | default('none') | length }} "
                            "chars, made {{ object.created_at | date('%d %B %Y') }}",
                        }
                    )
                ],
            )
        },
        token=editor,
    ).ok()["createRule"]
    product = ProductFactory(
        organization=organization, name="Lamp", stock=3, price="12.50", description=""
    )
    dry = gql(DRY_RUN, {"id": rule["id"], "obj": str(product.pk)}, token=editor).ok()["runRule"]
    assert dry["status"] == "SUCCEEDED", dry
    made = product.created_at.astimezone(zoneinfo.ZoneInfo("Europe/Paris"))
    assert dry["actionLogs"][0]["result"]["fields"] == {
        "stock": 8,
        "price": 13.75,
        "name": "LAMP",
        "description": f"0 chars, made {made:%d %B %Y}",
    }


REFUSED = [
    (
        update({"stock": "{{ object.name }}"}),
        "actions.0.parameters.fields.stock",
        "'{{ object.name }}' gives text, and stock (IntegerField) takes a whole number.",
    ),
    (
        update({"stock": "{{ object.price }}"}),
        "actions.0.parameters.fields.stock",
        "'{{ object.price }}' gives a decimal number (as text), and stock (IntegerField) "
        "takes a whole number. Round it: | round.",
    ),
    (
        update({"price": "{{ object.created_at }}"}),
        "actions.0.parameters.fields.price",
        "'{{ object.created_at }}' gives a date-time (as text), and price (DecimalField) takes a "
        "number.",
    ),
    (
        update({"category": "{{ object.name | lower }}"}),
        "actions.0.parameters.fields.category",
        "'{{ object.name | lower }}' gives text, and category (ForeignKey) takes the id of a "
        "related record.",
    ),
    (
        update({"description": "{{ object.name | uper }}"}),
        "actions.0.parameters.fields.description",
        "In '{{ object.name | uper }}': Unknown filter 'uper': filters are abs, add_duration, "
        "date, default, join, length, lower, round, upper. Did you mean 'upper'?",
    ),
    (
        update({"description": "{{ object.name | round(2) }}"}),
        "actions.0.parameters.fields.description",
        "In '{{ object.name | round(2) }}': round applies to numbers; 'object.name' gives text.",
    ),
    (
        update({"description": "Half: {{ object.stock / 0 }}"}),
        "actions.0.parameters.fields.description",
        "In '{{ object.stock / 0 }}': Division by zero: '0' is 0.",
    ),
    (
        {
            "actionType": "SEND_NOTIFICATION",
            "parameters": {
                "recipients": {"roles": ["ADMIN"]},
                "title": "Due {{ now | add_duration('P7X') }}",
            },
        },
        "actions.0.parameters.title",
        "In '{{ now | add_duration('P7X') }}': add_duration(duration): 'P7X' is not an ISO 8601 "
        "duration",
    ),
    (
        {
            "actionType": "CALL_WEBHOOK",
            "parameters": {
                "url": "https://hooks.example.com/{{ object.id | date('%Q') }}",
            },
        },
        "actions.0.parameters.url",
        "In '{{ object.id | date('%Q') }}': date(format): '%Q' is not a date directive",
    ),
    (
        {
            "actionType": "DELETE_RECORD",
            "parameters": {
                "target": {"model": "catalog.product", "lookup": {"id": "{{ object.name + 1 }}"}}
            },
        },
        "actions.0.parameters.target.lookup.id",
        "In '{{ object.name + 1 }}': '+' applies to numbers; 'object.name' gives text.",
    ),
]


@pytest.mark.parametrize(("action", "path", "message"), REFUSED)
def test_what_no_run_could_compute_is_refused_at_save_with_its_path(
    gql, editor, organization, action, path, message
):
    error = gql(CREATE, {"input": rule_input(organization, [action])}, token=editor).error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    fields = error["extensions"]["fields"]
    assert list(fields) == [path], fields
    (reported,) = fields[path]
    assert reported.startswith(message), reported
    assert not AutomationRule.objects.exists()


def test_what_cannot_be_known_at_save_is_allowed_and_fails_the_action_at_run_time(
    gql, editor, organization
):
    """The values a record holds when the run renders them (like a webhook's payload or an
    earlier result) are checked then: the action fails naming the placeholder."""
    rule = gql(
        CREATE,
        {
            "input": rule_input(
                organization,
                [
                    {
                        **update({"description": "{{ object.stock / object.stock }}"}),
                        "continueOnFailure": True,
                    },
                    update({"description": "{{ object.description | date }}"}),
                ],
            )
        },
        token=editor,
    ).ok()["createRule"]
    product = ProductFactory(organization=organization, stock=0, description="soon")
    dry = gql(DRY_RUN, {"id": rule["id"], "obj": str(product.pk)}, token=editor).ok()["runRule"]
    assert dry["status"] == "FAILED"
    assert [entry["error"] for entry in dry["actionLogs"]] == [
        "fields: In '{{ object.stock / object.stock }}': Division by zero: 'object.stock' is 0.",
        "fields: In '{{ object.description | date }}': date applies to ISO 8601 dates and "
        "date-times; 'object.description' is text (\"soon\").",
    ]
