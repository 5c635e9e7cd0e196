"""WEBHOOK rules over GraphQL: their URL and who reads it, rotateRuleWebhook, the write-only
signing secret, what their conditions and templates may read, and runRule with a payload."""

import json
import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.choices import Role
from automation.core.models import AutomationLog, AutomationRule
from config.asgi import application
from tests.factories import AutomationRuleFactory

pytestmark = pytest.mark.django_db

SECRET = "whsec-0123456789abcdef"
FIELDS = "id triggerType model revision webhookUrl webhookSecretSet"
CREATE = f"mutation($input: RuleInput!) {{ createRule(input: $input) {{ {FIELDS} }} }}"
UPDATE = (
    f"mutation($id: ID!, $input: RuleUpdateInput!) {{ updateRule(id: $id, input: $input) "
    f"{{ {FIELDS} }} }}"
)
READ = f"query($id: ID!) {{ rule(id: $id) {{ {FIELDS} }} }}"
ROTATE = f"mutation($id: ID!) {{ rotateRuleWebhook(id: $id) {{ {FIELDS} }} }}"
RUN = """mutation($id: ID!, $dry: Boolean, $payload: JSON) {
  runRule(id: $id, dryRun: $dry, payload: $payload) {
    id status trigger dryRun conditionsMet error context
    conditionTrace { field operator expected actual passed error }
    actionLogs { status result error }
  }
}"""
URL = re.compile(r"http://testserver/hooks/([A-Za-z0-9_-]{43})")


def webhook_input(organization, **fields) -> dict:
    return {
        "organization": str(organization.pk),
        "name": "Orders",
        "triggerType": "WEBHOOK",
        **fields,
    }


def create(gql, user, organization, **fields) -> dict:
    return gql(CREATE, {"input": webhook_input(organization, **fields)}, token=user).ok()[
        "createRule"
    ]


def test_a_webhook_rule_gets_an_unguessable_url_that_editors_and_admins_read(
    gql, editor, admin, viewer, organization
):
    rule = create(gql, editor, organization)
    assert (rule["triggerType"], rule["model"], rule["webhookSecretSet"]) == (
        "WEBHOOK",
        None,
        False,
    )
    token = URL.fullmatch(rule["webhookUrl"]).group(1)
    assert AutomationRule.objects.get(pk=rule["id"]).webhook_token == token
    assert (
        gql(READ, {"id": rule["id"]}, token=admin).ok()["rule"]["webhookUrl"]
        == (rule["webhookUrl"])
    )
    # The token runs the rule: a VIEWER, who may not run rules, does not read it.
    assert gql(READ, {"id": rule["id"]}, token=viewer).ok()["rule"]["webhookUrl"] is None
    other = create(gql, editor, organization, name="Other orders")
    assert other["webhookUrl"] != rule["webhookUrl"]


def test_other_rules_have_no_webhook_url(gql, editor, organization):
    rule = create(gql, editor, organization, triggerType="MANUAL")
    assert rule["webhookUrl"] is None
    assert AutomationRule.objects.get(pk=rule["id"]).webhook_token is None


def test_the_url_is_built_on_the_configured_base(gql, editor, organization, settings):
    settings.AUTOMATION_WEBHOOK_BASE_URL = "https://automation.example.com"
    rule = create(gql, editor, organization)
    assert re.fullmatch(
        r"https://automation\.example\.com/hooks/[A-Za-z0-9_-]{43}", rule["webhookUrl"]
    )


