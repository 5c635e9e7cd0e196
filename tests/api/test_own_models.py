"""Your own models (README, "Automate your own models"): the suite's example app `tests.projects`,
registered from its AppConfig.ready() with tenancy through a relation (a task belongs to its
project's organization), automated over the API like the bundled catalog.

Runs execute in-process (`run_pending`); the README test runs the guide against a real server.
"""

import datetime

import pytest
import time_machine

from accounts.choices import Role
from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.runs.execute import execute_run
from automation.triggers.outbox import emit_event
from automation.triggers.schedules import tick
from tests.projects.models import Project, Task

pytestmark = pytest.mark.django_db

CREATE_RULE = """
mutation($input: RuleInput!) { createRule(input: $input) { id } }
"""
RECORD = """
query($model: String!, $id: ID!) { record(model: $model, id: $id) }
"""
RECORDS = """
query($model: String!, $org: ID!, $limit: Int) {
  records(model: $model, organization: $org, limit: $limit)
}
"""


def run_pending():
    """Execute PENDING runs in creation order until none is left (an in-process worker)."""
    for _ in range(100):
        log = AutomationLog.objects.filter(status=RunStatus.PENDING).order_by("id").first()
        if log is None:
            return
        execute_run(log.pk)
    raise AssertionError("runs kept coming")


def create_rule(gql, user, organization, **fields):
    rule_input = {"organization": str(organization.pk), "name": "Rule", **fields}
    answer = gql(CREATE_RULE, {"input": rule_input}, token=user)
    return answer


def test_a_task_event_fires_a_rule_reading_through_its_project(gql, organization, editor):
    launch = Project.objects.create(organization=organization, name="Launch")
    create_rule(
        gql,
        editor,
        organization,
        triggerType="EVENT",
        model="projects.task",
        triggerEvent="UPDATED",
        watchedFields=["status"],
        conditions={
            "logic": "AND",
            "conditions": [
                {"field": "status", "operator": "CHANGED_TO", "value": "DONE"},
                {"field": "project__name", "operator": "EQUALS", "value": "Launch"},
            ],
        },
        actions=[
            {
                "actionType": "CREATE_RECORD",
                "parameters": {
                    "model": "projects.task",
                    "fields": {
                        "project": "{{ object.project }}",
                        "title": "Review: {{ object.title }}",
                    },
                },
            }
        ],
    ).ok()
    task = Task.objects.create(project=launch, title="Write the announcement")
    task.status = Task.Status.DONE
    task.save()
    run_pending()

    log = AutomationLog.objects.get()
    assert log.status == RunStatus.SUCCEEDED, log.error
    assert log.organization_id == organization.pk
    assert log.changes["status"] == {"old": "TODO", "new": "DONE"}
    review = Task.objects.get(title="Review: Write the announcement")
    assert review.project == launch


def test_another_organizations_tasks_fire_nothing_and_cannot_be_reached(
    gql, organization, other_organization, editor
):
    mine = Project.objects.create(organization=organization, name="Mine")
    theirs = Project.objects.create(organization=other_organization, name="Theirs")
    create_rule(
        gql,
        editor,
        organization,
        triggerType="EVENT",
        model="projects.task",
        triggerEvent="CREATED",
        actions=[
            {
                "actionType": "CREATE_RECORD",
                "parameters": {
                    "model": "projects.task",
                    "fields": {"project": str(theirs.pk), "title": "Planted"},
                },
            }
        ],
    ).error()  # a literal id of another organization's project is refused at save
    rule = create_rule(
        gql,
        editor,
        organization,
        triggerType="EVENT",
        model="projects.task",
        triggerEvent="CREATED",
        actions=[
            {
                "actionType": "CREATE_RECORD",
                "parameters": {
                    "model": "projects.task",
                    # Text is refused for a foreign key at save; arithmetic gives a number.
                    "fields": {
                        "project": f"{{{{ object.project + {theirs.pk - mine.pk} }}}}",
                        "title": "Planted",
                    },
                },
            }
        ],
    ).ok()["createRule"]

    Task.objects.create(project=theirs, title="x")  # another organization's write
    assert not AutomationLog.objects.exists()
    # A template naming another organization's project at run time: the action fails.
    Task.objects.create(project=mine, title="mine")
    run_pending()
    log = AutomationLog.objects.get(rule_id=rule["id"])
    assert log.status == RunStatus.FAILED
    assert (
        f"no projects.project with id {theirs.pk} in this organization"
        in (log.action_logs[0]["error"])
    )
    assert not Task.objects.filter(title="Planted").exists()


