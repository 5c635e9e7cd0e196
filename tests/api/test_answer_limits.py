"""Answers are bounded: every list has a capped size, an answer has a byte limit counted while it
is built, and a user runs few costly operations at once (issue 17, item 4)."""

import os
import subprocess
import sys

import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType

from accounts.choices import Role
from automation.core.choices import ActionType
from graphql_api import ratelimit
from graphql_api.cost import SIZES, TREES
from tests.api.test_limits import operation_cost_of
from tests.factories import (
    ApiTokenFactory,
    AutomationLogFactory,
    AutomationRuleFactory,
    CategoryFactory,
    InvitationFactory,
    MembershipFactory,
    OrganizationFactory,
    ProductFactory,
)

pytestmark = pytest.mark.django_db


# --- Every list has a size ---------------------------------------------------------------------


def _list_fields():
    from graphql_api.schema import schema

    for graphql_type in schema._schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        for name, field in graphql_type.fields.items():
            field_type = field.type
            while isinstance(field_type, GraphQLNonNull):
                field_type = field_type.of_type
            if isinstance(field_type, GraphQLList):
                yield graphql_type.name, name


def test_every_list_of_the_schema_is_costed_with_a_known_size():
    """A list missing from the cost table was costed 50 items whatever it held (members,
    products: 49,000 rows in one answer). The condition tree's lists are bounded as a tree."""
    assert "ConditionGroup" in TREES[("Rule", "conditions")]
    in_trees = {("ConditionGroup", "conditions"), ("ConditionGroup", "groups")}
    unknown = [key for key in _list_fields() if key not in SIZES and key not in in_trees]
    assert unknown == []


PAGED = {
    "organizations": ("organizations(offset: $o, limit: $l) { id }", {}),
    "members": ("members(organization: $org, offset: $o, limit: $l) { user { id } }", {}),
    "invitations": ("invitations(offset: $o, limit: $l) { id }", {}),
    "organizationInvitations": (
        "organizationInvitations(organization: $org, offset: $o, limit: $l) { id }",
        {},
    ),
    "tokens": ("tokens(offset: $o, limit: $l) { id }", {}),
    "products": ("products(organization: $org, offset: $o, limit: $l) { id }", {}),
    "categories": ("categories(organization: $org, offset: $o, limit: $l) { id }", {}),
}


@pytest.fixture
def admin_with_three_of_everything(organization, make_member):
    admin = make_member(organization, Role.ADMIN)
    for _ in range(2):
        MembershipFactory(user=admin, organization=OrganizationFactory(), role=Role.VIEWER)
        make_member(organization, Role.VIEWER)
        ApiTokenFactory(user=admin)
    for _ in range(3):
        InvitationFactory(username=admin.username)
        InvitationFactory(organization=organization)
        ProductFactory(organization=organization, category=None)
        CategoryFactory(organization=organization)
    return admin


def _page(gql, user, organization, name, offset, limit):
    selection, _ = PAGED[name]
    uses_org = "$org" in selection
    header = "$o: Int, $l: Int" + (", $org: ID!" if uses_org else "")
    variables = {"o": offset, "l": limit}
    if uses_org:
        variables["org"] = str(organization.pk)
    return gql(f"query({header}) {{ {name}: {selection} }}", variables, token=user)


@pytest.mark.parametrize("name", sorted(PAGED))
def test_each_list_has_offset_and_limit(gql, organization, admin_with_three_of_everything, name):
    admin = admin_with_three_of_everything
    everything = _page(gql, admin, organization, name, None, None).ok()[name]
    assert len(everything) == 3  # the default limit is the cap (200): old clients see all
    assert _page(gql, admin, organization, name, 1, 1).ok()[name] == everything[1:2]
    assert _page(gql, admin, organization, name, 2, 200).ok()[name] == everything[2:]


@pytest.mark.parametrize("name", sorted(PAGED))
@pytest.mark.parametrize(("offset", "limit", "field"), [(0, 201, "limit"), (-1, 10, "offset")])
def test_a_size_over_the_cap_is_a_validation_error_not_clamped(
    gql, organization, admin_with_three_of_everything, name, offset, limit, field
):
    answer = _page(gql, admin_with_three_of_everything, organization, name, offset, limit)
    error = answer.error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert list(error["extensions"]["fields"]) == [field]


