"""Model-event triggers: the receivers, the in-process rule index and its version, loops."""

import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import redis
from django.core import serializers
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from automation.core.choices import ActionType, RunStatus, TriggerEvent
from automation.core.models import AutomationLog
from automation.index import definitions as rule_definitions
from automation.index import watching as rule_index
from automation.runs.execute import execute_run
from automation.triggers import signals
from automation.triggers.outbox import emit_event
from catalog.models import Category, Product
from tests.factories import (
    AutomationRuleFactory,
    CategoryFactory,
    OrganizationFactory,
    ProductFactory,
    content_type_of,
)


@pytest.fixture(autouse=True)
def fresh_index():
    """Every test starts like a process that has just started, with an empty cache."""
    cache.clear()
    rule_index.reset_local_state()
    rule_definitions.forget()
    yield
    rule_index.reset_local_state()
    rule_definitions.forget()


def rule_on(organization, event, model="catalog.product", **kwargs):
    return AutomationRuleFactory(
        organization=organization,
        trigger_event=event,
        content_type=content_type_of(model),
        **kwargs,
    )


def fired(rule):
    return list(AutomationLog.objects.filter(rule=rule).order_by("id"))


def run_pending(limit=50):
    """Execute PENDING runs in creation order until none is left (in-process worker)."""
    for _ in range(limit):
        log = AutomationLog.objects.filter(status=RunStatus.PENDING).order_by("id").first()
        if log is None:
            return
        execute_run(log.pk)
    raise AssertionError("runs kept coming")


def automation_queries(captured):
    return [q["sql"] for q in captured.captured_queries if "automation_" in q["sql"]]


# --- Cost: a save no rule watches --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_save_no_rule_watches_makes_zero_extra_queries():
    organization = OrganizationFactory()
    other = OrganizationFactory()
    # Rules exist, but none watches an UPDATE of this organization's products.
    rule_on(organization, TriggerEvent.CREATED)
    rule_on(organization, TriggerEvent.UPDATED, model="catalog.category")
    rule_on(other, TriggerEvent.UPDATED)
    product = ProductFactory(organization=organization)
    product.save()  # warms the index (its one rebuild query happens here)

    product.stock += 1
    with CaptureQueriesContext(connection) as watched:
        product.save()
    signals.disconnect()
    try:
        product.stock += 1
        with CaptureQueriesContext(connection) as bare:
            product.save()
    finally:
        signals.connect()

    assert len(watched.captured_queries) == len(bare.captured_queries)
    assert automation_queries(watched) == []
    assert not AutomationLog.objects.filter(event=TriggerEvent.UPDATED).exists()


@pytest.mark.django_db(transaction=True)
def test_a_watched_update_reads_the_old_row_once():
    organization = OrganizationFactory()
    rule = rule_on(organization, TriggerEvent.UPDATED)
    product = ProductFactory(organization=organization)
    product.save()

    product.stock += 1
    with CaptureQueriesContext(connection) as captured:
        product.save()
    selects = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith("SELECT") and "catalog_product" in q["sql"]
    ]
    assert len(selects) == 1
    assert len(fired(rule)) == 2


