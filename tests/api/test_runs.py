"""runRule and retryRun over HTTP."""

import json
import time

import pytest
from django.test import Client

from automation.core.choices import ActionType, RunStatus, TriggerType
from automation.core.models import AutomationLog
from catalog.models import Product
from tests import blocking
from tests.factories import (
    AutomationLogFactory,
    AutomationRuleFactory,
    CategoryFactory,
    ProductFactory,
    content_type_of,
)

pytestmark = pytest.mark.django_db

RUN = """mutation($id: ID!, $obj: ID, $dry: Boolean) {
  runRule(id: $id, objectId: $obj, dryRun: $dry) {
    id status dryRun trigger objectType objectId triggeredBy { username } rule { id } retryOf { id }
    conditionsMet actionLogs { order actionType status result }
  }
}"""
RETRY = "mutation($id: ID!) { retryRun(logId: $id) { id status retryOf { id } objectId } }"


@pytest.fixture
def manual_rule(organization):
    return AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "Ran on {{ object.name }}"}},
            }
        ],
    )


def test_run_rule_queues_a_pending_manual_run(gql, editor, organization, manual_rule):
    product = ProductFactory(organization=organization)
    log = gql(RUN, {"id": str(manual_rule.pk), "obj": str(product.pk)}, token=editor).ok()[
        "runRule"
    ]
    assert log["status"] == "PENDING"
    assert log["dryRun"] is False
    assert log["trigger"] == "MANUAL"
    assert log["objectType"] == "catalog.product"
    assert log["objectId"] == str(product.pk)
    assert log["triggeredBy"] == {"username": editor.username}
    assert AutomationLog.objects.get(pk=log["id"]).trigger == TriggerType.MANUAL


def test_dry_run_records_what_would_happen_and_writes_nothing_else(
    gql, editor, organization, manual_rule
):
    product = ProductFactory(organization=organization, name="Drill", description="before")
    log = gql(
        RUN, {"id": str(manual_rule.pk), "obj": str(product.pk), "dry": True}, token=editor
    ).ok()["runRule"]
    assert log["dryRun"] is True
    assert log["status"] in {"SUCCEEDED", "SKIPPED"}
    assert log["actionLogs"][0]["actionType"] == "UPDATE_RECORD"
    assert Product.objects.get(pk=product.pk).description == "before"


def test_run_rule_object_errors(gql, editor, organization, other_organization, manual_rule):
    missing = gql(RUN, {"id": str(manual_rule.pk)}, token=editor).error()
    assert missing["extensions"]["code"] == "VALIDATION_ERROR"
    assert "objectId" in missing["extensions"]["fields"]
    foreign = ProductFactory(organization=other_organization)
    assert gql(RUN, {"id": str(manual_rule.pk), "obj": str(foreign.pk)}, token=editor).codes == [
        "NOT_FOUND"
    ]
    modelless = AutomationRuleFactory(
        organization=organization, manual_rule=True, content_type=None
    )
    given = gql(RUN, {"id": str(modelless.pk), "obj": "1"}, token=editor).error()
    assert "objectId" in given["extensions"]["fields"]
    assert not AutomationLog.objects.exists()


def test_retry_run(gql, editor, organization, manual_rule):
    product = ProductFactory(organization=organization)
    running = AutomationLogFactory(
        rule=manual_rule, status=RunStatus.RUNNING, object_id=str(product.pk)
    )
    assert gql(RETRY, {"id": str(running.pk)}, token=editor).codes == ["CONFLICT"]
    failed = AutomationLogFactory(
        rule=manual_rule, status=RunStatus.FAILED, object_id=str(product.pk)
    )
    retry = gql(RETRY, {"id": str(failed.pk)}, token=editor).ok()["retryRun"]
    assert retry["retryOf"] == {"id": str(failed.pk)}
    assert retry["status"] == "PENDING"
    assert retry["objectId"] == str(product.pk)
    assert AutomationLog.objects.filter(retry_of=running).count() == 0