def test_pages_are_costed_with_their_limit():
    assert operation_cost_of('{ products(organization: "1") { id } }') == 1 + 200 * 2
    assert operation_cost_of('{ products(organization: "1", limit: 10) { id } }') == 1 + 10 * 2
    assert operation_cost_of("query($n: Int) { tokens(limit: $n) { id } }", {"n": 3}) == 1 + 3 * 2
    assert operation_cost_of('{ members(organization: "1") { user { id } } }') == 1 + 200 * 3


def test_configuration_bounded_lists_are_costed_with_their_real_size():
    from automation.core.registry import automatable_models, readable_paths

    models = len(automatable_models())
    paths = max(len(readable_paths(label)) for label in automatable_models())
    assert operation_cost_of("{ availableModels { model fields } }") == 1 + models * (
        1 + 1 + 1 + paths
    )
    assert operation_cost_of("{ actionTypes { actionType } }") == 1 + len(ActionType) * 2


def test_a_rule_watches_each_field_once(gql, editor, organization):
    query = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
    rule = {
        "organization": str(organization.pk),
        "name": "Watcher",
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "watchedFields": ["stock"] * 1000 + ["name"],
    }
    error = gql(query, {"input": rule}, token=editor).error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert error["extensions"]["fields"]["watchedFields"] == ['"stock" is listed more than once.']


# --- The answer's byte limit -------------------------------------------------------------------

CONTEXTS = "{ %s }"
ALIAS = "a%d: logs(first: 50) { edges { node { id context } } }"


@pytest.fixture
def logs_with_big_contexts(organization):
    rule = AutomationRuleFactory(organization=organization)
    for n in range(5):
        AutomationLogFactory(rule=rule, context={"record": {"description": f"{n}" * 10_000}})
    return rule


def _log_reads(captured) -> int:
    return sum(
        1
        for query in captured.captured_queries
        if "automation_automationlog" in query["sql"] and "COUNT(" not in query["sql"].upper()
    )


@override_settings(GRAPHQL_MAX_RESPONSE_BYTES=30_000)
def test_an_answer_over_the_byte_limit_is_refused_whole_and_stops_at_once(
    gql, editor, logs_with_big_contexts
):
    # One page: 5 contexts of about 10 KB each, over 30 KB.
    query = CONTEXTS % " ".join(ALIAS % n for n in range(3))
    with CaptureQueriesContext(connection) as captured:
        answer = gql(query, token=editor)
    error = answer.error()
    assert answer.data is None
    assert error["extensions"] == {"code": "RESPONSE_TOO_LARGE", "maximumBytes": 30_000}
    assert "30,000 bytes" in error["message"] and "fewer" in error["message"]
    # The first alias went over: the other two never read their logs.
    assert _log_reads(captured) == 1


@override_settings(GRAPHQL_MAX_RESPONSE_BYTES=30_000)
def test_an_answer_under_the_byte_limit_is_served(gql, editor, logs_with_big_contexts):
    answer = gql("{ logs(first: 2) { edges { node { id context } } } }", token=editor)
    assert len(answer.ok()["logs"]["edges"]) == 2
    assert len(answer.http.content) < 30_000


def test_the_count_follows_the_answers_json(gql, editor, logs_with_big_contexts, settings):
    """The counted size is the served body's within a few bytes (it leaves out the envelope
    `{"data":...}` and list brackets and commas): the limit is the bytes a client receives."""
    query = "{ logs(first: 5) { edges { node { id seq status context createdAt } } } }"
    size = len(gql(query, token=editor).http.content)
    settings.GRAPHQL_MAX_RESPONSE_BYTES = size - 20
    assert gql(query, token=editor).codes == ["RESPONSE_TOO_LARGE"]
    settings.GRAPHQL_MAX_RESPONSE_BYTES = size
    gql(query, token=editor).ok()


