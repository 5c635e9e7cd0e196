"""factory-boy factories for every model. Rules build their root condition group themselves."""

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from accounts.choices import Role
from accounts.models import ApiToken, Invitation, Membership, Notification, Organization
from automation.core.choices import (
    ActionType,
    ConditionLogic,
    Operator,
    RunStatus,
    TriggerEvent,
    TriggerType,
)
from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    RuleAction,
    RuleCondition,
)
from catalog.choices import ProductStatus
from catalog.models import Category, Product


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "pass-w0rd-long")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Organization {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Role.EDITOR


class InvitationFactory(factory.django.DjangoModelFactory):
    """A pending invitation, open for 14 days."""

    class Meta:
        model = Invitation

    organization = factory.SubFactory(OrganizationFactory)
    username = factory.Sequence(lambda n: f"invitee{n}")
    role = Role.VIEWER
    invited_by = factory.SubFactory(UserFactory)
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=14))


class ApiTokenFactory(factory.django.DjangoModelFactory):
    """Issues a real token; the raw value is on the instance as `raw_token`."""

    class Meta:
        model = ApiToken

    user = factory.SubFactory(UserFactory)
    name = "api"

    @classmethod
    def _create(cls, model_class, user, name, **kwargs):
        token, raw = model_class.issue(user=user, name=name)
        token.raw_token = raw
        return token


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Category {n}")


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    organization = factory.SubFactory(OrganizationFactory)
    category = factory.SubFactory(
        CategoryFactory, organization=factory.SelfAttribute("..organization")
    )
    name = factory.Sequence(lambda n: f"Product {n}")
    description = ""
    status = ProductStatus.DRAFT
    price = "10.00"
    stock = 5


def content_type_of(label: str) -> ContentType:
    app_label, model = label.split(".")
    return ContentType.objects.get_by_natural_key(app_label, model)


class AutomationRuleFactory(factory.django.DjangoModelFactory):
    """An EVENT rule on catalog.product UPDATED, with its root group.

    `conditions=[dict(field_name=..., operator=..., value=...)]` adds leaves to the root group;
    `actions=[dict(action_type=..., parameters=...)]` adds actions in order.
    """

    class Meta:
        model = AutomationRule
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Rule {n}")
    trigger_type = TriggerType.EVENT
    trigger_event = TriggerEvent.UPDATED
    content_type = factory.LazyFunction(lambda: content_type_of("catalog.product"))
    timezone = "UTC"

    class Params:
        schedule_rule = factory.Trait(
            trigger_type=TriggerType.SCHEDULE,
            trigger_event=None,
            content_type=None,
            schedule="0 * * * *",
        )
        manual_rule = factory.Trait(trigger_type=TriggerType.MANUAL, trigger_event=None)
        webhook_rule = factory.Trait(
            trigger_type=TriggerType.WEBHOOK, trigger_event=None, content_type=None
        )

    @factory.post_generation
    def root_logic(obj, create, extracted, **kwargs):
        if create:
            ConditionGroup.objects.create(rule=obj, logic=extracted or ConditionLogic.AND)

    @factory.post_generation
    def conditions(obj, create, extracted, **kwargs):
        if create and extracted:
            root = obj.root_group
            for order, spec in enumerate(extracted):
                RuleCondition.objects.create(rule=obj, group=root, order=order, **spec)

    @factory.post_generation
    def actions(obj, create, extracted, **kwargs):
        if create and extracted:
            for order, spec in enumerate(extracted):
                RuleAction.objects.create(rule=obj, order=order, **spec)


class ConditionGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConditionGroup

    rule = factory.SubFactory(AutomationRuleFactory)
    parent = factory.LazyAttribute(lambda g: g.rule.root_group)
    logic = ConditionLogic.AND


class RuleConditionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RuleCondition

    rule = factory.SubFactory(AutomationRuleFactory)
    group = factory.LazyAttribute(lambda c: c.rule.root_group)
    field_name = "status"
    operator = Operator.EQUALS
    value = "ACTIVE"


class RuleActionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RuleAction

    rule = factory.SubFactory(AutomationRuleFactory)
    action_type = ActionType.UPDATE_RECORD
    parameters = factory.LazyFunction(lambda: {"fields": {"description": "updated"}})
    order = factory.Sequence(lambda n: n)


class AutomationLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AutomationLog

    rule = factory.SubFactory(AutomationRuleFactory)
    organization = factory.SelfAttribute("rule.organization")
    trigger = factory.SelfAttribute("rule.trigger_type")
    event = factory.SelfAttribute("rule.trigger_event")
    content_type = factory.SelfAttribute("rule.content_type")
    status = RunStatus.PENDING
    rule_revision = factory.SelfAttribute("rule.revision")


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    organization = factory.SubFactory(OrganizationFactory)
    recipient = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Notification {n}")
    body = "Something happened."
