"""3. Listing 1 vs 1,000 rules with their conditions and actions over GraphQL.

Through Django's test client (the whole HTTP stack: middleware, token, Strawberry, optimizer), as
a member with an API token. The API caps a page at 200 rules, so 1,000 rules are 5 pages; the SQL
query count is per request and must not depend on the number of rules. Time per rule compares a
200-rule page with the 1-rule list, which shows what a rule costs once the request is paid for.
"""

import time

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench import data
from bench.stats import Row, median

PAGE = 200
LIST_RULES = """query($org: ID!, $offset: Int, $limit: Int) {
  rules(organization: $org, offset: $offset, limit: $limit) {
    id name model isActive triggerType triggerEvent watchedFields conditionLogic
    createdBy { username } organization { id name }
    conditions {
      logic negate conditions { field operator value negate }
      groups { logic negate conditions { field operator value } }
    }
    actions { actionType parameters order continueOnFailure }
  }
}"""


def _page(client, token, org, offset, limit) -> list:
    response = client.post(
        "/graphql/",
        {"query": LIST_RULES, "variables": {"org": str(org.pk), "offset": offset, "limit": limit}},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"listing failed: {response.status_code} {body.get('errors')}")
    return body["data"]["rules"]


def _list_all(client, token, org, total) -> int:
    seen = 0
    for offset in range(0, total, PAGE):
        seen += len(_page(client, token, org, offset, min(PAGE, total - offset)))
    return seen


def _queries(client, token, org, limit) -> int:
    with CaptureQueriesContext(connection) as captured:
        rules = _page(client, token, org, 0, limit)
    if len(rules) != limit:
        raise RuntimeError(f"expected {limit} rules, got {len(rules)}")
    return len(captured.captured_queries)


def run(ctx) -> list[Row]:
    many, repeats = ctx.size((1000, 2), (400, 1), (3, 1))
    page = min(PAGE, many)
    small, large = data.organization("b3-one"), data.organization("b3-many")
    _, small_token = data.member_with_token(small)
    _, large_token = data.member_with_token(large)
    data.bulk_rules(small, 1)
    data.bulk_rules(large, many)
    client = Client()
    _page(client, small_token, small, 0, 1)  # warm up (and record the tokens' last use)
    _page(client, large_token, large, 0, page)

    one_queries = _queries(client, small_token, small, 1)
    many_queries = _queries(client, large_token, large, page)

    one_times, many_times = [], []
    for _ in range(repeats):
        for _ in range(10):
            started = time.perf_counter()
            _page(client, small_token, small, 0, 1)
            one_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        if _list_all(client, large_token, large, many) != many:
            raise RuntimeError("listing lost rules")
        many_times.append((time.perf_counter() - started) / many)
    one, per_rule = median(one_times), median(many_times)
    equal = one_queries == many_queries
    return [
        Row(
            bench=3,
            name=f"rules list: SQL queries, 1 rule vs {page}-rule page",
            value=many_queries,
            unit="queries",
            goal="equal, <= 6",
            ok=equal and many_queries <= 6,
            detail=f"{one_queries} for 1 rule, {many_queries} for {page} rules",
        ),
        Row(
            bench=3,
            name=f"rules list: time per rule, {many} rules vs 1 rule",
            value=round(per_rule / one, 3),
            unit="x",
            detail=(
                f"{per_rule * 1000:.2f} ms per rule over {many} rules ({PAGE} a page) vs "
                f"{one * 1000:.2f} ms for a 1-rule list"
            ),
        ),
    ]
