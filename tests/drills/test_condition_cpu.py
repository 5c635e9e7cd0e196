"""Drill: an organization whose writes keep firing slow conditions is held to its condition CPU
per minute (AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE); another organization is not.

The CPU is counted, not timed: the clock the budget reads (cpu_budget.cpu_clock) is replaced by
one that only a REGEX match moves, by MATCH_COST seconds, so every run of the rule below costs
exactly 2 s. Rules are created over the API like any member could; runs are executed in-process.
"""

import json

import pytest
import time_machine
from django.test import Client

from automation.conditions import comparisons, cpu_budget
from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.runs.execute import execute_run
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

CREATE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
SETTING = "AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE"
MATCH_COST = 1.0  # CPU seconds one REGEX match costs here
BUDGET = 4.0  # two runs of two matches each


class CountedCpu:
    """A CPU clock that moves only when a REGEX match runs."""

    def __init__(self):
        self.now = 0.0
        self.matches = 0

    def __call__(self) -> float:
        return self.now

    def match(self):
        self.now += MATCH_COST
        self.matches += 1


@pytest.fixture
def cpu(monkeypatch, settings):
    settings.AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE = BUDGET
    clock = CountedCpu()
    monkeypatch.setattr(cpu_budget, "cpu_clock", clock)
    real_compile = comparisons.compile_regex

    def costly_compile(pattern):
        compiled = real_compile(pattern)

        class Costly:
            _regexp = compiled._regexp  # read for the match's step bound

            def search(self, text):
                clock.match()
                return compiled.search(text)

        return Costly()

    monkeypatch.setattr(comparisons, "compile_regex", costly_compile)
    return clock


REGEX_LEAVES = [
    {"field": "name", "operator": "REGEX", "value": "^Widget"},
    {"field": "name", "operator": "REGEX", "value": "[0-9]+$"},
]


def create_regex_rule(member, organization, leaves=REGEX_LEAVES, **trigger) -> int:
    """Over the API: on a product's stock update (or `trigger`), if its name matches the
    patterns, note it."""
    rule = {
        "organization": str(organization.pk),
        "name": "Regexes",
        "model": "catalog.product",
        "conditions": {"logic": "AND", "conditions": leaves},
        "actions": [
            {"actionType": "UPDATE_RECORD", "parameters": {"fields": {"description": "matched"}}}
        ],
        **(
            trigger
            or {"triggerType": "EVENT", "triggerEvent": "UPDATED", "watchedFields": ["stock"]}
        ),
    }
    body = graphql(member, CREATE, {"input": rule})
    return int(body["data"]["createRule"]["id"])


def graphql(member, query, variables) -> dict:
    response = Client().post(
        "/graphql/",
        data=json.dumps({"query": query, "variables": variables}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {member.raw_token}",
    )
    body = json.loads(response.content)
    assert not body.get("errors"), body
    return body


def write_and_run(product) -> AutomationLog:
    """Update the watched field (the rule fires) and execute the run as a worker would."""
    product.stock += 1
    product.save()
    log = AutomationLog.objects.filter(object_id=str(product.pk)).latest("id")
    execute_run(log.pk)
    log.refresh_from_db()
    return log


def test_an_organization_past_its_condition_cpu_is_skipped_and_another_is_not(
    cpu, organization, other_organization, make_member
):
    create_regex_rule(make_member(organization), organization)
    create_regex_rule(make_member(other_organization), other_organization)
    noisy = ProductFactory(organization=organization, name="Widget 7", stock=1)
    quiet = ProductFactory(organization=other_organization, name="Widget 8", stock=1)

    with time_machine.travel("2026-03-02 09:15:10Z", tick=False) as clock:
        first, second = write_and_run(noisy), write_and_run(noisy)
        assert (first.status, second.status) == (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED)
        assert cpu.matches == 4  # the budget is spent

        cut = write_and_run(noisy)
        assert cut.status == RunStatus.SKIPPED
        assert SETTING in cut.error, cut.error
        assert "CPU budget of 4 s in the minute from 09:15 UTC" in cut.error, cut.error
        assert "resets at 09:16:00 UTC" in cut.error, cut.error
        assert "2 of 2 conditions left" in cut.error, cut.error
        assert [entry["error"] for entry in cut.condition_trace] == [
            f"Not evaluated: {cpu_budget.refusal(cpu_budget.current_window())}."
        ] * 2
        assert cpu.matches == 4, "no match ran for the organization past its budget"
        assert cut.action_logs == [], "the cut run planned no action"

        other = write_and_run(quiet)
        assert other.status == RunStatus.SUCCEEDED, other.error
        assert [entry["error"] for entry in other.condition_trace] == [None, None]
        assert cpu.matches == 6

        clock.shift(60)  # the next minute: the organization's conditions run again
        again = write_and_run(noisy)
        assert again.status == RunStatus.SUCCEEDED, again.error
        assert cpu.matches == 8


def test_a_run_that_reaches_the_budget_midway_stops_at_the_next_condition(
    cpu, organization, make_member, settings
):
    """3 s of budget, 2 s a run: the second run's first match spends it, its second condition
    is not evaluated and counts as failed."""
    settings.AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE = 3.0
    create_regex_rule(make_member(organization), organization)
    product = ProductFactory(organization=organization, name="Widget 7", stock=1)
    with time_machine.travel("2026-03-02 09:15:10Z", tick=False):
        assert write_and_run(product).status == RunStatus.SUCCEEDED
        cut = write_and_run(product)
    assert cut.status == RunStatus.SKIPPED
    assert "1 of 2 conditions left" in cut.error, cut.error
    first, second = cut.condition_trace
    assert (first["passed"], first["error"]) == (True, None)
    assert SETTING in second["error"]
    assert cpu.matches == 3


def test_no_budget_when_the_setting_is_zero(cpu, organization, make_member, settings):
    settings.AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE = 0
    create_regex_rule(make_member(organization), organization)
    product = ProductFactory(organization=organization, name="Widget 7", stock=1)
    with time_machine.travel("2026-03-02 09:15:10Z", tick=False):
        statuses = [write_and_run(product).status for _ in range(4)]
    assert statuses == [RunStatus.SUCCEEDED] * 4
    assert cpu.matches == 8


def test_a_scheduled_fan_out_stops_where_the_organization_s_cpu_ran_out(
    cpu, organization, make_member, settings
):
    """A fan-out evaluates every record of the organization: past the budget the records left
    are not examined (not silently "not met"), and the fan-out log says why."""
    settings.AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE = 2.0
    member = make_member(organization)
    schedule = {"triggerType": "SCHEDULE", "schedule": "0 8 * * *"}
    rule_id = create_regex_rule(member, organization, REGEX_LEAVES[:1], **schedule)
    products = [ProductFactory(organization=organization, name=f"Widget {n}") for n in range(4)]
    with time_machine.travel("2026-03-02 09:15:10Z", tick=False):
        body = graphql(
            member, "mutation($id: ID!) { runSchedule(id: $id) { id } }", {"id": rule_id}
        )
    fan_out = AutomationLog.objects.get(pk=body["data"]["runSchedule"]["id"])
    assert fan_out.context["records_examined"] == 2
    assert fan_out.context["truncated"] is True
    assert fan_out.error.startswith("Stopped after 2 records: this organization's conditions"), (
        fan_out.error
    )
    assert SETTING in fan_out.error
    children = AutomationLog.objects.filter(parent_log=fan_out).order_by("pk")
    assert [int(log.object_id) for log in children] == [p.pk for p in products[:2]]
    assert cpu.matches == 2
