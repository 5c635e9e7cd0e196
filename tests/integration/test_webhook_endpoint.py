"""POST /hooks/<token> in-process (Django's test client, the view as any WSGI server runs it):
what the running-server tests (tests/e2e/test_webhook_trigger.py) cannot pin down exactly: the
rate caps' windows on a frozen clock, a run refused by a budget, the view's own size check, and
the work one request costs."""

import datetime
import hashlib
import hmac
import json

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from automation.core.models import AutomationLog
from tests.factories import AutomationRuleFactory

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 12, 2, 9, 0, 0, tzinfo=datetime.UTC)
BODY = {"order": {"id": 1, "total": 120}}


@pytest.fixture
def rule(organization):
    return AutomationRuleFactory(organization=organization, webhook_rule=True)


def post(client, rule, body=BODY, **extra):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(
        f"/hooks/{rule.webhook_token}", data=data, content_type="application/json", **extra
    )


def test_the_caps_count_a_window_from_the_first_request(client, rule, organization, settings):
    settings.AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE = 2
    settings.AUTOMATION_WEBHOOK_REQUESTS_PER_ORGANIZATION_PER_MINUTE = 3
    other = AutomationRuleFactory(organization=organization, webhook_rule=True)
    with time_machine.travel(NOW, tick=False) as clock:
        assert [post(client, rule).status_code for _ in range(2)] == [202, 202]
        clock.shift(20)
        over = post(client, rule)
        assert over.status_code == 429
        assert over["Retry-After"] == "41"  # the window opened 20 s ago
        assert json.loads(over.content)["error"] == "RATE_LIMITED"
        assert post(client, other).status_code == 202  # the organization's third
        assert post(client, other).status_code == 429  # its fourth
    # The window's end is the cache's expiry (real time in Redis): accounts/ratelimit.py's tests.
    assert AutomationLog.objects.count() == 3


def test_a_cap_of_zero_is_no_cap(client, rule, settings):
    settings.AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE = 0
    settings.AUTOMATION_WEBHOOK_REQUESTS_PER_ORGANIZATION_PER_MINUTE = 0
    assert {post(client, rule).status_code for _ in range(5)} == {202}


def test_requests_refused_by_their_signature_do_not_use_the_caps(client, rule, settings):
    settings.AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE = 1
    rule.webhook_secret = "whsec-0123456789abcdef"
    rule.save()
    for _ in range(5):
        assert post(client, rule, HTTP_X_HUB_SIGNATURE_256="sha256=" + "0" * 64).status_code == 401
    raw = json.dumps(BODY).encode()
    digest = hmac.new(rule.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()
    assert post(client, rule, raw, HTTP_X_HUB_SIGNATURE_256=f"sha256={digest}").status_code == 202


def test_a_run_over_a_budget_is_accepted_and_written_failed(client, rule, settings):
    settings.AUTOMATION_MAX_RUNS_PER_MINUTE = 1
    with time_machine.travel(NOW, tick=False):
        assert json.loads(post(client, rule).content)["status"] == "PENDING"
        answer = json.loads(post(client, rule).content)
    assert answer["status"] == "FAILED"
    log = AutomationLog.objects.get(pk=answer["runId"])
    assert "AUTOMATION_MAX_RUNS_PER_MINUTE" in log.error


def test_the_view_checks_the_size_itself(client, rule, settings):
    # Under WSGI nothing caps the body before the view: it reads at most the cap.
    settings.AUTOMATION_WEBHOOK_MAX_BODY_BYTES = 50
    response = post(client, rule, {"pad": "x" * 50})
    assert (response.status_code, json.loads(response.content)["error"]) == (
        413,
        "PAYLOAD_TOO_LARGE",
    )
    assert not AutomationLog.objects.exists()


@pytest.mark.parametrize(
    "body",
    [b'{"id": ' + b"9" * 5000 + b"}", b'{"a": Infinity}', b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00"],
)
def test_bodies_that_are_not_utf8_json_numbers_are_400(client, rule, body):
    response = post(client, rule, body)
    assert (response.status_code, json.loads(response.content)["error"]) == (400, "INVALID_JSON")
    assert not AutomationLog.objects.exists()


def test_nul_characters_are_dropped_before_the_payload_is_stored(client, rule):
    answer = json.loads(post(client, rule, {"note": "a\u0000b"}).content)
    assert AutomationLog.objects.get(pk=answer["runId"]).context["payload"] == {"note": "ab"}


def test_an_accepted_request_costs_a_few_queries(client, rule):
    post(client, rule)  # content types and the like, cached from then on
    with CaptureQueriesContext(connection) as queries:
        assert post(client, rule).status_code == 202
    # The rule by its token, then the run's log (with the savepoints around it).
    statements = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))
    ]
    assert len(statements) == 2, statements
