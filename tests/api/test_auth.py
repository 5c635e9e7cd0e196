"""Authentication over HTTP: bearer tokens, sessions with CSRF, obtainToken and its rate limit."""

import json
import time

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client, override_settings

from accounts.models import ApiToken
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

OBTAIN = """mutation($u: String!, $p: String!) {
  obtainToken(username: $u, password: $p, name: "cli") { token user { username } }
}"""


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


def test_anonymous_me_is_null_without_error(gql):
    answer = gql("{ me { id } }")
    assert answer.ok() == {"me": None}


def test_anonymous_everything_else_is_unauthenticated(gql, organization):
    for query in [
        "{ organizations { id } }",
        "{ rules { id } }",
        "{ logs { totalCount } }",
        "{ tokens { id } }",
    ]:
        assert gql(query).error()["extensions"]["code"] == "UNAUTHENTICATED", query


def test_obtain_token_then_use_it_then_revoke_it(gql):
    user = UserFactory(username="alice")
    payload = gql(OBTAIN, {"u": "alice", "p": "pass-w0rd-long"}).ok()["obtainToken"]
    assert payload["user"] == {"username": "alice"}
    token = payload["token"]
    assert gql("{ me { username } }", token=token).ok() == {"me": {"username": "alice"}}

    tokens = gql("{ tokens { id name revokedAt } }", token=token).ok()["tokens"]
    assert [t["name"] for t in tokens] == ["cli"]
    # The raw token is never stored.
    assert not ApiToken.objects.filter(token_hash=token).exists()

    revoked = gql(
        "mutation($id: ID!) { revokeToken(id: $id) { id revokedAt } }",
        {"id": tokens[0]["id"]},
        token=token,
    ).ok()["revokeToken"]
    assert revoked["revokedAt"] is not None
    # A revoked token is refused, even for `me` (the client must learn its token is bad).
    for query in ["{ me { username } }", "{ organizations { id } }"]:
        assert gql(query, token=token).error()["extensions"]["code"] == "UNAUTHENTICATED"
    assert user.api_tokens.get().revoked_at is not None


def test_revoke_someone_elses_token_is_not_found(gql, editor):
    other = UserFactory()
    token, _raw = ApiToken.issue(other)
    error = gql(
        "mutation($id: ID!) { revokeToken(id: $id) { id } }", {"id": str(token.pk)}, token=editor
    ).error()
    assert error["extensions"]["code"] == "NOT_FOUND"
    token.refresh_from_db()
    assert token.revoked_at is None


def test_wrong_password_is_unauthenticated(gql):
    UserFactory(username="bob")
    error = gql(OBTAIN, {"u": "bob", "p": "wrong"}).error()
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert not ApiToken.objects.exists()


@override_settings(LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS=3, LOGIN_ATTEMPTS_WINDOW_SECONDS=60)
def test_obtain_token_brute_force_is_rate_limited_per_username_and_address(gql):
    UserFactory(username="carol")
    for attempt in range(3):
        assert gql(OBTAIN, {"u": "carol", "p": f"guess{attempt}"}).codes == ["UNAUTHENTICATED"]
    error = gql(OBTAIN, {"u": "carol", "p": "pass-w0rd-long"}).error()
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= error["extensions"]["retryAfter"] <= 61
    # Even the right password is refused while limited: no token was issued.
    assert not ApiToken.objects.exists()


@override_settings(LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS=3, LOGIN_ATTEMPTS_WINDOW_SECONDS=60)
def test_obtain_token_window_starts_at_the_first_attempt_not_at_a_clock_boundary(gql):
    UserFactory(username="erin")
    with time_machine.travel("2026-01-01 12:00:59.5", tick=False) as clock:
        for attempt in range(3):
            gql(OBTAIN, {"u": "erin", "p": f"guess{attempt}"})
        # One second later the clock minute has turned, but the window has not.
        clock.shift(1)
        error = gql(OBTAIN, {"u": "erin", "p": "pass-w0rd-long"}).error()
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 59 <= error["extensions"]["retryAfter"] <= 60


