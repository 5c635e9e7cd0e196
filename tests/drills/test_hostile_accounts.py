"""Drill: an ordinary account attacks sign-in and invitations (issue 17, items 6, 8 and 9).

Everything goes through the doors a user meets: obtainToken over GraphQL over HTTP, and the real
login pages (/accounts/login/ and /admin/login/), with the client address as REMOTE_ADDR. The
limits are counted in the cache (Redis in distributed mode), cleared around every test. Time is
frozen where an answer's retryAfter is checked; nothing sleeps.
"""

import json

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client, override_settings

from accounts.choices import Role
from accounts.models import ApiToken, Invitation, Organization
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "alice-pass-w0rd-long"
HOME, ATTACKER = "10.17.0.1", "10.17.6.6"
OBTAIN = """mutation($u: String!, $p: String!) {
  obtainToken(username: $u, password: $p) { token user { username } }
}"""


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Hundreds of password checks: the limits are under test here, not the hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(db):
    """A staff user, so that /admin/login/ admits her too."""
    user = UserFactory(username="alice", is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    return user


def graphql(query, variables=None, token=None, address=HOME) -> dict:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    answer = Client().post(
        "/graphql/",
        data=json.dumps({"query": query, "variables": variables or {}}),
        content_type="application/json",
        REMOTE_ADDR=address,
        **headers,
    )
    assert answer.status_code == 200, answer.content
    return json.loads(answer.content)


# --- The three sign-in doors, each answering "ok", "refused" or "limited" ----------------------


def via_obtain_token(username, password, address) -> str:
    body = graphql(OBTAIN, {"u": username, "p": password}, address=address)
    if not body.get("errors"):
        assert body["data"]["obtainToken"]["user"]["username"] == "alice"
        return "ok"
    code = body["errors"][0]["extensions"]["code"]
    if code == "RATE_LIMITED":
        assert body["errors"][0]["extensions"]["retryAfter"] >= 1
        return "limited"
    assert code == "UNAUTHENTICATED", body
    return "refused"


def _via_page(path, username, password, address) -> str:
    browser = Client(enforce_csrf_checks=True)
    browser.get(path, REMOTE_ADDR=address)
    answer = browser.post(
        path,
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"].value,
        },
        REMOTE_ADDR=address,
    )
    if answer.status_code == 302:
        assert "_auth_user_id" in browser.session
        return "ok"
    assert answer.status_code == 200
    assert "_auth_user_id" not in browser.session
    return "limited" if b"Too many login attempts" in answer.content else "refused"


def via_login_page(username, password, address) -> str:
    return _via_page("/accounts/login/", username, password, address)


def via_admin_page(username, password, address) -> str:
    return _via_page("/admin/login/", username, password, address)


DOORS = [via_obtain_token, via_login_page, via_admin_page]
DOOR_IDS = ["obtainToken", "accounts-login", "admin-login"]


# --- Item 6: other spellings of a locked username ------------------------------------------------


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
@pytest.mark.parametrize("spelling", ["ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞", "ALICE", " alice "])
@override_settings(
    LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS=3,
    LOGIN_ATTEMPTS_PER_ADDRESS=100,
    LOGIN_ATTEMPTS_PER_USERNAME=100,
)
def test_another_spelling_of_a_locked_username_is_locked_too(alice, door, spelling):
    """Fullwidth and math-bold letters are NFKC for `alice`: the login form signed them in as
    the locked alice, on fresh counters."""
    for lock_door in DOORS:  # one wrong password through each door
        assert lock_door("alice", "wrong-guess", ATTACKER) == "refused"

    assert door(spelling, PASSWORD, ATTACKER) == "limited"


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
@pytest.mark.parametrize("spelling", ["ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞"])
def test_every_door_resolves_a_compatible_spelling_to_the_same_user(alice, door, spelling):
    """The door and its counters see one user: obtainToken resolves the name as the login pages
    do (NFKC), where it used to refuse what they accepted."""
    assert door(spelling, PASSWORD, HOME) == "ok"


# --- Item 8: locking someone else out ------------------------------------------------------------


@override_settings(
    LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS=5,
    LOGIN_ATTEMPTS_PER_ADDRESS=20,
    LOGIN_ATTEMPTS_PER_USERNAME=30,
)
def test_a_guesser_at_another_address_does_not_lock_the_user_out_of_any_door(alice):
    """60 wrong passwords from one address, through every door, twice the username's ceiling:
    that address is limited, alice at hers is not (five used to lock her out everywhere)."""
    answers = [DOORS[n % 3]("alice", f"guess-{n}", ATTACKER) for n in range(60)]
    assert answers[:5] == ["refused"] * 5
    assert set(answers[5:]) == {"limited"}

    for door in DOORS:
        assert door("alice", PASSWORD, HOME) == "ok"