@pytest.mark.django_db(transaction=True)
def test_a_watched_save_in_a_transaction_writes_its_run_without_a_savepoint():
    organization = OrganizationFactory()
    rule = rule_on(organization, TriggerEvent.UPDATED)
    product = ProductFactory(organization=organization)

    product.stock += 1
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        product.save()
    statements = [q["sql"].split()[0] for q in captured.captured_queries]

    assert "SAVEPOINT" not in statements and "RELEASE" not in statements
    assert len(fired(rule)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_run_log_that_cannot_be_written_fails_the_write_that_caused_it(monkeypatch):
    organization = OrganizationFactory()
    rule = rule_on(organization, TriggerEvent.UPDATED)
    product = ProductFactory(organization=organization, stock=1)

    def broken_insert(*args, **kwargs):
        raise DatabaseError("the log table is gone")

    from automation.runs import create

    monkeypatch.setattr(create, "insert_log", broken_insert)  # how create_run writes the log
    with pytest.raises(DatabaseError), transaction.atomic():
        product.stock = 2
        product.save()

    product.refresh_from_db()
    assert product.stock == 1  # no write without its run
    assert fired(rule) == []


# --- Which rules fire ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_update_delete_fire_the_right_rules_and_only_those(organization, other_organization):
    created = rule_on(organization, TriggerEvent.CREATED)
    updated = rule_on(organization, TriggerEvent.UPDATED)
    deleted = rule_on(organization, TriggerEvent.DELETED)
    silent = [
        rule_on(other_organization, TriggerEvent.CREATED),
        rule_on(other_organization, TriggerEvent.UPDATED),
        rule_on(organization, TriggerEvent.CREATED, model="catalog.category"),
        rule_on(organization, TriggerEvent.CREATED, is_active=False),
        rule_on(organization, TriggerEvent.UPDATED, deleted_at=timezone.now()),
    ]
    category = CategoryFactory(organization=organization)
    # The category rule fires for the category, and later for nothing about products.
    (category_log,) = fired(silent[2])
    assert category_log.object_id == str(category.pk)

    product = Product.objects.create(organization=organization, category=category, name="Lamp")
    assert [log.event for log in fired(created)] == [TriggerEvent.CREATED]
    assert fired(updated) == [] and fired(deleted) == []

    product.name = "Desk lamp"
    product.save()
    assert [log.event for log in fired(updated)] == [TriggerEvent.UPDATED]
    assert len(fired(created)) == 1 and fired(deleted) == []

    product_id = product.pk
    product.delete()
    (log,) = fired(deleted)
    assert log.event == TriggerEvent.DELETED
    assert log.object_id == str(product_id)
    assert log.context["object"]["name"] == "Desk lamp"  # the deleted record's last values
    assert len(fired(created)) == 1 and len(fired(updated)) == 1

    assert [fired(rule) for rule in silent if rule is not silent[2]] == [[], [], [], []]
    assert len(fired(silent[2])) == 1
    assert all(log.organization_id == organization.pk for log in AutomationLog.objects.all())


@pytest.mark.django_db
def test_created_log_holds_snapshot_user_and_all_set_fields(organization, editor):
    from accounts.current import acting_as

    rule = rule_on(organization, TriggerEvent.CREATED)
    with acting_as(editor):
        product = ProductFactory(organization=organization, name="Lamp", price="9.99")
    (log,) = fired(rule)
    assert log.status == RunStatus.PENDING
    assert log.triggered_by_id == editor.pk
    assert log.content_type == content_type_of("catalog.product")
    assert log.context["object"]["price"] == "9.99"
    assert log.changes["name"] == {"old": None, "new": "Lamp"}
    assert log.object_id == str(product.pk)


@pytest.mark.django_db
def test_watched_fields_fire_only_when_one_of_them_really_changed(organization):
    rule = rule_on(organization, TriggerEvent.UPDATED, watched_fields=["status", "price"])
    product = ProductFactory(organization=organization, status="DRAFT", price="10.00")

    product.description = "only the description"
    product.save()
    product.status = "DRAFT"  # assigned, but the same value
    product.save()
    assert fired(rule) == []

    product.status = "ACTIVE"
    product.save()
    (log,) = fired(rule)
    assert log.changes["status"] == {"old": "DRAFT", "new": "ACTIVE"}
    assert "price" not in log.changes


@pytest.mark.django_db
def test_changes_hold_old_and_new_values_of_every_changed_field(organization):
    rule = rule_on(organization, TriggerEvent.UPDATED)
    category = CategoryFactory(organization=organization)
    product = ProductFactory(organization=organization, price="10.00", stock=5, category=None)

    # Another copy of the row, as a request handler would load it: the old values come from
    # the database, not from whatever the instance held.
    fresh = Product.objects.get(pk=product.pk)
    fresh.price = "12.50"
    fresh.stock = 7
    fresh.category = category
    fresh.save()

    (log,) = fired(rule)
    assert log.changes["price"] == {"old": "10.00", "new": "12.50"}
    assert log.changes["stock"] == {"old": 5, "new": 7}
    assert log.changes["category"] == {"old": None, "new": category.pk}
    assert "name" not in log.changes
    assert set(log.changes) == {"price", "stock", "category", "updated_at"}


@pytest.mark.django_db
def test_a_rolled_back_write_leaves_no_log_and_enqueues_nothing(
    organization, django_capture_on_commit_callbacks
):
    rule = rule_on(organization, TriggerEvent.CREATED)
    with django_capture_on_commit_callbacks() as callbacks:
        before = len(callbacks)
        with pytest.raises(RuntimeError), transaction.atomic():
            ProductFactory(organization=organization)
            assert len(fired(rule)) == 1  # written in the transaction...
            raise RuntimeError("the caller fails")
    assert fired(rule) == []  # ...and gone with it
    assert Product.objects.count() == 0
    assert len(callbacks) == before  # nothing left to enqueue


@pytest.mark.django_db
def test_fixture_loading_fires_nothing(organization):
    rule = rule_on(organization, TriggerEvent.CREATED)
    updated = rule_on(organization, TriggerEvent.UPDATED)
    now = timezone.now()
    stamps = {"created_at": now, "updated_at": now}
    data = serializers.serialize(
        "json", [Category(pk=9001, organization=organization, name="X", **stamps)]
    )
    data_product = serializers.serialize(
        "json", [Product(pk=9002, organization=organization, name="Lamp", **stamps)]
    )
    for payload in (data, data_product, data_product):
        for obj in serializers.deserialize("json", payload):
            obj.save()  # raw=True, as loaddata does
    assert Product.objects.filter(pk=9002).exists()
    assert fired(rule) == [] and fired(updated) == []


@pytest.mark.django_db
def test_queryset_update_fires_nothing_and_emit_event_is_the_way(organization):
    rule = rule_on(organization, TriggerEvent.UPDATED)
    product = ProductFactory(organization=organization, stock=1)
    Product.objects.filter(pk=product.pk).update(stock=2)
    assert fired(rule) == []

    product.refresh_from_db()
    emit_event(product, TriggerEvent.UPDATED, {"stock": {"old": 1, "new": 2}})
    (log,) = fired(rule)
    assert log.changes == {"stock": {"old": 1, "new": 2}}


# --- The index and its version -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rule_added_after_the_index_was_built_fires_on_the_next_save():
    organization = OrganizationFactory()
    product = ProductFactory(organization=organization)
    product.save()  # index built: nothing watches
    assert AutomationLog.objects.count() == 0

    rule = rule_on(organization, TriggerEvent.UPDATED)  # committed: the version is bumped
    product.save()
    assert len(fired(rule)) == 1

    rule.is_active = False
    rule.save()
    product.save()
    assert len(fired(rule)) == 1  # deactivation is seen too


@pytest.mark.django_db(transaction=True)
def test_another_process_sees_a_rule_through_the_cache_version():
    organization = OrganizationFactory()
    product = ProductFactory(organization=organization)
    product.save()
    # What a second process holds: an index built before the rule existed, at that version.
    stale_version, stale_index = rule_index._shared.version, rule_index._shared.index
    assert stale_version == rule_index.current_version()

    rule = rule_on(organization, TriggerEvent.UPDATED)  # "the first process" commits a rule
    bumped = rule_index.current_version()
    assert bumped != stale_version

    def become_the_other_process():
        rule_index.reset_local_state()
        rule_definitions.forget()
        rule_index._shared.version, rule_index._shared.index = stale_version, stale_index

    # Control: without the bump the stale index is trusted, so the version is what matters.
    become_the_other_process()
    with mock.patch.object(rule_index, "current_version", return_value=stale_version):
        product.save()
    assert fired(rule) == []

    become_the_other_process()
    product.save()
    assert len(fired(rule)) == 1

    # A process that just started (no local state) builds from the database at the cache version.
    rule_index.reset_local_state()
    rule_definitions.forget()
    product.save()
    assert len(fired(rule)) == 2
    assert rule_index._shared.version == bumped


@pytest.mark.django_db(transaction=True)
def test_a_rule_is_seen_in_its_own_transaction_and_gone_after_a_rollback():
    organization = OrganizationFactory()
    product = ProductFactory(organization=organization)
    product.save()
    version = rule_index.current_version()

    with pytest.raises(RuntimeError), transaction.atomic():
        rule = rule_on(organization, TriggerEvent.UPDATED)
        product.save()
        assert len(fired(rule)) == 1
        assert rule_index.current_version() == version  # not bumped before commit
        raise RuntimeError("rolled back")

    # The rolled-back rule is not in any index: the save succeeds and writes no log.
    product.save()
    assert AutomationLog.objects.count() == 0
    assert rule_index.current_version() == version


@pytest.mark.django_db(transaction=True)
def test_changing_conditions_or_actions_bumps_the_version():
    organization = OrganizationFactory()
    rule = rule_on(organization, TriggerEvent.UPDATED)
    versions = [rule_index.current_version()]
    from tests.factories import RuleActionFactory, RuleConditionFactory

    condition = RuleConditionFactory(rule=rule)
    versions.append(rule_index.current_version())
    RuleActionFactory(rule=rule)
    versions.append(rule_index.current_version())
    condition.delete()
    versions.append(rule_index.current_version())
    assert len(set(versions)) == 4


def test_a_bump_by_another_process_on_this_machine_is_seen():
    """Embedded mode keeps the version in a file, distributed mode in Redis: both cross processes."""
    before = rule_index.current_version()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); "
            "from automation.index.watching import bump_version; bump_version()",
        ],
        check=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert rule_index.current_version() != before


