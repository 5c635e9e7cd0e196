"""The engine's stored data: rules, their condition tree and actions, and run logs."""

import collections
import datetime
import secrets
import uuid

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from accounts.models import Auditable, Organization, OrganizationScoped, Timestamped
from automation.core.choices import (
    ActionType,
    ConditionLogic,
    MissedRunPolicy,
    Operator,
    RunStatus,
    TriggerEvent,
    TriggerType,
)
from automation.core.durations import iso_duration
from automation.core.registry import PathError, get_automatable, model_label, resolve_path
from automation.core.validators import validate_cron, validate_timezone

# A WEBHOOK rule's signing secret: shorter ones can be guessed offline from one signed request.
WEBHOOK_SECRET_MIN_LENGTH = 16
WEBHOOK_SECRET_MAX_LENGTH = 200


def new_webhook_token() -> str:
    """An unguessable URL token: 32 random bytes, 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


class AutomationRuleQuerySet(models.QuerySet):
    def alive(self):
        """Rules not soft-deleted."""
        return self.filter(deleted_at__isnull=True)

    def live(self):
        """Rules that may fire: active and not deleted."""
        return self.filter(is_active=True, deleted_at__isnull=True)


class AutomationRule(Timestamped, Auditable, OrganizationScoped):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    trigger_type = models.CharField(max_length=10, choices=TriggerType.choices)
    content_type = models.ForeignKey(
        ContentType,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The watched model (EVENT) or the model a SCHEDULE / MANUAL rule works on.",
    )
    trigger_event = models.CharField(
        max_length=10, choices=TriggerEvent.choices, null=True, blank=True
    )
    watched_fields = models.JSONField(default=list, blank=True)
    allow_self_trigger = models.BooleanField(default=False)
    schedule = models.CharField(max_length=100, blank=True, default="")
    timezone = models.CharField(max_length=64, default="UTC")
    missed_run_policy = models.CharField(
        max_length=10, choices=MissedRunPolicy.choices, default=MissedRunPolicy.LATEST
    )
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    # How long the conditions must keep holding before the actions run (the API's `holdFor`,
    # an ISO 8601 duration): a run whose conditions are met waits this long, then checks them
    # again against the record as it is then (runs/waits.py). Null: no hold.
    hold_for = models.DurationField(null=True, blank=True)
    revision = models.PositiveIntegerField(default=1)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # WEBHOOK rules: the credential in the rule's URL (/hooks/<token>), made when the rule is
    # first saved and replaced by rotateRuleWebhook; null for other rules.
    webhook_token = models.CharField(
        max_length=64, null=True, blank=True, unique=True, editable=False
    )
    # The optional key callers sign their requests with (automation/triggers/inbound.py);
    # write-only in the API. Empty: requests are not signed.
    webhook_secret = models.CharField(max_length=WEBHOOK_SECRET_MAX_LENGTH, blank=True, default="")

    objects = AutomationRuleQuerySet.as_manager()

    # Not stored: the model label an input named that is not automatable, set by the rule service
    # while it validates that input (content_type is then None), so that the checks of the
    # conditions and actions do not add "this rule has no model" to the model's own error.
    refused_model: str | None = None
    # Not stored: set by the rule service when the input's holdFor is no duration it takes
    # (reported there; hold_for is then None), so that what the rule's trigger says of any hold
    # is still reported with it.
    refused_hold: bool = False

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=Q(deleted_at__isnull=True),
                name="unique_live_rule_name_per_org",
                violation_error_message="A rule with this name already exists in the organization.",
            )
        ]
        indexes = [
            # The scheduler tick: due rules only, so its cost grows with due rules, not all rules.
            models.Index(
                fields=["next_run_at"],
                condition=Q(trigger_type="SCHEDULE", is_active=True, deleted_at__isnull=True),
                name="rule_due_schedule_idx",
            ),
            models.Index(fields=["organization", "name"], name="rule_org_name_idx"),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        # Every path that creates a WEBHOOK rule (the API, the admin, scripts) gives it its URL.
        if self.trigger_type == TriggerType.WEBHOOK and not self.webhook_token:
            self.webhook_token = new_webhook_token()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = [*kwargs["update_fields"], "webhook_token"]
        super().save(*args, **kwargs)

    @property
    def model(self) -> str | None:
        """The rule's model as "app_label.model"."""
        return _label_of(self.content_type_id)

    @property
    def root_group(self):
        return self.condition_groups.filter(parent__isnull=True).first()

    def clean(self):
        errors = {}
        if self.timezone is not None:
            try:
                validate_timezone(self.timezone)
            except ValidationError as exc:
                errors["timezone"] = exc.messages
        if self.trigger_type == TriggerType.SCHEDULE:
            try:
                validate_cron(self.schedule)
            except ValidationError as exc:
                errors["schedule"] = exc.messages
        elif self.schedule:
            errors["schedule"] = ["Only SCHEDULE rules have a schedule."]
        label = None
        if self.content_type_id:
            label = model_label(self.content_type.model_class())
            try:
                get_automatable(label)
            except LookupError as exc:
                errors["content_type"] = [str(exc)]
                label = None
        if self.trigger_type == TriggerType.EVENT:
            if not self.content_type_id:
                errors["content_type"] = ["An EVENT rule needs a model."]
            if not self.trigger_event:
                errors["trigger_event"] = [
                    "An EVENT rule needs an event (CREATED, UPDATED, DELETED)."
                ]
        elif self.trigger_event:
            errors["trigger_event"] = ["Only EVENT rules have a trigger event."]
        errors.update(self._webhook_errors())
        errors.update(self._hold_errors())
        if self.watched_fields:
            errors.update(self._watched_field_errors(label))
        if errors:
            raise ValidationError(errors)

    def _webhook_errors(self) -> dict:
        errors = {}
        if self.trigger_type == TriggerType.WEBHOOK and self.content_type_id:
            errors["content_type"] = [
                "A WEBHOOK rule has no model: its runs work on the JSON body they were sent "
                "(payload)."
            ]
        if not self.webhook_secret:
            return errors
        if self.trigger_type != TriggerType.WEBHOOK:
            errors["webhook_secret"] = ["Only WEBHOOK rules have a signing secret."]
        elif len(self.webhook_secret) < WEBHOOK_SECRET_MIN_LENGTH:
            errors["webhook_secret"] = [
                f"A signing secret has at least {WEBHOOK_SECRET_MIN_LENGTH} characters: a "
                "shorter one can be guessed from one signed request."
            ]
        return errors

    def _hold_errors(self) -> dict:
        """A hold is a positive, bounded duration, and re-checks the run's record after it:
        only a rule whose runs have one that still exists can hold."""
        if self.hold_for is None and not self.refused_hold:
            return {}
        messages = []
        maximum = datetime.timedelta(seconds=settings.AUTOMATION_MAX_WAIT_SECONDS)
        if self.hold_for is not None and self.hold_for <= datetime.timedelta(0):
            messages.append("A hold is a positive duration.")
        elif self.hold_for is not None and self.hold_for > maximum:
            messages.append(
                f"A hold is at most {iso_duration(maximum)} (AUTOMATION_MAX_WAIT_SECONDS)."
            )
        if self.trigger_event == TriggerEvent.DELETED:
            messages.append(
                "A DELETED rule cannot hold: after the hold its conditions are checked again "
                "against the record, which is gone."
            )
        elif not self.content_type_id and not self.refused_model:
            messages.append(
                "Only a rule with a model can hold: after the hold its conditions are checked "
                "again against the run's record as it is then."
            )
        return {"hold_for": messages} if messages else {}

    def _watched_field_errors(self, label):
        if not isinstance(self.watched_fields, list) or not all(
            isinstance(name, str) for name in self.watched_fields
        ):
            return {"watched_fields": ["Watched fields must be a list of field names."]}
        if self.trigger_type != TriggerType.EVENT or self.trigger_event != TriggerEvent.UPDATED:
            return {"watched_fields": ["Only UPDATED rules watch fields."]}
        if label is None:
            return {}
        messages = []
        # Each field once: the list stays as short as the model's fields (the API costs it so).
        counts = collections.Counter(self.watched_fields)
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        messages.extend(f'"{name}" is listed more than once.' for name in duplicates)
        for name in self.watched_fields:
            try:
                if not resolve_path(label, name).is_local:
                    messages.append(f'"{name}": only the model\'s own fields can be watched.')
            except PathError as exc:
                messages.append(str(exc))
        return {"watched_fields": messages} if messages else {}


