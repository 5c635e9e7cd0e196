"""GraphQL over HTTP with Django's test client: `gql(query, variables, token=...)`."""

import itertools
import json

import pytest
from django.test import Client

from accounts.choices import Role


class GraphQLResponse:
    def __init__(self, http):
        self.http = http
        self.status_code = http.status_code
        self.body = (
            json.loads(http.content)
            if http["Content-Type"].startswith("application/json")
            else None
        )

    @property
    def data(self):
        return self.body.get("data")

    @property
    def errors(self):
        return self.body.get("errors") or []

    @property
    def codes(self) -> list[str]:
        return [(e.get("extensions") or {}).get("code") for e in self.errors]

    def ok(self):
        """The data, after asserting there was no error."""
        assert self.status_code == 200, self.http.content
        assert not self.errors, self.errors
        return self.data

    def error(self) -> dict:
        """The single error of the answer."""
        assert self.status_code == 200, self.http.content
        assert len(self.errors) == 1, self.body
        return self.errors[0]


@pytest.fixture
def client():
    return Client()


_client_addresses = itertools.count(1)


@pytest.fixture
def gql(client):
    """gql(query, variables=None, token=None or user) -> GraphQLResponse; POST /graphql/ as JSON.

    Each test posts from an address of its own (REMOTE_ADDR), so per-address rate limits counted
    by earlier tests (the cache outlives a test, and is shared in distributed mode) never leak in.
    """
    number = next(_client_addresses)
    address = f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"

    def post(query, variables=None, token=None, **extra):
        extra.setdefault("REMOTE_ADDR", address)
        if token is not None and not isinstance(token, str):
            token = token.raw_token
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        http = client.post(
            "/graphql/",
            data=json.dumps({"query": query, "variables": variables or {}}),
            content_type="application/json",
            **headers,
            **extra,
        )
        return GraphQLResponse(http)

    return post


@pytest.fixture
def admin(organization, make_member):
    return make_member(organization, Role.ADMIN)


@pytest.fixture
def viewer(organization, make_member):
    return make_member(organization, Role.VIEWER)


@pytest.fixture
def outsider(other_organization, make_member):
    """An ADMIN of another organization: full rights there, none here."""
    return make_member(other_organization, Role.ADMIN)