def test_the_retry_of_a_dry_run_is_a_dry_run_executed_at_once(
    gql, editor, organization, manual_rule
):
    # No worker ever takes a dry run: a retry queued PENDING would stay PENDING for ever.
    product = ProductFactory(organization=organization, name="Lamp", description="as it was")
    dry = gql(RUN, {"id": str(manual_rule.pk), "obj": str(product.pk), "dry": True}, token=editor)
    first = dry.ok()["runRule"]
    assert first["status"] == "SUCCEEDED"

    retry = gql(RETRY, {"id": first["id"]}, token=editor).ok()["retryRun"]

    assert retry["retryOf"] == {"id": first["id"]}
    assert retry["status"] == "SUCCEEDED"
    stored = AutomationLog.objects.get(pk=retry["id"])
    assert stored.dry_run is True
    assert stored.action_logs[0]["result"]["would"] == "update"
    product.refresh_from_db()
    assert product.description == "as it was", "a dry run writes nothing but its log"


# --- Dry runs inside the request: no database held, a time budget, a few at once -------------------


def conditional_rule(organization):
    """A manual rule on products whose status is ACTIVE, updating the description."""
    return AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        conditions=[{"field_name": "status", "operator": "EQUALS", "value": "ACTIVE"}],
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "Ran on {{ object.name }}"}},
            }
        ],
    )


def dry_run_in_thread(rule, product, user) -> blocking.Worker:
    """runRule(dryRun: true) posted from another thread, with a client of its own."""

    def post():
        http = Client().post(
            "/graphql/",
            data=json.dumps(
                {
                    "query": RUN,
                    "variables": {"id": str(rule.pk), "obj": str(product.pk), "dry": True},
                }
            ),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {user.raw_token}",
        )
        return json.loads(http.content)

    return blocking.start(post)


@pytest.mark.django_db(transaction=True)
def test_a_dry_run_being_evaluated_does_not_hold_other_organizations_writes(
    gql, editor, organization, outsider, other_organization, monkeypatch
):
    """A dry run used to evaluate and render inside a transaction, which on SQLite holds the
    write lock of the whole database: another organization's createCategory waited for it."""
    rule = conditional_rule(organization)
    product = ProductFactory(organization=organization, status="ACTIVE", name="Lamp")
    parked = blocking.BlockedEvaluation(monkeypatch)
    dry_run = dry_run_in_thread(rule, product, editor)
    try:
        assert parked.entered.wait(timeout=30), "the dry run never reached its conditions"
        create = (
            "mutation($o: ID!, $n: String!) { createCategory(organization: $o, name: $n) { id } }"
        )
        write = blocking.start(
            lambda: gql(create, {"o": str(other_organization.pk), "n": "Elsewhere"}, token=outsider)
        )
        committed_meanwhile = write.finished_within(10)
    finally:
        parked.release.set()
    assert committed_meanwhile, "the other organization's write waited for the dry run"
    assert write.error is None, write.error
    write.result.ok()
    assert dry_run.finished_within(30) and dry_run.error is None, dry_run.error
    log = dry_run.result["data"]["runRule"]
    assert (log["status"], log["conditionsMet"]) == ("SUCCEEDED", True)
    assert log["actionLogs"][0]["result"]["fields"] == {"description": "Ran on Lamp"}
    assert Product.objects.get(pk=product.pk).description != "Ran on Lamp"


def test_a_dry_run_past_its_budget_fails_the_actions_it_did_not_render(
    gql, editor, organization, settings
):
    settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS = 0
    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "Ran on {{ object.name }}"}},
            }
        ],
    )
    product = ProductFactory(organization=organization)
    log = gql(RUN, {"id": str(rule.pk), "obj": str(product.pk), "dry": True}, token=editor).ok()[
        "runRule"
    ]
    assert log["status"] == "FAILED"
    (action,) = log["actionLogs"]
    assert action["status"] == "FAILED"
    stored = AutomationLog.objects.get(pk=log["id"])
    assert "AUTOMATION_DRY_RUN_BUDGET_SECONDS" in stored.action_logs[0]["error"]


