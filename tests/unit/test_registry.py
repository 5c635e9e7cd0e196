"""Registering automatable models: every mistake is refused with a message that says what to fix,
before the server starts (register() at once; the system check automation.E001 for the whole
registry, which `serve`, `migrate`, `run_huey` and `check` run)."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db.models.signals import post_save
from django.test import override_settings

from automation.core import registry
from automation.core.choices import TriggerType
from automation.core.models import AutomationLog
from automation.core.registry import automatable_models, get_automatable, register
from tests.factories import AutomationRuleFactory, content_type_of
from tests.projects.models import Project, Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def without_example_app():
    """The example app's registrations removed for the test, put back after."""
    saved = dict(registry._registered)
    registry._registered.clear()
    automatable_models.cache_clear()
    yield
    registry._registered.clear()
    registry._registered.update(saved)
    automatable_models.cache_clear()
    registry.resolve_path.cache_clear()


def test_the_example_app_is_registered_from_its_app_config():
    task = get_automatable("projects.task")
    assert task.model is Task
    assert task.organization == "project__organization"
    assert task.organization_lookup == "project__organization_id"
    assert get_automatable("projects.project").organization == "organization"


def test_the_organization_of_a_task_is_its_projects(organization):
    project = Project.objects.create(organization=organization, name="p")
    task = Task(project=project, title="t")
    assert get_automatable("projects.task").organization_id_of(task) == organization.pk
    assert get_automatable("projects.task").organization_id_of(Task(title="no project")) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"fields": []}, '"fields" lists no readable field'),
        ({"fields": "title"}, '"fields" must be a list of field names'),
        (
            {"fields": ["title", "owner"], "organization": "project__organization"},
            '"fields" names "owner", which is not a field of projects.task',
        ),
        (
            {"fields": ["title"], "writable": ["status"], "organization": "project__organization"},
            'writable "status" is not in "fields"',
        ),
        (
            {
                "fields": ["id", "title"],
                "writable": ["id"],
                "organization": "project__organization",
            },
            '"id" cannot be written',
        ),
        ({"fields": ["title"]}, '"organization" names "organization", which is not a field'),
        (
            {"fields": ["title"], "organization": "title"},
            '"title" of projects.task is not one',
        ),
        (
            {"fields": ["title"], "organization": "project"},
            '"organization" (project) leads to projects.project, not to accounts.organization',
        ),
    ],
)
def test_registration_mistakes_are_refused_at_once(without_example_app, spec, message):
    with pytest.raises(ImproperlyConfigured) as excinfo:
        register("projects.task", **spec)
    assert str(excinfo.value).startswith('register("projects.task"): ')
    assert message in str(excinfo.value)


def test_an_unknown_model_and_a_second_registration_are_refused(without_example_app):
    with pytest.raises(ImproperlyConfigured, match='"projects.nothing" is not a model of an'):
        register("projects.nothing", fields=["id"])
    register(Project, fields=["id", "name"])
    with pytest.raises(ImproperlyConfigured, match='"projects.project" is registered twice'):
        register("projects.project", fields=["id"])
    with pytest.raises(ImproperlyConfigured, match='"catalog.product" is registered twice'):
        register("catalog.product", fields=["id"])


def test_a_writable_relation_to_rows_without_an_organization_fails_the_system_check():
    """An action could not check which organization the related row is of."""
    with (
        override_settings(
            AUTOMATION_MODELS={
                "catalog.product": {
                    "fields": ["name", "organization"],
                    "writable": ["organization"],
                }
            }
        ),
        pytest.raises(SystemCheckError) as excinfo,
    ):
        call_command("check")
    assert "automation.E001" in str(excinfo.value)
    assert (
        'writable "organization" of catalog.product points to accounts.organization, which has '
        "no organization automation can check: register that model too."
    ) in str(excinfo.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"fields": ["nme"]},
            '"fields" names "nme", which is not a field of catalog.product',
        ),
        ({"fields": ["name"], "colour": "red"}, "unknown keys ['colour']"),
        (["name"], 'expected a dict with "fields"'),
    ],
)
def test_a_mistake_in_the_setting_fails_the_system_check(spec, message):
    with (
        override_settings(AUTOMATION_MODELS={"catalog.product": spec}),
        pytest.raises(SystemCheckError) as excinfo,
    ):
        call_command("check")
    assert f'AUTOMATION_MODELS["catalog.product"]: {message}' in str(excinfo.value)


def test_a_model_registered_after_start_up_fires_rules(without_example_app, organization):
    """register() called after automation's ready() (an app later in INSTALLED_APPS) connects
    the model's signal receivers too."""
    post_save.disconnect(
        sender=Project, dispatch_uid="automation.triggers.signals.post_save.projects.project"
    )
    register("projects.project", fields=["id", "name"])
    AutomationRuleFactory(
        organization=organization,
        trigger_type=TriggerType.EVENT,
        trigger_event="CREATED",
        content_type=content_type_of("projects.project"),
    )
    Project.objects.create(organization=organization, name="new")
    assert AutomationLog.objects.filter(object_id__isnull=False).count() == 1