def test_creating_a_task_needs_the_relation_its_organization_comes_through(
    gql, organization, editor
):
    answer = create_rule(
        gql,
        editor,
        organization,
        triggerType="MANUAL",
        actions=[
            {
                "actionType": "CREATE_RECORD",
                "parameters": {"model": "projects.task", "fields": {"title": "Orphan"}},
            }
        ],
    )
    error = answer.error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert error["extensions"]["fields"]["actions.0.parameters.fields.project"] == [
        'Required: a projects.task belongs to an organization through "project".'
    ]


def test_a_schedule_runs_over_the_organizations_tasks_only(
    gql, organization, other_organization, editor
):
    mine = Project.objects.create(organization=organization, name="Mine")
    theirs = Project.objects.create(organization=other_organization, name="Theirs")
    late = Task.objects.create(project=mine, title="Late", due_date=datetime.date(2026, 3, 1))
    Task.objects.create(project=mine, title="Later", due_date=datetime.date(2026, 4, 1))
    elsewhere = Task.objects.create(
        project=theirs, title="Theirs", due_date=datetime.date(2026, 3, 1)
    )
    with time_machine.travel(datetime.datetime(2026, 3, 2, 9, 30, tzinfo=datetime.UTC), tick=False):
        create_rule(
            gql,
            editor,
            organization,
            triggerType="SCHEDULE",
            schedule="0 10 * * *",
            model="projects.task",
            conditions={
                "logic": "AND",
                "conditions": [
                    {"field": "due_date", "operator": "LESS_THAN", "value": "2026-03-02"},
                    {"field": "status", "operator": "NOT_EQUALS", "value": "DONE"},
                ],
            },
            actions=[
                {
                    "actionType": "UPDATE_RECORD",
                    "parameters": {"fields": {"title": "OVERDUE {{ object.title }}"}},
                }
            ],
        ).ok()
    with time_machine.travel(
        datetime.datetime(2026, 3, 2, 10, 0, 5, tzinfo=datetime.UTC), tick=False
    ):
        tick()
        run_pending()

    runs = AutomationLog.objects.filter(object_id__isnull=False)  # the slot's own log aside
    assert [log.object_id for log in runs] == [str(late.pk)]
    late.refresh_from_db()
    elsewhere.refresh_from_db()
    assert late.title == "OVERDUE Late"
    assert elsewhere.title == "Theirs"


def test_writes_without_signals_fire_rules_through_emit_event(gql, organization, editor):
    project = Project.objects.create(organization=organization, name="Bulk")
    create_rule(
        gql,
        editor,
        organization,
        triggerType="EVENT",
        model="projects.task",
        triggerEvent="UPDATED",
        watchedFields=["status"],
    ).ok()
    tasks = Task.objects.bulk_create(
        [Task(project=project, title=f"t{index}") for index in range(3)]
    )
    assert not AutomationLog.objects.exists(), "bulk_create sends no signal"

    Task.objects.filter(project=project).update(status=Task.Status.DONE)
    assert not AutomationLog.objects.exists(), "QuerySet.update sends no signal"
    for task in Task.objects.filter(project=project):
        emit_event(task, "UPDATED", {"status": {"old": "TODO", "new": "DONE"}})
    run_pending()

    logs = AutomationLog.objects.all()
    assert sorted(int(log.object_id) for log in logs) == [task.pk for task in tasks]
    assert {log.status for log in logs} == {RunStatus.SUCCEEDED}


