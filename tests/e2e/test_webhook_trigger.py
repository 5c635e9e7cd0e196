"""WEBHOOK rules as their senders and editors meet them: plain HTTP POSTs to a rule's URL on a
real `serve` process, and GraphQL over HTTP, in the suite's mode (embedded, or distributed with
DATABASE_URL and REDIS_URL). Every refusal is checked to leave no run behind."""

import hashlib
import hmac
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import isolated_environment, json_of, launch

SECRET = "whsec-e2e-0123456789abcdef"
RUN_TIMEOUT_SECONDS = 60
FINISHED = {"SUCCEEDED", "PARTIAL", "FAILED", "SKIPPED"}

CREATE = """mutation($input: RuleInput!) {
  createRule(input: $input) { id webhookUrl webhookSecretSet }
}"""
LOG = """query($id: ID!) {
  log(id: $id) {
    id status trigger error context conditionsMet
    conditionTrace { field actual passed }
    actionLogs { actionType status result }
  }
}"""
LOG_COUNT = """query($org: ID!) {
  logs(organization: $org, first: 200, filter: {dryRun: false}) { edges { node { id } } }
}"""


def graphql(server, member, query, variables=None) -> dict:
    body = json_of(server.graphql(query, variables, token=member.token))
    assert "errors" not in body, body["errors"]
    return body["data"]


def order_rule(server, member, name, **fields) -> dict:
    """A WEBHOOK rule: big orders in EUR notify the organization's EDITORs."""
    rule = {
        "organization": member.organization_id,
        "name": name,
        "triggerType": "WEBHOOK",
        "conditions": {
            "conditions": [
                {"field": "payload.order.total", "operator": "GREATER_THAN", "value": 100},
                {"field": "payload.order.currency", "operator": "EQUALS", "value": "EUR"},
            ]
        },
        "actions": [
            {
                "actionType": "SEND_NOTIFICATION",
                "parameters": {
                    "recipients": {"roles": ["EDITOR"]},
                    "title": "Order {{ payload.order.id }}",
                    "body": "{{ payload.order.total }} {{ payload.order.currency }}",
                },
            }
        ],
        **fields,
    }
    return graphql(server, member, CREATE, {"input": rule})["createRule"]


def post(url, body, content_type="application/json", **headers) -> httpx.Response:
    """POST raw bytes (or an object as compact JSON), as any outside system would."""
    if not isinstance(body, bytes):
        body = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": content_type, **headers} if content_type else headers
    return httpx.post(url, content=body, headers=headers, timeout=30)


def runs_of(server, member) -> list[str]:
    return [
        edge["node"]["id"]
        for edge in graphql(server, member, LOG_COUNT, {"org": member.organization_id})["logs"][
            "edges"
        ]
    ]


def finished(server, member, log_id) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        log = graphql(server, member, LOG, {"id": log_id})["log"]
        if log["status"] in FINISHED:
            return log
        assert time.monotonic() < deadline, f"run {log_id} never finished: {log}"
        time.sleep(0.2)


def accepted(response) -> str:
    assert response.status_code == 202, response.text
    answer = json_of(response)
    assert answer["status"] == "PENDING"
    return answer["runId"]


def refusal(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    answer = json_of(response)
    assert answer["error"] == code, answer
    assert answer["message"]
    return answer


def signed_github(body: bytes, secret: str = SECRET) -> dict:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}"}


def signed_with_time(body: bytes, timestamp: int, secret: str = SECRET) -> dict:
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {"X-Automation-Timestamp": str(timestamp), "X-Automation-Signature": f"sha256={digest}"}


def signed_stripe(body: bytes, timestamp: int, secret: str = SECRET) -> dict:
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={digest}"}


# --- The shared server ---------------------------------------------------------------------------


