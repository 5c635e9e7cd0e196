"""The runs page's HTTP side (/runs/, dashboard/views.py): who gets it, and what it is allowed
to do in the browser. What it shows, live, is tested in headless Chromium
(tests/e2e/test_runs_page.py).
"""

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client

from accounts.choices import Role
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SCRIPTS = Path(__file__).resolve().parents[2] / "dashboard" / "static" / "dashboard"
PASSWORD = "pass-w0rd-long"  # the factories' users'


class Shell(HTMLParser):
    """The page's scripts, stylesheets, inline code and text."""

    def __init__(self):
        super().__init__()
        self.scripts: list[dict] = []
        self.stylesheets: list[str] = []
        self.inline: list[str] = []
        self.text: list[str] = []
        self._in = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.stylesheets.append(attrs["href"])
        if tag == "style" or "style" in attrs or any(name.startswith("on") for name in attrs):
            self.inline.append(f"<{tag} {attrs}>")
        self._in = tag

    def handle_data(self, data):
        if self._in in ("script", "style") and data.strip():
            self.inline.append(data)
        self.text.append(data)


def policy_of(response) -> dict[str, list[str]]:
    directives = {}
    for directive in response["Content-Security-Policy"].split(";"):
        name, *values = directive.split()
        directives[name] = values
    return directives


def signed_in(user) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def test_anonymous_is_sent_to_sign_in_and_comes_back_to_the_page():
    response = Client().get("/runs/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/runs/"

    user = UserFactory(is_staff=False)
    browser = Client()
    browser.get("/accounts/login/?next=/runs/")
    login = browser.post(
        "/accounts/login/",
        {"username": user.username, "password": PASSWORD, "next": "/runs/"},
        REMOTE_ADDR="10.7.0.1",
    )
    assert login.status_code == 302 and login["Location"] == "/runs/"
    assert browser.get("/runs/").status_code == 200
    # Signed in, the login page leads here too.
    assert b'href="/runs/"' in browser.get("/accounts/login/").content


def test_a_viewer_gets_the_page_with_a_strict_content_security_policy(
    organization, make_member, settings
):
    settings.ALLOWED_HOSTS = ["runs.example.com"]
    viewer = make_member(organization, Role.VIEWER)

    response = signed_in(viewer).get("/runs/", HTTP_HOST="runs.example.com")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert policy_of(response) == {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'", "ws://runs.example.com", "wss://runs.example.com"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    assert response["Cache-Control"] == "no-store"
    assert response["X-Frame-Options"] == "DENY"


def test_the_page_is_a_shell_of_static_files_with_no_inline_code_and_no_data(
    organization, make_member
):
    organization.name = "Quietly Secret Org"
    organization.save()
    viewer = make_member(organization, Role.VIEWER)

    html = signed_in(viewer).get("/runs/").content.decode()

    shell = Shell()
    shell.feed(html)
    assert shell.inline == []
    assert shell.scripts == [{"type": "module", "src": "/static/dashboard/runs-page.js"}]
    assert shell.stylesheets == ["/static/dashboard/runs.css"]
    # Everything of the organization comes over the API, as the user: nothing in the page.
    assert organization.name not in html and viewer.username not in html


def test_the_scripts_write_no_markup_and_send_no_mutation():
    """A guard over the page's own JavaScript: stored texts go in with textContent, and the
    GraphQL documents are queries and subscriptions (the browser test checks the frames)."""
    sources = {
        path.name: re.sub(r"//.*$", "", path.read_text(), flags=re.MULTILINE)  # code, not comments
        for path in sorted(SCRIPTS.glob("*.js"))
    }
    assert "runs-page.js" in sources and "graphql-socket.js" in sources
    markup = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|Function\("
    )
    for name, source in sources.items():
        assert not markup.search(source), name
        assert "mutation" not in source.lower(), name
    operations = re.findall(r"`(query|subscription|mutation) RunsPage", sources["queries.js"])
    assert set(operations) == {"query", "subscription"}
