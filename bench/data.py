"""Benchmark data, written the fast way (bulk inserts) or the real way (services.create_rule).

Each benchmark makes an organization of its own, so benchmarks sharing a database never see each
other's rules. Bulk inserts bypass signals, so the helpers that use them call rules_changed().
"""

import datetime
import itertools

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType

from accounts.choices import Role
from accounts.models import ApiToken, Membership, Organization
from automation.core.choices import ActionType, ConditionLogic, Operator, TriggerEvent, TriggerType
from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    RuleAction,
    RuleCondition,
)
from automation.core.snapshots import snapshot
from automation.index.watching import rules_changed
from automation.runs.create import create_run
from catalog.models import Product

_counter = itertools.count(1)

# Products whose updates benchmark 5's hand-written pipeline (bench/handwritten.py) automates.
HANDWRITTEN_PREFIX = "bench-handwritten"
# ... and whose updates its reference, the hand-written pipeline with a run record, automates
# (bench/recorded.py).
RECORDED_PREFIX = "bench-recorded"
# ... and benchmark 10's reference, a webhook run with the least record (bench/recorded.py).
WEBHOOK_RECORDED_PREFIX = "bench-webhook-recorded"
WEBHOOK_RECORDED_RULE = "Webhook, recorded by hand (inactive)"  # its logs' rule
WEBHOOK_RECORDED_URL = "BENCH_RECORDED_WEBHOOK_URL"  # the variable naming where they go

# The rule most benchmarks run: product UPDATED (stock watched), 1 condition, 1 UPDATE_RECORD.
STATUS_ACTIVE = {"field": "status", "operator": Operator.EQUALS, "value": "ACTIVE"}
UPDATE_DESCRIPTION = {
    "action_type": ActionType.UPDATE_RECORD,
    "parameters": {"fields": {"description": "restocked to {{ object.stock }}"}},
}


def drop_leftover_runs() -> int:
    """Runs an earlier benchmark left queued, PENDING or RUNNING (its workers stopped at a
    count): taken off the queue and ended SKIPPED, so that this benchmark's server and workers
    do its own work only (the embedded sweeper queued them again, and a worker took them, in
    the middle of benchmark 10's rounds). Returns how many."""
    from huey.contrib.djhuey import HUEY

    from automation.core.choices import RunStatus

    HUEY.flush()  # Huey's queue and the organizations' run queues
    left = AutomationLog.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING])
    return left.update(status=RunStatus.SKIPPED, error="Left by an earlier benchmark.")


def organization(prefix: str) -> Organization:
    number = next(_counter)
    return Organization.objects.create(slug=f"{prefix}-{number}", name=f"{prefix} {number}")


def member_with_token(org: Organization, role: str = Role.ADMIN):
    """(user, raw API token) of a new member of `org`."""
    user = get_user_model().objects.create(username=f"bench-{org.slug}-{next(_counter)}")
    Membership.objects.create(user=user, organization=org, role=role)
    _, raw = ApiToken.issue(user=user, name="bench")
    return user, raw


def products(org: Organization, count: int, status: str = "ACTIVE") -> list[Product]:
    made = Product.objects.bulk_create(
        Product(organization=org, name=f"Product {i}", status=status, price="9.99", stock=1)
        for i in range(count)
    )
    return list(Product.objects.filter(pk__in=[p.pk for p in made]).order_by("pk"))


def event_rule(org: Organization, name: str = "Restock note", user=None) -> AutomationRule:
    """The benchmark rule, created through the one real write path (validation included)."""
    return _stock_rule(org, name, UPDATE_DESCRIPTION, user)


def _stock_rule(org: Organization, name: str, action: dict, user) -> AutomationRule:
    """A rule on product UPDATED (stock watched), status ACTIVE, doing `action`."""
    from automation.rules.services import create_rule

    return create_rule(
        org,
        {
            "name": name,
            "trigger_type": TriggerType.EVENT,
            "model": "catalog.product",
            "trigger_event": TriggerEvent.UPDATED,
            "watched_fields": ["stock"],
            "conditions": {"logic": "AND", "conditions": [STATUS_ACTIVE]},
            "actions": [action],
        },
        user=user,
    )


def webhook_rule(
    org: Organization, url: str, name: str = "Restock webhook", user=None, secret=None
) -> AutomationRule:
    """Benchmarks 10 and 11's rule: product UPDATED (stock watched), status ACTIVE, one
    CALL_WEBHOOK posting the product's id and stock to `url` (a local receiver: private networks
    are allowed while the rule is checked, as the bench's server and workers allow them)."""
    from django.test import override_settings

    webhook = {
        "url": url,
        "body": {"product": "{{ object.id }}", "stock": "{{ object.stock }}"},
        "timeoutSeconds": 10,
        "maxAttempts": 3,
    }
    if secret:
        webhook["secret"] = secret
    action = {"action_type": ActionType.CALL_WEBHOOK, "parameters": webhook}
    with override_settings(AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS=True):
        return _stock_rule(org, name, action, user)


def stock_runs(rule: AutomationRule, items: list[Product]) -> list[AutomationLog]:
    """PENDING runs of `rule` as a stock update of each product would make (call in a transaction)."""
    return [
        create_run(
            rule,
            trigger=TriggerType.EVENT,
            event=TriggerEvent.UPDATED,
            content_type=rule.content_type,
            object_id=product.pk,
            object_snapshot=snapshot(product),
            changes={"stock": {"old": 0, "new": product.stock}},
        )
        for product in items
    ]


def bulk_rules(
    org: Organization, count: int, *, start: int = 0, tree: bool = True, **fields
) -> list[int]:
    """`count` rules with a root group and, when `tree`, 2 conditions (one in a nested group)
    and 2 actions."""
    product_type = ContentType.objects.get(app_label="catalog", model="product")
    defaults = {
        "trigger_type": TriggerType.EVENT,
        "trigger_event": TriggerEvent.UPDATED,
        "content_type": product_type,
    }
    defaults.update(fields)
    rules = AutomationRule.objects.bulk_create(
        AutomationRule(organization=org, name=f"Rule {start + i:05}", **defaults)
        for i in range(count)
    )
    roots = ConditionGroup.objects.bulk_create(
        ConditionGroup(rule=rule, logic=ConditionLogic.AND) for rule in rules
    )
    if not tree:
        rules_changed()
        return [rule.pk for rule in rules]
    inner = ConditionGroup.objects.bulk_create(
        ConditionGroup(rule=rule, parent=root, logic=ConditionLogic.OR, order=0)
        for rule, root in zip(rules, roots, strict=True)
    )
    conditions = []
    actions = []
    for rule, root, group in zip(rules, roots, inner, strict=True):
        conditions.append(
            RuleCondition(
                rule=rule,
                group=root,
                field_name="status",
                operator=Operator.EQUALS,
                value="ACTIVE",
            )
        )
        conditions.append(
            RuleCondition(
                rule=rule, group=group, field_name="stock", operator=Operator.LESS_THAN, value=5
            )
        )
        actions.append(RuleAction(rule=rule, order=0, **UPDATE_DESCRIPTION))
        actions.append(
            RuleAction(
                rule=rule,
                order=1,
                action_type=ActionType.CALL_WEBHOOK,
                parameters={"url": "https://example.com/hook", "secret": "s3cret"},
            )
        )
    RuleCondition.objects.bulk_create(conditions)
    RuleAction.objects.bulk_create(actions)
    rules_changed()
    return [rule.pk for rule in rules]


def utc(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=datetime.UTC)
