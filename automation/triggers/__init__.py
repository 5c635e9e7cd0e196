"""Triggers: model signals and the outbox (a write becomes runs), cron schedules and the tick."""
