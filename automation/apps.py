from django.apps import AppConfig


class AutomationConfig(AppConfig):
    name = "automation"
    verbose_name = "Automation"

    def ready(self):
        # Model-event triggers, the rule index's version bumps and next_run_at upkeep.
        from automation.triggers import signals

        signals.connect()
