"""Which active rules watch a model event.

Simple database version; the triggers work replaces it with an in-process index whose version
lives in the cache, so that a save no rule watches costs no query.
"""

from automation.choices import TriggerType
from automation.models import AutomationRule


def rules_watching(model_label: str, event: str, organization_id: int) -> list[AutomationRule]:
    app_label, model = model_label.split(".")
    return list(
        AutomationRule.objects.live()
        .filter(
            trigger_type=TriggerType.EVENT,
            trigger_event=event,
            organization_id=organization_id,
            content_type__app_label=app_label,
            content_type__model=model,
        )
        .order_by("id")
    )
