"""A record action's lookup of the run's own record (automation/actions/record_lookup.py):
compiled once per process and model, giving what the QuerySet gave, never another
organization's record."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from automation.actions import record_lookup
from automation.core.choices import RunStatus
from automation.core.registry import get_automatable
from automation.runs.execute import execute_run
from automation.triggers.outbox import emit_event
from catalog.models import Category, Product
from tests.factories import AutomationRuleFactory, CategoryFactory, ProductFactory
from tests.integration.test_run_reads import compilations

pytestmark = pytest.mark.django_db


def values(record) -> dict:
    return {field.attname: getattr(record, field.attname) for field in record._meta.fields}


@pytest.mark.parametrize("lock", [False, True])
@pytest.mark.parametrize("model", [Product, Category])
def test_it_finds_what_the_queryset_finds(organization, model, lock):
    factory = ProductFactory if model is Product else CategoryFactory
    record = factory(organization=organization)
    entry = get_automatable(model._meta.label_lower)
    for _ in range(2):  # the first compiles the statement, the second reuses it
        with transaction.atomic():
            (found,) = record_lookup.trigger_records(
                entry, organization.pk, str(record.pk), lock=lock
            )
            (expected,) = record_lookup.queryset(
                entry, organization.pk, {"pk": record.pk}, lock=lock
            )
        assert type(found) is model and values(found) == values(expected)
        assert found._state.adding is False and found._state.db == "default"


def test_another_organizations_record_is_never_found(organization, other_organization):
    theirs = ProductFactory(organization=other_organization)
    entry = get_automatable("catalog.product")
    ProductFactory(organization=organization)
    for lock in (False, True, False):
        with transaction.atomic():
            found = record_lookup.trigger_records(entry, organization.pk, theirs.pk, lock=lock)
        assert found == []


def test_a_key_that_is_no_integer_is_refused_as_the_queryset_refuses_it(organization):
    entry = get_automatable("catalog.product")
    with pytest.raises(ValueError) as compiled:
        record_lookup.trigger_records(entry, organization.pk, "seven", lock=False)
    with pytest.raises(ValueError) as by_queryset:
        list(record_lookup.queryset(entry, organization.pk, {"pk": "seven"}, lock=False))
    assert str(compiled.value) == str(by_queryset.value)


def test_an_update_runs_lookup_compiles_no_sql_once_compiled(organization):
    """Counted, never timed: SQL compilations of the record's read during a run's action."""
    AutomationRuleFactory(
        organization=organization,
        actions=[{"action_type": "UPDATE_RECORD", "parameters": {"fields": {"description": "x"}}}],
    )
    logs = []
    for index in range(2):
        product = ProductFactory(organization=organization, status="ACTIVE", name=f"P{index}")
        with transaction.atomic():
            (log,) = emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
        logs.append(log)
    execute_run(logs[0].pk)  # compiles it, if no test before did

    with (
        compilations(Product) as compiled,
        CaptureQueriesContext(connection) as captured,
    ):
        execute_run(logs[1].pk)
    logs[1].refresh_from_db()
    assert logs[1].status == RunStatus.SUCCEEDED
    assert Product.objects.get(pk=logs[1].object_id).description == "x"
    assert compiled == []
    (read,) = [q["sql"] for q in captured.captured_queries if 'FROM "catalog_product"' in q["sql"]]
    assert '"organization_id" = ' in read and "ORDER BY" not in read
    if connection.features.has_select_for_update:
        assert "FOR UPDATE" in read


def test_a_model_owned_through_a_relation_is_scoped_through_it(organization, other_organization):
    """The example app's task belongs to its organization through its project: the compiled
    statement joins the project as the QuerySet does, and finds no task of another's."""
    from tests.projects.models import Project, Task

    mine = Task.objects.create(project=Project.objects.create(organization=organization, name="A"))
    theirs = Task.objects.create(
        project=Project.objects.create(organization=other_organization, name="B")
    )
    entry = get_automatable("projects.task")
    for lock in (False, True, False):
        with transaction.atomic(), CaptureQueriesContext(connection) as captured:
            (found,) = record_lookup.trigger_records(entry, organization.pk, mine.pk, lock=lock)
            assert record_lookup.trigger_records(entry, organization.pk, theirs.pk, lock=lock) == []
        assert found.pk == mine.pk and found.title == mine.title
        assert all("JOIN" in query["sql"] for query in captured.captured_queries)
