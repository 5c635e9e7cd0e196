"""GraphiQL at GET /graphql/ works without internet, through a real `manage.py serve`.

The page is our template (graphql_api/templates/graphql_api/graphiql.html): Strawberry's GraphiQL
page with every unpkg.com asset replaced by the same file vendored under
graphql_api/static/graphql_api/graphiql/. These tests check that
- the page names only local static URLs (no CDN), as many assets as Strawberry's page, and with
  Strawberry's own integrity hashes for the same package versions;
- the server serves each asset (200, right content type) with exactly the vendored bytes, which
  match the integrity hash the page gives the browser;
- in headless Chromium, logged in through the admin, GraphiQL renders, runs `{ me { username } }`
  from its editor, and streams a subscription over WebSocket authenticated by the session cookie.

The browser test needs Debian's chromium (/usr/bin/chromium). CI installs it (.ci/run) and the
test fails there without it; on a developer machine without it, it is skipped with the reason.
"""

import base64
import hashlib
import json
import os
import re
import uuid
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import strawberry
from django.conf import settings

from tests.e2e.chromium import CHROMIUM, BrowserError, Chromium, chromium_available
from tests.e2e.conftest import REPO_ROOT

# The page in Chromium, and what the server answers it: the same in both modes.
pytestmark = pytest.mark.embedded_only

STATIC_DIR = REPO_ROOT / "graphql_api" / "static"
VENDOR_PREFIX = "graphql_api/graphiql/"
STRAWBERRY_PAGE = Path(strawberry.__file__).parent / "static" / "graphiql.html"
UNPKG_URL = re.compile(
    r"^https://unpkg\.com/(?P<name>(?:@[^/]+/)?[^@/]+)@(?P<version>[^/]+)/(?P<path>.+)$"
)
CONTENT_TYPES = {"script": "text/javascript", "link": "text/css"}


