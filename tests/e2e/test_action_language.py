"""Rules that say what people mean, on a real server: if/else by two actions with opposite
`when`s, and every template function (filters, arithmetic, dates), with bad input failing
clearly, at save and at run time. Runs are real (queued, executed by the server's workers) and
read back over GraphQL, as a client would."""

import datetime
import time

RUN_TIMEOUT_SECONDS = 60

CREATE_PRODUCT = """mutation($input: ProductInput!) { createProduct(input: $input) { id } }"""
CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
RUN = "mutation($id: ID!, $obj: ID!) { runRule(id: $id, objectId: $obj) { id } }"
LOG = """query($id: ID!) {
  log(id: $id) {
    status error
    actionLogs { order status error result whenMet whenTrace { path actual passed } }
  }
}"""
RECORD = 'query($id: ID!) { record(model: "catalog.product", id: $id) }'


class Client:
    """GraphQL as one member of one organization, on the shared server."""

    def __init__(self, server, name):
        self.server = server
        self.member = server.create_member(name, f"{name}-org", role="EDITOR")

    def send(self, query, variables=None):
        answer = self.server.graphql(query, variables, token=self.member.token)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def ok(self, query, variables=None):
        body = self.send(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]

    def product(self, **fields) -> str:
        product_input = {"organization": self.member.organization_id, "status": "ACTIVE", **fields}
        return self.ok(CREATE_PRODUCT, {"input": product_input})["createProduct"]["id"]

    def rule(self, name, actions) -> str:
        rule_input = {
            "organization": self.member.organization_id,
            "name": name,
            "triggerType": "MANUAL",
            "model": "catalog.product",
            "actions": actions,
        }
        return self.ok(CREATE_RULE, {"input": rule_input})["createRule"]["id"]

    def run(self, rule_id, product_id) -> dict:
        """Run the rule on the product for real and wait for the server to finish it."""
        log_id = self.ok(RUN, {"id": rule_id, "obj": product_id})["runRule"]["id"]
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while True:
            log = self.ok(LOG, {"id": log_id})["log"]
            if log["status"] not in ("PENDING", "RUNNING"):
                return log
            assert time.monotonic() < deadline, f"the run did not finish: {log}"
            time.sleep(0.2)

    def record(self, record_id) -> dict:
        return self.ok(RECORD, {"id": str(record_id)})["record"]


def when_stock(operator, value, negate=False):
    return {
        "negate": negate,
        "conditions": [{"field": "stock", "operator": operator, "value": value}],
    }


def test_if_else_by_when_on_the_server(e2e_server):
    client = Client(e2e_server, "e2e-when")
    rule = client.rule(
        "Stock level",
        [
            {
                "actionType": "UPDATE_RECORD",
                "parameters": {"fields": {"description": "low: {{ object.stock }}"}},
                "when": when_stock("LESS_THAN", 5),
            },
            {
                "actionType": "UPDATE_RECORD",
                "parameters": {"fields": {"description": "plenty"}},
                "when": when_stock("LESS_THAN", 5, negate=True),
            },
        ],
    )
    low = client.product(name="Can", stock=2, price="3.00")
    plenty = client.product(name="Pot", stock=40, price="3.00")

    on_low = client.run(rule, low)
    on_plenty = client.run(rule, plenty)

    assert on_low["status"] == on_plenty["status"] == "SUCCEEDED"
    assert [(a["status"], a["whenMet"]) for a in on_low["actionLogs"]] == [
        ("SUCCEEDED", True),
        ("SKIPPED", False),
    ]
    assert [(a["status"], a["whenMet"]) for a in on_plenty["actionLogs"]] == [
        ("SKIPPED", False),
        ("SUCCEEDED", True),
    ]
    assert on_plenty["actionLogs"][0]["error"] == (
        "When not met: stock LESS_THAN 5 did not pass (actual: 40)."
    )
    assert on_plenty["actionLogs"][0]["whenTrace"] == [
        {"path": "actions.0.when.conditions.0", "actual": 40, "passed": False}
    ]
    assert client.record(low)["description"] == "low: 2"
    assert client.record(plenty)["description"] == "plenty"