# --- Costly operations at once, per user -------------------------------------------------------

COSTLY = "{ logs(first: 200) { edges { node { id conditionTrace { field } } } } }"


@pytest.fixture
def no_leases(editor):
    def clear():
        for index in range(10):
            cache.delete(f"ratelimit:expensive_query:user:{editor.pk}:{index}")

    clear()
    yield
    clear()


@override_settings(GRAPHQL_EXPENSIVE_QUERY_COST=1_000, GRAPHQL_EXPENSIVE_QUERIES_PER_USER=2)
def test_a_user_runs_at_most_so_many_costly_queries_at_once(gql, editor, no_leases):
    assert operation_cost_of(COSTLY) >= 1_000
    # Two of the user's costly queries are running (in any server process: the leases are in the
    # shared cache).
    held = [ratelimit.take_expensive_query_lease(editor.pk) for _ in range(2)]
    error = gql(COSTLY, token=editor).error()
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 2}
    assert "2 costly queries running" in error["message"]
    # Cheap queries are not limited.
    gql("{ me { id } }", token=editor).ok()
    ratelimit.give_back_lease(*held.pop())
    gql(COSTLY, token=editor).ok()
    gql(COSTLY, token=editor).ok()  # its lease was given back after the first


@override_settings(GRAPHQL_EXPENSIVE_QUERY_COST=1_000, GRAPHQL_EXPENSIVE_QUERIES_PER_USER=1)
def test_a_costly_query_holds_a_lease_while_it_runs(
    gql, editor, organization, no_leases, monkeypatch
):
    from graphql_api import queries

    AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    seen = []
    page = queries.log_page

    def watching(*args, **kwargs):
        seen.append(cache.get(f"ratelimit:expensive_query:user:{editor.pk}:0"))
        return page(*args, **kwargs)

    monkeypatch.setattr(queries, "log_page", watching)
    gql(COSTLY, token=editor).ok()
    gql("{ logs(first: 1) { edges { node { id } } } }", token=editor).ok()  # cheap
    assert seen[0] is not None and seen[1] is None
    assert cache.get(f"ratelimit:expensive_query:user:{editor.pk}:0") is None


@override_settings(GRAPHQL_EXPENSIVE_QUERY_COST=1_000, GRAPHQL_EXPENSIVE_QUERIES_PER_USER=1)
def test_a_lease_of_a_process_that_died_frees_itself(gql, editor, no_leases, settings):
    """A process that died mid-query never gives its lease back: it expires."""
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        key, _ = ratelimit.take_expensive_query_lease(editor.pk)
        assert gql(COSTLY, token=editor).codes == ["RATE_LIMITED"]
        if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
            # Redis keeps time itself: the key carries the lease's expiry.
            client = cache._cache.get_client(key)
            ttl = client.ttl(cache.make_and_validate_key(key))
            assert 0 < ttl <= ratelimit.EXPENSIVE_QUERY_LEASE_SECONDS
            return
        traveller.shift(ratelimit.EXPENSIVE_QUERY_LEASE_SECONDS + 1)
        gql(COSTLY, token=editor).ok()


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="leases shared by processes need Redis (REDIS_URL)"
)
@override_settings(GRAPHQL_EXPENSIVE_QUERY_COST=1_000, GRAPHQL_EXPENSIVE_QUERIES_PER_USER=1)
def test_another_process_lease_counts_and_expires_on_its_own(gql, editor, no_leases):
    """A separate Python process (another server) takes the user's lease and exits without
    giving it back, as a crashed one would: this process sees it, and Redis expires it."""
    script = (
        "import django; django.setup(); from graphql_api import ratelimit; "
        f"print(ratelimit.take_expensive_query_lease({editor.pk})[0])"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    key = done.stdout.strip().splitlines()[-1]
    assert gql(COSTLY, token=editor).codes == ["RATE_LIMITED"]
    ttl = cache._cache.get_client(key).ttl(cache.make_and_validate_key(key))
    assert 0 < ttl <= ratelimit.EXPENSIVE_QUERY_LEASE_SECONDS
