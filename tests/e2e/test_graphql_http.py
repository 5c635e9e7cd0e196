"""The GraphQL API through a real server process, with a real GraphQL client (gql over httpx)."""

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport

CREATE_RULE = """mutation($input: RuleInput!) {
  createRule(input: $input) { id name revision actions { actionType parameters } }
}"""
LIST_RULES = """query($org: ID!) {
  rules(organization: $org) { id name model conditions { conditions { field operator value } } }
}"""


def client_for(server, token: str) -> Client:
    transport = HTTPXTransport(
        url=f"{server.base_url}/graphql/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return Client(transport=transport, fetch_schema_from_transport=False)


def test_create_a_rule_and_list_it(e2e_server):
    member = e2e_server.create_member("e2e-api", "e2e-api-org", role="EDITOR")
    client = client_for(e2e_server, member.token)
    rule_input = {
        "organization": member.organization_id,
        "name": "Restock webhook",
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "conditions": {"conditions": [{"field": "stock", "operator": "LESS_THAN", "value": 3}]},
        "actions": [
            {
                "actionType": "CALL_WEBHOOK",
                "parameters": {"url": "https://hooks.example.com/restock", "secret": "s3cret"},
            }
        ],
    }
    created = client.execute(GraphQLRequest(CREATE_RULE, variable_values={"input": rule_input}))[
        "createRule"
    ]
    assert created["revision"] == 1
    assert created["actions"][0]["parameters"]["secret"] == "********"

    listed = client.execute(
        GraphQLRequest(LIST_RULES, variable_values={"org": member.organization_id})
    )["rules"]
    assert listed == [
        {
            "id": created["id"],
            "name": "Restock webhook",
            "model": "catalog.product",
            "conditions": {"conditions": [{"field": "stock", "operator": "LESS_THAN", "value": 3}]},
        }
    ]

    # The same name again is a VALIDATION_ERROR on "name", as the client sees it.
    with pytest.raises(TransportQueryError) as refused:
        client.execute(GraphQLRequest(CREATE_RULE, variable_values={"input": rule_input}))
    error = refused.value.errors[0]
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert "name" in error["extensions"]["fields"]