@override_settings(LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS=2, LOGIN_ATTEMPTS_WINDOW_SECONDS=4)
def test_obtain_token_works_again_once_the_window_has_passed(gql):
    # Real time, not time travel: in distributed mode the counters expire in Redis. The window
    # is long enough for three password checks on a loaded machine; the wait is what the
    # server says to wait.
    UserFactory(username="fay")
    for attempt in range(2):
        gql(OBTAIN, {"u": "fay", "p": f"guess{attempt}"})
    error = gql(OBTAIN, {"u": "fay", "p": "pass-w0rd-long"}).error()
    assert error["extensions"]["code"] == "RATE_LIMITED"
    time.sleep(error["extensions"]["retryAfter"])
    assert gql(OBTAIN, {"u": "fay", "p": "pass-w0rd-long"}).ok()


@override_settings(LOGIN_ATTEMPTS_PER_ADDRESS=3, LOGIN_ATTEMPTS_WINDOW_SECONDS=60)
def test_obtain_token_is_rate_limited_per_client_address(gql):
    UserFactory(username="dave")
    for index in range(3):
        gql(OBTAIN, {"u": f"nobody{index}", "p": "x"}, REMOTE_ADDR="10.1.2.3")
    # A fresh username from the same address is limited too...
    assert gql(OBTAIN, {"u": "dave", "p": "pass-w0rd-long"}, REMOTE_ADDR="10.1.2.3").codes == [
        "RATE_LIMITED"
    ]
    # ...while another address still gets through.
    assert gql(OBTAIN, {"u": "dave", "p": "pass-w0rd-long"}, REMOTE_ADDR="10.9.9.9").ok()