def test_a_dry_run_whose_conditions_exceed_the_budget_is_skipped_naming_it(
    gql, editor, organization, settings
):
    settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS = 0  # the conditions get no more than the dry run
    rule = conditional_rule(organization)
    product = ProductFactory(organization=organization, status="ACTIVE")
    log = gql(RUN, {"id": str(rule.pk), "obj": str(product.pk), "dry": True}, token=editor).ok()[
        "runRule"
    ]
    assert (log["status"], log["conditionsMet"]) == ("SKIPPED", False)
    assert "Conditions not evaluated in time" in AutomationLog.objects.get(pk=log["id"]).error


@pytest.mark.django_db(transaction=True)
def test_an_organization_gets_a_few_dry_runs_at_once_and_others_are_not_held_up(
    gql, editor, organization, outsider, other_organization, monkeypatch, settings
):
    settings.AUTOMATION_DRY_RUNS_PER_ORGANIZATION = 2
    rule = conditional_rule(organization)
    product = ProductFactory(organization=organization, status="ACTIVE")
    parked = blocking.BlockedEvaluation(monkeypatch)
    running = [dry_run_in_thread(rule, product, editor) for _ in range(2)]
    try:
        assert parked.wait_for(2, timeout=30), "two dry runs never reached their conditions"
        refused = gql(
            RUN, {"id": str(rule.pk), "obj": str(product.pk), "dry": True}, token=editor
        ).error()
        # Another organization's dry run (no condition to park on) is not counted with them.
        other_rule = AutomationRuleFactory(organization=other_organization, manual_rule=True)
        other_product = ProductFactory(organization=other_organization)
        other = gql(
            RUN,
            {"id": str(other_rule.pk), "obj": str(other_product.pk), "dry": True},
            token=outsider,
        ).ok()["runRule"]
    finally:
        parked.release.set()
    assert refused["extensions"]["code"] == "RATE_LIMITED"
    assert refused["extensions"]["retryAfter"] >= 1
    assert "AUTOMATION_DRY_RUNS_PER_ORGANIZATION" in refused["message"]
    assert other["status"] == "SUCCEEDED"
    for dry_run in running:
        assert dry_run.finished_within(30) and dry_run.error is None, dry_run.error
        assert dry_run.result["data"]["runRule"]["status"] == "SUCCEEDED"
    # The slots were given back.
    again = gql(RUN, {"id": str(rule.pk), "obj": str(product.pk), "dry": True}, token=editor)
    assert again.ok()["runRule"]["status"] == "SUCCEEDED"
    # A real run is never counted: it is queued, not executed in the request.
    assert AutomationLog.objects.filter(dry_run=True, rule=rule).count() == 3


def test_a_slot_a_killed_process_never_gave_back_frees_itself(
    gql, editor, organization, settings, monkeypatch
):
    from graphql_api import ratelimit

    settings.AUTOMATION_DRY_RUNS_PER_ORGANIZATION = 1
    settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS = 0.5
    monkeypatch.setattr(ratelimit, "DRY_RUN_SLOT_MARGIN_SECONDS", 0.5)  # a 1 s slot
    rule = conditional_rule(organization)
    product = ProductFactory(organization=organization, status="ACTIVE")
    killed = ratelimit.dry_run_slot(organization.pk, user_id=-1)  # another member's
    killed.__enter__()  # a dry run whose process was killed: never exited
    variables = {"id": str(rule.pk), "obj": str(product.pk), "dry": True}
    assert gql(RUN, variables, token=editor).codes == ["RATE_LIMITED"]
    time.sleep(2.1)  # past the slot's expiry (whole seconds in Redis)
    assert gql(RUN, variables, token=editor).ok()["runRule"]["dryRun"] is True


