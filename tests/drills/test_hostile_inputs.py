"""Drill: a list of hostile inputs sent over HTTP to the real GraphQL view (Django's test client).

Each must get a clear error (a GraphQL error with a public extensions.code, or a 4xx for a body
the server will not decode) and never a 500, and must write nothing: every table the API can
write is counted before and after. What can only be judged when a run happens (a DNS name that
resolves to a private address, a redirect to one, a regex that backtracks forever) is run for
real: the run ends with a clear error, the private server gets no request, and no action writes.
"""

import contextlib
import ipaddress
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.choices import Role
from accounts.models import Invitation, Membership, Notification, Organization
from automation.actions import webhooks
from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    RuleAction,
    RuleCondition,
)
from automation.runs.execute import execute_run
from catalog.models import Category, Product
from tests.factories import ApiTokenFactory, InvitationFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

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
CREATE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
TABLES = (
    AutomationRule,
    ConditionGroup,
    RuleCondition,
    RuleAction,
    AutomationLog,
    Product,
    Category,
    Notification,
    Organization,
    Membership,
    Invitation,
)


def row_counts():
    return {model.__name__: model.objects.count() for model in TABLES}


@pytest.fixture
def post(editor):
    client = Client()

    def send(query=None, variables=None, raw_body=None):
        body = (
            raw_body
            if raw_body is not None
            else json.dumps({"query": query, "variables": variables or {}})
        )
        return client.post(
            "/graphql/",
            data=body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {editor.raw_token}",
        )

    return send


def refused(response) -> list[dict]:
    """The errors of a refused GraphQL request, after checking they are clear and public."""
    assert response.status_code == 200, (response.status_code, response.content[:300])
    body = json.loads(response.content)
    errors = body.get("errors") or []
    assert errors, f"accepted: {body}"
    for error in errors:
        code = (error.get("extensions") or {}).get("code")
        assert code in PUBLIC_CODES, error
        assert error["message"] and error["message"] != "Internal server error", error
    assert not any((body.get("data") or {}).values()), body
    return errors


def rule_input(organization, **overrides):
    data = {
        "organization": str(organization.pk),
        "name": "Hostile",
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "conditions": {"logic": "AND", "conditions": [], "groups": []},
        "actions": [{"actionType": "UPDATE_RECORD", "parameters": {"fields": {"stock": 1}}}],
    }
    data.update(overrides)
    return data


def assert_refused_and_nothing_written(post, variables, field_prefix=None):
    before = row_counts()
    errors = refused(post(CREATE, variables))
    assert row_counts() == before, "a refused request wrote something"
    if field_prefix is not None:
        (error,) = errors
        assert error["extensions"]["code"] == "VALIDATION_ERROR", error
        fields = error["extensions"]["fields"]
        assert any(key.startswith(field_prefix) for key in fields), fields
    return errors


def schedule_input(organization, schedule="0 * * * *", tz="UTC"):
    return rule_input(
        organization,
        triggerType="SCHEDULE",
        model=None,
        triggerEvent=None,
        schedule=schedule,
        timezone=tz,
        actions=[
            {
                "actionType": "SEND_NOTIFICATION",
                "parameters": {"recipients": {"roles": ["ADMIN"]}, "title": "t"},
            }
        ],
    )


CRON_GARBAGE = [
    "",
    "* * *",
    "61 * * * *",
    "* 25 * * *",
    "*/0 * * * *",
    "0 0 31 2 *",  # February 31st: valid-looking, never fires
    "@reboot",
    "* * * * * * * *",
    "1-999999999 * * * *",
    "0\x00 * * * *",
    "9" * 10_000,
    "{{ object.id }} * * * *",
]


@pytest.mark.parametrize("schedule", CRON_GARBAGE, ids=lambda s: repr(s[:20]))
def test_cron_garbage(post, organization, schedule):
    assert_refused_and_nothing_written(post, {"input": schedule_input(organization, schedule)})


TZ_GARBAGE = [
    "",
    "Mars/Olympus_Mons",
    "../../../etc/passwd",
    "UTC\x00",
    "+05:00",
    "a" * 5_000,
    "/etc/localtime",
    "Europe/",
]