def test_the_signing_secret_is_write_only(gql, editor, organization):
    created = gql(
        CREATE, {"input": webhook_input(organization, webhookSecret=SECRET)}, token=editor
    )
    rule = created.ok()["createRule"]
    assert rule["webhookSecretSet"] is True
    assert SECRET not in json.dumps(created.body)
    full = gql(
        "query($id: ID!) { rule(id: $id) { id name description webhookUrl webhookSecretSet "
        "actions { parameters } conditions { logic } } }",
        {"id": rule["id"]},
        token=editor,
    )
    assert SECRET not in json.dumps(full.body)
    renamed = gql(UPDATE, {"id": rule["id"], "input": {"name": "Renamed"}}, token=editor)
    assert renamed.ok()["updateRule"]["webhookSecretSet"] is True  # kept when not given
    assert AutomationRule.objects.get(pk=rule["id"]).webhook_secret == SECRET
    cleared = gql(UPDATE, {"id": rule["id"], "input": {"webhookSecret": ""}}, token=editor)
    assert cleared.ok()["updateRule"]["webhookSecretSet"] is False


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"webhookSecret": "short"}, "webhookSecret", "at least 16 characters"),
        ({"webhookSecret": "x" * 201}, "webhookSecret", "at most 200 characters"),
        ({"triggerType": "MANUAL", "webhookSecret": SECRET}, "webhookSecret", "Only WEBHOOK"),
        ({"model": "catalog.product"}, "model", "A WEBHOOK rule has no model"),
        ({"triggerEvent": "CREATED"}, "triggerEvent", "Only EVENT rules"),
    ],
)
def test_a_webhook_rule_that_cannot_work_is_refused_and_nothing_written(
    gql, editor, organization, fields, path, message
):
    error = gql(CREATE, {"input": webhook_input(organization, **fields)}, token=editor).error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert message in " ".join(error["extensions"]["fields"][path])
    assert not AutomationRule.objects.exists()


def test_conditions_of_a_webhook_rule_test_payload_paths(gql, editor, organization):
    conditions = {
        "conditions": [
            {"field": "payload.order.total", "operator": "GREATER_THAN", "value": 100},
            {"field": "status", "operator": "EQUALS", "value": "ACTIVE"},
            {"field": "payload.order.id", "operator": "CHANGED_TO", "value": 1},
            {"field": "payload.order.currency", "operator": "STARTS_WITH", "value": 5},
            {"field": "payload.order.id", "operator": "IN", "value": [[1, 2]]},
        ]
    }
    error = gql(
        CREATE, {"input": webhook_input(organization, conditions=conditions)}, token=editor
    ).error()
    fields = error["extensions"]["fields"]
    assert sorted(fields) == [
        "conditions.conditions.1.field",
        "conditions.conditions.2.operator",
        "conditions.conditions.3.value",
        "conditions.conditions.4.value",
    ]
    assert "payload.order.total" in fields["conditions.conditions.1.field"][0]  # the form shown
    assert fields["conditions.conditions.2.operator"] == ["CHANGED_TO applies to EVENT rules only."]


def test_payload_paths_and_placeholders_belong_to_webhook_rules(gql, editor, organization):
    manual = webhook_input(
        organization,
        triggerType="MANUAL",
        conditions={"conditions": [{"field": "payload.a", "operator": "EQUALS", "value": 1}]},
        actions=[
            {
                "actionType": "SEND_NOTIFICATION",
                "parameters": {
                    "recipients": {"roles": ["ADMIN"]},
                    "title": "{{ payload.a }}",
                    "body": "",
                },
            }
        ],
    )
    fields = gql(CREATE, {"input": manual}, token=editor).error()["extensions"]["fields"]
    assert fields["conditions.conditions.0.field"] == [
        "Only the runs of WEBHOOK rules have a payload; this rule's conditions test its model's "
        "fields."
    ]
    assert (
        "Only the runs of WEBHOOK rules have a payload" in fields["actions.0.parameters.title"][0]
    )
    webhook = webhook_input(
        organization,
        actions=[
            {
                "actionType": "SEND_NOTIFICATION",
                "parameters": {
                    "recipients": {"roles": ["ADMIN"]},
                    "title": "{{ object.name }}",
                    "body": "{{ payload.order.id }} {{ payload }}",
                },
            }
        ],
    )
    fields = gql(CREATE, {"input": webhook}, token=editor).error()["extensions"]["fields"]
    assert list(fields) == ["actions.0.parameters.title"]  # the payload placeholders are fine
    assert not AutomationRule.objects.exists()


def test_rotating_replaces_the_url_at_once(gql, editor, organization):
    rule = create(gql, editor, organization)
    rotated = gql(ROTATE, {"id": rule["id"]}, token=editor).ok()["rotateRuleWebhook"]
    assert URL.fullmatch(rotated["webhookUrl"])
    assert rotated["webhookUrl"] != rule["webhookUrl"]
    assert rotated["revision"] == rule["revision"] + 1
    stored = AutomationRule.objects.get(pk=rule["id"])
    assert stored.webhook_token == URL.fullmatch(rotated["webhookUrl"]).group(1)
    assert stored.updated_by == editor


