from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import get_hashers

from accounts import ratelimit
from accounts.choices import Role
from automation.conditions import cpu_budget
from automation.fanout import budget
from graphql_api import websocket_slots
from tests.factories import (
    ApiTokenFactory,
    MembershipFactory,
    OrganizationFactory,
    UserFactory,
)


def pytest_configure(config):
    """Passwords hashed with a fast hasher: every user the factories make gets one, and Django's
    PBKDF2 (a million iterations, made slow on purpose) took 0.4 s each on a busy 2-core machine,
    minutes over the suite. What a password allows is the same whatever hashes it; servers the
    tests start (`serve`, the README's) keep the real hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_hashers.cache_clear()


# Every test under these starts a real server, a browser or benchmark processes.
SLOW_DIRECTORIES = {"e2e", "docs", "bench"}


def pytest_collection_modifyitems(config, items):
    """Mark the tests of SLOW_DIRECTORIES `slow` (others are marked where they are written)."""
    slow = [Path(__file__).parent / name for name in SLOW_DIRECTORIES]
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in slow):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def fresh_budget_counters():
    """Every test starts with no fan-out budget spent. Ids repeat between tests (SQLite reuses
    those of rolled-back rows; a new test database restarts them), and a counter keyed by a
    root run or an organization id outlives the test in memory or in Redis."""
    budget.clear()


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Nor any invitation, organization or sign-in counter: they are keyed by ids that repeat,
    and Redis keeps them between test runs for up to a day."""
    ratelimit.clear()


@pytest.fixture(autouse=True)
def fresh_websocket_slots():
    """Every test starts with no WebSocket connection counted: a user id of an earlier test may
    come again, and its leases outlive the test in memory or in Redis."""
    websocket_slots.clear()


@pytest.fixture
def organization(db):
    return OrganizationFactory()


@pytest.fixture
def other_organization(db):
    return OrganizationFactory()


@pytest.fixture
def make_member(db):
    """make_member(organization, role=Role.EDITOR, username=None) -> user with an API token.

    The raw token is on `user.raw_token`.
    """

    def make(organization, role=Role.EDITOR, username=None):
        user = UserFactory(**({"username": username} if username else {}))
        MembershipFactory(user=user, organization=organization, role=role)
        user.raw_token = ApiTokenFactory(user=user).raw_token
        return user

    return make


@pytest.fixture
def editor(organization, make_member):
    return make_member(organization, Role.EDITOR)


@pytest.fixture(autouse=True)
def fresh_condition_cpu_counters():
    """Every test starts with no condition CPU spent (organization ids repeat between tests)."""
    cpu_budget.clear()