def test_a_post_runs_the_rule_with_its_body_as_payload(e2e_server):
    editor = e2e_server.create_member("hook-editor", "hook-run-org", "EDITOR")
    rule = order_rule(e2e_server, editor, "Big orders")
    assert rule["webhookUrl"].startswith(f"{e2e_server.base_url}/hooks/")

    big = {"order": {"id": 42, "total": 120.5, "currency": "EUR"}}
    log = finished(e2e_server, editor, accepted(post(rule["webhookUrl"], big)))
    assert (log["status"], log["trigger"], log["conditionsMet"]) == ("SUCCEEDED", "WEBHOOK", True)
    assert log["context"] == {"object": None, "payload": big, "signature": None}
    assert [entry["actual"] for entry in log["conditionTrace"]] == [120.5, "EUR"]
    assert log["actionLogs"][0]["result"]["recipients"] == ["hook-editor"]
    notes = graphql(e2e_server, editor, "{ notifications { title body log { id } } }")
    assert notes["notifications"] == [
        {"title": "Order 42", "body": "120.5 EUR", "log": {"id": log["id"]}}
    ]

    small = {"order": {"id": 43, "total": 99, "currency": "EUR"}}
    skipped = finished(e2e_server, editor, accepted(post(rule["webhookUrl"], small)))
    assert (skipped["status"], skipped["error"]) == ("SKIPPED", "Conditions not met.")
    # A trailing slash reaches the same rule.
    accepted(post(rule["webhookUrl"] + "/", small))
    assert len(runs_of(e2e_server, editor)) == 3