def test_one_user_gets_a_few_dry_runs_at_once_whatever_their_organizations(
    gql, editor, organization, other_organization, make_member, settings
):
    # Anyone may create organizations: a cap per organization alone let one user hold every
    # request thread through organizations of their own.
    from accounts.choices import Role
    from accounts.models import Membership
    from graphql_api import ratelimit

    settings.AUTOMATION_DRY_RUNS_PER_USER = 1
    Membership.objects.create(user=editor, organization=other_organization, role=Role.EDITOR)
    rule = conditional_rule(other_organization)
    product = ProductFactory(organization=other_organization, status="ACTIVE")
    variables = {"id": str(rule.pk), "obj": str(product.pk), "dry": True}
    with ratelimit.dry_run_slot(organization.pk, editor.pk):  # their dry run elsewhere
        refused = gql(RUN, variables, token=editor)
        assert refused.codes == ["RATE_LIMITED"]
        assert "AUTOMATION_DRY_RUNS_PER_USER" in refused.errors[0]["message"]
        colleague = make_member(other_organization, Role.EDITOR)
        assert gql(RUN, variables, token=colleague).ok()["runRule"]["dryRun"] is True
    assert gql(RUN, variables, token=editor).ok()["runRule"]["dryRun"] is True


def test_a_dry_run_that_raises_gives_its_slot_back(
    gql, editor, organization, settings, monkeypatch
):
    from automation.runs import manual

    settings.AUTOMATION_DRY_RUNS_PER_ORGANIZATION = 1
    rule = conditional_rule(organization)
    product = ProductFactory(organization=organization, status="ACTIVE")
    variables = {"id": str(rule.pk), "obj": str(product.pk), "dry": True}
    with monkeypatch.context() as patch:
        patch.setattr(manual, "execute_dry_run", lambda log: 1 / 0)
        assert gql(RUN, variables, token=editor).codes == ["INTERNAL_SERVER_ERROR"]
    assert gql(RUN, variables, token=editor).ok()["runRule"]["dryRun"] is True


# --- Dry runs that simulate an event: changes and a record -------------------------------------------

SIMULATE = """mutation($id: ID!, $obj: ID, $dry: Boolean, $changes: JSON, $record: JSON) {
  runRule(id: $id, objectId: $obj, dryRun: $dry, changes: $changes, record: $record) {
    id status dryRun trigger event objectType objectId conditionsMet changes context error
    conditionTrace { field operator expected actual passed error }
    actionLogs { status result error }
  }
}"""


def simulate(gql, token, rule, product=None, **variables):
    variables = {"id": str(rule.pk), "dry": True, **variables}
    if product is not None:
        variables["obj"] = str(product.pk)
    return gql(SIMULATE, variables, token=token)


def changed_to_active_rule(organization, **kwargs):
    """An UPDATED rule on products that fires when the status becomes ACTIVE."""
    return AutomationRuleFactory(
        organization=organization,
        conditions=[{"field_name": "status", "operator": "CHANGED_TO", "value": "ACTIVE"}],
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "Now {{ changes.status.new }}"}},
            }
        ],
        **kwargs,
    )


def test_a_dry_run_of_an_updated_rule_judges_simulated_changes_as_an_update_would(
    gql, editor, organization
):
    rule = changed_to_active_rule(organization)
    product = ProductFactory(organization=organization, status="DRAFT", description="before")
    change = {"status": {"old": "DRAFT", "new": "ACTIVE"}}
    log = simulate(gql, editor, rule, product, changes=change).ok()["runRule"]
    assert (log["status"], log["conditionsMet"], log["dryRun"]) == ("SUCCEEDED", True, True)
    assert (log["trigger"], log["event"]) == ("MANUAL", "UPDATED")
    assert log["changes"] == change
    (leaf,) = log["conditionTrace"]
    assert (leaf["operator"], leaf["actual"], leaf["passed"]) == (
        "CHANGED_TO",
        change["status"],
        True,
    )
    # The record holds the new value, as it would after the save; the stored one is untouched.
    assert log["context"]["object"]["status"] == "ACTIVE"
    assert log["context"]["object"]["name"] == product.name
    assert log["context"]["simulated"] == ["changes"]
    assert log["actionLogs"][0]["result"]["fields"] == {"description": "Now ACTIVE"}
    product.refresh_from_db()
    assert (product.status, product.description) == ("DRAFT", "before")

    # The same rule, changes from elsewhere: not met, and the trace says why.
    other = {"status": {"old": "ACTIVE", "new": "DISCONTINUED"}}
    log = simulate(gql, editor, rule, product, changes=other).ok()["runRule"]
    assert (log["status"], log["conditionsMet"]) == ("SKIPPED", False)
    assert log["conditionTrace"][0]["actual"] == other["status"]
    # No changes given: an update that changed nothing this rule looks at.
    log = simulate(gql, editor, rule, product).ok()["runRule"]
    assert (log["status"], log["event"], log["changes"]) == ("SKIPPED", "UPDATED", None)