@pytest.mark.parametrize("tz", TZ_GARBAGE, ids=lambda s: repr(s[:20]))
def test_time_zone_garbage(post, organization, tz):
    assert_refused_and_nothing_written(
        post, {"input": schedule_input(organization, tz=tz)}, "timezone"
    )


def nested_groups(depth: int) -> dict:
    tree = {"logic": "AND", "conditions": [{"field": "stock", "operator": "EQUALS", "value": 1}]}
    for _ in range(depth):
        tree = {"logic": "OR", "groups": [tree]}
    return tree


def test_condition_nesting_just_over_the_limit(post, organization):
    variables = {"input": rule_input(organization, conditions=nested_groups(12))}
    assert_refused_and_nothing_written(post, variables, "conditions")


def test_ten_thousand_sibling_groups_are_refused_before_anything_is_built(
    post, organization, monkeypatch
):
    """Counted on the input: no group is built or validated, nothing written, an error naming
    the bound at `conditions`."""
    built, validated = [], []
    real_init, real_full_clean = ConditionGroup.__init__, ConditionGroup.full_clean

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    def counting_full_clean(self, *args, **kwargs):
        validated.append(self)
        return real_full_clean(self, *args, **kwargs)

    monkeypatch.setattr(ConditionGroup, "__init__", counting_init)
    monkeypatch.setattr(ConditionGroup, "full_clean", counting_full_clean)
    leaf = {"field": "name", "operator": "REGEX", "value": "a"}
    tree = {"logic": "OR", "groups": [{"conditions": [leaf]} for _ in range(10_000)]}
    (error,) = assert_refused_and_nothing_written(
        post, {"input": rule_input(organization, conditions=tree)}, "conditions"
    )
    assert "AUTOMATION_CONDITIONS_MAX_GROUPS" in error["extensions"]["fields"]["conditions"][0]
    assert (built, validated) == ([], []), "refused before any group was built"


def test_ten_thousand_deep_condition_nesting_in_variables(post, organization):
    """Too deep to decode as JSON at all: a 400 before anything runs."""
    before = row_counts()
    body = json.dumps({"query": CREATE, "variables": {"input": rule_input(organization)}})
    deep = json.dumps(nested_groups(1)).replace(
        '"groups": [', '"groups": [' + '{"logic": "OR", "groups": [' * 10_000, 1
    )
    deep = deep[:-1] + "]}" * 10_000 + deep[-1]
    body = body.replace(
        '"conditions": {"logic": "AND", "conditions": [], "groups": []}', f'"conditions": {deep}'
    )
    response = post(raw_body=body)
    assert response.status_code == 400
    assert b"nests too deeply" in response.content
    assert row_counts() == before


def test_ten_thousand_deep_condition_nesting_as_a_literal(post, organization):
    """The same tree written into the query text: refused by the parser's limits, not a 500."""
    inner = '{logic: AND, conditions: [{field: "stock", operator: EQUALS, value: 1}]}'
    tree = "{logic: OR, groups: [" * 10_000 + inner + "]}" * 10_000
    query = (
        f'mutation {{ createRule(input: {{organization: "{organization.pk}", name: "x", '
        f'triggerType: EVENT, model: "catalog.product", triggerEvent: UPDATED, conditions: {tree}, '
        "actions: [] }) { id } }"
    )
    before = row_counts()
    refused(post(query))
    assert row_counts() == before


def nested_json(depth: int):
    value = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_ten_thousand_deep_json_webhook_body(post, organization):
    before = row_counts()
    prefix = json.dumps(
        {"query": CREATE, "variables": {"input": rule_input(organization, actions=[])}}
    )
    body = prefix.replace(
        '"actions": []',
        '"actions": [{"actionType": "CALL_WEBHOOK", "parameters": {"url": "https://example.com/", "body": '
        + '{"a": ' * 10_000
        + '"x"'
        + "}" * 10_000
        + "}}]",
    )
    response = post(raw_body=body)
    assert response.status_code == 400
    assert row_counts() == before


@pytest.mark.parametrize("depth", [200, 900])
def test_deep_but_decodable_json_parameters(post, organization, depth):
    """Decodable JSON that is still absurdly deep: a VALIDATION_ERROR on the parameters."""
    action = {
        "actionType": "CALL_WEBHOOK",
        "parameters": {"url": "https://example.com/", "body": nested_json(depth)},
    }
    assert_refused_and_nothing_written(
        post, {"input": rule_input(organization, actions=[action])}, "actions.0"
    )