def test_every_refusal_is_clear_and_writes_nothing(e2e_server):
    editor = e2e_server.create_member("hook-refused", "hook-refusal-org", "EDITOR")
    url = order_rule(e2e_server, editor, "Refusals")["webhookUrl"]
    body = {"order": {"id": 1, "total": 500, "currency": "EUR"}}

    for method in ("GET", "PUT", "DELETE", "OPTIONS"):
        response = httpx.request(method, url, timeout=30)
        assert refusal(response, 405, "METHOD_NOT_ALLOWED")
        assert response.headers["Allow"] == "POST"
    unknown = url[: -len(url.rsplit("/", 1)[1])] + "A" * 43
    refusal(post(unknown, body), 404, "NOT_FOUND")
    refusal(post(f"{e2e_server.base_url}/hooks/not%20a%20token", body), 404, "NOT_FOUND")
    refusal(post(url, body, content_type="text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE")
    refusal(post(url, body, content_type=None), 415, "UNSUPPORTED_MEDIA_TYPE")
    form = post(url, b"payload=%7B%7D", content_type="application/x-www-form-urlencoded")
    refusal(form, 415, "UNSUPPORTED_MEDIA_TYPE")
    refusal(
        post(url, body, content_type="application/json; charset=latin-1"),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    refusal(post(url, b'{"order": '), 400, "INVALID_JSON")
    refusal(post(url, b""), 400, "INVALID_JSON")
    refusal(post(url, b'{"total": NaN}'), 400, "INVALID_JSON")
    refusal(post(url, b'{"total": 1e400}'), 400, "INVALID_JSON")
    refusal(post(url, b'{"name": "caf\xe9"}'), 400, "INVALID_JSON")
    refusal(post(url, b"[" * 100_000), 400, "INVALID_PAYLOAD")
    refusal(post(url, b'{"text": "\\ud800"}'), 400, "INVALID_PAYLOAD")
    not_object = refusal(post(url, [body]), 400, "INVALID_PAYLOAD")
    assert not_object["message"] == "The payload must be a JSON object, not a list."
    deep = refusal(post(url, json.loads('{"a":' * 21 + "1" + "}" * 21)), 400, "INVALID_PAYLOAD")
    assert deep["message"] == "The payload nests deeper than 20 levels."
    assert runs_of(e2e_server, editor) == []

    rule_id = graphql(e2e_server, editor, "{ rules { id } }")["rules"][0]["id"]
    pause = "mutation($id: ID!) { updateRule(id: $id, input: {isActive: false}) { isActive } }"
    graphql(e2e_server, editor, pause, {"id": rule_id})
    refusal(post(url, body), 409, "RULE_PAUSED")
    graphql(e2e_server, editor, "mutation($id: ID!) { deleteRule(id: $id) }", {"id": rule_id})
    refusal(post(url, body), 404, "NOT_FOUND")
    assert runs_of(e2e_server, editor) == []


def test_signatures_are_checked_before_anything_runs(e2e_server):
    editor = e2e_server.create_member("hook-signed", "hook-signature-org", "EDITOR")
    rule = order_rule(e2e_server, editor, "Signed orders", webhookSecret=SECRET)
    assert rule["webhookSecretSet"] is True
    url = rule["webhookUrl"]
    body = json.dumps({"order": {"id": 7, "total": 150, "currency": "EUR"}}).encode()
    now = int(time.time())

    refusal(post(url, body), 401, "SIGNATURE_MISSING")
    refusal(
        post(url, body, **signed_github(body, "another-secret-0123456")), 401, "SIGNATURE_INVALID"
    )
    refusal(
        post(url, body.replace(b"150", b"990"), **signed_github(body)), 401, "SIGNATURE_INVALID"
    )
    refusal(
        post(url, body, **signed_with_time(body, now, "another-secret-0123456")),
        401,
        "SIGNATURE_INVALID",
    )
    stale = refusal(post(url, body, **signed_with_time(body, now - 3600)), 401, "SIGNATURE_EXPIRED")
    assert "AUTOMATION_WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS" in stale["message"]
    refusal(post(url, body, **signed_stripe(body, now - 3600)), 401, "SIGNATURE_EXPIRED")
    # A bad signature is refused before the body is even parsed.
    refusal(post(url, b"not json", **signed_github(b"{}")), 401, "SIGNATURE_INVALID")
    assert runs_of(e2e_server, editor) == []

    verified = {}
    for headers in (signed_github(body), signed_with_time(body, now), signed_stripe(body, now)):
        log = finished(e2e_server, editor, accepted(post(url, body, **headers)))
        assert log["status"] == "SUCCEEDED"
        verified[log["context"]["signature"]] = log["context"]["payload"]["order"]["id"]
    assert verified == {
        "X-Hub-Signature-256": 7,
        "X-Automation-Signature": 7,
        "Stripe-Signature": 7,
    }
    assert len(runs_of(e2e_server, editor)) == 3


def test_rotating_over_graphql_retires_the_old_url_at_once(e2e_server):
    editor = e2e_server.create_member("hook-rotator", "hook-rotate-org", "EDITOR")
    rule = order_rule(e2e_server, editor, "Rotated")
    rotate = "mutation($id: ID!) { rotateRuleWebhook(id: $id) { webhookUrl revision } }"
    rotated = graphql(e2e_server, editor, rotate, {"id": rule["id"]})["rotateRuleWebhook"]
    assert rotated["webhookUrl"] != rule["webhookUrl"]
    body = {"order": {"id": 1, "total": 1, "currency": "EUR"}}
    refusal(post(rule["webhookUrl"], body), 404, "NOT_FOUND")
    accepted(post(rotated["webhookUrl"], body))
    assert len(runs_of(e2e_server, editor)) == 1


def test_the_url_is_read_by_editors_and_admins_only(e2e_server):
    admin = e2e_server.create_member("hook-admin", "hook-roles-org", "ADMIN")
    viewer = e2e_server.create_member("hook-viewer", "hook-roles-org", "VIEWER")
    rule = order_rule(e2e_server, admin, "Roles")
    read = "query($id: ID!) { rule(id: $id) { webhookUrl webhookSecretSet } }"
    assert (
        graphql(e2e_server, admin, read, {"id": rule["id"]})["rule"]["webhookUrl"]
        == (rule["webhookUrl"])
    )
    assert graphql(e2e_server, viewer, read, {"id": rule["id"]})["rule"] == {
        "webhookUrl": None,
        "webhookSecretSet": False,
    }
    rotate = "mutation($id: ID!) { rotateRuleWebhook(id: $id) { id } }"
    denied = json_of(e2e_server.graphql(rotate, {"id": rule["id"]}, token=viewer.token))
    assert [e["extensions"]["code"] for e in denied["errors"]] == ["PERMISSION_DENIED"]


def test_a_dry_run_takes_a_sample_payload(e2e_server):
    editor = e2e_server.create_member("hook-dry", "hook-dry-org", "EDITOR")
    rule = order_rule(e2e_server, editor, "Dry")
    dry = """mutation($id: ID!, $payload: JSON) {
      runRule(id: $id, dryRun: true, payload: $payload) {
        status dryRun conditionsMet actionLogs { result }
      }
    }"""
    sample = {"order": {"id": 9, "total": 300, "currency": "EUR"}}
    run = graphql(e2e_server, editor, dry, {"id": rule["id"], "payload": sample})["runRule"]
    assert (run["status"], run["dryRun"], run["conditionsMet"]) == ("SUCCEEDED", True, True)
    assert run["actionLogs"][0]["result"]["title"] == "Order 9"
    assert runs_of(e2e_server, editor) == []  # real runs only: the dry run sent nothing
    notes = graphql(e2e_server, editor, "{ notifications { id } }")
    assert notes["notifications"] == []


# --- A server with small caps --------------------------------------------------------------------

CAPS = {
    "AUTOMATION_WEBHOOK_MAX_BODY_BYTES": "4096",
    "AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE": "3",
    "AUTOMATION_WEBHOOK_REQUESTS_PER_ORGANIZATION_PER_MINUTE": "5",
    # The engine's own CALL_WEBHOOK may call this server's hooks (127.0.0.1).
    "AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
}


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("capped-server")
    with isolated_environment(data_dir) as env:
        env.update(CAPS)
        server = launch(env, data_dir)
        try:
            yield server
        finally:
            server.stop()


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Send a request byte by byte as written, without waiting to send anything else; the
    answer's status and JSON body."""
    parts = urlsplit(url)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\n{head}\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(request + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_body_over_the_cap_is_refused_before_it_is_read(capped_server):
    editor = capped_server.create_member("cap-size", "cap-size-org", "EDITOR")
    url = order_rule(capped_server, editor, "Sizes")["webhookUrl"]

    # Declared too large: answered without sending one byte of the body (the server would wait
    # for it, and this would time out, if it read it first).
    status, answer = raw_request(url, "Content-Length: 100000000\r\n")
    assert (status, answer["error"]) == (413, "PAYLOAD_TOO_LARGE")
    assert "AUTOMATION_WEBHOOK_MAX_BODY_BYTES" in answer["message"]
    # Sent in chunks, without a length: refused once the chunks pass the cap.
    chunk = b"x" * 3000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    status, answer = raw_request(url, "Transfer-Encoding: chunked\r\n", chunked)
    assert (status, answer["error"]) == (413, "PAYLOAD_TOO_LARGE")
    refusal(post(url, {"pad": "x" * 4096}), 413, "PAYLOAD_TOO_LARGE")
    assert runs_of(capped_server, editor) == []

    at_the_cap = json.dumps({"pad": ""}).encode()
    at_the_cap = at_the_cap.replace(b'""', b'"' + b"x" * (4096 - len(at_the_cap)) + b'"')
    assert len(at_the_cap) == 4096
    accepted(post(url, at_the_cap))


def test_requests_over_the_rate_caps_are_refused_with_retry_after(capped_server):
    editor = capped_server.create_member("cap-rate", "cap-rate-org", "EDITOR")
    first = order_rule(capped_server, editor, "Rate 1")["webhookUrl"]
    second = order_rule(capped_server, editor, "Rate 2")["webhookUrl"]
    body = {"order": {"id": 1, "total": 1, "currency": "EUR"}}

    for _ in range(3):
        accepted(post(first, body))
    over = post(first, body)
    answer = refusal(over, 429, "RATE_LIMITED")
    assert "AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE" in answer["message"]
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    accepted(post(second, body))
    accepted(post(second, body))
    org_over = post(second, body)  # the rule's third, the organization's sixth
    answer = refusal(org_over, 429, "RATE_LIMITED")
    assert "AUTOMATION_WEBHOOK_REQUESTS_PER_ORGANIZATION_PER_MINUTE" in answer["message"]
    assert int(org_over.headers["Retry-After"]) >= 1
    assert len(runs_of(capped_server, editor)) == 5


def test_a_rule_can_call_another_rules_webhook_signed_with_its_secret(capped_server):
    editor = capped_server.create_member("cap-chain", "cap-chain-org", "EDITOR")
    receiver = order_rule(capped_server, editor, "Receiver", webhookSecret=SECRET)
    sender = {
        "organization": editor.organization_id,
        "name": "Sender",
        "triggerType": "MANUAL",
        "actions": [
            {
                "actionType": "CALL_WEBHOOK",
                "parameters": {
                    "url": receiver["webhookUrl"],
                    "body": {"order": {"id": 77, "total": 1000, "currency": "EUR"}},
                    "secret": SECRET,
                },
            }
        ],
    }
    sender_id = graphql(capped_server, editor, CREATE, {"input": sender})["createRule"]["id"]
    run = "mutation($id: ID!) { runRule(id: $id) { id } }"
    sent = finished(
        capped_server,
        editor,
        graphql(capped_server, editor, run, {"id": sender_id})["runRule"]["id"],
    )
    answer = sent["actionLogs"][0]["result"]
    assert answer["status_code"] == 202, answer
    run_id = json.loads(answer["body"])["runId"]
    received = finished(capped_server, editor, run_id)
    assert received["status"] == "SUCCEEDED"
    assert received["context"]["signature"] == "X-Automation-Signature"
