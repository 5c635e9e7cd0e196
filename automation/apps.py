from django.apps import AppConfig
from django.core import checks


class AutomationConfig(AppConfig):
    name = "automation"
    verbose_name = "Automation"

    def ready(self):
        from automation import __version__
        from automation.core.registry import check_registry
        from automation.triggers import signals
        from observability import metrics

        metrics.BUILD.info({"version": __version__})
        # Registration mistakes stop `serve`, `migrate`, `run_huey` and `check`.
        checks.register(check_registry, checks.Tags.models)
        # Model-event triggers, the rule index's version bumps and next_run_at upkeep.
        signals.connect()