class ConditionGroup(models.Model):
    rule = models.ForeignKey(
        AutomationRule, on_delete=models.CASCADE, related_name="condition_groups"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="groups"
    )
    logic = models.CharField(
        max_length=3, choices=ConditionLogic.choices, default=ConditionLogic.AND
    )
    negate = models.BooleanField(default=False)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule"],
                condition=Q(parent__isnull=True),
                name="one_root_group_per_rule",
                violation_error_message="A rule has exactly one root condition group.",
            )
        ]

    def __str__(self):
        prefix = "NOT " if self.negate else ""
        where = "root" if self.parent_id is None else f"group {self.order}"
        return f"{prefix}{self.logic} ({where} of {self.rule})"


class RuleCondition(Timestamped, Auditable):
    rule = models.ForeignKey(AutomationRule, on_delete=models.CASCADE, related_name="conditions")
    group = models.ForeignKey(ConditionGroup, on_delete=models.CASCADE, related_name="conditions")
    field_name = models.CharField(max_length=300)
    operator = models.CharField(max_length=25, choices=Operator.choices)
    value = models.JSONField(null=True, blank=True)
    # Test the record as it was before the write (UPDATED rules; see conditions/sides.py).
    previous = models.BooleanField(default=False)
    # Compare with this field path of the record instead of `value` ("" when comparing a value).
    value_field = models.CharField(max_length=300, blank=True, default="")
    negate = models.BooleanField(default=False)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self):
        prefix = "NOT " if self.negate else ""
        field = f"previous {self.field_name}" if self.previous else self.field_name
        other = f"field {self.value_field}" if self.value_field else repr(self.value)
        return f"{prefix}{field} {self.operator} {other}"


