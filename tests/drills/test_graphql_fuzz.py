"""Drill: schemathesis fuzzes every query and mutation of the GraphQL endpoint as a logged-in user.

schemathesis (GraphQL mode) reads schema.graphql and generates operations with random arguments;
each is POSTed over HTTP to the real view (Django's test client) with an ADMIN's token, spread
evenly over the operations. Every answer must be a 200 (or a clear 4xx for a body the server will
not take) and every error must carry a public extensions.code; an unexpected one must read
"Internal server error" with a correlationId, and the drill counts those as failures too (each is
a bug to fix). `DRILLS=full` runs 1,000 cases; the suite runs 100 (tests/drills/conftest.py).
"""

import json
import time
from collections import Counter
from pathlib import Path

import graphql
import pytest
import schemathesis
from django.conf import settings
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.graphql import nodes

from accounts.choices import Role
from tests.drills.conftest import size
from tests.factories import AutomationLogFactory, AutomationRuleFactory, ProductFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

PUBLIC_CODES = {
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "VALIDATION_ERROR",
    "CONFLICT",
    "RATE_LIMITED",
    "RESPONSE_TOO_LARGE",
    "GRAPHQL_VALIDATION_FAILED",
}


def _json_literal(value) -> graphql.ValueNode:
    """A JSON value as a GraphQL literal (the JSON scalar takes any of them)."""
    if isinstance(value, dict):
        return nodes.Object(
            [
                graphql.ObjectFieldNode(name=graphql.NameNode(value=key), value=_json_literal(item))
                for key, item in value.items()
            ]
        )
    if isinstance(value, list):
        return nodes.List([_json_literal(item) for item in value])
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    return nodes.String(value)


# schemathesis knows DateTime; JSON (action parameters, condition values) and Decimal are ours.
_names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z")
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_names, inner, max_size=4),
    max_leaves=12,
)
schemathesis.graphql.scalar("JSON", _json.map(_json_literal))
schemathesis.graphql.scalar(
    "Decimal",
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str).map(nodes.String)
    | st.text(max_size=12).map(nodes.String),
)

SCHEMA = schemathesis.graphql.from_path(Path(settings.BASE_DIR) / "schema.graphql")
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def problems_of(status: int, content: bytes) -> list[str]:
    """What is wrong with one answer ([] when it is a clean success or a clear refusal)."""
    if status >= 500:
        return [f"HTTP {status}"]
    if status != 200:
        return [] if status in (400, 413) else [f"HTTP {status}"]
    body = json.loads(content)
    found = []
    for error in body.get("errors") or []:
        extensions = error.get("extensions") or {}
        code = extensions.get("code")
        if code == "INTERNAL_SERVER_ERROR":
            masked = error.get("message") == "Internal server error" and extensions.get(
                "correlationId"
            )
            found.append("internal error" + ("" if masked else f" NOT MASKED: {error}"))
        elif code not in PUBLIC_CODES:
            found.append(f"error without a public code: {error}")
    return found


def test_fuzzing_every_operation_gives_no_500_and_no_unmasked_error(organization, make_member):
    admin = make_member(organization, Role.ADMIN)
    rule = AutomationRuleFactory(organization=organization)
    AutomationLogFactory(rule=rule)
    ProductFactory(organization=organization)
    client = Client()
    cases = size("fuzz_cases")
    # A third more than an even share: hypothesis stops early on operations with few variants.
    per_operation = -(-cases * 4 // (3 * len(OPERATIONS)))
    sent: Counter = Counter()
    failures: list[str] = []
    started = time.monotonic()

    def fuzzer(operation):
        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            response = client.post(
                "/graphql/",
                data=json.dumps({"query": case.body}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {admin.raw_token}",
            )
            sent[operation.label] += 1
            for problem in problems_of(response.status_code, response.content):
                failures.append(f"{operation.label}: {problem}\n  query: {case.body[:400]}")

        return fuzz

    for operation in OPERATIONS:
        fuzzer(operation)()

    seconds = time.monotonic() - started
    total = sum(sent.values())
    print(
        f"\nschemathesis: {total} cases over {len(sent)} operations in {seconds:.1f}s, "
        f"{len(failures)} failures"
    )
    assert len(sent) == len(OPERATIONS)
    assert total >= cases, f"only {total} cases were generated"
    assert not failures, "\n".join(failures[:20])
