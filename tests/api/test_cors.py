"""CORS for /graphql/ (django-cors-headers) through Django's test client: the preflight and the
request a browser sends from another origin. The settings are set as config/settings.py derives
them from CORS_ALLOWED_ORIGINS (tests/unit/test_settings.py checks that derivation; a real
server: tests/e2e/test_cors.py)."""

import json

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"
QUERY = json.dumps({"query": "{ me { username } }"})


@pytest.fixture
def cors_for(settings):
    """cors_for(*origins): CORS_ALLOWED_ORIGINS=origins, as the settings read it."""

    def configure(*origins):
        settings.MIDDLEWARE = ["corsheaders.middleware.CorsMiddleware", *settings.MIDDLEWARE]
        settings.CORS_ALLOW_ALL_ORIGINS = "*" in origins
        settings.CORS_ALLOWED_ORIGINS = [origin for origin in origins if origin != "*"]

    return configure


def preflight(client, origin, path="/graphql/"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def post(client, origin, token):
    return client.post(
        "/graphql/",
        data=QUERY,
        content_type="application/json",
        headers={"Origin": origin, "Authorization": f"Bearer {token}"},
    )


def test_a_listed_origin_may_call_graphql_with_a_token(client, editor, cors_for):
    cors_for(APP, "http://localhost:3000")

    answer = preflight(client, APP)
    assert answer.status_code == 200
    assert answer["Access-Control-Allow-Origin"] == APP
    allowed_headers = {h.strip() for h in answer["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed_headers
    assert {m.strip() for m in answer["Access-Control-Allow-Methods"].split(",")} == {
        "GET",
        "POST",
        "OPTIONS",
    }
    assert "Access-Control-Allow-Credentials" not in answer, "no cookies from other origins"

    answer = post(client, APP, editor.raw_token)
    assert answer.status_code == 200
    assert answer.json() == {"data": {"me": {"username": editor.username}}}
    assert answer["Access-Control-Allow-Origin"] == APP
    assert "origin" in answer["Vary"].lower()


def test_an_origin_not_listed_gets_no_cors_headers(client, editor, cors_for):
    cors_for(APP)
    for answer in (
        preflight(client, "https://evil.example"),
        post(client, "https://evil.example", editor.raw_token),
        preflight(client, "https://app.example.com:8443"),
        preflight(client, "http://app.example.com"),
    ):
        assert "Access-Control-Allow-Origin" not in answer


def test_cors_is_off_by_default(client, editor, settings):
    assert settings.CORS_ALLOWED_ORIGINS == [] and settings.CORS_ALLOW_ALL_ORIGINS is False
    assert "corsheaders.middleware.CorsMiddleware" not in settings.MIDDLEWARE
    preflight_answer = preflight(client, APP)
    answer = post(client, APP, editor.raw_token)
    for response in (preflight_answer, answer):
        assert "Access-Control-Allow-Origin" not in response
        assert "origin" not in response.get("Vary", "").lower()
    assert answer.json() == {"data": {"me": {"username": editor.username}}}


def test_only_graphql_answers_other_origins(client, cors_for):
    cors_for(APP)
    for path in ("/accounts/login/", "/healthz", "/admin/login/"):
        assert "Access-Control-Allow-Origin" not in preflight(client, APP, path)
        assert "Access-Control-Allow-Origin" not in client.get(path, headers={"Origin": APP})


def test_star_allows_any_origin_without_credentials(client, editor, cors_for):
    cors_for("*")
    answer = post(client, "https://anywhere.example", editor.raw_token)
    assert answer["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in answer


def test_a_cross_origin_request_never_acts_with_a_browser_session(editor, cors_for):
    """Browsers send no cookies, since credentials are not allowed; a request that carries a
    session cookie all the same still needs the CSRF token, as from any page."""
    cors_for(APP)
    client = Client(enforce_csrf_checks=True)
    client.force_login(editor)
    answer = client.post(
        "/graphql/", data=QUERY, content_type="application/json", headers={"Origin": APP}
    )
    assert answer.status_code == 403