def test_a_dry_run_of_a_created_rule_sees_every_field_changed_from_null(gql, editor, organization):
    rule = AutomationRuleFactory(
        organization=organization,
        trigger_event="CREATED",
        conditions=[{"field_name": "name", "operator": "CHANGED"}],
    )
    product = ProductFactory(organization=organization, name="Fresh")
    log = simulate(gql, editor, rule, product).ok()["runRule"]
    assert (log["status"], log["event"]) == ("SUCCEEDED", "CREATED")
    assert log["changes"]["name"] == {"old": None, "new": "Fresh"}
    assert log["conditionTrace"][0]["passed"] is True


def test_a_dry_run_on_a_simulated_record_needs_no_stored_record(gql, editor, organization):
    category = CategoryFactory(organization=organization, name="Lamps")
    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        conditions=[
            {"field_name": "status", "operator": "EQUALS", "value": "ACTIVE"},
            {"field_name": "price", "operator": "LESS_THAN", "value": 10},
            {"field_name": "category__name", "operator": "EQUALS", "value": "Lamps"},
        ],
        actions=[
            {
                "action_type": ActionType.CREATE_RECORD,
                "parameters": {
                    "model": "catalog.category",
                    "fields": {"name": "For {{ object.name }} at {{ object.price }}"},
                },
            }
        ],
    )
    record = {"name": "Ghost", "status": "ACTIVE", "price": 9.5, "category": str(category.pk)}
    log = simulate(gql, editor, rule, record=record).ok()["runRule"]
    assert (log["status"], log["conditionsMet"]) == ("SUCCEEDED", True), log["conditionTrace"]
    assert (log["objectType"], log["objectId"]) == ("catalog.product", None)
    # Stored as a snapshot holds values: the price as text, the category as its id.
    assert log["context"]["object"] == {
        "id": None,
        "name": "Ghost",
        "status": "ACTIVE",
        "price": "9.5",
        "category": category.pk,
    }
    assert log["actionLogs"][0]["result"]["fields"] == {"name": "For Ghost at 9.5"}
    assert not Product.objects.exists()


def test_a_record_overrides_fields_of_the_stored_record(gql, editor, organization):
    rule = conditional_rule(organization)
    product = ProductFactory(organization=organization, status="DRAFT", name="Lamp")
    log = simulate(gql, editor, rule, product, record={"status": "ACTIVE"}).ok()["runRule"]
    assert (log["status"], log["conditionsMet"]) == ("SUCCEEDED", True)
    assert log["context"]["object"]["status"] == "ACTIVE"
    assert log["context"]["object"]["id"] == product.pk
    assert log["actionLogs"][0]["result"]["fields"] == {"description": "Ran on Lamp"}
    assert Product.objects.get(pk=product.pk).status == "DRAFT"


def test_simulated_changes_that_touch_no_watched_field_say_the_rule_would_not_fire(
    gql, editor, organization
):
    rule = changed_to_active_rule(organization, watched_fields=["price"])
    product = ProductFactory(organization=organization)
    change = {"status": {"old": "DRAFT", "new": "ACTIVE"}}
    log = simulate(gql, editor, rule, product, changes=change).ok()["runRule"]
    assert log["status"] == "SKIPPED"
    assert log["error"].startswith("Not fired: the rule watches price")
    assert log["actionLogs"] == []


