"""The admin: pages render, secrets stay masked, logs are read-only, tokens can be revoked."""

import json

import pytest
from django.contrib.auth import forms
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from accounts.models import ApiToken, Invitation
from automation.core.choices import ActionType, RunStatus
from tests.factories import (
    ApiTokenFactory,
    AutomationLogFactory,
    AutomationRuleFactory,
    InvitationFactory,
    NotificationFactory,
    ProductFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

WEBHOOK = {
    "action_type": ActionType.CALL_WEBHOOK,
    "parameters": {
        "url": "https://hooks.example.com/in",
        "method": "POST",
        "headers": {"X-Api-Key": "header-secret-value"},
        "secret": "signing-secret-value",
    },
}


def test_changelists_and_forms_render(admin_client):
    rule = AutomationRuleFactory()
    log = AutomationLogFactory(rule=rule)
    product = ProductFactory()
    token = ApiTokenFactory()
    NotificationFactory()
    pages = [
        reverse("admin:automation_automationrule_changelist"),
        reverse("admin:automation_automationrule_add"),
        reverse("admin:automation_automationrule_change", args=[rule.pk]),
        reverse("admin:automation_automationlog_changelist"),
        reverse("admin:automation_automationlog_change", args=[log.pk]),
        reverse("admin:accounts_organization_change", args=[rule.organization_id]),
        reverse("admin:accounts_apitoken_change", args=[token.pk]),
        reverse("admin:accounts_notification_changelist"),
        reverse("admin:catalog_product_change", args=[product.pk]),
        reverse("admin:catalog_category_changelist"),
    ]
    for url in pages:
        assert admin_client.get(url).status_code == 200, url


def test_rule_page_masks_webhook_secrets(admin_client):
    rule = AutomationRuleFactory(actions=[WEBHOOK])

    page = admin_client.get(
        reverse("admin:automation_automationrule_change", args=[rule.pk])
    ).content.decode()

    assert "signing-secret-value" not in page
    assert "header-secret-value" not in page
    assert "********" in page
    assert "hooks.example.com" in page


def test_log_page_is_read_only_with_pretty_json(admin_client):
    log = AutomationLogFactory(
        status=RunStatus.SUCCEEDED,
        condition_trace=[{"field": "status", "verdict": True}],
        action_logs=[{"order": 0, "status": "SUCCEEDED"}],
    )
    url = reverse("admin:automation_automationlog_change", args=[log.pk])

    page = admin_client.get(url).content.decode()

    assert "<pre" in page
    assert "&quot;verdict&quot;: true" in page  # indented JSON, not a Python repr
    assert 'name="_save"' not in page
    assert admin_client.post(url, {"status": "FAILED"}).status_code == 403
    assert admin_client.get(reverse("admin:automation_automationlog_add")).status_code == 403


def test_is_active_is_editable_from_the_rule_list(admin_client):
    rule = AutomationRuleFactory(is_active=True)
    data = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-0-id": str(rule.pk),
        "_save": "Save",
    }

    response = admin_client.post(reverse("admin:automation_automationrule_changelist"), data)

    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.is_active is False


def test_token_admin_never_shows_the_hash_and_revokes(admin_client):
    token = ApiTokenFactory()

    page = admin_client.get(reverse("admin:accounts_apitoken_change", args=[token.pk]))
    response = admin_client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
    )

    assert token.token_hash not in page.content.decode()
    assert admin_client.get(reverse("admin:accounts_apitoken_add")).status_code == 403
    assert response.status_code == 302
    assert ApiToken.authenticate(token.raw_token) is None