def test_session_authentication_needs_csrf(organization, editor):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(editor)
    body = json.dumps({"query": "{ me { username } }"})
    refused = browser.post("/graphql/", data=body, content_type="application/json")
    assert refused.status_code == 403

    page = browser.get("/graphql/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert b"graphiql" in page.content.lower()
    csrf = browser.cookies["csrftoken"].value
    answer = browser.post(
        "/graphql/", data=body, content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert answer.status_code == 200
    assert json.loads(answer.content) == {"data": {"me": {"username": editor.username}}}


def test_anonymous_requests_without_a_session_need_no_csrf_and_see_me_null(editor):
    script = Client(enforce_csrf_checks=True)
    answer = script.post(
        "/graphql/",
        data=json.dumps({"query": "{ me { username } }"}),
        content_type="application/json",
    )
    assert answer.status_code == 200
    assert json.loads(answer.content) == {"data": {"me": None}}


def test_bearer_requests_need_no_csrf(editor):
    api = Client(enforce_csrf_checks=True)
    answer = api.post(
        "/graphql/",
        data=json.dumps({"query": "{ me { username } }"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {editor.raw_token}",
    )
    assert json.loads(answer.content) == {"data": {"me": {"username": editor.username}}}


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("Bearer", 'No token after "Bearer"'),
        ("Bearer   ", 'No token after "Bearer"'),
        ("Token abc", "Unsupported Authorization scheme"),
        ("Basic YWxpY2U6c2VjcmV0", "Unsupported Authorization scheme"),
        ("garbage", "Unsupported Authorization scheme"),
        ("", "Unsupported Authorization scheme"),
    ],
)
def test_an_authorization_header_that_is_not_a_bearer_token_is_unauthenticated_with_a_hint(
    gql, header, problem
):
    """Not anonymous: a client that sends credentials must learn why they did not work."""
    answer = gql("{ me { id } }", HTTP_AUTHORIZATION=header)
    error = answer.error()
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["message"].startswith(problem)
    assert 'use "Authorization: Bearer <token>"' in error["message"]
    assert answer.data == {"me": None}


def test_a_bad_token_is_told_apart_from_a_revoked_one(gql, editor):
    token = ApiToken.objects.get(user=editor)
    assert gql("{ me { id } }", token="are_unknown").error()["message"] == "Invalid token."
    token.revoke()
    assert gql("{ me { id } }", token=editor).error()["message"] == "Revoked token."


def test_a_session_still_works_beside_an_authorization_header_of_another_scheme(editor):
    """A basic-auth proxy in front of the server forwards its own Authorization header: the
    browser's session (GraphiQL) must keep working behind it."""
    browser = Client()
    browser.force_login(editor)
    page = browser.get("/graphql/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    answer = browser.post(
        "/graphql/",
        data=json.dumps({"query": "{ me { username } }"}),
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic cHJveHk6cGFzcw==",
        HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value,
    )
    assert json.loads(answer.content) == {"data": {"me": {"username": editor.username}}}


# --- The login page for any user (/accounts/login/) ----------------------------------------------

ME = json.dumps({"query": "{ me { username } }"})


def login_page_user(username="bob-browser", password="bob-pass-w0rd-long"):
    user = UserFactory(username=username, is_staff=False)
    user.set_password(password)
    user.save()
    return user, password


def log_in(browser, username, password, address="10.6.0.1"):
    """What a browser does: GET the form (CSRF cookie), POST it with the token."""
    browser.get("/accounts/login/", REMOTE_ADDR=address)
    return browser.post(
        "/accounts/login/",
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"].value,
        },
        REMOTE_ADDR=address,
    )


def session_me(browser):
    answer = browser.post(
        "/graphql/",
        data=ME,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value,
    )
    return json.loads(answer.content)


def test_a_user_who_is_not_staff_logs_in_and_uses_graphql_with_the_session():
    user, password = login_page_user()
    browser = Client(enforce_csrf_checks=True)
    assert b"Log in" in browser.get("/accounts/login/").content

    answer = log_in(browser, user.username, password)

    assert answer.status_code == 302
    assert answer["Location"] == "/graphql/"  # LOGIN_REDIRECT_URL: GraphiQL
    assert browser.get("/graphql/", HTTP_ACCEPT="text/html").status_code == 200
    assert session_me(browser) == {"data": {"me": {"username": user.username}}}
    # The admin still admits staff only.
    assert browser.get("/admin/").status_code == 302


def test_the_login_page_refuses_a_wrong_password_and_logs_nobody_in():
    user, _password = login_page_user()
    browser = Client(enforce_csrf_checks=True)

    answer = log_in(browser, user.username, "wrong-password")

    assert answer.status_code == 200
    assert b"Please enter a correct username and password" in answer.content
    assert "_auth_user_id" not in browser.session


def test_the_login_page_shares_the_login_rate_limit(monkeypatch):
    """The 6th attempt from one address is refused before the password is checked, even the
    right one; the attempts count against obtainToken's budget (from that address) too."""
    from django.contrib.auth import forms

    user, password = login_page_user()
    browser = Client(enforce_csrf_checks=True)
    for _ in range(5):
        assert log_in(browser, user.username, "wrong-password").status_code == 200
    checked = []
    real = forms.authenticate
    monkeypatch.setattr(forms, "authenticate", lambda *a, **k: checked.append(1) or real(*a, **k))

    refused = log_in(browser, user.username, password)

    assert refused.status_code == 200
    assert b"Too many login attempts" in refused.content
    assert "_auth_user_id" not in browser.session
    assert checked == []
    api = Client().post(
        "/graphql/",
        data=json.dumps({"query": OBTAIN, "variables": {"u": user.username, "p": password}}),
        content_type="application/json",
        REMOTE_ADDR="10.6.0.1",
    )
    assert json.loads(api.content)["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


def test_logging_out_ends_the_session_and_needs_a_post():
    user, password = login_page_user()
    browser = Client(enforce_csrf_checks=True)
    log_in(browser, user.username, password)
    assert session_me(browser)["data"]["me"] == {"username": user.username}

    page = browser.get("/accounts/login/").content  # signed in: the page offers to log out
    assert b'<form method="post" action="/accounts/logout/">' in page
    assert browser.get("/accounts/logout/").status_code == 405  # a link cannot log anyone out
    assert session_me(browser)["data"]["me"] == {"username": user.username}
    answer = browser.post(
        "/accounts/logout/", {"csrfmiddlewaretoken": browser.cookies["csrftoken"].value}
    )

    assert answer.status_code == 302
    assert answer["Location"] == "/accounts/login/"
    assert session_me(browser) == {"data": {"me": None}}
