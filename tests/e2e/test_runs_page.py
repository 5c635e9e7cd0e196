"""The live runs page (/runs/) in headless Chromium, against a real `manage.py serve`.

The browser reaches the server through a TCP proxy (tests/e2e/tcp_proxy.py), so a test can drop
the page's WebSocket the way a network does, while the server goes on running rules. Products
are written through the API with a token, as another user or script would: the page only
watches. Each test signs in through the plain login page, as a user would.

- the live table and a run's detail: a product write fires a rule and its row becomes
  SUCCEEDED; after a dropped connection the page says it is reconnecting, and the 5 runs that
  finished while it was cut off all appear once it is back, from the last cursor it saw;
- cut off longer than the stream keeps events (CURSOR_EXPIRED), it reads the runs afresh;
- a VIEWER is sent to sign in, then sees the runs, filters them, pauses and resumes; the page
  sends nothing but queries and subscriptions; logged out elsewhere, it offers to sign in again;
- stored names and results that look like HTML are shown as text: no element is made of them,
  no script runs, no Content-Security-Policy violation;
- an open run held by a (local) webhook shows its condition trace, then its actions turning from
  RUNNING to SUCCEEDED as they go;
- a run that holds (holdFor) is WAITING in the table and the status filter, says when it
  resumes, then shows the second check of its conditions once it went on.

The tests need Debian's chromium (/usr/bin/chromium): skipped without it, failed under CI.
"""

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.e2e.chromium import CHROMIUM, BrowserError, Chromium, chromium_available
from tests.e2e.conftest import REPO_ROOT, json_of
from tests.e2e.tcp_proxy import TcpProxy

# The page in Chromium; the stream behind it is tested in both modes (tests/e2e/test_stream.py).
pytestmark = [pytest.mark.slow, pytest.mark.embedded_only]

CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
CREATE_CATEGORY = 'mutation($org: ID!) { createCategory(organization: $org, name: "Shelf") { id } }'
CREATE_PRODUCT = "mutation($input: ProductInput!) { createProduct(input: $input) { id } }"
RUNS_OF = """query($org: ID!, $id: ID!) {
  logs(organization: $org, filter: {objectType: "catalog.product", objectId: $id}) {
    edges { node { id status rule { id } } }
  }
}"""
WAIT_SECONDS = 60
CONNECTION = "document.querySelector('#connection').dataset.state"
# Collects the page's Content-Security-Policy violations from its first script on.
WATCH_CSP = (
    "window.__cspViolations = [];"
    "document.addEventListener('securitypolicyviolation', (event) =>"
    " window.__cspViolations.push(event.violatedDirective + ' ' + event.blockedURI));"
)


@pytest.fixture
def chromium(tmp_path):
    if not chromium_available():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (.ci/run does)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium) and CI is not set")
    with Chromium.launch(tmp_path / "chromium-profile") as browser:
        browser.send("Page.addScriptToEvaluateOnNewDocument", source=WATCH_CSP)
        yield browser


@pytest.fixture
def proxy(e2e_server):
    with TcpProxy("127.0.0.1", urlsplit(e2e_server.base_url).port) as proxy:
        yield proxy