class AssetCollector(HTMLParser):
    """Every URL a page references (src/href of any tag), and its scripts and stylesheets."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.assets: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        url = attrs.get("src") if tag == "script" else None
        if tag == "link" and attrs.get("rel") == "stylesheet":
            url = attrs.get("href")
        if url:
            self.assets.append({"tag": tag, "url": url, "integrity": attrs.get("integrity")})


def collect(html: str) -> AssetCollector:
    collector = AssetCollector()
    collector.feed(html)
    return collector


def local_path_of(unpkg_url: str) -> str:
    """Where the vendored copy of an unpkg URL lives (the README's naming rule)."""
    match = UNPKG_URL.match(unpkg_url)
    assert match, f"Strawberry's page names an asset outside unpkg: {unpkg_url}"
    folder = match["name"].lstrip("@").replace("/", "-")
    return f"{VENDOR_PREFIX}{folder}-{match['version']}/{match['path']}"


def sri_sha384(content: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(content).digest()).decode()


@pytest.fixture(scope="module")
def page(e2e_server) -> str:
    response = httpx.get(
        f"{e2e_server.base_url}/graphql/", headers={"Accept": "text/html"}, timeout=30
    )
    assert response.status_code == 200, response.text[:500]
    assert "text/html" in response.headers["content-type"]
    return response.text


def test_page_references_only_local_static_assets(page):
    collected = collect(page)
    assert "unpkg" not in page
    static_prefix = settings.STATIC_URL + VENDOR_PREFIX  # "/static/graphql_api/graphiql/"
    for url in collected.urls:
        if url.startswith("data:"):
            continue  # the inline favicon
        assert url.startswith(static_prefix), f"not a vendored static URL: {url}"
    assert len(collected.assets) == len(collect(STRAWBERRY_PAGE.read_text()).assets)


def test_assets_are_the_versions_strawberrys_page_pins(page):
    """Same files, in the same order, with Strawberry's own integrity hashes: our copies are the
    exact versions upstream tested. Fails after a Strawberry upgrade that moves its pins: refresh
    the vendored files (see the README beside them)."""
    upstream = collect(STRAWBERRY_PAGE.read_text()).assets
    ours = collect(page).assets
    expected = [
        (asset["tag"], settings.STATIC_URL + local_path_of(asset["url"]), asset["integrity"])
        for asset in upstream
    ]
    assert [(a["tag"], a["url"], a["integrity"]) for a in ours] == expected


def test_every_asset_is_served_with_the_content_its_integrity_names(e2e_server, page):
    for asset in collect(page).assets:
        assert asset["url"].startswith(settings.STATIC_URL), asset["url"]
        response = httpx.get(f"{e2e_server.base_url}{asset['url']}", timeout=30)
        assert response.status_code == 200, asset["url"]
        assert response.headers["content-type"].startswith(CONTENT_TYPES[asset["tag"]]), (
            asset["url"],
            response.headers["content-type"],
        )
        assert sri_sha384(response.content) == asset["integrity"], asset["url"]
        vendored = STATIC_DIR / asset["url"].removeprefix(settings.STATIC_URL)
        assert response.content == vendored.read_bytes(), asset["url"]
        # Every vendored package keeps its license beside its files.
        package_folder = vendored.relative_to(STATIC_DIR / VENDOR_PREFIX).parts[0]
        assert (STATIC_DIR / VENDOR_PREFIX / package_folder / "LICENSE").is_file()


# --- In a real browser ----------------------------------------------------------------------------

QUERY_EDITOR = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
RESPONSE = "document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue()"
# The page's own session POST: what GraphiQL's fetcher sends (cookie + X-CSRFToken).
SESSION_POST = """async (query, variables) => {
  const response = await fetch('/graphql/', {
    method: 'POST',
    headers: {'content-type': 'application/json', 'x-csrftoken': Cookies.get('csrftoken')},
    body: JSON.stringify({query, variables}),
  });
  return {status: response.status, body: await response.json()};
}"""
CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
RUN_RULE = "mutation($id: ID!) { runRule(id: $id) { id } }"
SUBSCRIPTION_ATTEMPTS = 3


@pytest.fixture
def chromium(tmp_path):
    if not chromium_available():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (.ci/run does)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium) and CI is not set")
    with Chromium.launch(tmp_path / "chromium-profile") as browser:
        yield browser


def create_admin(server, username: str, password: str) -> str:
    """A superuser (so the admin login accepts them) made ADMIN of a new organization by the
    create_organization command; returns the organization's id. One process: each costs seconds."""
    output = server.manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from django.core.management import call_command\n"
        f"get_user_model().objects.create_superuser({username!r}, '', {password!r})\n"
        f"call_command('create_organization', {username!r}, {username!r}, admin={username!r})\n",
    ).stdout
    return re.search(r"id (\d+)\)", output)[1]


def set_query(browser: Chromium, query: str) -> None:
    """Type `query` into the editor, then wait for GraphiQL's (debounced) parse of it: the run
    button sends what that parse says (a subscription goes to the WebSocket only once parsed)."""
    browser.evaluate(f"{QUERY_EDITOR}.setValue({json.dumps(query)})")
    browser.wait_for(f"{QUERY_EDITOR}.getValue() === {json.dumps(query)}")
    operation = query.split()[0] if query.split()[0] in ("subscription", "mutation") else "query"
    browser.wait_for(
        f"{QUERY_EDITOR}.documentAST?.definitions[0]?.operation === {json.dumps(operation)}"
    )


def session_post(browser: Chromium, query: str, variables: dict) -> dict:
    result = browser.evaluate(f"({SESSION_POST})({json.dumps(query)}, {json.dumps(variables)})")
    assert result["status"] == 200 and "errors" not in result["body"], result
    return result["body"]["data"]


