"""SEND_EMAIL (and SEND_NOTIFICATION's "email") as users meet them over GraphQL: what is refused
when a rule is saved, where, and that nothing is written then; a dry run that sends nothing."""

import pytest

from accounts.choices import Role
from tests.api.test_rules import CREATE, row_counts, rule_input
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


def email(**parameters):
    return {"actionType": "SEND_EMAIL", "parameters": parameters}


@pytest.mark.parametrize(
    ("parameters", "errors"),
    [
        ({"subject": "Hello"}, {"to": ["Name at least one address, username or role."]}),
        (
            {"to": ["not-an-address"], "subject": "Hello"},
            {"to.0": ['"not-an-address" is not a valid e-mail address.']},
        ),
        (
            {"to": ["a@example.com\nBcc: all@example.com"], "subject": "Hello"},
            {"to.0": ["An e-mail address cannot contain line breaks."]},
        ),
        (
            {"roles": ["ADMIN"], "subject": "Hello\r\nBcc: all@example.com"},
            {"subject": ["An e-mail subject is one line: no line breaks."]},
        ),
        (
            {"usernames": ["nobody"], "subject": "Hello"},
            {"usernames.0": ['"nobody" is not a member of this organization.']},
        ),
        (
            {"roles": ["OWNER"], "subject": "Hello"},
            {"roles.0": ['"OWNER" is not one of ADMIN, EDITOR, VIEWER.']},
        ),
        (
            {"to": ["{{ object.emial }}"], "subject": "{{ object.nam }}"},
            {
                "to.0": [
                    "Template variable 'object.emial' does not resolve: catalog.product has "
                    "no readable field 'emial'."
                ],
                "subject": [
                    "Template variable 'object.nam' does not resolve: catalog.product has no "
                    "readable field 'nam'. Did you mean 'name'?"
                ],
            },
        ),
        (
            {"to": [f"a{n}@example.com" for n in range(51)], "subject": "Hello"},
            {"to": ["A list of at most 50 different addresses."]},
        ),
        (
            {"roles": ["ADMIN"], "subject": "Hello", "cc": ["a@example.com"]},
            {"cc": ["Unknown parameter."]},
        ),
    ],
    ids=[
        "no-recipient",
        "bad-address",
        "header-injection-address",
        "header-injection-subject",
        "non-member",
        "unknown-role",
        "templates",
        "too-many",
        "unknown-parameter",
    ],
)
def test_a_bad_email_action_is_refused_at_its_path_and_nothing_is_written(
    gql, editor, organization, parameters, errors
):
    before = row_counts()
    answer = gql(
        CREATE, {"input": rule_input(organization, actions=[email(**parameters)])}, token=editor
    ).error()
    assert answer["extensions"]["code"] == "VALIDATION_ERROR"
    fields = answer["extensions"]["fields"]
    expected = {f"actions.0.parameters.{path}": messages for path, messages in errors.items()}
    assert fields == expected
    assert row_counts() == before


def test_a_notification_email_flag_must_be_true_or_false(gql, editor, organization):
    action = {
        "actionType": "SEND_NOTIFICATION",
        "parameters": {"recipients": {"roles": ["ADMIN"]}, "title": "t", "email": "yes"},
    }
    answer = gql(CREATE, {"input": rule_input(organization, actions=[action])}, token=editor)
    assert answer.error()["extensions"]["fields"] == {
        "actions.0.parameters.email": ["Expected true or false, not text."]
    }


def test_a_saved_email_rule_dry_runs_without_sending(
    gql, editor, organization, make_member, mailoutbox
):
    make_member(organization, Role.ADMIN, username="alice")
    product = ProductFactory(organization=organization, name="Lamp")
    action = email(
        to=["ops@example.com"], roles=["ADMIN"], subject="{{ object.name }}", body="Hello"
    )
    manual = rule_input(organization, triggerType="MANUAL", actions=[action])
    for key in ("triggerEvent", "watchedFields", "conditions"):
        manual.pop(key)
    rule = gql(CREATE, {"input": manual}, token=editor).ok()["createRule"]
    assert rule["actions"][0]["parameters"] == action["parameters"]

    dry = gql(
        """mutation($id: ID!, $obj: ID) { runRule(id: $id, objectId: $obj, dryRun: true) {
             status actionLogs { actionType status result } } }""",
        {"id": rule["id"], "obj": str(product.pk)},
        token=editor,
    ).ok()["runRule"]

    assert dry["status"] == "SUCCEEDED"
    assert dry["actionLogs"] == [
        {
            "actionType": "SEND_EMAIL",
            "status": "SUCCEEDED",
            "result": {
                "would": "email",
                "recipients": ["ops@example.com", "alice"],
                "skipped": [],
                "subject": "Lamp",
                "body": "Hello",
            },
        }
    ]
    assert mailoutbox == []