@pytest.mark.django_db(transaction=True)
def test_while_redis_does_not_answer_saves_read_the_rules_from_sql(settings):
    organization = OrganizationFactory()
    product = ProductFactory(organization=organization)
    rule = rule_on(organization, TriggerEvent.UPDATED)
    # Distributed mode's version store, on a port where nothing listens.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.AUTOMATION_RULE_INDEX_VERSION_FILE = None
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    rule_index.reset_local_state()
    rule_definitions.forget()
    with pytest.raises(redis.ConnectionError):
        rule_index.current_version()

    product.save()  # the write succeeds, and the rule still fires
    assert len(fired(rule)) == 1


# --- Loops through real saves ----------------------------------------------------------------------


def update_own_record(**extra):
    return {
        "action_type": ActionType.UPDATE_RECORD,
        "parameters": {"fields": {"description": "touched by {{ rule.name }}"}},
        **extra,
    }


@pytest.mark.django_db
def test_a_rule_updating_its_own_trigger_record_runs_once(organization):
    rule = rule_on(organization, TriggerEvent.UPDATED, actions=[update_own_record()])
    product = ProductFactory(organization=organization)
    product.stock += 1
    product.save()

    run_pending()
    (log,) = fired(rule)
    assert log.status == RunStatus.SUCCEEDED
    product.refresh_from_db()
    assert product.description == f"touched by {rule.name}"