def test_rotating_is_refused_to_viewers_outsiders_and_other_rules(
    gql, editor, viewer, outsider, organization
):
    rule = create(gql, editor, organization)
    manual = create(gql, editor, organization, name="By hand", triggerType="MANUAL")
    before = list(AutomationRule.objects.values_list("webhook_token", "revision"))
    assert gql(ROTATE, {"id": rule["id"]}, token=viewer).error()["extensions"]["code"] == (
        "PERMISSION_DENIED"
    )
    assert gql(ROTATE, {"id": rule["id"]}, token=outsider).error()["extensions"]["code"] == (
        "NOT_FOUND"
    )
    assert gql(ROTATE, {"id": rule["id"]}).error()["extensions"]["code"] == "UNAUTHENTICATED"
    refused = gql(ROTATE, {"id": manual["id"]}, token=editor).error()
    assert refused["extensions"]["fields"] == {
        "id": ["Only WEBHOOK rules have a webhook URL; this is a MANUAL rule."]
    }
    assert list(AutomationRule.objects.values_list("webhook_token", "revision")) == before


def order_rule(gql, editor, organization) -> dict:
    return create(
        gql,
        editor,
        organization,
        conditions={
            "conditions": [
                {"field": "payload.order.total", "operator": "GREATER_THAN", "value": 100},
                {"field": "payload.order.currency", "operator": "IN", "value": ["EUR", "USD"]},
            ]
        },
        actions=[
            {
                "actionType": "SEND_NOTIFICATION",
                "parameters": {
                    "recipients": {"roles": ["EDITOR"]},
                    "title": "Big order {{ payload.order.id }}",
                    "body": "{{ payload.order.total }} {{ payload.order.currency }}",
                },
            }
        ],
    )


def test_a_dry_run_takes_a_sample_payload(gql, editor, organization):
    rule = order_rule(gql, editor, organization)
    sample = {"order": {"id": 42, "total": 120, "currency": "EUR"}}
    run = gql(RUN, {"id": rule["id"], "dry": True, "payload": sample}, token=editor).ok()["runRule"]
    assert (run["status"], run["trigger"], run["dryRun"], run["conditionsMet"]) == (
        "SUCCEEDED",
        "MANUAL",
        True,
        True,
    )
    assert run["context"] == {"object": None, "payload": sample}
    assert [entry["actual"] for entry in run["conditionTrace"]] == [120, "EUR"]
    assert run["actionLogs"][0]["result"]["title"] == "Big order 42"
    assert run["actionLogs"][0]["result"]["body"] == "120 EUR"
    small = gql(
        RUN,
        {"id": rule["id"], "dry": True, "payload": {"order": {"total": 99, "currency": "EUR"}}},
        token=editor,
    ).ok()["runRule"]
    assert (small["status"], small["error"]) == ("SKIPPED", "Conditions not met.")


