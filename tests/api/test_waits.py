"""Durable waits over HTTP: a rule's holdFor and the WAIT action as the API takes them (each
mistake a VALIDATION_ERROR at its input path), and a waiting run as the API shows it (status
WAITING, resumeAt, hold with its second check, the logs filter, retryRun refused).

Runs execute in-process (`run_pending`, as a worker would) with the clock frozen and moved;
tests/e2e/test_waits.py does the same against a real server."""

import datetime

import pytest
import time_machine

from automation.runs import wakeups
from tests.api.test_action_when import run_pending
from tests.api.test_rule_errors import fields_of, rule_input

pytestmark = pytest.mark.django_db

CREATE = "mutation($input: RuleInput!) { createRule(input: $input) { id holdFor } }"
UPDATE = """mutation($id: ID!, $input: RuleUpdateInput!) {
  updateRule(id: $id, input: $input) { holdFor revision }
}"""
UPDATE_PRODUCT = """mutation($id: ID!, $stock: Int!) {
  updateProduct(id: $id, input: {stock: $stock}) { id }
}"""
CREATE_PRODUCT = """mutation($org: ID!) {
  createProduct(input: {organization: $org, name: "Lamp", status: ACTIVE, stock: 10}) { id }
}"""
LOG = """query($id: ID!) {
  log(id: $id) {
    status error resumeAt conditionsMet
    conditionTrace { actual passed }
    hold { holdFor until checkedAt met note trace { path actual passed } }
    actionLogs { order actionType status result }
  }
}"""
LOGS = """query($org: ID!, $statuses: [RunStatus!]) {
  logs(organization: $org, filter: {statuses: $statuses}) { edges { node { id status } } }
}"""
START = datetime.datetime(2026, 12, 2, 9, 0, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def no_hints_remembered():
    wakeups.forget_hints()


def wait(**parameters):
    return {"actionType": "WAIT", "parameters": parameters}


@pytest.mark.parametrize(
    ("hold_for", "message"),
    [
        ("30 minutes", "'30 minutes' is not an ISO 8601 duration"),
        ("PT0S", "'PT0S' is not a positive duration."),
        ("-PT5M", "'-PT5M' is not a positive duration."),
        ("P1M", "'P1M' counts years or months, which have no fixed length"),
        ("P31D", "'P31D' is longer than the longest wait, P30D (AUTOMATION_MAX_WAIT_SECONDS)."),
    ],
)
def test_a_hold_that_is_no_positive_bounded_duration_is_refused(
    gql, editor, organization, hold_for, message
):
    answer = gql(CREATE, {"input": rule_input(organization, holdFor=hold_for)}, token=editor)
    (refusal,) = fields_of(answer)["holdFor"]
    assert refusal.startswith(message), refusal


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"triggerEvent": "DELETED", "watchedFields": [], "conditions": None},
            "A DELETED rule cannot hold: after the hold its conditions are checked again "
            "against the record, which is gone.",
        ),
        (
            {"triggerType": "MANUAL", "model": None, "triggerEvent": None, "watchedFields": [],
             "conditions": None, "actions": []},
            "Only a rule with a model can hold: after the hold its conditions are checked "
            "again against the run's record as it is then.",
        ),
    ],
)  # fmt: skip
def test_a_hold_needs_a_record_to_check_again(gql, editor, organization, overrides, message):
    rule = rule_input(organization, holdFor="PT30M", **overrides)
    answer = gql(CREATE, {"input": rule}, token=editor)
    assert fields_of(answer)["holdFor"] == [message]


def test_a_bad_hold_on_a_rule_that_cannot_hold_gets_both_messages_at_once(
    gql, editor, organization
):
    rule = rule_input(
        organization,
        holdFor="P1M",
        triggerEvent="DELETED",
        watchedFields=[],
        conditions=None,
    )
    messages = fields_of(gql(CREATE, {"input": rule}, token=editor))["holdFor"]
    assert [message.split(":")[0] for message in messages] == [
        "'P1M' counts years or months, which have no fixed length; write days or weeks instead "
        '("P30D", "P4W").',
        "A DELETED rule cannot hold",
    ]


def test_a_hold_reads_back_in_iso_8601_and_is_changed_or_removed(gql, editor, organization):
    created = gql(CREATE, {"input": rule_input(organization, holdFor="P1DT90M")}, token=editor)
    rule = created.ok()["createRule"]
    assert rule["holdFor"] == "P1DT1H30M"
    updated = gql(UPDATE, {"id": rule["id"], "input": {"holdFor": "PT2S"}}, token=editor).ok()
    assert updated["updateRule"]["holdFor"] == "PT2S"
    kept = gql(UPDATE, {"id": rule["id"], "input": {"name": "Still held"}}, token=editor).ok()
    assert kept["updateRule"]["holdFor"] == "PT2S"
    removed = gql(UPDATE, {"id": rule["id"], "input": {"holdFor": ""}}, token=editor).ok()
    assert removed["updateRule"]["holdFor"] is None