@pytest.mark.django_db
def test_self_trigger_allowed_stops_at_the_chain_depth(organization, settings):
    settings.AUTOMATION_MAX_CHAIN_DEPTH = 3
    rule = rule_on(
        organization,
        TriggerEvent.UPDATED,
        allow_self_trigger=True,
        actions=[update_own_record()],
        name="Toucher",
    )
    product = ProductFactory(organization=organization)
    product.save()

    run_pending()
    logs = fired(rule)
    assert [log.depth for log in logs] == [0, 1, 2, 3, 4]
    assert [log.status for log in logs[:-1]] == [RunStatus.SUCCEEDED] * 4
    assert logs[-1].status == RunStatus.FAILED
    assert "Chain depth limit (3)" in logs[-1].error
    assert "Toucher -> Toucher -> Toucher -> Toucher -> Toucher" in logs[-1].error
    assert {log.root_log_id for log in logs[1:]} == {logs[0].pk}


@pytest.mark.django_db
def test_a_to_b_to_a_stops_at_the_depth_limit_naming_the_chain(organization, settings):
    settings.AUTOMATION_MAX_CHAIN_DEPTH = 4
    category = CategoryFactory(organization=organization, name="Lights")
    product = ProductFactory(organization=organization, category=category)
    rule_a = rule_on(
        organization,
        TriggerEvent.UPDATED,
        name="A",
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {
                    "target": {
                        "model": "catalog.category",
                        "lookup": {"id": "{{ object.category }}"},
                    },
                    "fields": {"name": "Lights for {{ object.name }}"},
                },
            }
        ],
    )
    rule_b = rule_on(
        organization,
        TriggerEvent.UPDATED,
        model="catalog.category",
        name="B",
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {
                    "target": {
                        "model": "catalog.product",
                        "lookup": {"category": "{{ object.id }}"},
                    },
                    "fields": {"description": "In {{ object.name }}"},
                },
            }
        ],
    )
    product.save()

    run_pending()
    logs = list(AutomationLog.objects.order_by("id"))
    assert [log.rule_id for log in logs] == [rule_a.pk, rule_b.pk] * 3
    assert [log.depth for log in logs] == [0, 1, 2, 3, 4, 5]
    last = logs[-1]
    assert last.status == RunStatus.FAILED
    assert "A -> B -> A -> B -> A -> B" in last.error
    assert all(log.status == RunStatus.SUCCEEDED for log in logs[:-1])