def test_invitation_admin_lists_and_revokes_but_does_not_invite(admin_client):
    invitation = InvitationFactory(username="listed-invitee")

    page = admin_client.get(reverse("admin:accounts_invitation_changelist"))
    detail = admin_client.get(reverse("admin:accounts_invitation_change", args=[invitation.pk]))
    response = admin_client.post(
        reverse("admin:accounts_invitation_changelist"),
        {"action": "revoke", "_selected_action": [invitation.pk]},
    )

    assert "listed-invitee" in page.content.decode()
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert admin_client.get(reverse("admin:accounts_invitation_add")).status_code == 403
    assert response.status_code == 302
    assert Invitation.objects.get(pk=invitation.pk).revoked_at is not None


def test_action_form_keeps_stored_secrets_when_the_mask_comes_back():
    from automation.admin import RuleActionForm

    action = AutomationRuleFactory(actions=[WEBHOOK]).actions.get()
    form = RuleActionForm(instance=action)
    shown = form.initial["parameters"]
    assert shown["secret"] == "********" and shown["headers"]["X-Api-Key"] == "********"

    def post(parameters):
        return RuleActionForm(
            instance=action,
            data={
                "order": 0,
                "action_type": ActionType.CALL_WEBHOOK,
                "parameters": json.dumps(parameters),
                "continue_on_failure": "",
            },
        )

    # Another url: the stored secrets do not follow it; they must be typed again.
    form = post(dict(shown, url="https://hooks.example.com/changed"))
    assert not form.is_valid()
    assert form.errors["parameters"] == [
        "secret: The url changed: send this secret again.",
        "headers.X-Api-Key: The url changed: send this secret again.",
    ]

    form = post(dict(shown, timeoutSeconds=3))
    assert form.is_valid(), form.errors
    saved = form.save()

    assert saved.parameters["secret"] == "signing-secret-value"
    assert saved.parameters["headers"]["X-Api-Key"] == "header-secret-value"
    assert saved.parameters["timeoutSeconds"] == 3


@pytest.fixture
def fresh_login_limits():
    cache.clear()
    yield
    cache.clear()


def admin_login(client, username, password, address="10.7.0.1"):
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def test_admin_login_is_rate_limited_before_the_password_is_checked(
    fresh_login_limits, monkeypatch
):
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    staff.set_password("right-pass-w0rd")
    staff.save()
    client = Client()
    for _ in range(5):
        assert admin_login(client, "root", "wrong").status_code == 200  # the form again

    checked = []
    real = forms.authenticate
    monkeypatch.setattr(forms, "authenticate", lambda *a, **k: checked.append(1) or real(*a, **k))
    refused = admin_login(client, "root", "right-pass-w0rd")  # the 6th, with the right password
    assert refused.status_code == 200
    assert b"Too many login attempts" in refused.content
    assert "_auth_user_id" not in client.session
    assert checked == []


def test_admin_login_limits_each_address_across_usernames(fresh_login_limits, settings):
    client = Client()
    for number in range(settings.LOGIN_ATTEMPTS_PER_ADDRESS):
        admin_login(client, f"guess{number}", "wrong", address="10.7.0.2")
    refused = admin_login(client, "someone-else", "wrong", address="10.7.0.2")
    assert b"Too many login attempts" in refused.content
    assert b"Too many login attempts" not in admin_login(client, "x", "y", "10.7.0.3").content


def test_admin_login_and_obtain_token_share_one_budget(fresh_login_limits):
    """A guesser gains nothing by alternating between the two doors (from one address: another
    address has a per-username count of its own, tests/drills/test_hostile_accounts.py)."""
    UserFactory(username="shared")
    client = Client()
    for _ in range(3):
        admin_login(client, "shared", "wrong", address="10.7.0.4")
    obtain = 'mutation { obtainToken(username: "shared", password: "wrong") { token } }'
    codes = []
    for _ in range(3):
        answer = client.post(
            "/graphql/",
            data=json.dumps({"query": obtain}),
            content_type="application/json",
            REMOTE_ADDR="10.7.0.4",
        )
        codes.append(json.loads(answer.content)["errors"][0]["extensions"]["code"])
    assert codes == ["UNAUTHENTICATED", "UNAUTHENTICATED", "RATE_LIMITED"]