def test_a_payload_value_of_another_type_fails_its_condition_saying_why(gql, editor, organization):
    rule = order_rule(gql, editor, organization)
    sample = {"order": {"total": "120", "currency": "EUR"}}
    run = gql(RUN, {"id": rule["id"], "dry": True, "payload": sample}, token=editor).ok()["runRule"]
    assert run["status"] == "SKIPPED"
    assert run["conditionTrace"][0]["error"] == (
        'GREATER_THAN a number cannot be compared with text ("120") from the payload.'
    )
    assert run["error"].startswith("Condition 1 of 2 (conditions.conditions.0): GREATER_THAN")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "The payload must be a JSON object, not a list."),
        ("order", "The payload must be a JSON object, not text."),
        (
            {
                "a": {
                    "b": {
                        "c": {
                            "d": {
                                "e": {
                                    "f": {
                                        "g": {
                                            "h": {
                                                "i": {
                                                    "j": {
                                                        "k": {
                                                            "l": {
                                                                "m": {
                                                                    "n": {
                                                                        "o": {
                                                                            "p": {
                                                                                "q": {
                                                                                    "r": {
                                                                                        "s": {
                                                                                            "t": {
                                                                                                "u": 1
                                                                                            }
                                                                                        }
                                                                                    }
                                                                                }
                                                                            }
                                                                        }
                                                                    }
                                                                }
                                                            }
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            },
            "The payload nests deeper than 20 levels.",
        ),
    ],
)
def test_a_sample_payload_a_request_could_not_send_is_refused(
    gql, editor, organization, payload, message
):
    rule = order_rule(gql, editor, organization)
    error = gql(RUN, {"id": rule["id"], "dry": True, "payload": payload}, token=editor).error()
    assert error["extensions"]["fields"] == {"payload": [message]}
    assert not AutomationLog.objects.exists()


def test_a_sample_payload_is_bounded_like_a_request_body(gql, editor, organization, settings):
    settings.AUTOMATION_WEBHOOK_MAX_BODY_BYTES = 100
    rule = order_rule(gql, editor, organization)
    error = gql(
        RUN, {"id": rule["id"], "dry": True, "payload": {"text": "x" * 100}}, token=editor
    ).error()
    assert "AUTOMATION_WEBHOOK_MAX_BODY_BYTES" in error["extensions"]["fields"]["payload"][0]
    assert not AutomationLog.objects.exists()


def test_only_webhook_rules_take_a_payload(gql, editor, organization):
    manual = create(gql, editor, organization, triggerType="MANUAL")
    error = gql(RUN, {"id": manual["id"], "dry": True, "payload": {}}, token=editor).error()
    assert error["extensions"]["fields"] == {
        "payload": ["Only WEBHOOK rules take a payload: their runs are sent one."]
    }
    assert not AutomationLog.objects.exists()


def test_a_run_by_hand_of_a_webhook_rule_without_a_payload_has_an_empty_one(
    gql, editor, organization
):
    rule = order_rule(gql, editor, organization)
    run = gql(RUN, {"id": rule["id"]}, token=editor).ok()["runRule"]
    assert (run["status"], run["trigger"], run["context"]) == (
        "PENDING",
        "MANUAL",
        {"object": None, "payload": {}},
    )


def test_the_retry_of_a_webhook_run_keeps_its_payload(gql, editor, organization):
    rule = order_rule(gql, editor, organization)
    sample = {"order": {"id": 5, "total": 500, "currency": "USD"}}
    dry = gql(RUN, {"id": rule["id"], "dry": True, "payload": sample}, token=editor).ok()
    retry = gql(
        "mutation($id: ID!) { retryRun(logId: $id) { status context actionLogs { result } } }",
        {"id": dry["runRule"]["id"]},
        token=editor,
    ).ok()["retryRun"]
    assert retry["context"]["payload"] == sample
    assert retry["actionLogs"][0]["result"]["title"] == "Big order 5"


def test_logs_filter_webhook_runs(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization, webhook_rule=True)
    AutomationLog.objects.create(organization=organization, rule=rule, trigger="WEBHOOK")
    AutomationLog.objects.create(organization=organization, rule=rule, trigger="MANUAL")
    found = gql(
        "query($org: ID!) { logs(organization: $org, filter: {trigger: WEBHOOK}) "
        "{ edges { node { trigger } } } }",
        {"org": str(organization.pk)},
        token=editor,
    ).ok()["logs"]["edges"]
    assert found == [{"node": {"trigger": "WEBHOOK"}}]


@pytest.mark.parametrize("role", [Role.EDITOR, Role.ADMIN])
def test_rules_lists_show_the_url_to_writers(gql, organization, make_member, role):
    member = make_member(organization, role)
    rule = AutomationRuleFactory(organization=organization, webhook_rule=True)
    listed = gql(
        "query($org: ID!) { rules(organization: $org) { webhookUrl } }",
        {"org": str(organization.pk)},
        token=member,
    ).ok()["rules"]
    assert listed == [{"webhookUrl": f"http://testserver/hooks/{rule.webhook_token}"}]


@pytest.mark.django_db(transaction=True)
async def test_over_websocket_the_url_is_built_on_the_connection_host(organization, editor):
    rule = await sync_to_async(AutomationRuleFactory)(organization=organization, webhook_rule=True)
    ws = WebsocketCommunicator(
        application,
        "/graphql/",
        headers=[(b"host", b"localhost:8000")],
        subprotocols=["graphql-transport-ws"],
    )
    assert (await ws.connect(5))[0]
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {editor.raw_token}"}}
    await ws.send_json_to(init)
    assert (await ws.receive_json_from(5))["type"] == "connection_ack"
    query = {"query": READ, "variables": {"id": str(rule.pk)}}
    await ws.send_json_to({"id": "1", "type": "subscribe", "payload": query})
    result = await ws.receive_json_from(5)
    await ws.disconnect()
    assert result["payload"]["data"]["rule"]["webhookUrl"] == (
        f"http://localhost:8000/hooks/{rule.webhook_token}"
    )