def test_every_template_function_on_the_server(e2e_server):
    client = Client(e2e_server, "e2e-templates")
    description = "; ".join(
        [
            "{{ results.0.updated | join(', ') }}",
            "{{ (object.stock - 10) | abs }}",
            "{{ object.name | lower | length }}",
            "{{ '2026-01-31' | add_duration('P1M') | date('%d %B %Y') }}",
            "{{ object.created_at | add_duration('-P7D') | date('%Y-%m-%d %H:%M') }}",
        ]
    )
    rule = client.rule(
        "Every function",
        [
            {
                "actionType": "UPDATE_RECORD",
                "parameters": {
                    "fields": {
                        "stock": "{{ object.stock * 2 + 1 }}",
                        "description": "was {{ changes.stock.old | default('unknown') }}",
                    }
                },
            },
            {
                "actionType": "CREATE_RECORD",
                "parameters": {
                    "model": "catalog.product",
                    "fields": {
                        "name": "{{ object.name | upper }}",
                        "price": "{{ (object.price / 3) | round(2) }}",
                        "stock": "{{ results.0.record.stock - object.stock }}",
                        "category": "{{ object.category }}",
                        "description": description,
                    },
                },
            },
        ],
    )
    product = client.product(name="Watering Can", stock=3, price="12.50")
    created_at = datetime.datetime.fromisoformat(client.record(product)["created_at"])

    log = client.run(rule, product)

    assert log["status"] == "SUCCEEDED", log
    assert client.record(product)["stock"] == 7
    assert client.record(product)["description"] == "was unknown"
    copy = client.record(log["actionLogs"][1]["result"]["id"])
    week_before = (created_at - datetime.timedelta(days=7)).astimezone(datetime.UTC)
    assert {key: copy[key] for key in ("name", "price", "stock", "description")} == {
        "name": "WATERING CAN",
        "price": "4.17",
        "stock": 4,
        "description": f"description, stock; 7; 12; 28 February 2026; {week_before:%Y-%m-%d %H:%M}",
    }


def test_bad_template_input_fails_clearly_on_the_server(e2e_server):
    client = Client(e2e_server, "e2e-bad-templates")
    refused = client.send(
        CREATE_RULE,
        {
            "input": {
                "organization": client.member.organization_id,
                "name": "Refused",
                "triggerType": "MANUAL",
                "model": "catalog.product",
                "actions": [
                    {
                        "actionType": "UPDATE_RECORD",
                        "parameters": {
                            "fields": {
                                "stock": "{{ object.name }}",
                                "description": "{{ object.name | uper }}",
                            }
                        },
                    }
                ],
            }
        },
    )
    (error,) = refused["errors"]
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert error["extensions"]["fields"] == {
        "actions.0.parameters.fields.stock": [
            "'{{ object.name }}' gives text, and stock (IntegerField) takes a whole number."
        ],
        "actions.0.parameters.fields.description": [
            "In '{{ object.name | uper }}': Unknown filter 'uper': filters are abs, add_duration, "
            "date, default, join, length, lower, round, upper. Did you mean 'upper'?"
        ],
    }

    # What only a run can know fails the action, naming the placeholder.
    def update(fields, keep_going=True):
        return {
            "actionType": "UPDATE_RECORD",
            "parameters": {"fields": fields},
            "continueOnFailure": keep_going,
        }

    rule = client.rule(
        "Fails at run time",
        [
            update({"description": "checked"}),
            update({"description": "{{ object.stock / (object.stock - 3) }}"}),
            update({"stock": "{{ results.0.record.name | round }}"}),
            update({"description": "{{ results.0.record.stock | upper }}"}),
            update({"description": "{{ results.0.record.description | date('%Y') }}"}, False),
        ],
    )
    product = client.product(name="Lamp", stock=3, price="9.99")
    log = client.run(rule, product)
    assert log["status"] == "FAILED"
    assert [entry["error"] for entry in log["actionLogs"]] == [
        None,
        "fields: In '{{ object.stock / (object.stock - 3) }}': Division by zero: "
        "'(object.stock - 3)' is 0.",
        "fields: In '{{ results.0.record.name | round }}': round applies to numbers; "
        "'results.0.record.name' is text (\"Lamp\").",
        "fields: In '{{ results.0.record.stock | upper }}': upper applies to text; "
        "'results.0.record.stock' is a number (3).",
        "fields: In '{{ results.0.record.description | date('%Y') }}': date applies to ISO 8601 "
        "dates and date-times; 'results.0.record.description' is text (\"checked\").",
    ]
    assert client.record(product)["description"] == "checked"