@pytest.mark.parametrize(
    ("kind", "variables", "field", "message"),
    [
        ("event", {"dry": False, "changes": {}}, "changes", "Only a dry run"),
        ("manual", {"dry": False, "record": {"stock": 1}}, "record", "Only a dry run"),
        ("event", {"changes": {"nope": {"old": 1, "new": 2}}}, "changes.nope", "not a field"),
        (
            "event",
            {"changes": {"category__name": {"old": "a", "new": "b"}}},
            "changes.category__name",
            "not a field",
        ),
        (
            "event",
            {"changes": {"price": {"old": "1", "new": "x"}}},
            "changes.price.new",
            "cannot be compared",
        ),
        (
            "event",
            {"changes": {"status": {"old": "GONE", "new": "ACTIVE"}}},
            "changes.status.old",
            "not a choice",
        ),
        (
            "event",
            {"changes": {"name": {"old": "a", "new": None}}},
            "changes.name.new",
            "cannot be null",
        ),
        ("event", {"changes": {"stock": {"old": 1, "new": "1"}}}, "changes.stock", "equal"),
        ("event", {"changes": {"stock": {"new": 2}}}, "changes.stock", "both given"),
        ("event", {"changes": [1]}, "changes", "Expected an object"),
        ("created", {"changes": {"stock": {"old": 1, "new": 2}}}, "changes", "give them in record"),
        ("deleted", {"changes": {"stock": {"old": 1, "new": 2}}}, "changes", "no changes"),
        ("manual", {"changes": {"stock": {"old": 1, "new": 2}}}, "changes", "Only EVENT rules"),
        ("manual", {"record": {"id": 5}}, "record.id", "give objectId"),
        ("manual", {"record": {"stock": "many"}}, "record.stock", "cannot be compared"),
        ("manual", {"record": "x"}, "record", "Expected an object"),
        (
            "event",
            {"changes": {"stock": {"old": 1, "new": 2}}, "record": {"stock": 3}},
            "record.stock",
            "changes.stock.new is 2",
        ),
        ("modelless", {"record": {"stock": 1}}, "record", "no model"),
    ],
)
def test_simulated_inputs_are_checked_before_anything_is_written(
    gql, editor, organization, kind, variables, field, message
):
    specs = {
        "event": {},
        "created": {"trigger_event": "CREATED"},
        "deleted": {"trigger_event": "DELETED"},
        "manual": {"manual_rule": True},
        "modelless": {"manual_rule": True, "content_type": None},
    }
    product = ProductFactory(organization=organization) if kind != "modelless" else None
    rule = AutomationRuleFactory(organization=organization, **specs[kind])
    error = simulate(gql, editor, rule, product, **variables).error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    fields = error["extensions"]["fields"]
    assert list(fields) == [field], fields
    assert message in fields[field][0], fields
    assert not AutomationLog.objects.exists()


def test_a_model_rule_needs_an_object_id_or_in_a_dry_run_a_record(gql, editor, organization):
    rule = conditional_rule(organization)
    dry = simulate(gql, editor, rule).error()
    assert "record" in dry["extensions"]["fields"]["objectId"][0]
    real = simulate(gql, editor, rule, dry=False).error()
    assert real["extensions"]["fields"] == {
        "objectId": ["This rule has a model: give the record's id."]
    }


def test_run_rule_says_it_queues_real_runs_and_executes_dry_runs(gql, editor):
    query = '{ __type(name: "Mutation") { fields { name description } } }'
    fields = gql(query, token=editor).ok()["__type"]["fields"]
    (description,) = [f["description"] for f in fields if f["name"] == "runRule"]
    assert "A real run is queued and returned PENDING" in description
    assert "dryRun: true" in description
    assert not description.startswith("Dry run")


# --- runSchedule: fire a schedule now, by hand ------------------------------------------------------

RUN_SCHEDULE = """mutation($id: ID!) {
  runSchedule(id: $id) {
    id status trigger scheduledFor objectId context error triggeredBy { username }
  }
}"""


def product_schedule(organization):
    return AutomationRuleFactory(
        organization=organization,
        schedule_rule=True,
        content_type=content_type_of("catalog.product"),
        conditions=[{"field_name": "status", "operator": "EQUALS", "value": "ACTIVE"}],
    )


