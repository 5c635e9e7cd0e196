"""`manage.py export_schema graphql_api.schema:schema --path schema.graphql`: strawberry-django's
command, offered here so that "strawberry_django" need not be an installed app.

As an installed app, strawberry-django was imported by every process at start-up (about 0.9 s
of CPU on 2 cores), workers and management commands included, which never use it; the API
imports it when it loads.
"""

from strawberry_django.management.commands.export_schema import Command  # noqa: F401