@override_settings(
    LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS=5,
    LOGIN_ATTEMPTS_PER_ADDRESS=20,
    LOGIN_ATTEMPTS_PER_USERNAME=30,
    LOGIN_ATTEMPTS_WINDOW_SECONDS=60,
)
def test_the_username_ceiling_stops_a_guesser_spread_over_many_addresses(alice):
    """Six addresses of five guesses each reach the ceiling of 30: the next guess, from any
    address, is refused before its password is checked, even the right one."""
    with time_machine.travel("2026-03-01 09:00:00", tick=False) as clock:
        for bot in range(6):
            for guess in range(5):
                answer = DOORS[guess % 3]("alice", f"guess-{guess}", f"10.18.{bot}.1")
                assert answer == "refused"
            clock.shift(1)

        for door in DOORS:
            assert door("alice", PASSWORD, "10.18.99.1") == "limited"
        body = graphql(OBTAIN, {"u": "alice", "p": PASSWORD}, address=HOME)
        # The window opened at the first guess, 6 seconds ago (rounded up: 54 + 1).
        assert body["errors"][0]["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 55}
    assert not ApiToken.objects.exists()


@override_settings(
    LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS=3,
    LOGIN_ATTEMPTS_PER_ADDRESS=3,
    LOGIN_ATTEMPTS_PER_USERNAME=100,
)
def test_a_flood_of_new_names_does_not_wash_a_lock_out_of_the_cache(alice):
    """Attempts under 250 fresh names from 250 addresses make over a thousand counters: the
    embedded mode's cache dropped its oldest keys at 300, alice's lock among them."""
    for guess in range(3):
        assert via_obtain_token("alice", f"guess-{guess}", ATTACKER) == "refused"
    for n in range(250):
        graphql(OBTAIN, {"u": f"flood{n}", "p": "x"}, address=f"10.19.{n // 200}.{n % 200}")

    assert via_obtain_token("alice", PASSWORD, ATTACKER) == "limited"


@override_settings(LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS=3, LOGIN_ATTEMPTS_PER_ADDRESS=4)
def test_an_address_over_its_limit_waits_for_its_username_counter_too(alice):
    """retryAfter is long enough to pass: when the address's window ends first, the
    (username, address) counter still holds the next attempt back."""
    with time_machine.travel("2026-03-01 09:00:00", tick=False) as clock:
        graphql(OBTAIN, {"u": "someone-else", "p": "x"}, address=ATTACKER)
        clock.shift(30)
        for guess in range(3):
            assert via_obtain_token("alice", f"guess-{guess}", ATTACKER) == "refused"
        body = graphql(OBTAIN, {"u": "alice", "p": PASSWORD}, address=ATTACKER)
    # The address's window ends in 30 s, alice's from this address in 60 s.
    assert body["errors"][0]["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 61}


# --- Item 9: invitations and organizations -------------------------------------------------------

CREATE_ORG = "mutation($n: String!, $s: String!) { createOrganization(name: $n, slug: $s) { id } }"
ADD_MEMBER = """mutation($o: ID!, $u: String!) {
  addMember(organization: $o, username: $u, role: ADMIN) { id }
}"""


def invite(token, organization_id, username) -> dict:
    return graphql(ADD_MEMBER, {"o": organization_id, "u": username}, token=token)


def create_organizations(token, count, prefix="spam") -> list[str]:
    ids = []
    for n in range(count):
        body = graphql(CREATE_ORG, {"n": f"{prefix} {n}", "s": f"{prefix}-{n}"}, token=token)
        assert not body.get("errors"), body
        ids.append(body["data"]["createOrganization"]["id"])
    return ids


def error_of(body) -> dict:
    assert body.get("data") is None, body
    (error,) = body["errors"]
    return error


@pytest.fixture
def attacker(db):
    """An ordinary account with a token, member of nothing."""
    user = UserFactory(username="mallory")
    user.raw_token = ApiToken.issue(user)[1]
    return user


def test_the_reported_flood_is_stopped_with_the_default_limits(attacker):
    """The review's attack: one account creates 31 organizations and invites one user from each.
    It now gets 10 organizations a day, and each invitation costs from the inviter's hour."""
    with time_machine.travel("2026-03-01 09:00:00", tick=False):
        created = create_organizations(attacker.raw_token, 10)
        refused = error_of(
            graphql(CREATE_ORG, {"n": "spam 10", "s": "spam-10"}, attacker.raw_token)
        )
        # A day from the first creation, rounded up like every retryAfter.
        assert refused["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 24 * 3600 + 1}
        assert "ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY" in refused["message"]
        for organization_id in created:
            assert not invite(attacker.raw_token, organization_id, "victim").get("errors")
    assert Organization.objects.filter(slug__startswith="spam-").count() == 10
    assert Invitation.objects.filter(username="victim").count() == 10


@override_settings(ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY=2)
def test_a_refused_organization_is_not_created_and_a_mistyped_slug_costs_nothing(attacker):
    bad = graphql(CREATE_ORG, {"n": "Bad", "s": "not a slug"}, token=attacker.raw_token)
    assert error_of(bad)["extensions"]["code"] == "VALIDATION_ERROR"
    create_organizations(attacker.raw_token, 2)
    over = graphql(CREATE_ORG, {"n": "Third", "s": "third"}, token=attacker.raw_token)
    assert error_of(over)["extensions"]["code"] == "RATE_LIMITED"
    assert not Organization.objects.filter(slug="third").exists()
    assert attacker.memberships.count() == 2


@override_settings(
    ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR=3,
    ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY=100,
)
def test_an_inviter_gets_so_many_invitations_an_hour_in_all_their_organizations(attacker):
    organizations = create_organizations(attacker.raw_token, 4)
    with time_machine.travel("2026-03-01 09:00:00", tick=False) as clock:
        for organization_id in organizations[:3]:
            assert not invite(attacker.raw_token, organization_id, "victim").get("errors")
            clock.shift(60)
        refused = error_of(invite(attacker.raw_token, organizations[3], "victim"))
    # The inviter's window opened with the first invitation, three minutes earlier.
    assert refused["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 3600 - 180 + 1}
    assert "ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR" in refused["message"]
    assert Invitation.objects.count() == 3


@override_settings(
    ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR=100,
    ACCOUNTS_INVITATIONS_PER_ORGANIZATION_PER_HOUR=3,
)
def test_an_organization_gets_so_many_invitations_an_hour_from_all_its_admins(
    organization, make_member
):
    first, second = (make_member(organization, Role.ADMIN) for _ in range(2))
    for username in ["u1", "u2"]:
        assert not invite(first.raw_token, str(organization.pk), username).get("errors")
    assert not invite(second.raw_token, str(organization.pk), "u3").get("errors")

    refused = error_of(invite(second.raw_token, str(organization.pk), "u4"))

    assert refused["extensions"]["code"] == "RATE_LIMITED"
    assert refused["extensions"]["retryAfter"] >= 1
    assert "ACCOUNTS_INVITATIONS_PER_ORGANIZATION_PER_HOUR" in refused["message"]
    assert not Invitation.objects.filter(username="u4").exists()


@override_settings(
    ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME=3,
    ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR=100,
    ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY=100,
)
def test_open_invitations_per_username_are_capped_alike_for_users_and_for_nobody(attacker):
    """One name holds at most 3 open invitations; the fourth organization's addMember is a
    CONFLICT, word for word the same for a name with an account and for one without."""
    UserFactory(username="victim")
    organizations = create_organizations(attacker.raw_token, 4)
    answers = {}
    for username in ["victim", "ghost"]:
        answers[username] = [
            invite(attacker.raw_token, organization_id, username)
            for organization_id in organizations
        ]
    assert answers["victim"] == answers["ghost"]
    assert [body.get("errors") for body in answers["victim"][:3]] == [None] * 3
    refused = error_of(answers["victim"][3])
    assert refused["extensions"] == {"code": "CONFLICT"}
    assert "ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME" in refused["message"]
    assert Invitation.objects.filter(username="victim").count() == 3
    # The cap compares names as invitations do, whatever their case.
    assert error_of(invite(attacker.raw_token, organizations[3], "VICTIM"))["extensions"] == {
        "code": "CONFLICT"
    }


@override_settings(
    ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME=2,
    ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR=100,
    ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY=100,
)
def test_at_the_cap_an_invitation_is_renewed_and_answering_one_makes_room(attacker):
    victim = UserFactory(username="victim")
    victim_token = ApiToken.issue(victim)[1]
    first, second, third = create_organizations(attacker.raw_token, 3)
    for organization_id in [first, second]:
        assert not invite(attacker.raw_token, organization_id, "victim").get("errors")
    assert error_of(invite(attacker.raw_token, third, "victim"))["extensions"]["code"] == "CONFLICT"

    # Renewing an open invitation adds none: allowed at the cap.
    assert not invite(attacker.raw_token, first, "victim").get("errors")
    # The invitee declines one; a third organization may invite them then.
    pending = graphql("{ invitations { id } }", token=victim_token)["data"]["invitations"]
    declined = graphql(
        "mutation($id: ID!) { declineInvitation(id: $id) }", {"id": pending[0]["id"]}, victim_token
    )
    assert not declined.get("errors"), declined
    assert not invite(attacker.raw_token, third, "victim").get("errors")