def test_huge_json_parameters(post, organization):
    """Just under the body limit, yet far more than an action needs: refused by size."""
    action = {
        "actionType": "CALL_WEBHOOK",
        "parameters": {"url": "https://example.com/", "body": {"blob": "x" * 900_000}},
    }
    assert_refused_and_nothing_written(
        post, {"input": rule_input(organization, actions=[action])}, "actions.0"
    )


def test_a_body_over_the_limit_is_a_413(post, organization):
    action = {
        "actionType": "CALL_WEBHOOK",
        "parameters": {"url": "https://example.com/", "body": {"blob": "x" * 2_000_000}},
    }
    before = row_counts()
    response = post(CREATE, {"input": rule_input(organization, actions=[action])})
    assert response.status_code == 413
    assert row_counts() == before


@pytest.mark.parametrize(
    "pattern",
    ["(", "a{1,1001}", "(?<x>a)(?&x", "x" * 501, "[z-a]", "(?=a)b"],
    ids=["open", "huge-repeat", "bad-recursion", "too-long", "bad-range", "lookahead"],
)
def test_invalid_or_oversized_regex(post, organization, pattern):
    conditions = {
        "logic": "AND",
        "conditions": [{"field": "name", "operator": "REGEX", "value": pattern}],
    }
    assert_refused_and_nothing_written(
        post, {"input": rule_input(organization, conditions=conditions)}, "conditions"
    )


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(?:a{100000}){100000}", "invalid repetition size"),  # 23 GB with a backtracking engine
        ("(?:a{3000}){3000}", "invalid repetition size"),  # 5.9 s and 2.4 GB with one
        (r"\pL{1000}", "too large"),  # a legal repetition, 1.2 million instructions compiled
    ],
    ids=["21-characters", "3000x3000", "too-large-program"],
)
def test_regex_compile_bombs_are_refused_quickly(post, organization, pattern, reason):
    """Refused at save with a VALIDATION_ERROR on the condition's value, nothing written.
    (The first two cost the old engine 23 GB and 2.4 GB: never run them against it.)"""
    conditions = {
        "logic": "AND",
        "conditions": [{"field": "name", "operator": "REGEX", "value": pattern}],
    }
    (error,) = assert_refused_and_nothing_written(
        post, {"input": rule_input(organization, conditions=conditions)}, "conditions"
    )
    # RE2's own refusal (not a budget or a timeout): it never built the program.
    messages = error["extensions"]["fields"]["conditions.conditions.0.value"]
    assert reason in " ".join(messages), messages


def test_a_catastrophic_regex_is_evaluated_quickly_and_the_run_ends_clearly(post, organization):
    """^(a|a)+$ is a valid pattern; against "aaaa...!" a backtracking engine runs for ages. RE2
    answers at once: the run is SKIPPED (conditions not met) and its action writes nothing."""
    conditions = {
        "logic": "AND",
        "conditions": [{"field": "name", "operator": "REGEX", "value": "^(a|a)+$"}],
    }
    created = post(CREATE, {"input": rule_input(organization, conditions=conditions)})
    assert not json.loads(created.content).get("errors"), created.content
    product = ProductFactory(organization=organization, name="a" * 190 + "!", stock=6)
    product.stock = 7
    product.save()  # the rule watches UPDATED
    log = AutomationLog.objects.get(object_id=str(product.pk))
    execute_run(log.pk)
    log.refresh_from_db()
    assert (log.status, log.error) == ("SKIPPED", "Conditions not met.")
    (entry,) = log.condition_trace
    # Evaluated to the end: no budget (AUTOMATION_CONDITIONS_BUDGET_SECONDS) or step bound met.
    assert (entry["passed"], entry["error"]) == (False, None)
    product.refresh_from_db()
    assert product.stock == 7, "the action did not run"