def test_run_schedule_fires_a_schedule_now_without_moving_it(gql, editor, organization):
    modelless = AutomationRuleFactory(organization=organization, schedule_rule=True)
    next_run_at = modelless.next_run_at
    log = gql(RUN_SCHEDULE, {"id": str(modelless.pk)}, token=editor).ok()["runSchedule"]
    assert (log["status"], log["trigger"], log["scheduledFor"]) == ("PENDING", "MANUAL", None)
    assert log["triggeredBy"] == {"username": editor.username}
    modelless.refresh_from_db()
    assert modelless.next_run_at == next_run_at

    active = ProductFactory(organization=organization, status="ACTIVE")
    ProductFactory(organization=organization, status="DRAFT")
    rule = product_schedule(organization)
    fan_out = gql(RUN_SCHEDULE, {"id": str(rule.pk)}, token=editor).ok()["runSchedule"]
    assert (fan_out["status"], fan_out["trigger"]) == ("SUCCEEDED", "MANUAL")
    assert fan_out["context"]["records_matched"] == 1
    (child,) = AutomationLog.objects.filter(parent_log_id=fan_out["id"])
    assert (child.status, child.object_id) == (RunStatus.PENDING, str(active.pk))


def test_run_schedule_is_for_editors_and_schedule_rules(gql, editor, viewer, organization):
    schedule = AutomationRuleFactory(organization=organization, schedule_rule=True)
    assert gql(RUN_SCHEDULE, {"id": str(schedule.pk)}, token=viewer).codes == ["PERMISSION_DENIED"]
    for rule in (
        AutomationRuleFactory(organization=organization),
        AutomationRuleFactory(organization=organization, manual_rule=True),
    ):
        refused = gql(RUN_SCHEDULE, {"id": str(rule.pk)}, token=editor).error()
        assert refused["extensions"]["code"] == "VALIDATION_ERROR"
        assert refused["extensions"]["fields"] == {
            "id": [
                f"This is a {rule.trigger_type} rule: runSchedule fires SCHEDULE rules. "
                "Run it with runRule."
            ]
        }
    assert not AutomationLog.objects.exists()


def test_run_schedule_evaluates_its_records_within_the_dry_run_bounds(
    gql, editor, organization, settings
):
    from graphql_api import ratelimit

    ProductFactory(organization=organization, status="ACTIVE")
    rule = product_schedule(organization)
    settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS = 0
    cut = gql(RUN_SCHEDULE, {"id": str(rule.pk)}, token=editor).ok()["runSchedule"]
    assert cut["status"] == "SKIPPED"
    assert "AUTOMATION_DRY_RUN_BUDGET_SECONDS" in cut["error"]

    settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS = 5
    settings.AUTOMATION_DRY_RUNS_PER_ORGANIZATION = 1
    with ratelimit.dry_run_slot(organization.pk, user_id=-1):  # another member's dry run
        assert gql(RUN_SCHEDULE, {"id": str(rule.pk)}, token=editor).codes == ["RATE_LIMITED"]
        # Without a model nothing is evaluated in the request: no slot needed.
        modelless = AutomationRuleFactory(organization=organization, schedule_rule=True)
        assert gql(RUN_SCHEDULE, {"id": str(modelless.pk)}, token=editor).ok()


def test_a_run_renders_now_local_in_its_rules_time_zone(gql, editor, organization):
    import datetime

    import time_machine

    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        content_type=None,
        timezone="Europe/Paris",
        actions=[
            {
                "action_type": ActionType.CREATE_RECORD,
                "parameters": {
                    "model": "catalog.category",
                    "fields": {"name": "{{ now }} / {{ now_local }}"},
                },
            }
        ],
    )
    summer = datetime.datetime(2026, 7, 1, 10, 0, tzinfo=datetime.UTC)
    with time_machine.travel(summer, tick=False):
        log = simulate(gql, editor, rule).ok()["runRule"]
    assert log["actionLogs"][0]["result"]["fields"] == {
        "name": "2026-07-01T10:00:00Z / 2026-07-01T12:00:00+02:00"
    }