class Organization:
    """An organization of the shared server, with an ADMIN whose token writes through the API."""

    def __init__(self, server, name: str | None = None, members=()):
        """`members`: (username, password, role) of users to create and add (one manage.py
        process for all: each costs seconds)."""
        self.server = server
        self.slug = f"page-{uuid.uuid4().hex[:10]}"
        self.name = name or self.slug
        self.id, self.token = provision(server, self.slug, self.name, members)
        self.category = self.api(CREATE_CATEGORY, {"org": self.id})["createCategory"]["id"]

    def api(self, query: str, variables: dict) -> dict:
        body = json_of(self.server.graphql(query, variables, token=self.token))
        assert "errors" not in body, body
        return body["data"]

    def rule_on_new_products(
        self,
        name: str,
        actions: list | None = None,
        conditions: dict | None = None,
        hold_for: str | None = None,
    ) -> str:
        actions = actions or [
            {
                "actionType": "UPDATE_RECORD",
                "parameters": {"fields": {"description": "Seen: {{ object.name }}"}},
            }
        ]
        rule = {
            "organization": self.id,
            "name": name,
            "triggerType": "EVENT",
            "model": "catalog.product",
            "triggerEvent": "CREATED",
            "actions": actions,
            "conditions": conditions or {},
            "holdFor": hold_for,
        }
        return self.api(CREATE_RULE, {"input": rule})["createRule"]["id"]

    def write_product(self, name: str = "Lamp") -> str:
        """Create a product (which fires the CREATED rules); its id."""
        product = {"organization": self.id, "category": self.category, "name": name, "stock": 1}
        return self.api(CREATE_PRODUCT, {"input": product})["createProduct"]["id"]

    def runs_of(self, product_id: str) -> list[dict]:
        edges = self.api(RUNS_OF, {"org": self.id, "id": product_id})["logs"]["edges"]
        return [edge["node"] for edge in edges]

    def finished_runs_of(self, product_id: str, count: int = 1) -> list[dict]:
        """The product's runs, once `count` of them finished (read through the API)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            runs = self.runs_of(product_id)
            finished = [run for run in runs if run["status"] not in ("PENDING", "RUNNING")]
            if len(finished) >= count:
                assert len(runs) == count, runs
                return runs
            time.sleep(0.1)
        raise AssertionError(f"The runs of product {product_id} did not finish: {runs}")

    def finished_run_of(self, product_id: str) -> dict:
        return self.finished_runs_of(product_id)[0]


def provision(server, slug: str, name: str, members) -> tuple[str, str]:
    """Create the organization, an ADMIN with a token, and each (username, password, role)
    member (users who are not staff; `None` as password: an existing user). Returns the
    organization's id and the ADMIN's token."""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from accounts.models import ApiToken, Membership, Organization\n"
        "User = get_user_model()\n"
        f"org = Organization.objects.create(slug={slug!r}, name={name!r})\n"
        f"admin = User.objects.create_user({slug + '-admin'!r})\n"
        "Membership.objects.create(user=admin, organization=org, role='ADMIN')\n"
        f"for username, password, role in {list(members)!r}:\n"
        "    if password is None:\n"
        "        user = User.objects.get(username=username)\n"
        "    else:\n"
        "        user = User.objects.create_user(username, '', password)\n"
        "    Membership.objects.create(user=user, organization=org, role=role)\n"
        "print('provisioned', org.pk, ApiToken.issue(user=admin, name='e2e')[1])\n"
    )
    output = server.manage("shell", "--no-imports", "-c", code).stdout
    line = next(line for line in output.splitlines() if line.startswith("provisioned "))
    _, organization_id, token = line.split()
    return organization_id, token


def sign_in(browser: Chromium, base: str, username: str, password: str) -> None:
    """Open /runs/ signed out: the login page asks first, then sends us back to /runs/."""
    browser.send("Page.navigate", url=f"{base}/runs/")
    browser.wait_for(
        "location.pathname === '/accounts/login/' && document.readyState === 'complete'"
    )
    assert browser.evaluate("location.search") == "?next=/runs/"
    browser.evaluate(
        f"document.querySelector('#id_username').value = {json.dumps(username)};"
        f"document.querySelector('#id_password').value = {json.dumps(password)};"
        "document.querySelector('form[action=\"/accounts/login/\"]').submit()"
    )
    browser.wait_for("location.pathname === '/runs/' && document.readyState === 'complete'")
    browser.wait_for(f"{CONNECTION} === 'open'")


def choose(browser: Chromium, select_id: str, value: str) -> None:
    browser.evaluate(
        f"(() => {{ const s = document.getElementById({json.dumps(select_id)});"
        f" s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})()"
    )


def row_status(run_id: str) -> str:
    return f"document.querySelector('#runs tr[data-run-id=\"{run_id}\"]')?.dataset.status"


def wait_for_row(browser: Chromium, run_id: str, status: str) -> None:
    browser.wait_for(f"{row_status(run_id)} === {json.dumps(status)}", timeout=WAIT_SECONDS)


def websockets(browser: Chromium) -> list[dict]:
    """The page's WebSocket connections, in order, with their messages decoded: `sent` and
    `received`."""
    browser.pump_events()
    return [
        {
            **websocket,
            "sent": [json.loads(p) for direction, p in websocket["frames"] if direction == "sent"],
            "received": [
                json.loads(p) for direction, p in websocket["frames"] if direction == "received"
            ],
        }
        for websocket in browser.websockets
    ]


def named(message: dict, operation: str) -> bool:
    """Is this a subscribe message of the page's operation `operation` (RunsPageRuns...)?"""
    query = message.get("payload", {}).get("query", "") if message["type"] == "subscribe" else ""
    return f" {operation}(" in query