@pytest.mark.parametrize("started_by", ["event", "dry run"])
def test_a_rule_of_slow_regexes_at_every_bound_stops_at_the_evaluation_budget(
    post, organization, started_by
):
    """99 OR groups of 2 slow but legal REGEX leaves (each RE2 match of this pattern on this
    text costs 80 million steps, under AUTOMATION_REGEX_MAX_STEPS): 170 s without a budget. The
    run, or the dry run inside its HTTP request, stops once AUTOMATION_CONDITIONS_BUDGET_SECONDS
    is spent, SKIPPED naming it, and its action writes nothing."""
    slow = {"field": "description", "operator": "REGEX", "value": "(?:[a-z]+ ?){1000}!"}
    conditions = {"logic": "OR", "groups": [{"conditions": [slow, slow]} for _ in range(99)]}
    created = post(CREATE, {"input": rule_input(organization, conditions=conditions)})
    assert not json.loads(created.content).get("errors"), created.content
    rule_id = json.loads(created.content)["data"]["createRule"]["id"]
    product = ProductFactory(organization=organization, description="a" * 20_000, stock=6)
    if started_by == "event":
        product.stock = 7
        product.save()  # the rule watches UPDATED
        log = AutomationLog.objects.get(object_id=str(product.pk))
        execute_run(log.pk)
    else:
        answer = post(
            "mutation($id: ID!, $obj: ID) { runRule(id: $id, objectId: $obj, dryRun: true) { id } }",
            {"id": rule_id, "obj": str(product.pk)},
        )
        log = AutomationLog.objects.get(pk=json.loads(answer.content)["data"]["runRule"]["id"])
    log.refresh_from_db()
    assert log.status == "SKIPPED"
    assert "AUTOMATION_CONDITIONS_BUDGET_SECONDS" in log.error, log.error
    assert len(log.condition_trace) == 198
    # Work counted, not timed: a match costs at least 0.08 s on any machine (80 million steps),
    # so a 2 s budget leaves all but a few dozen of the 198 leaves unevaluated.
    unevaluated = [entry for entry in log.condition_trace if entry["error"]]
    assert all("AUTOMATION_CONDITIONS_BUDGET_SECONDS" in entry["error"] for entry in unevaluated)
    assert len(unevaluated) >= 150, len(unevaluated)
    product.refresh_from_db()
    assert product.stock == (7 if started_by == "event" else 6), "the action did not run"