def test_wait_parameters_are_checked_at_save_each_at_its_path(gql, editor, organization):
    actions = [
        wait(),
        wait(seconds=5, until="2026-12-24"),
        wait(seconds=0),
        wait(seconds=30 * 24 * 3600 + 1),
        wait(until="next tuesday"),
        wait(until="{{ object.stock }}"),
        wait(until="{{ object.nam }}"),
        wait(seconds="5"),
        wait(until="{{ object.created_at | add_duration('P1D') }}"),
        wait(until="2026-12-24T09:00:00+01:00"),
    ]
    answer = gql(CREATE, {"input": rule_input(organization, actions=actions)}, token=editor)
    assert fields_of(answer) == {
        "actions.0.parameters": ["Give either seconds or until (one of them)."],
        "actions.1.parameters": ["Give either seconds or until (one of them)."],
        "actions.2.parameters.seconds": ["0 is less than the minimum of 1"],
        "actions.3.parameters.seconds": [
            "At most 2592000 seconds (P30D, AUTOMATION_MAX_WAIT_SECONDS)."
        ],
        "actions.4.parameters.until": [
            "'next tuesday' is not an ISO 8601 date or date-time (such as \"2026-12-24\" or "
            '"2026-12-24T09:00:00Z").'
        ],
        "actions.5.parameters.until": [
            "'{{ object.stock }}' gives a number; until takes an ISO 8601 date or date-time "
            "(for a number of seconds, use seconds)."
        ],
        "actions.6.parameters.until": [
            "Template variable 'object.nam' does not resolve: catalog.product has no readable "
            "field 'nam'. Did you mean 'name'?"
        ],
        "actions.7.parameters.seconds": ["Expected a whole number, not text."],
    }


def test_action_types_serve_the_wait_schema(gql, editor):
    answer = gql("{ actionTypes { actionType parametersSchema } }", token=editor).ok()
    (schema,) = [t["parametersSchema"] for t in answer["actionTypes"] if t["actionType"] == "WAIT"]
    assert set(schema["properties"]) == {"seconds", "until"}


def test_a_held_run_as_the_api_shows_it(gql, editor, organization):
    rule = rule_input(
        organization,
        holdFor="PT30M",
        actions=[
            wait(seconds=60),
            {"actionType": "UPDATE_RECORD", "parameters": {"fields": {"description": "held"}}},
        ],
    )
    with time_machine.travel(START, tick=False) as clock:
        gql(CREATE, {"input": rule}, token=editor).ok()
        org = str(organization.pk)
        product = gql(CREATE_PRODUCT, {"org": org}, token=editor).ok()["createProduct"]["id"]
        gql(UPDATE_PRODUCT, {"id": product, "stock": 3}, token=editor).ok()
        run_pending()
        waiting = gql(LOGS, {"org": org, "statuses": ["WAITING"]}, token=editor).ok()
        (edge,) = waiting["logs"]["edges"]
        log_id = edge["node"]["id"]
        log = gql(LOG, {"id": log_id}, token=editor).ok()["log"]
        assert log == {
            "status": "WAITING",
            "error": None,
            "resumeAt": "2026-12-02T09:30:00+00:00",
            "conditionsMet": True,
            "conditionTrace": [{"actual": 3, "passed": True}],
            "hold": {
                "holdFor": "PT30M",
                "until": "2026-12-02T09:30:00+00:00",
                "checkedAt": None,
                "met": None,
                "note": None,
                "trace": [],
            },
            "actionLogs": [],
        }
        retry = gql(
            "mutation($id: ID!) { retryRun(logId: $id) { id } }", {"id": log_id}, token=editor
        )
        assert retry.error()["extensions"]["code"] == "CONFLICT"

        clock.move_to(START + datetime.timedelta(minutes=30))
        wakeups.wake_due_runs()
        run_pending()
        log = gql(LOG, {"id": log_id}, token=editor).ok()["log"]
        assert log["status"] == "WAITING"
        assert log["resumeAt"] == "2026-12-02T09:31:00+00:00"
        assert log["hold"]["checkedAt"] == "2026-12-02T09:30:00+00:00"
        assert log["hold"]["met"] is True
        assert log["hold"]["trace"] == [
            {"path": "conditions.conditions.0", "actual": 3, "passed": True}
        ]
        assert [(a["actionType"], a["status"]) for a in log["actionLogs"]] == [
            ("WAIT", "WAITING"),
            ("UPDATE_RECORD", "PENDING"),
        ]

        clock.move_to(START + datetime.timedelta(minutes=31))
        wakeups.wake_due_runs()
        run_pending()
        log = gql(LOG, {"id": log_id}, token=editor).ok()["log"]
        assert log["status"] == "SUCCEEDED"
        assert log["actionLogs"][0]["result"] == {"until": "2026-12-02T09:31:00Z", "waited": True}


def test_a_dry_run_says_it_would_hold_and_wait(gql, editor, organization):
    rule = rule_input(organization, holdFor="PT30M", actions=[wait(until="2026-12-24")])
    with time_machine.travel(START, tick=False):
        rule_id = gql(CREATE, {"input": rule}, token=editor).ok()["createRule"]["id"]
        org = str(organization.pk)
        product = gql(CREATE_PRODUCT, {"org": org}, token=editor).ok()["createProduct"]["id"]
        dry = gql(
            """mutation($id: ID!, $obj: ID!) {
              runRule(id: $id, objectId: $obj, dryRun: true,
                      changes: {stock: {old: 10, new: 3}}) {
                status resumeAt hold { holdFor until note } actionLogs { status result }
              }
            }""",
            {"id": rule_id, "obj": product},
            token=editor,
        ).ok()["runRule"]
    assert dry == {
        "status": "SUCCEEDED",
        "resumeAt": None,
        "hold": {
            "holdFor": "PT30M",
            "until": "2026-12-02T09:30:00+00:00",
            "note": "A dry run does not wait: a real run would hold for PT30M (until about "
            "2026-12-02T09:30:00Z), then check the conditions again before its actions.",
        },
        "actionLogs": [
            {
                "status": "SUCCEEDED",
                "result": {"would": "wait", "until": "2026-12-24T00:00:00Z", "seconds": 1868400},
            }
        ],
    }
