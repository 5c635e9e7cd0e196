import pytest

from accounts.choices import Role
from tests.factories import (
    ApiTokenFactory,
    MembershipFactory,
    OrganizationFactory,
    UserFactory,
)


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