def operations_sent(browser: Chromium) -> list[dict]:
    """Every operation the page sent over its WebSockets (subscribe messages), in order."""
    return [m for ws in websockets(browser) for m in ws["sent"] if m["type"] == "subscribe"]


def assert_reads_only(browser: Chromium) -> None:
    operations = operations_sent(browser)
    assert operations
    for operation in operations:
        kind = operation["payload"]["query"].split()[0]
        assert kind in ("query", "subscription"), operation


def test_runs_appear_live_and_the_gap_of_a_dropped_connection_is_filled(
    chromium, e2e_server, proxy
):
    username, password = f"watcher-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    other = Organization(e2e_server, members=[(username, password, "EDITOR")])
    org = Organization(e2e_server, members=[(username, None, "EDITOR")])
    rule = org.rule_on_new_products("Note new products")
    sign_in(chromium, proxy.base_url, username, password)

    # Pick the organization: both of the user's are offered.
    offered = chromium.wait_for(
        "document.querySelectorAll('#organization option').length === 2"
        " && [...document.querySelectorAll('#organization option')].map(o => o.value)"
    )
    assert sorted(offered) == sorted([other.id, org.id])
    choose(chromium, "organization", org.id)
    chromium.wait_for(f"new URLSearchParams(location.search).get('organization') === '{org.id}'")
    chromium.wait_for("!document.querySelector('#empty').hidden")  # no run yet

    # A product write fires the rule: its row appears, then reads SUCCEEDED.
    product = org.write_product()
    run = org.finished_run_of(product)
    assert run["status"] == "SUCCEEDED" and run["rule"]["id"] == rule
    wait_for_row(chromium, run["id"], "SUCCEEDED")

    # A click opens it: the action's status, attempt and result.
    chromium.evaluate(f"document.querySelector('#runs tr[data-run-id=\"{run['id']}\"] a').click()")
    chromium.wait_for(
        "document.querySelector('#detail .action .badge')?.textContent === 'SUCCEEDED'"
    )
    assert chromium.evaluate("document.querySelector('#detail h2').textContent") == (
        f"Run #{run['id']}"
    )
    assert chromium.evaluate("document.querySelector('#detail .action .attempt').textContent") == (
        "attempt 1"
    )
    assert "Seen: Lamp" in chromium.evaluate("document.querySelector('#detail pre').textContent")
    chromium.evaluate("document.querySelector('#detail .close').click()")

    # The connection drops: the page says so while the server runs 5 more.
    proxy.cut()
    chromium.wait_for(f"{CONNECTION} === 'reconnecting'")
    assert "Reconnecting" in chromium.evaluate("document.querySelector('#connection').textContent")
    products = [org.write_product(f"Lamp {n}") for n in range(5)]
    missed = [org.finished_run_of(product)["id"] for product in products]
    shown = chromium.evaluate("[...document.querySelectorAll('#runs tbody tr')].length")
    assert shown == 1  # the page has seen none of them

    # Back: all 5 are there, finished, without a reload.
    proxy.restore()
    chromium.wait_for(f"{CONNECTION} === 'open'", timeout=WAIT_SECONDS)
    for run_id in missed:
        wait_for_row(chromium, run_id, "SUCCEEDED")
    ids = chromium.evaluate(
        "[...document.querySelectorAll('#runs tbody tr')].map(tr => tr.dataset.runId)"
    )
    assert ids == sorted([run["id"], *missed], key=int, reverse=True)  # newest at the top
    assert chromium.evaluate("performance.getEntriesByType('navigation').length") == 1

    # It resumed its subscription after the last cursor it had received, and read no page again.
    used = [ws for ws in websockets(chromium) if ws["sent"]]
    assert len(used) == 2  # the one cut, and the one after (the attempts between were refused)
    cut, resumed = used
    runs_subscription = [m for m in cut["sent"] if named(m, "RunsPageRuns")][-1]
    cursors_seen = [
        m["payload"]["data"]["automationLogs"]["cursor"]
        for m in cut["received"]
        if m["type"] == "next" and m["id"] == runs_subscription["id"]
    ]
    [resubscribed] = [m for m in resumed["sent"] if named(m, "RunsPageRuns")]
    assert cursors_seen and resubscribed["payload"]["variables"]["after"] == cursors_seen[-1]
    assert not any(named(m, "RunsPageLogs") for m in resumed["sent"])

    # A rule created since the page loaded joins the rule filter with its first run.
    org.rule_on_new_products("Added later")
    org.finished_runs_of(org.write_product("Desk"), count=2)
    chromium.wait_for(
        "[...document.querySelectorAll('#rule-filter option')].map(o => o.textContent)"
        ".includes('Added later')"
    )
    assert_reads_only(chromium)
    assert chromium.errors == []
    assert chromium.evaluate("window.__cspViolations") == []


