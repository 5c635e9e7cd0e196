"""Django's PostgreSQL backend with the before-commit hooks of config/db.py."""

from django.db.backends.postgresql import base

from config.db import BeforeCommitMixin


class DatabaseWrapper(BeforeCommitMixin, base.DatabaseWrapper):
    pass
