"""A crossing on a real server: "tell me when stock drops below 5" fires once as the stock falls
10 -> 3 -> 2 -> 1 (CROSSED_BELOW), where `stock LESS_THAN 5` fired three times."""

import time

from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXTransport

CREATE_PRODUCT = """mutation($input: ProductInput!) { createProduct(input: $input) { id } }"""
UPDATE_PRODUCT = """mutation($id: ID!, $stock: Int!) {
  updateProduct(id: $id, input: {stock: $stock}) { stock }
}"""
CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
RUNS = """query($org: ID!, $rule: ID!) {
  logs(organization: $org, first: 10, filter: {rule: $rule}) {
    edges { node {
      status changes
      conditionTrace { operator expected actual actualPrevious passed }
    } }
  }
}"""
NOTIFICATIONS = "{ notifications { title body } }"
RUN_TIMEOUT_SECONDS = 60


def test_a_crossing_fires_once_as_the_stock_falls_10_3_2_1(e2e_server):
    member = e2e_server.create_member("e2e-crossing", "e2e-crossing-org", role="EDITOR")
    client = Client(
        transport=HTTPXTransport(
            url=f"{e2e_server.base_url}/graphql/",
            headers={"Authorization": f"Bearer {member.token}"},
            timeout=30,
        ),
        fetch_schema_from_transport=False,
    )

    def run(query, **variables):
        return client.execute(GraphQLRequest(query, variable_values=variables))

    product_id = run(
        CREATE_PRODUCT,
        input={
            "organization": member.organization_id,
            "name": "Watering can",
            "status": "ACTIVE",
            "stock": 10,
        },
    )["createProduct"]["id"]
    rule_id = run(
        CREATE_RULE,
        input={
            "organization": member.organization_id,
            "name": "Low stock, once",
            "triggerType": "EVENT",
            "model": "catalog.product",
            "triggerEvent": "UPDATED",
            "watchedFields": ["stock"],
            "conditions": {
                "conditions": [{"field": "stock", "operator": "CROSSED_BELOW", "value": 5}]
            },
            "actions": [
                {
                    "actionType": "SEND_NOTIFICATION",
                    "parameters": {
                        "recipients": {"usernames": [member.username]},
                        "title": "{{ object.name }} is running low",
                        "body": "Stock went from {{ changes.stock.old }} to "
                        "{{ changes.stock.new }}.",
                    },
                }
            ],
        },
    )["createRule"]["id"]

    for stock in (3, 2, 1):
        assert run(UPDATE_PRODUCT, id=product_id, stock=stock)["updateProduct"]["stock"] == stock

    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        runs = [
            edge["node"]
            for edge in run(RUNS, org=member.organization_id, rule=rule_id)["logs"]["edges"]
        ]
        if len(runs) == 3 and all(r["status"] not in ("PENDING", "RUNNING") for r in runs):
            break
        assert time.monotonic() < deadline, f"the runs did not finish: {runs}\n{e2e_server.log()}"
        time.sleep(0.2)

    by_change = {(r["changes"]["stock"]["old"], r["changes"]["stock"]["new"]): r for r in runs}
    assert {change: r["status"] for change, r in by_change.items()} == {
        (10, 3): "SUCCEEDED",
        (3, 2): "SKIPPED",
        (2, 1): "SKIPPED",
    }
    assert by_change[(10, 3)]["conditionTrace"] == [
        {
            "operator": "CROSSED_BELOW",
            "expected": 5,
            "actual": 3,
            "actualPrevious": 10,
            "passed": True,
        }
    ]
    assert by_change[(3, 2)]["conditionTrace"][0]["actualPrevious"] == 3
    # One e-mail's worth: one notification for one drop.
    assert run(NOTIFICATIONS)["notifications"] == [
        {"title": "Watering can is running low", "body": "Stock went from 10 to 3."}
    ]
