"""availableModels, actionTypes, notifications, upcomingRuns, and schema.graphql in sync."""

import datetime
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from accounts.models import Membership, Notification
from automation.core.registry import readable_paths
from graphql_api.schema import schema
from tests.factories import (
    AutomationRuleFactory,
    MembershipFactory,
    NotificationFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_schema_graphql_is_in_sync_with_the_code():
    exported = (Path(settings.BASE_DIR) / "schema.graphql").read_text()
    assert exported.strip() == schema.as_str().strip(), (
        "run: manage.py export_schema graphql_api.schema:schema --path schema.graphql"
    )


def test_available_models_and_action_types(gql, viewer):
    data = gql(
        "{ availableModels { model fields } actionTypes { actionType parametersSchema } }",
        token=viewer,
    ).ok()
    models = {m["model"]: m["fields"] for m in data["availableModels"]}
    # The bundled catalog, and the suite's example app (tests/projects).
    assert set(models) == {
        "catalog.product",
        "catalog.category",
        "projects.project",
        "projects.task",
    }
    assert models["catalog.product"] == readable_paths("catalog.product")
    assert "category__name" in models["catalog.product"]
    assert not any(
        "password" in path or "organization" in path for path in models["catalog.product"]
    )
    types = {t["actionType"]: t["parametersSchema"] for t in data["actionTypes"]}
    assert set(types) == {
        "CREATE_RECORD",
        "UPDATE_RECORD",
        "DELETE_RECORD",
        "SEND_NOTIFICATION",
        "CALL_WEBHOOK",
        "SEND_EMAIL",
        "WAIT",
    }
    assert types["CALL_WEBHOOK"]["properties"]["url"]["type"] == "string"
    assert types["SEND_EMAIL"]["properties"]["to"]["maxItems"] == 50
    assert types["SEND_NOTIFICATION"]["properties"]["email"]["type"] == "boolean"


def test_notifications_are_the_callers_own(gql, editor, organization):
    older = NotificationFactory(
        organization=organization,
        recipient=editor,
        created_at=timezone.now() - datetime.timedelta(hours=1),
    )
    newer = NotificationFactory(organization=organization, recipient=editor)
    someone_else = NotificationFactory(organization=organization, recipient=UserFactory())
    query = "query($u: Boolean) { notifications(unreadOnly: $u) { id readAt } }"
    assert [n["id"] for n in gql(query, token=editor).ok()["notifications"]] == [
        str(newer.pk),
        str(older.pk),
    ]

    read = gql(
        "mutation($id: ID!) { markNotificationRead(id: $id) { id readAt } }",
        {"id": str(newer.pk)},
        token=editor,
    ).ok()["markNotificationRead"]
    assert read["readAt"] is not None
    assert [n["id"] for n in gql(query, {"u": True}, token=editor).ok()["notifications"]] == [
        str(older.pk)
    ]

    refused = gql(
        "mutation($id: ID!) { markNotificationRead(id: $id) { id } }",
        {"id": str(someone_else.pk)},
        token=editor,
    )
    assert refused.codes == ["NOT_FOUND"]
    assert Notification.objects.get(pk=someone_else.pk).read_at is None


def test_upcoming_runs(gql, editor, organization):
    rule = AutomationRuleFactory(
        organization=organization, schedule_rule=True, schedule="0 9 * * *", timezone="Europe/Paris"
    )
    event_rule = AutomationRuleFactory(organization=organization)
    query = "query($id: ID!, $n: Int) { rule(id: $id) { upcomingRuns(count: $n) } }"
    runs = gql(query, {"id": str(rule.pk), "n": 3}, token=editor).ok()["rule"]["upcomingRuns"]
    assert len(runs) == 3
    moments = [datetime.datetime.fromisoformat(run) for run in runs]
    assert moments == sorted(moments) and moments[0] > timezone.now()
    assert all(m.astimezone(datetime.UTC).hour in (7, 8) for m in moments)  # 09:00 Paris
    assert (
        gql(query, {"id": str(event_rule.pk), "n": 3}, token=editor).ok()["rule"]["upcomingRuns"]
        == []
    )
    # count 0 is within the bounds: no fire times (was an internal error).
    assert gql(query, {"id": str(rule.pk), "n": 0}, token=editor).ok()["rule"]["upcomingRuns"] == []
    too_many = gql(query, {"id": str(rule.pk), "n": 51}, token=editor).error()
    assert too_many["extensions"] == {
        "code": "VALIDATION_ERROR",
        "fields": {"count": ["Must be between 0 and 50."]},
    }


def test_schedule_times_in_the_rules_time_zone_across_dst(gql, editor, organization):
    # Paris moves from CET (+01:00) to CEST (+02:00) on 2026-03-29 at 02:00.
    query = """query($id: ID!, $n: Int) { rule(id: $id) {
        nextRunAt nextRunAtLocal upcomingRuns(count: $n) upcomingRunsLocal(count: $n) } }"""
    with time_machine.travel(datetime.datetime(2026, 3, 27, 12, 0, tzinfo=datetime.UTC)):
        rule = AutomationRuleFactory(
            organization=organization,
            schedule_rule=True,
            schedule="0 9 * * *",
            timezone="Europe/Paris",
        )
        data = gql(query, {"id": str(rule.pk), "n": 3}, token=editor).ok()["rule"]
    assert data["nextRunAtLocal"] == "2026-03-28T09:00:00+01:00"
    assert data["upcomingRunsLocal"] == [
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",
        "2026-03-30T09:00:00+02:00",
    ]
    # The same instants as the UTC fields.
    assert [datetime.datetime.fromisoformat(t) for t in data["upcomingRunsLocal"]] == [
        datetime.datetime.fromisoformat(t) for t in data["upcomingRuns"]
    ]
    assert datetime.datetime.fromisoformat(
        data["nextRunAtLocal"]
    ) == datetime.datetime.fromisoformat(data["nextRunAt"])

    event_rule = AutomationRuleFactory(organization=organization, timezone="Europe/Paris")
    data = gql(query, {"id": str(event_rule.pk), "n": 3}, token=editor).ok()["rule"]
    assert (data["nextRunAtLocal"], data["upcomingRunsLocal"]) == (None, [])
    local_only = "query($id: ID!) { rule(id: $id) { upcomingRunsLocal(count: 51) } }"
    too_many = gql(local_only, {"id": str(rule.pk)}, token=editor).error()
    assert too_many["extensions"] == {
        "code": "VALIDATION_ERROR",
        "fields": {"count": ["Must be between 0 and 50."]},
    }


def test_a_removed_member_no_longer_reads_or_marks_the_organizations_notifications(
    gql, editor, organization, other_organization
):
    theirs = NotificationFactory(organization=organization, recipient=editor)
    MembershipFactory(user=editor, organization=other_organization)
    kept = NotificationFactory(organization=other_organization, recipient=editor)
    query = "{ notifications { id } }"
    assert {n["id"] for n in gql(query, token=editor).ok()["notifications"]} == {
        str(theirs.pk),
        str(kept.pk),
    }

    Membership.objects.filter(user=editor, organization=organization).delete()
    assert gql(query, token=editor).ok()["notifications"] == [{"id": str(kept.pk)}]
    refused = gql(
        "mutation($id: ID!) { markNotificationRead(id: $id) { id } }",
        {"id": str(theirs.pk)},
        token=editor,
    )
    assert refused.codes == ["NOT_FOUND"]
    assert Notification.objects.get(pk=theirs.pk).read_at is None