class RuleAction(Timestamped, Auditable):
    rule = models.ForeignKey(AutomationRule, on_delete=models.CASCADE, related_name="actions")
    action_type = models.CharField(max_length=20, choices=ActionType.choices)
    parameters = models.JSONField(default=dict, blank=True)
    order = models.PositiveIntegerField(default=0)
    continue_on_failure = models.BooleanField(default=False)
    # The action's own condition tree, evaluated at its turn (ConditionGroupInput's shape as
    # JSON: logic, negate, conditions, groups); null: it always runs. See runs/when.py.
    when = models.JSONField(null=True, blank=True, default=None)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self):
        return f"{self.order}: {self.action_type} ({self.rule})"


class AutomationLog(Timestamped, Auditable, OrganizationScoped):
    """One run of a rule: the outbox entry while PENDING, then its record, action by action."""

    # No index of their own for organization, rule and content_type: a composite index of Meta
    # starts with each (a foreign key needs one for deletes and cascades), and a plain one beside
    # it would only cost every insert.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    rule = models.ForeignKey(
        AutomationRule, on_delete=models.PROTECT, related_name="logs", db_index=False
    )
    trigger = models.CharField(max_length=10, choices=TriggerType.choices)
    event = models.CharField(max_length=10, choices=TriggerEvent.choices, null=True, blank=True)
    content_type = models.ForeignKey(
        ContentType,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    # Text, not a foreign key: a deleted record keeps its id here.
    object_id = models.CharField(max_length=64, null=True, blank=True)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PENDING)
    seq = models.PositiveIntegerField(default=0)
    rule_revision = models.PositiveIntegerField(default=1)
    dry_run = models.BooleanField(default=False)
    conditions_met = models.BooleanField(null=True, blank=True)
    condition_trace = models.JSONField(default=list, blank=True)
    changes = models.JSONField(null=True, blank=True)
    context = models.JSONField(default=dict, blank=True)
    action_logs = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    scheduled_for = models.DateTimeField(null=True, blank=True)
    # WAITING: when the run is due to go on (runs/waits.py wakes it then); kept afterwards as
    # the last time it was due.
    resume_at = models.DateTimeField(null=True, blank=True)
    # The rule's holdFor as this run held: {"hold_for": "PT30M", "until", "checked_at", "met",
    # "trace", "note"}; null for a run that did not hold (runs/waits.py).
    hold = models.JSONField(null=True, blank=True)
    parent_log = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="child_logs"
    )
    root_log = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="chain_logs"
    )
    depth = models.PositiveIntegerField(default=0)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Random, given when the log is created: what the run's outside effects are known by
    # (a webhook's Idempotency-Key, an e-mail's Message-ID; see run_key()). Ids repeat across
    # deployments and after a database restore; this does not. Null on logs written before it
    # existed (the column was added without rewriting the table).
    run_uuid = models.UUIDField(null=True, blank=True, default=uuid.uuid4, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Each documented filter of `logs` has an index that ends with the keyset's order
        # (-created_at, -id), so a page is a bounded index range whatever the table holds
        # (automation/core/keyset.py; a test asserts each plan on PostgreSQL and SQLite).
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="log_org_created_idx"),
            # The organization too: a rule moved to another organization (the admin can) keeps
            # its logs in the old one, so a rule filter keeps the organization's, and SQLite
            # (no statistics) prefers the index with both to log_org_created_idx.
            models.Index(
                fields=["rule", "organization", "-created_at", "-id"], name="log_rule_org_idx"
            ),
            models.Index(
                fields=["organization", "status", "-created_at", "-id"], name="log_org_status_idx"
            ),
            models.Index(
                fields=["organization", "trigger", "-created_at", "-id"], name="log_org_trigger_idx"
            ),
            models.Index(
                fields=["organization", "dry_run", "-created_at", "-id"], name="log_org_dry_run_idx"
            ),
            # objectType; content type first, for the foreign key.
            models.Index(
                fields=["content_type", "organization", "-created_at", "-id"], name="log_type_idx"
            ),
            # objectType and objectId: a record's runs. Three equalities, so SQLite (no
            # statistics) prefers it to log_type_idx, which leaves the object id to a filter.
            models.Index(
                fields=["organization", "content_type", "object_id", "-created_at", "-id"],
                name="log_record_idx",
            ),
            # Expiry (retention walks it per status, newest first) and the sweeper's PENDING and
            # RUNNING scans.
            models.Index(fields=["status", "created_at", "id"], name="log_expiry_idx"),
            # The wake-up tick: due waiting runs only, however many runs are stored.
            models.Index(
                fields=["resume_at"],
                condition=Q(status=RunStatus.WAITING),
                name="log_waiting_due_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "scheduled_for"],
                condition=Q(scheduled_for__isnull=False),
                name="unique_run_per_rule_slot",
            )
        ]

    def __str__(self):
        return f"Run {self.pk} of {self.rule} ({self.status})"

    @property
    def duration_ms(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds() * 1000
        return None

    @property
    def object_type(self) -> str | None:
        return _label_of(self.content_type_id)

    def run_key(self) -> str:
        """The run's name for the outside world: `run_uuid`, the same for every attempt and
        every resumption of the run, and unlike its id never repeated by another deployment or
        after a restore. A log written before `run_uuid` existed gets one derived from its id
        and creation time (stable too, and as unlikely to repeat)."""
        if self.run_uuid is not None:
            return str(self.run_uuid)
        return str(uuid.uuid5(LEGACY_RUN_KEY_NAMESPACE, f"{self.pk}/{self.created_at.isoformat()}"))


# The namespace of run_key() for logs older than run_uuid (any fixed UUID: it only must not change).
LEGACY_RUN_KEY_NAMESPACE = uuid.UUID("5b0e8f2c-5a0c-4d36-9a53-7f1f0d6e2b41")


def _label_of(content_type_id: int | None) -> str | None:
    """A content type's "app_label.model" from Django's per-process content type cache."""
    if content_type_id is None:
        return None
    return model_label(ContentType.objects.get_for_id(content_type_id).model_class())
