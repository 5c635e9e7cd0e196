"""What is refused before execution, and how errors are shaped."""

import json
import logging

import pytest
from django.test import override_settings

from graphql_api.documents import parse_document
from tests.factories import AutomationLogFactory, AutomationRuleFactory

pytestmark = pytest.mark.django_db


def test_depth_bomb_is_refused_before_execution(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization)
    log = AutomationLogFactory(rule=rule)
    nested = "id"
    for _ in range(20):
        nested = f"id parentLog {{ {nested} }}"
    answer = gql(f'{{ log(id: "{log.pk}") {{ {nested} }} }}', token=editor)
    assert answer.status_code == 200
    assert answer.data is None
    assert set(answer.codes) == {"GRAPHQL_VALIDATION_FAILED"}
    assert "depth" in answer.errors[0]["message"]


def test_alias_bomb_is_refused_before_execution(gql, editor):
    aliases = " ".join(f"a{n}: me {{ id }}" for n in range(100))
    answer = gql(f"{{ {aliases} }}", token=editor)
    assert answer.data is None
    assert answer.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert "alias" in answer.errors[0]["message"].lower()


@override_settings(GRAPHQL_MAX_TOKENS=50)
def test_token_limit_is_refused_before_execution(gql, editor):
    fields = " ".join("id" for _ in range(60))
    answer = gql(f"{{ me {{ {fields} }} }}", token=editor)
    assert answer.codes == ["GRAPHQL_VALIDATION_FAILED"]


def test_syntax_errors_and_unknown_fields_are_graphql_validation_failed(gql, editor):
    assert gql("{ me { id ", token=editor).codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert gql("{ me { password } }", token=editor).codes == ["GRAPHQL_VALIDATION_FAILED"]
    bad_variable = gql("query($l: Int) { rules(limit: $l) { id } }", {"l": "many"}, token=editor)
    assert bad_variable.codes == ["GRAPHQL_VALIDATION_FAILED"]


def test_a_deeply_nested_json_body_is_a_400_not_a_500(client):
    body = '{"query": "{ me { id } }", "variables": ' + "[" * 10_000 + "]" * 10_000 + "}"
    response = client.post("/graphql/", data=body, content_type="application/json")
    assert response.status_code == 400


def test_malformed_json_is_a_400(client):
    response = client.post("/graphql/", data="{not json", content_type="application/json")
    assert response.status_code == 400


@override_settings(GRAPHQL_MAX_BODY_BYTES=2_000)
def test_an_oversized_body_is_a_413(client, editor):
    body = json.dumps({"query": "{ me { id } }", "variables": {"pad": "x" * 5_000}})
    response = client.post(
        "/graphql/",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {editor.raw_token}",
    )
    assert response.status_code == 413


def test_unexpected_errors_are_masked_with_a_logged_correlation_id(
    gql, editor, organization, caplog, monkeypatch
):
    rule = AutomationRuleFactory(organization=organization)
    AutomationLogFactory(
        rule=rule, condition_trace=[{"path": "conditions.conditions.0"}]
    )  # no operator: broken
    with caplog.at_level(logging.ERROR, logger="graphql_api.errors"):
        answer = gql("{ logs { edges { node { conditionTrace { field } } } } }", token=editor)
    error = answer.errors[0]
    assert error["message"] == "Internal server error"
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    correlation_id = error["extensions"]["correlationId"]
    assert any(
        correlation_id in record.getMessage() and record.exc_info for record in caplog.records
    )
    assert "operator" not in json.dumps(answer.body)  # the KeyError's text is not shown


def test_a_subscription_over_http_points_to_the_websocket(gql, editor, organization):
    query = "subscription($org: ID!) { automationLogs(organization: $org) { id } }"
    answer = gql(query, {"org": str(organization.pk)}, token=editor)
    assert answer.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert "WebSocket" in answer.errors[0]["message"]
    assert answer.body["data"] is None


def test_a_repeated_document_is_validated_once(gql, editor):
    """The validation cache hits: the depth and alias rules are the same objects every request
    (a limiter built per request would make new rule classes, and the cache would never hit)."""
    from strawberry.extensions.validation_cache import _get_validate_cache

    cached_validate = _get_validate_cache(256)
    query = "{ me { id username } organizations { id } }"
    gql(query, token=editor).ok()
    hits = cached_validate.cache_info().hits
    gql(query, token=editor).ok()
    assert cached_validate.cache_info().hits == hits + 1


def test_the_validation_cache_follows_a_changed_depth_limit(gql, editor):
    query = "{ rules { id conditions { logic conditions { field } } } }"
    assert gql(query, token=editor).ok() == {"rules": []}  # validated and cached
    with override_settings(GRAPHQL_MAX_DEPTH=2):
        answer = gql(query, token=editor)
    assert set(answer.codes) == {"GRAPHQL_VALIDATION_FAILED"}
    assert "depth" in answer.errors[0]["message"]


def test_a_repeated_document_is_parsed_once(gql, editor):
    # The view's subscription check and the operation share one parse, and the next request
    # with the same text parses nothing.
    parse_document.cache_clear()
    query = "{ me { id username } }"
    gql(query, token=editor).ok()
    gql(query, token=editor).ok()
    info = parse_document.cache_info()
    assert (info.misses, info.hits) == (1, 3)


def test_a_document_that_does_not_parse_is_not_cached(gql, editor):
    parse_document.cache_clear()
    assert gql("{ me { id ", token=editor).codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert parse_document.cache_info().currsize == 0