def test_record_shows_what_rules_read_to_members_only(
    gql, organization, other_organization, make_member
):
    viewer = make_member(organization, Role.VIEWER)
    outsider = make_member(other_organization, Role.ADMIN)
    project = Project.objects.create(organization=organization, name="Launch")
    task = Task.objects.create(project=project, title="Ship", due_date=datetime.date(2026, 5, 1))

    record = gql(RECORD, {"model": "projects.task", "id": str(task.pk)}, token=viewer).ok()
    assert record["record"] == {
        "id": task.pk,
        "project": project.pk,
        "title": "Ship",
        "status": "TODO",
        "due_date": "2026-05-01",
        "updated_at": task.updated_at.isoformat(),
    }
    listed = gql(
        RECORDS, {"model": "projects.task", "org": str(organization.pk)}, token=viewer
    ).ok()
    assert listed["records"] == [record["record"]]

    hidden = gql(RECORD, {"model": "projects.task", "id": str(task.pk)}, token=outsider)
    assert hidden.codes == ["NOT_FOUND"]
    assert hidden.data is None
    assert gql(
        RECORDS, {"model": "projects.task", "org": str(organization.pk)}, token=outsider
    ).codes == ["NOT_FOUND"]
    for bad_id in ("not-a-number", "999999"):
        answer = gql(RECORD, {"model": "projects.task", "id": bad_id}, token=viewer)
        assert answer.codes == ["NOT_FOUND"]
    unknown = gql(RECORD, {"model": "auth.user", "id": "1"}, token=viewer).error()
    assert unknown["extensions"]["fields"] == {
        "model": ['"auth.user" is not an automatable model.']
    }
    anonymous = gql(RECORD, {"model": "projects.task", "id": str(task.pk)})
    assert anonymous.codes == ["UNAUTHENTICATED"]
    too_many = gql(
        RECORDS, {"model": "projects.task", "org": str(organization.pk), "limit": 201}, token=viewer
    )
    assert too_many.codes == ["VALIDATION_ERROR"]


def test_available_models_show_the_registration(gql, organization, editor):
    answer = gql(
        "{ availableModels { model fields writableFields organizationPath } }", token=editor
    ).ok()
    task = next(entry for entry in answer["availableModels"] if entry["model"] == "projects.task")
    assert task["organizationPath"] == "project__organization"
    assert task["writableFields"] == ["project", "title", "status", "due_date"]
    assert "project__name" in task["fields"]


def test_a_save_no_rule_watches_does_not_read_the_row_its_organization_comes_through(
    organization, other_organization
):
    """Finding a task's organization reads its project: only when some rule watches tasks."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import AutomationRuleFactory, content_type_of

    project = Project.objects.create(organization=organization, name="p")
    Task.objects.create(project=project, title="t")

    def queries_of_a_save():
        task = Task.objects.get(title="t")  # the project not loaded
        with CaptureQueriesContext(connection) as captured:
            task.title = "t"
            task.save()
        return [query["sql"] for query in captured.captured_queries]

    def project_reads(queries):
        return [sql for sql in queries if sql.startswith('SELECT "projects_project"')]

    unwatched = queries_of_a_save()
    assert project_reads(unwatched) == []
    assert [sql.split()[0] for sql in unwatched] == ["UPDATE"]

    AutomationRuleFactory(
        organization=other_organization,
        trigger_event="UPDATED",
        content_type=content_type_of("projects.task"),
    )
    # Some organization's rule watches tasks: the project is read, once, to find the task's.
    assert len(project_reads(queries_of_a_save())) == 1
    assert not AutomationLog.objects.exists(), "another organization's rule"
