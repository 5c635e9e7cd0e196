"""Django finds an app's models here; they live in automation/core/models.py (rules and runs)
and automation/core/system_models.py (the stream journal, heartbeats)."""

from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    RuleAction,
    RuleCondition,
)
from automation.core.system_models import Heartbeat, StreamEvent, StreamHead

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