def test_the_token_limit_applies_to_a_document_parsed_before(gql, editor):
    query = "{ me { id username } }"
    gql(query, token=editor).ok()
    with override_settings(GRAPHQL_MAX_TOKENS=5):
        answer = gql(query, token=editor)
    assert answer.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert "tokens" in answer.errors[0]["message"]


def test_the_view_stops_parsing_at_the_token_limit_too(gql, editor, organization):
    # The view looks for a subscription before Strawberry runs; it must not parse a document
    # past the token limit either (it used to parse any size, then point to the WebSocket).
    fields = " ".join("id" for _ in range(60))
    query = f"subscription($org: ID!) {{ automationLogs(organization: $org) {{ {fields} }} }}"
    with override_settings(GRAPHQL_MAX_TOKENS=20):
        answer = gql(query, {"org": str(organization.pk)}, token=editor)
    assert answer.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert "tokens" in answer.errors[0]["message"]
    assert "WebSocket" not in answer.errors[0]["message"]


TRACES = "query($n: Int) { logs(first: $n) { edges { node { id conditionTrace { field } } } } }"


@override_settings(GRAPHQL_MAX_COST=5_000)
def test_query_cost_counts_list_sizes_as_sent_in_variables(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization)
    AutomationLogFactory(rule=rule, condition_trace=[])
    # The page, then per log: connection, edges, edge, node, id, trace + 200 entries of 2.
    assert operation_cost_of(TRACES, {"n": 10}) == 1 + 10 * (5 + 1 + 200 * 2)
    assert len(gql(TRACES, {"n": 10}, token=editor).ok()["logs"]["edges"]) == 1

    answer = gql(TRACES, {"n": 20}, token=editor)
    assert answer.data is None
    assert answer.codes == ["GRAPHQL_VALIDATION_FAILED"]
    error = answer.errors[0]
    assert "8,121" in error["message"] and "5,000" in error["message"]
    assert (error["extensions"]["cost"], error["extensions"]["maximumCost"]) == (8_121, 5_000)


@override_settings(GRAPHQL_MAX_COST=5_000)
def test_a_costly_query_is_refused_before_any_resolver_runs(gql, editor, organization):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rule = AutomationRuleFactory(organization=organization)
    AutomationLogFactory(rule=rule)
    gql("{ me { id } }", token=editor).ok()  # the token's last use is recorded
    with CaptureQueriesContext(connection) as captured:
        answer = gql(
            "{ logs(first: 200) { edges { node { conditionTrace { field } } } } }", token=editor
        )
    assert answer.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert not [q for q in captured.captured_queries if "automation_automationlog" in q["sql"]]


def test_list_sizes_come_from_literals_defaults_and_the_table(settings):
    groups = settings.AUTOMATION_CONDITIONS_MAX_GROUPS
    leaves = settings.AUTOMATION_CONDITIONS_MAX_LEAVES
    # rules: the default limit (50); upcomingRuns: count as written; actions: the engine's cap.
    assert operation_cost_of("{ rules { id upcomingRuns(count: 3) } }") == 1 + 50 * (1 + 1 + 4)
    # upcomingRunsLocal: its default count (5), or as written up to the same cap (50).
    assert operation_cost_of("{ rules { id upcomingRunsLocal } }") == 1 + 50 * (1 + 1 + 6)
    assert operation_cost_of("{ rule(id: 1) { upcomingRunsLocal(count: 99) } }") == 1 + 1 + 50
    assert operation_cost_of("{ rules(limit: 2) { actions { order } } }") == 1 + 2 * (
        1 + 1 + 50 * 2
    )
    # A value over the maximum is costed at the maximum (the resolver refuses it anyway).
    assert operation_cost_of("{ rules(limit: 100000) { id } }") == 1 + 200 * 2
    # A condition tree is bounded as a whole, however deep the query nests its groups.
    tree = "{ rule(id: 1) { conditions { logic conditions { field } groups { %s } } } }"
    shallow = operation_cost_of(tree % "logic")
    deep = operation_cost_of(tree % "logic groups { logic groups { logic } }")
    # rule, conditions, then per group (itself, logic, two lists) and per leaf (itself, field).
    assert shallow == deep == 1 + 1 + groups * 4 + leaves * 2
    # The bounds are the engine's settings, read when a query is costed.
    settings.AUTOMATION_CONDITIONS_MAX_GROUPS = 10
    assert operation_cost_of(tree % "logic") == 1 + 1 + 10 * 4 + leaves * 2


def test_the_largest_legitimate_queries_are_under_the_default_cost_limit(settings):
    """The bench's 200-rule page and the suite's "list everything" query are the most costly
    legitimate documents in the repository (GRAPHQL_MAX_COST's default leaves twice that)."""
    from bench.b3_rule_listing import LIST_RULES
    from tests.api.test_query_counts import LIST_EVERYTHING

    bench_page = operation_cost_of(LIST_RULES, {"org": "1", "offset": 0, "limit": 200})
    everything = operation_cost_of(LIST_EVERYTHING)
    assert max(bench_page, everything) * 2 <= settings.GRAPHQL_MAX_COST


def operation_cost_of(query: str, variables: dict | None = None) -> int:
    from graphql import parse

    from graphql_api.cost import operation_cost
    from graphql_api.schema import schema

    return operation_cost(schema._schema, parse(query), None, variables)
