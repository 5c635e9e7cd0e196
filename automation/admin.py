"""Admin for rules (with their condition tree and actions inline) and read-only run logs.

The admin is a back office for staff: it edits the same rows the API does, through the models'
own validation (clean()). Secrets in action parameters are never shown: the form displays them
masked and keeps the stored value when the mask is sent back unchanged, as long as the action
keeps its type, url and method (else the secret must be typed again).
"""

import json
import logging

from django import forms
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    RuleAction,
    RuleCondition,
)
from automation.core.registry import automatable_models
from automation.rules.condition_trees import check_condition
from automation.rules.services import check_action

logger = logging.getLogger("automation.admin")

HIDDEN = "(hidden: secret masking is unavailable)"


def pretty_json(value) -> str:
    """JSON as an indented <pre> block for read-only admin pages."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def _masking():
    """(mask_parameters, merge_masked_secrets) from automation.actions.handlers, or None if missing.

    Imported lazily so the admin loads even while the actions module is being reworked; without
    it nothing about parameters is shown (fail closed).
    """
    try:
        from automation.actions.handlers import mask_parameters, merge_masked_secrets
    except ImportError:
        logger.warning("automation.actions.handlers has no masking helpers: parameters are hidden.")
        return None
    return mask_parameters, merge_masked_secrets


def automatable_content_types():
    ids = [
        ContentType.objects.get_for_model(entry.model).pk for entry in automatable_models().values()
    ]
    return ContentType.objects.filter(pk__in=ids)


# --- Inlines ------------------------------------------------------------------------------------


class RuleScopedInline(admin.TabularInline):
    """An inline whose group choices are limited to the rule being edited."""

    extra = 0

    def get_formset(self, request, obj=None, **kwargs):
        request._automation_rule = obj
        return super().get_formset(request, obj, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name in {"group", "parent"}:
            rule = getattr(request, "_automation_rule", None)
            kwargs["queryset"] = ConditionGroup.objects.filter(rule=rule).select_related("rule")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ConditionGroupInline(RuleScopedInline):
    model = ConditionGroup
    fk_name = "rule"
    fields = ["parent", "logic", "negate", "order"]
    verbose_name = "condition group"
    verbose_name_plural = "condition groups (the one without a parent is the root)"


class CheckedForm(forms.ModelForm):
    """A form whose instance also passes the API's save-time check (`check`), as a rule saved
    over the API does."""

    check = None

    def _post_clean(self):
        super()._post_clean()
        try:
            type(self).check(self.instance)
        except ValidationError as exc:
            # A path below a field ("parameters.url") is shown on that field, path first.
            for path, messages in exc.message_dict.items():
                field = path.split(".")[0]
                field = field if field in self.fields else None
                prefix = "" if path == field else f"{path}: "
                self.add_error(field, [f"{prefix}{message}" for message in messages])


class RuleConditionForm(CheckedForm):
    check = staticmethod(check_condition)


class RuleConditionInline(RuleScopedInline):
    model = RuleCondition
    form = RuleConditionForm
    fields = [
        "group",
        "field_name",
        "operator",
        "value",
        "previous",
        "value_field",
        "negate",
        "order",
    ]


class RuleActionForm(CheckedForm):
    """Shows parameters with secrets masked; a mask sent back keeps the stored secret."""

    check = staticmethod(check_action)

    class Meta:
        model = RuleAction
        fields = ["order", "action_type", "parameters", "continue_on_failure"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        masking = _masking()
        field = self.fields["parameters"]
        if masking is None:
            field.disabled = True
            field.help_text = HIDDEN
            self.initial["parameters"] = {}
        elif self.instance.pk:
            self.initial["parameters"] = masking[0](
                self.instance.action_type, self.instance.parameters
            )
            field.help_text = (
                'Secrets show as "********"; leave them so to keep the stored value (type them '
                "again when you change the action type, url or method)."
            )

    def clean_parameters(self):
        parameters = self.cleaned_data.get("parameters")
        masking = _masking()
        if masking is None:
            return self.instance.parameters
        if self.instance.pk:
            parameters, unkept = masking[1](
                self.data.get(self.add_prefix("action_type")) or self.instance.action_type,
                parameters,
                self.instance.action_type,
                self.instance.parameters,
            )
            if unkept:
                raise forms.ValidationError(
                    [
                        f"{path}: {message}"
                        for path, messages in unkept.items()
                        for message in messages
                    ]
                )
        return parameters


class RuleActionInline(admin.StackedInline):
    model = RuleAction
    form = RuleActionForm
    extra = 0
    # An action's `when` is a condition tree, edited through the API (checked there as a whole).
    readonly_fields = ["when_tree"]

    @admin.display(description="when")
    def when_tree(self, action):
        return "always runs" if action.when is None else pretty_json(action.when)


# --- Rules --------------------------------------------------------------------------------------


@admin.register(AutomationRule)
class AutomationRuleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "organization",
        "trigger_type",
        "model_label",
        "trigger_event",
        "schedule",
        "is_active",
        "revision",
        "updated_at",
    ]
    list_editable = ["is_active"]
    list_filter = [
        "is_active",
        "trigger_type",
        "trigger_event",
        ("deleted_at", admin.EmptyFieldListFilter),
        "organization",
    ]
    search_fields = ["name", "description", "organization__name", "organization__slug"]
    list_select_related = ["organization", "content_type"]
    readonly_fields = [
        "revision",
        "next_run_at",
        "last_run_at",
        "created_at",
        "updated_at",
        "created_by",
        "updated_by",
    ]
    fieldsets = [
        (None, {"fields": ["organization", "name", "description", "is_active"]}),
        (
            "Trigger",
            {
                "fields": [
                    "trigger_type",
                    "content_type",
                    "trigger_event",
                    "watched_fields",
                    "allow_self_trigger",
                    "schedule",
                    "timezone",
                    "missed_run_policy",
                    "hold_for",
                ]
            },
        ),
        ("State", {"fields": readonly_fields + ["deleted_at"]}),
    ]
    inlines = [ConditionGroupInline, RuleConditionInline, RuleActionInline]

    @admin.display(description="model", ordering="content_type__model")
    def model_label(self, rule):
        return rule.model or "-"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "content_type":
            kwargs["queryset"] = automatable_content_types()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        rule = form.instance
        if not rule.condition_groups.filter(parent__isnull=True).exists():
            ConditionGroup.objects.create(rule=rule)
        # Every change bumps the revision, as the API's writes do (logs record which one ran).
        if change and (form.has_changed() or any(fs.has_changed() for fs in formsets)):
            rule.revision += 1
            rule.save(update_fields=["revision", "updated_at", "updated_by"])


# --- Logs (read-only) -----------------------------------------------------------------------------


@admin.register(AutomationLog)
class AutomationLogAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "rule",
        "organization",
        "trigger",
        "event",
        "status",
        "dry_run",
        "object_id",
        "created_at",
        "duration",
    ]
    list_filter = ["status", "trigger", "event", "dry_run", "organization"]
    search_fields = ["=id", "rule__name", "object_id", "error"]
    list_select_related = ["rule", "organization"]
    date_hierarchy = "created_at"
    fields = [
        "rule",
        "organization",
        "rule_revision",
        "status",
        "seq",
        "trigger",
        "event",
        "object_type_label",
        "object_id",
        "dry_run",
        "conditions_met",
        "error",
        "triggered_by",
        "scheduled_for",
        "resume_at",
        "parent_log",
        "root_log",
        "depth",
        "retry_of",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "pretty_changes",
        "pretty_condition_trace",
        "pretty_hold",
        "pretty_action_logs",
        "pretty_context",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="duration (ms)")
    def duration(self, log):
        return None if log.duration_ms is None else round(log.duration_ms, 1)

    @admin.display(description="object type")
    def object_type_label(self, log):
        return log.object_type

    @admin.display(description="changes")
    def pretty_changes(self, log):
        return pretty_json(log.changes)

    @admin.display(description="condition trace")
    def pretty_condition_trace(self, log):
        return pretty_json(log.condition_trace)

    @admin.display(description="hold")
    def pretty_hold(self, log):
        return pretty_json(log.hold)

    @admin.display(description="action logs")
    def pretty_action_logs(self, log):
        return pretty_json(log.action_logs)

    @admin.display(description="context")
    def pretty_context(self, log):
        return pretty_json(log.context)