PRIVATE_URLS = [
    "http://127.0.0.1/hook",
    "http://localhost/hook",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/",
    "http://[::1]:8000/",
    "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/",
    "http://2130706433/",
    "http://0x7f.1/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "http://user:pass@127.0.0.1/",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_webhook_urls_to_private_addresses(post, organization, url, settings):
    settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    action = {"actionType": "CALL_WEBHOOK", "parameters": {"url": url}}
    assert_refused_and_nothing_written(
        post, {"input": rule_input(organization, actions=[action])}, "actions.0"
    )


class PrivateServer:
    """A loopback HTTP server standing for a private service; it counts what reaches it."""

    def __init__(self, redirect_to=None, trickle=False):
        self.hits = []
        self.stopped = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                server.hits.append(self.path)
                if trickle:
                    server.trickle_headers(self.wfile)
                    return
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def trickle_headers(self, out, interval=0.2, give_up_after=20):
        """Answer a byte at a time, headers that never end (until `give_up_after` seconds)."""
        give_up = time.monotonic() + give_up_after
        with contextlib.suppress(OSError):  # the client hung up
            out.write(b"HTTP/1.1 200 OK\r\n")
            while time.monotonic() < give_up and not self.stopped.wait(interval):
                out.write(b"X")

    def close(self):
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def private_server():
    servers = []

    def make(**kwargs):
        servers.append(PrivateServer(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def run_webhook_rule(post, organization, url):
    """Create a rule calling `url` then updating the product; trigger and execute its run."""
    actions = [
        {
            "actionType": "CALL_WEBHOOK",
            "parameters": {"url": url, "maxAttempts": 1, "timeoutSeconds": 2},
        },
        {"actionType": "UPDATE_RECORD", "parameters": {"fields": {"stock": 99}}},
    ]
    created = post(CREATE, {"input": rule_input(organization, actions=actions)})
    assert not json.loads(created.content).get("errors"), created.content
    product = ProductFactory(organization=organization, stock=1)
    product.stock = 2
    product.save()
    log = AutomationLog.objects.get(object_id=str(product.pk))
    execute_run(log.pk)
    answer = post(
        "query($id: ID!) { log(id: $id) { status actionLogs { status error } } }",
        {"id": str(log.pk)},
    )
    product.refresh_from_db()
    return json.loads(answer.content)["data"]["log"], product


def test_a_dns_name_resolving_to_a_private_address_is_refused_when_called(
    post, organization, private_server, monkeypatch, settings
):
    settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    target = private_server()
    monkeypatch.setattr(
        webhooks, "resolve_host", lambda host, port: [ipaddress.ip_address("127.0.0.1")]
    )
    log, product = run_webhook_rule(post, organization, f"http://hooks.example.com:{target.port}/x")
    assert log["status"] == "FAILED"
    assert "127.0.0.1 is a loopback address" in log["actionLogs"][0]["error"]
    assert log["actionLogs"][1]["status"] == "SKIPPED"
    assert target.hits == [], "no request reached the private server"
    assert product.stock == 2, "the later action wrote nothing"


def test_a_redirect_to_a_private_address_is_refused(
    post, organization, private_server, monkeypatch, settings
):
    """A public-looking server (allowed by exact address:port) redirects to a private one."""
    settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    target = private_server()
    bouncer = private_server(redirect_to=f"http://127.0.0.1:{target.port}/admin")
    original = webhooks.check_address

    def check(ip, port):  # the bouncer alone stands for a public host
        if (str(ip), port) != ("127.0.0.1", bouncer.port):
            original(ip, port)

    monkeypatch.setattr(webhooks, "check_address", check)
    monkeypatch.setattr(
        webhooks, "resolve_host", lambda host, port: [ipaddress.ip_address("127.0.0.1")]
    )
    log, product = run_webhook_rule(
        post, organization, f"http://public.example.com:{bouncer.port}/go"
    )
    assert log["status"] == "FAILED"
    assert "loopback" in log["actionLogs"][0]["error"]
    assert bouncer.hits == ["/go"] and target.hits == []
    assert product.stock == 2


def test_a_webhook_server_that_trickles_its_answer_is_cut_at_the_timeout(
    post, organization, private_server, monkeypatch, settings
):
    """A byte every 0.2 s never trips a per-read timeout: the run must still end at the rule's
    timeoutSeconds (2 s) with the reason, instead of holding its worker while the server talks."""
    settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    slow = private_server(trickle=True)
    original = webhooks.check_address

    def check(ip, port):  # the slow server alone stands for a public host
        if (str(ip), port) != ("127.0.0.1", slow.port):
            original(ip, port)

    monkeypatch.setattr(webhooks, "check_address", check)
    monkeypatch.setattr(
        webhooks, "resolve_host", lambda host, port: [ipaddress.ip_address("127.0.0.1")]
    )
    log, product = run_webhook_rule(post, organization, f"http://slow.example.com:{slow.port}/x")
    # The deadline's own message: the server trickles for 20 s, then hangs up (another error).
    assert log["status"] == "FAILED"
    assert "timed out after 2 s" in log["actionLogs"][0]["error"]
    assert log["actionLogs"][1]["status"] == "SKIPPED"
    assert slow.hits == ["/x"]
    assert product.stock == 2


def test_templates_repeating_earlier_results_stop_at_the_size_limit(post, organization, editor):
    """Each notification repeats the previous one's body 40 times: 10 bytes, 400, 16 KB, 640 KB,
    25 MB... A dry run (the same rendering as a real one) stops at the limit, quickly, with the
    parameter and the limit named, and its log stays small."""

    def repeat(index):
        return f"{{{{ results.{index}.body }}}}" * 40

    actions = [
        {
            "actionType": "SEND_NOTIFICATION",
            "parameters": {
                "recipients": {"roles": ["EDITOR"]},
                "title": "t",
                "body": "{{ rule.name }}" if index == 0 else repeat(index - 1),
            },
        }
        for index in range(5)
    ]
    manual = {"triggerType": "MANUAL", "model": None, "triggerEvent": None, "actions": actions}
    created = post(CREATE, {"input": rule_input(organization, name="Amplifier!", **manual)})
    rule_id = json.loads(created.content)["data"]["createRule"]["id"]
    answer = post(
        "mutation($id: ID!) { runRule(id: $id, dryRun: true) { id status error "
        "actionLogs { status error } } }",
        {"id": rule_id},
    )
    log = json.loads(answer.content)["data"]["runRule"]
    assert log["status"] == "FAILED"
    assert [entry["status"] for entry in log["actionLogs"]] == [
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "FAILED",
        "SKIPPED",
    ]
    assert log["actionLogs"][3]["error"].startswith(
        "body: the template renders more than 65536 bytes (AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES)"
    )
    stored = AutomationLog.objects.get(pk=log["id"])
    assert len(json.dumps(stored.action_logs)) < 100_000  # 16 KB was the largest body kept


HOSTILE_PATHS = [
    "created_by__password",
    "updated_by__username",
    "organization__name",
    "organization__memberships__user__password",
    "category__organization__slug",
    "category__products__organization__id",
    "category__created_by__email",
    "organization_id",
    "__class__",
    "name__regex",
    "category__" * 50 + "name",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_condition_paths_into_users_or_other_organizations(post, organization, path):
    conditions = {
        "logic": "AND",
        "conditions": [{"field": path, "operator": "EQUALS", "value": "x"}],
    }
    assert_refused_and_nothing_written(
        post, {"input": rule_input(organization, conditions=conditions)}, "conditions"
    )


def test_actions_may_not_write_users_other_models_or_other_organizations(
    post, organization, other_organization
):
    hostile_actions = [
        {
            "actionType": "UPDATE_RECORD",
            "parameters": {"fields": {"organization": other_organization.pk}},
        },
        {"actionType": "UPDATE_RECORD", "parameters": {"fields": {"created_by": 1}}},
        {
            "actionType": "CREATE_RECORD",
            "parameters": {"model": "auth.user", "fields": {"username": "evil"}},
        },
        {
            "actionType": "CREATE_RECORD",
            "parameters": {"model": "accounts.membership", "fields": {}},
        },
        {"actionType": "DELETE_RECORD", "parameters": {"model": "accounts.organization"}},
    ]
    for action in hostile_actions:
        try:
            assert_refused_and_nothing_written(
                post, {"input": rule_input(organization, actions=[action])}, "actions.0"
            )
        except AssertionError as exc:
            raise AssertionError(f"{action}: {exc}") from None


def test_records_of_another_organization_are_not_found(
    post, organization, other_organization, make_member
):
    outsider = make_member(other_organization, Role.ADMIN)  # noqa: F841 - the other org has people
    product = ProductFactory(organization=other_organization)
    answers = [
        post("query($id: ID!) { rule(id: $id) { id } }", {"id": "99999999999999999999999"}),
        post("query($id: ID!) { log(id: $id) { id } }", {"id": "-1"}),
        post("query($id: ID!) { rule(id: $id) { id } }", {"id": "1 OR 1=1"}),
        post("mutation($id: ID!) { deleteProduct(id: $id) }", {"id": str(product.pk)}),
        post("query($o: ID) { rules(organization: $o) { id } }", {"o": str(other_organization.pk)}),
    ]
    before = row_counts()
    for answer in answers:
        refused(answer)
    assert Product.objects.filter(pk=product.pk).exists()
    assert row_counts() == before


SIMULATE = """mutation($id: ID!, $obj: ID, $changes: JSON, $record: JSON) {
  runRule(id: $id, objectId: $obj, dryRun: true, changes: $changes, record: $record) { id }
}"""
HOSTILE_SIMULATIONS = {
    "ten thousand changed fields": (
        {"changes": {f"f{n}": {"old": 1, "new": 2} for n in range(10_000)}},
        "changes",
    ),
    "ten thousand record fields": ({"record": {f"f{n}": n for n in range(10_000)}}, "record"),
    "a record value 900 levels deep": ({"record": {"name": nested_json(900)}}, "record.name"),
    "a change 900 levels deep": (
        {"changes": {"stock": {"old": 1, "new": nested_json(900)}}},
        "changes.stock.new",
    ),
    "a list for a number": ({"record": {"stock": list(range(1000))}}, "record.stock"),
    "a name of 900 KB": ({"record": {"name": "x" * 900_000}}, "record.name"),
    "a price that is not finite": ({"record": {"price": "NaN"}}, "record.price"),
    "a huge number": ({"record": {"stock": "9" * 5000}}, "record.stock"),
    "another organization's field": ({"record": {"organization": 1}}, "record.organization"),
    "a private attribute": ({"record": {"_state": 1}}, "record._state"),
    "changes of a stored id": ({"changes": {"id": {"old": 1, "new": 2}}}, "changes.id"),
}


@pytest.mark.parametrize("case", HOSTILE_SIMULATIONS)
def test_hostile_simulated_changes_and_records(post, organization, case):
    from tests.factories import AutomationRuleFactory

    product = ProductFactory(organization=organization)
    rule = AutomationRuleFactory(organization=organization)
    variables, field = HOSTILE_SIMULATIONS[case]
    before = row_counts()
    answer = post(SIMULATE, {"id": str(rule.pk), "obj": str(product.pk), **variables})
    (error,) = refused(answer)
    assert error["extensions"]["code"] == "VALIDATION_ERROR", error
    assert list(error["extensions"]["fields"]) == [field], error
    assert len(answer.content) < 20_000, "the refusal echoes what it was sent"
    assert row_counts() == before


HOSTILE_USERNAMES = [
    "",
    " ",
    "' OR 1=1 --",
    "%",
    "x" * 10_000,
    "nul\x00byte",
    "bob\n",
    "\u202eevil",
    "../admin",
    "<script>",
]


@pytest.mark.parametrize("username", HOSTILE_USERNAMES, ids=lambda name: repr(name[:20]))
def test_hostile_usernames_to_invite(organization, make_member, username):
    admin = make_member(organization, Role.ADMIN)
    before = row_counts()

    (error,) = refused(
        Client().post(
            "/graphql/",
            data=json.dumps(
                {
                    "query": "mutation($o: ID!, $u: String!) "
                    "{ addMember(organization: $o, username: $u, role: ADMIN) { id } }",
                    "variables": {"o": str(organization.pk), "u": username},
                }
            ),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {admin.raw_token}",
        )
    )

    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert list(error["extensions"]["fields"]) == ["username"]
    assert row_counts() == before


def test_an_invitation_is_matched_by_its_whole_username_not_as_a_pattern(organization):
    """`_` and `%` are LIKE wildcards; `_` is a valid username character."""
    bob = UserFactory(username="bob")
    InvitationFactory(organization=organization, username="b_b")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=bob).raw_token}")

    answer = client.post(
        "/graphql/", {"query": "{ invitations { id } }"}, content_type="application/json"
    )

    assert json.loads(answer.content) == {"data": {"invitations": []}}


@pytest.mark.parametrize(
    "operation",
    [
        "mutation($id: ID!) { acceptInvitation(id: $id) { id } }",
        "mutation($id: ID!) { declineInvitation(id: $id) }",
        "mutation($id: ID!) { revokeInvitation(id: $id) }",
    ],
    ids=["accept", "decline", "revoke"],
)
def test_hostile_invitation_ids(post, organization, operation):
    InvitationFactory(organization=organization)
    before = row_counts()
    for hostile_id in ["-1", "1 OR 1=1", "9" * 30, "", "0x1", "1; DROP TABLE x"]:
        (error,) = refused(post(operation, {"id": hostile_id}))
        assert error["extensions"]["code"] == "NOT_FOUND", (hostile_id, error)
    assert row_counts() == before
    assert Invitation.objects.open().count() == 1


def test_query_depth_alias_and_fragment_bombs(post, editor):
    depth = "{ me { id } }"
    for _ in range(30):
        depth = "{ organizations " + depth + " }"
    bombs = [
        "{ " + " ".join(f"a{n}: me {{ id }}" for n in range(10_000)) + " }",
        "query { " + "rules { conditions { groups { " * 20 + "logic" + " } } }" * 20 + " }",
        "fragment A on Query { ...B } fragment B on Query { ...A } { ...A }",
        "{ me { " + "id " * 20_000 + "} }",
        "{ me { id @skip(if: false) " + "@include(if: true) " * 5_000 + "} }",
        "{ " + "__typename " * 6_000 + "}",
        "query Q" + "($v: Int)" + " { me { id } } " * 2,
    ]
    before = row_counts()
    for bomb in bombs:
        with CaptureQueriesContext(connection) as queries:
            refused(post(bomb))
        # Refused before it runs: the token's lookup (and its use, recorded once a minute) only.
        assert len(queries) <= 2, (bomb[:80], [query["sql"][:80] for query in queries])
    assert row_counts() == before


# --- NUL characters: PostgreSQL cannot store them; every string input is checked before anything
# runs, so the answer is the same on both databases.

NUL_CASES = [
    (
        "mutation($org: ID!, $name: String!) { createCategory(organization: $org, name: $name) { id } }",
        lambda org: {"org": str(org.pk), "name": "Tools\x00"},
        {"name"},
    ),
    (
        "mutation($input: ProductInput!) { createProduct(input: $input) { id } }",
        lambda org: {
            "input": {"organization": str(org.pk), "name": "a\x00b", "description": "\x00"}
        },
        {"name", "description"},
    ),
    (
        'mutation($u: String!) { obtainToken(username: $u, password: "pw") { token } }',
        lambda org: {"u": "alice\x00"},
        {"username"},
    ),
    (CREATE, lambda org: {"input": rule_input(org, name="Nul\x00rule")}, {"name"}),
    (
        CREATE,
        lambda org: {
            "input": rule_input(
                org,
                conditions={
                    "logic": "AND",
                    "conditions": [{"field": "name", "operator": "EQUALS", "value": "x\x00"}],
                },
                actions=[
                    {
                        "actionType": "UPDATE_RECORD",
                        "parameters": {"fields": {"description\x00": "ok", "name": ["\x00"]}},
                    }
                ],
            )
        },
        {
            "conditions.conditions.0.value",
            "actions.0.parameters.fields.description\\u0000",
            "actions.0.parameters.fields.name.0",
        },
    ),
    (
        # Written into the query text rather than sent as a variable.
        'mutation($org: ID!) { createCategory(organization: $org, name: "Tools\\u0000") { id } }',
        lambda org: {"org": str(org.pk)},
        {"name"},
    ),
]


@pytest.mark.parametrize(("query", "variables", "paths"), NUL_CASES)
def test_nul_characters_are_a_validation_error_at_their_input_path(
    post, organization, query, variables, paths
):
    before = row_counts()
    (error,) = refused(post(query, variables(organization)))
    assert row_counts() == before
    assert error["extensions"]["code"] == "VALIDATION_ERROR", error
    assert set(error["extensions"]["fields"]) == paths
    assert "U+0000" in error["extensions"]["fields"][sorted(paths)[0]][0]


@pytest.mark.parametrize("body", ["123", "[]", '"x"', "null", "true", "[1, 2]"])
def test_a_json_body_that_is_not_an_object_is_a_400_with_a_json_error(post, body):
    response = post(raw_body=body)
    assert response.status_code == 400
    (error,) = json.loads(response.content)["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["message"]


def test_a_viewer_cannot_ask_for_megabytes_of_nested_traces(organization, make_member):
    """The issue's shape: 137 bytes of query, 26.7 MB of answer. Logs with 200-leaf traces, asked
    200 at a time with their traces, action logs and context, and the same of their parent and
    root runs: refused on its cost, before anything is read."""
    viewer = make_member(organization, Role.VIEWER)
    rule = AutomationRule.objects.create(
        organization=organization, name="Traced", trigger_type="MANUAL"
    )
    trace = [
        {
            "path": f"conditions.conditions.{n}",
            "field": "name",
            "operator": "EQUALS",
            "expected": "x" * 100,
            "actual": "y" * 100,
            "passed": False,
        }
        for n in range(200)
    ]
    for _ in range(3):
        AutomationLog.objects.create(
            rule=rule,
            organization=organization,
            trigger="MANUAL",
            condition_trace=trace,
            rule_revision=rule.revision,
        )
    entry = (
        "conditionTrace { path field operator expected actual passed error } "
        "actionLogs { order status result error } context"
    )
    nested = f"{entry} parentLog {{ {entry} rootLog {{ {entry} }} }}"
    query = f"{{ logs(first: 200) {{ edges {{ node {{ {nested} }} }} }} }}"
    with CaptureQueriesContext(connection) as queries:
        response = Client().post(
            "/graphql/",
            data=json.dumps({"query": query}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {viewer.raw_token}",
        )
    (error,) = refused(response)
    # Nothing read: the token's lookup (and its use, recorded once a minute) only.
    assert len(queries) <= 2, [query["sql"][:80] for query in queries]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["extensions"]["cost"] > error["extensions"]["maximumCost"]
    assert "over the limit" in error["message"]
    assert len(response.content) < 2_000