def test_graphiql_renders_and_runs_queries_and_subscriptions_in_chromium(chromium, e2e_server):
    username, password = f"ide-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    organization = create_admin(e2e_server, username, password)
    base = e2e_server.base_url

    # Log in through the admin, which sends us on to GraphiQL.
    chromium.navigate(f"{base}/admin/login/?next=/graphql/")
    chromium.evaluate(
        f"document.querySelector('#id_username').value = {json.dumps(username)};"
        f"document.querySelector('#id_password').value = {json.dumps(password)};"
        "document.querySelector('#login-form').submit()"
    )
    chromium.wait_for("location.pathname === '/graphql/' && document.readyState === 'complete'")
    try:
        chromium.wait_for(
            f"Boolean({QUERY_EDITOR} && document.querySelector('.graphiql-execute-button'))"
        )
    except BrowserError as exc:
        raise AssertionError(
            f"GraphiQL did not render; requested: {chromium.requested_urls}"
        ) from exc
    external = [url for url in chromium.requested_urls if not url.startswith(base)]
    assert external == [], "the page fetched from outside this server"
    # The schema came through introspection (the docs explorer needs it).
    chromium.evaluate(
        "document.querySelector('[aria-label=\"Show Documentation Explorer\"]').click()"
    )
    chromium.wait_for(
        "document.querySelector('.graphiql-doc-explorer')?.textContent.includes('Query')"
    )

    # A query from the editor, with the session.
    set_query(chromium, "{ me { username } }")
    chromium.evaluate("document.querySelector('.graphiql-execute-button').click()")
    response = json.loads(chromium.wait_for(f"{RESPONSE}?.includes('username') && {RESPONSE}"))
    assert response == {"data": {"me": {"username": username}}}

    # A subscription from the editor: GraphiQL opens a graphql-transport-ws connection without a
    # token in its payload, so the server authenticates it by the session cookie alone.
    title = f"GraphiQL live {uuid.uuid4().hex[:8]}"
    rule = session_post(
        chromium,
        CREATE_RULE,
        {
            "input": {
                "organization": organization,
                "name": title,
                "triggerType": "MANUAL",
                "actions": [
                    {
                        "actionType": "SEND_NOTIFICATION",
                        "parameters": {
                            "recipients": {"usernames": [username]},
                            "title": title,
                            "body": "from a run",
                        },
                    }
                ],
            }
        },
    )["createRule"]
    set_query(chromium, "subscription { notifications { title } }")
    chromium.evaluate("document.querySelector('.graphiql-execute-button').click()")
    chromium.wait_for(
        "document.querySelector('.graphiql-execute-button')"
        ".getAttribute('aria-label').startsWith('Stop')"
    )
    # The subscription registers on the server a moment after the click: a run that finishes
    # before that is not streamed, so try a few runs (each is a new notification).
    for _ in range(SUBSCRIPTION_ATTEMPTS):
        session_post(chromium, RUN_RULE, {"id": rule["id"]})
        try:
            streamed = chromium.wait_for(
                f"{RESPONSE}?.includes({json.dumps(title)}) && {RESPONSE}", timeout=10
            )
            break
        except BrowserError:
            continue
    else:
        raise AssertionError(f"No notification streamed; WebSockets: {chromium.websockets}")
    assert json.loads(streamed) == {"data": {"notifications": {"title": title}}}

    chromium.pump_events()
    [websocket] = [ws for ws in chromium.websockets if ws["url"].startswith("ws://")]
    assert websocket["url"] == f"{base.replace('http://', 'ws://')}/graphql/"
    assert websocket["response"]["status"] == 101
    headers = {name.lower(): value for name, value in websocket["response"]["headers"].items()}
    assert headers["sec-websocket-protocol"] == "graphql-transport-ws"
    sent = [
        json.loads(payload) for direction, payload in websocket["frames"] if direction == "sent"
    ]
    received = [json.loads(p) for direction, p in websocket["frames"] if direction == "received"]
    assert sent[0]["type"] == "connection_init" and not sent[0].get("payload")
    assert received[0]["type"] == "connection_ack"
    assert any(frame["type"] == "subscribe" for frame in sent)
    assert chromium.errors == []
