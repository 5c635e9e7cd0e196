"""Django finds an app's models here; they live in automation/core/models.py."""

from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    Heartbeat,
    RuleAction,
    RuleCondition,
    StreamEvent,
    StreamHead,
)

__all__ = [
    "AutomationLog",
    "AutomationRule",
    "ConditionGroup",
    "Heartbeat",
    "RuleAction",
    "RuleCondition",
    "StreamEvent",
    "StreamHead",
]