def test_when_the_stream_no_longer_has_the_gap_the_page_reads_the_runs_afresh(
    chromium, e2e_server, proxy
):
    username, password = f"sleeper-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    org = Organization(e2e_server, members=[(username, password, "VIEWER")])
    org.rule_on_new_products("Note new products")
    sign_in(chromium, proxy.base_url, username, password)
    chromium.wait_for("!document.querySelector('#empty').hidden")
    first = org.finished_run_of(org.write_product())
    wait_for_row(chromium, first["id"], "SUCCEEDED")

    # Cut off while runs happen, and longer than the stream keeps them (retention 0: purged).
    proxy.cut()
    chromium.wait_for(f"{CONNECTION} === 'reconnecting'")
    missed = [org.finished_run_of(org.write_product(f"Lamp {n}"))["id"] for n in range(2)]
    purge = subprocess.run(
        [sys.executable, "manage.py", "purge_logs"],
        cwd=REPO_ROOT,
        env={**e2e_server.env, "AUTOMATION_STREAM_RETENTION_HOURS": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert purge.returncode == 0, purge.stderr

    # Back: resuming from its cursor is refused (CURSOR_EXPIRED), so it reads the runs again.
    proxy.restore()
    for run_id in missed:
        wait_for_row(chromium, run_id, "SUCCEEDED")
    resumed = [ws for ws in websockets(chromium) if ws["sent"]][-1]
    expired = [
        error
        for m in resumed["received"]
        if m["type"] == "next"
        for error in m["payload"].get("errors") or []
    ]
    assert [e["extensions"]["code"] for e in expired] == ["CURSOR_EXPIRED"]
    assert any(named(m, "RunsPageLogs") for m in resumed["sent"])
    assert chromium.evaluate("document.querySelector('#notice').hidden") is True
    assert chromium.errors == []


def test_a_viewer_signs_in_and_watches_filters_and_pauses_without_changing_anything(
    chromium, e2e_server
):
    username, password = f"viewer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    org = Organization(e2e_server, members=[(username, password, "VIEWER")])
    noted = org.rule_on_new_products("Note new products")
    failing = org.rule_on_new_products(
        "Always fails",
        [
            {
                "actionType": "DELETE_RECORD",
                "parameters": {
                    "target": {"model": "catalog.product", "lookup": {"name": "nothing like it"}}
                },
            }
        ],
    )
    first = org.finished_runs_of(org.write_product(), count=2)
    sign_in(chromium, e2e_server.base_url, username, password)  # anonymous: sent to sign in
    chromium.wait_for("document.querySelector('#organization').value !== ''")
    by_rule = {run["rule"]["id"]: run for run in first}
    wait_for_row(chromium, by_rule[noted]["id"], "SUCCEEDED")
    wait_for_row(chromium, by_rule[failing]["id"], "FAILED")
    assert "viewer" in chromium.evaluate(
        "document.querySelector('#organization').selectedOptions[0].textContent"
    )

    # Filters: by rule, then by status (each reads the runs again and follows new ones).
    rows = "[...document.querySelectorAll('#runs tbody tr')].map(tr => tr.dataset.runId)"
    choose(chromium, "rule-filter", noted)
    chromium.wait_for(
        f"JSON.stringify({rows}) === {json.dumps(json.dumps([by_rule[noted]['id']]))}"
    )
    choose(chromium, "rule-filter", "")
    choose(chromium, "status-filter", "FAILED")
    chromium.wait_for(
        f"JSON.stringify({rows}) === {json.dumps(json.dumps([by_rule[failing]['id']]))}"
    )
    assert "status=FAILED" in chromium.evaluate("location.search")
    choose(chromium, "status-filter", "")
    chromium.wait_for(f"{rows}.length === 2")

    # Paused, the table holds still while events come in; resumed, it shows them.
    chromium.evaluate("document.querySelector('#pause').click()")
    assert (
        chromium.evaluate("document.querySelector('#pause').getAttribute('aria-pressed')") == "true"
    )
    second = org.finished_runs_of(org.write_product("Chair"), count=2)
    chromium.wait_for(
        "/^[1-9][0-9]* updates waiting$/.test(document.querySelector('#paused-note').textContent)"
    )
    for run in second:
        assert chromium.evaluate(row_status(run["id"])) is None
    chromium.evaluate("document.querySelector('#pause').click()")
    for run in second:
        wait_for_row(chromium, run["id"], run["status"])
    # The chart counts the hour's runs by status.
    chromium.wait_for(
        "[...document.querySelectorAll('#chart-legend .legend-item')].map(i => i.textContent)"
        ".join() === 'pending 0,running 0,waiting 0,succeeded 2,partial 0,failed 2,skipped 0'"
    )
    assert chromium.evaluate("document.querySelectorAll('#chart rect.segment').length") >= 2

    # The failed run's detail says why.
    chromium.evaluate(
        f"document.querySelector('#runs tr[data-run-id=\"{by_rule[failing]['id']}\"] a').click()"
    )
    chromium.wait_for(
        "document.querySelector('#detail p.error')?.textContent.includes('DELETE_RECORD')"
    )
    assert (
        chromium.evaluate("document.querySelector('#detail .action .badge').textContent")
        == "FAILED"
    )
    assert_reads_only(chromium)

    # Logged out elsewhere (another tab): the server checks the session again before it delivers
    # an event (at most once a second), ends the stream, and the page says so. Products are
    # written until an event comes after that check.
    chromium.evaluate(
        "fetch('/accounts/logout/', {method: 'POST', headers: {'X-CSRFToken':"
        " document.cookie.match(/csrftoken=([^;]+)/)[1]}}).then(r => r.status)"
    )
    sign_in_link = "document.querySelector('#notice a')?.getAttribute('href') === '/accounts/login/?next=/runs/'"
    for attempt in range(10):
        org.finished_runs_of(org.write_product(f"Table {attempt}"), count=2)
        with contextlib.suppress(BrowserError):
            chromium.wait_for(sign_in_link, timeout=3)
            break
    assert chromium.evaluate(sign_in_link), "no event ended the stream"
    assert "session has ended" in chromium.evaluate("document.querySelector('#notice').textContent")
    assert chromium.errors == []
    assert chromium.evaluate("window.__cspViolations") == []


HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def test_stored_names_and_results_that_look_like_html_show_as_text(chromium, e2e_server):
    username, password = f"reader-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    org = Organization(e2e_server, name=f"Org {HOSTILE}", members=[(username, password, "VIEWER")])
    org.rule_on_new_products(f"Rule {HOSTILE}")
    [run] = org.finished_runs_of(org.write_product(f"Product {HOSTILE}"))
    sign_in(chromium, e2e_server.base_url, username, password)

    wait_for_row(chromium, run["id"], "SUCCEEDED")
    option = chromium.evaluate("document.querySelector('#organization option').textContent")
    assert option == f"Org {HOSTILE} (viewer)"
    rule_cell = chromium.evaluate(
        f"document.querySelector('#runs tr[data-run-id=\"{run['id']}\"] td.rule').textContent"
    )
    assert rule_cell == f"Rule {HOSTILE}"
    assert chromium.evaluate(
        "[...document.querySelectorAll('#rule-filter option')].map(o => o.textContent)"
    ) == [
        "All rules",
        f"Rule {HOSTILE}",
    ]
    chromium.evaluate(f"document.querySelector('#runs tr[data-run-id=\"{run['id']}\"] a').click()")
    chromium.wait_for("document.querySelector('#detail pre') !== null")
    result = chromium.evaluate("document.querySelector('#detail pre').textContent")
    assert json.loads(result)["record"]["name"] == f"Product {HOSTILE}"
    assert f"Rule {HOSTILE}" in chromium.evaluate(
        "document.querySelector('#detail .facts').textContent"
    )

    # None of it became markup: no image, no inline script, nothing ran, nothing was blocked.
    assert chromium.evaluate("document.querySelectorAll('img, script:not([src])').length") == 0
    assert chromium.evaluate("window.__pwned") is None
    assert chromium.evaluate("window.__cspViolations") == []
    assert chromium.errors == []


class HeldWebhook:
    """A local webhook target that holds each request until `release()`, then answers 200."""

    def __init__(self):
        self.released = threading.Event()
        self.requests = 0
        held = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                held.requests += 1
                held.released.wait(timeout=WAIT_SECONDS)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"received": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self):
        self.released.set()

    def close(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held_webhook():
    target = HeldWebhook()
    yield target
    target.close()


def test_an_open_run_shows_its_trace_and_its_actions_change_live(
    chromium, start_server, held_webhook, monkeypatch
):
    monkeypatch.setenv("AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")  # the local target
    server = start_server()
    username, password = f"follower-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    org = Organization(server, members=[(username, password, "VIEWER")])
    org.rule_on_new_products(
        "Tell the warehouse",
        actions=[
            {
                "actionType": "CALL_WEBHOOK",
                "parameters": {"url": held_webhook.url, "timeoutSeconds": 60, "maxAttempts": 1},
            },
            {"actionType": "UPDATE_RECORD", "parameters": {"fields": {"description": "Told"}}},
        ],
        conditions={"conditions": [{"field": "stock", "operator": "GREATER_THAN", "value": 0}]},
    )
    sign_in(chromium, server.base_url, username, password)
    chromium.wait_for("!document.querySelector('#empty').hidden")

    product = org.write_product()
    deadline = time.monotonic() + WAIT_SECONDS
    while held_webhook.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    [run] = org.runs_of(product)
    assert run["status"] == "RUNNING"  # held by the webhook
    wait_for_row(chromium, run["id"], "RUNNING")
    chromium.evaluate(f"document.querySelector('#runs tr[data-run-id=\"{run['id']}\"] a').click()")
    action = "document.querySelector('#detail .action[data-order=\"{}\"] .badge')?.textContent"
    chromium.wait_for(f"{action.format(0)} === 'RUNNING'")
    trace = chromium.evaluate(
        "[...document.querySelectorAll('#detail table.inner tbody td')].map(td => td.textContent)"
    )
    assert trace == ["✓", "conditions.conditions.0", "stock", "GREATER_THAN", "0", "1", ""]

    held_webhook.release()
    chromium.wait_for(f"{action.format(0)} === 'SUCCEEDED'", timeout=WAIT_SECONDS)
    chromium.wait_for(f"{action.format(1)} === 'SUCCEEDED'", timeout=WAIT_SECONDS)
    chromium.wait_for("document.querySelector('#detail header .badge').textContent === 'SUCCEEDED'")
    wait_for_row(chromium, run["id"], "SUCCEEDED")
    result = json.loads(chromium.evaluate("document.querySelector('#detail pre').textContent"))
    assert result["status_code"] == 200 and result["attempts"] == 1
    assert (
        chromium.evaluate(
            "document.querySelector('#detail .action[data-order=\"0\"] .attempt').textContent"
        )
        == "attempt 1"
    )
    assert_reads_only(chromium)
    assert chromium.errors == []


def test_a_waiting_run_shows_when_it_resumes_then_its_second_check(chromium, e2e_server):
    username, password = f"waiter-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    org = Organization(e2e_server, members=[(username, password, "VIEWER")])
    org.rule_on_new_products(
        "Still in stock",
        conditions={"conditions": [{"field": "stock", "operator": "GREATER_THAN", "value": 0}]},
        hold_for="PT3S",
    )
    sign_in(chromium, e2e_server.base_url, username, password)
    chromium.wait_for("!document.querySelector('#empty').hidden")
    choose(chromium, "status-filter", "WAITING")

    product = org.write_product()
    deadline = time.monotonic() + WAIT_SECONDS
    while not (runs := org.runs_of(product)) or runs[0]["status"] in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, runs
        time.sleep(0.05)
    [run] = runs
    assert run["status"] == "WAITING"
    wait_for_row(chromium, run["id"], "WAITING")
    chromium.evaluate(f"document.querySelector('#runs tr[data-run-id=\"{run['id']}\"] a').click()")
    chromium.wait_for("document.querySelector('#detail header .badge')?.textContent === 'WAITING'")
    facts = chromium.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#detail dl.facts dt')]"
        ".map(dt => [dt.textContent, dt.nextElementSibling.textContent]))"
    )
    assert facts["Resumes at"]
    assert facts["Held for"].startswith("PT3S, checked again at ")

    chromium.wait_for(
        "document.querySelector('#detail header .badge').textContent === 'SUCCEEDED'",
        timeout=WAIT_SECONDS,
    )
    headings = chromium.evaluate(
        "[...document.querySelectorAll('#detail h3')].map(h => h.textContent)"
    )
    assert headings == ["Conditions", "Conditions after the hold", "Actions"]
    held = chromium.evaluate(
        "[...document.querySelectorAll('#detail dl.facts dt')]"
        ".find(dt => dt.textContent === 'Held for').nextElementSibling.textContent"
    )
    assert held.startswith("PT3S, then still met at ")
    assert_reads_only(chromium)
    assert chromium.errors == []
