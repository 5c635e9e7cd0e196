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

import pytest
import schemathesis
from django.conf import settings
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from accounts.choices import Role
from tests.drills.conftest import size
from tests.factories import AutomationLogFactory, AutomationRuleFactory, ProductFactory

pytestmark = pytest.mark.django_db

PUBLIC_CODES = {
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "VALIDATION_ERROR",
    "CONFLICT",
    "RATE_LIMITED",
    "GRAPHQL_VALIDATION_FAILED",
}
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
    per_operation = -(-cases // len(OPERATIONS))  # rounded up: at least `cases` in all
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
    assert total >= cases * 0.9, f"only {total} cases were generated"
    assert not failures, "\n".join(failures[:20])
